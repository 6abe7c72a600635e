"""Inputs and verdicts of auth.group, as raw bytes, for tests of the Supervision contract.

Not a test module: a contract test imports these to feed the contract exactly
what the Python side makes and to compare the contract's verdict with the
Python one (``dleq_check``, ``feldman_check``), including for inputs it
tampers with itself. Points are raw (96 bytes, x‖y, the contract's calldata
form); scalars are ints. Secrets come from a seeded generator, so a vector is
the same on every run except for the DLEQ proof's random w (and therefore A1,
A2, c, z), which are fresh, as they are in use.

    v = dleq_vector(pool_id=1, index=2)         # a share of supervisor 2 and its proof
    dleq_check(v["pool_id"], v["index"], v["y"], v["c1"], v["d"], v["c"], v["z"])  # True
    f = feldman_vector(t=3, j=2)                # commitments and a good share for recipient 2
    k = combine_vector(n=5, t=3, indexes=[1, 3, 5])   # shares whose combination is T
    d = dkg_vector(n=3, t=2)                    # a whole DKG: keys, deals, Y and every Y_j
    s = signature_vector(n=3, t=2)              # a real group signature under that DKG's key
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import R, to_scalar
from auth.credentials import generate_issuer_key
from auth.group import (
    GroupError,
    Share,
    combine,
    decryption_share,
    dkg,
    g1_from_raw,
    g1_raw,
    issue_group_credential,
    join_request,
    lagrange_at_zero,
    order_message,
    sign,
    tracing_key,
    verify_share,
)
from auth.group.credential import h_sk
from auth.group.opening import DLEQ_TAG
from auth.group.points import g1_chain, uint256

G = G1Point()


def _rng(*seed: object) -> random.Random:
    return random.Random(repr(("xcentre-group-vectors", *seed)))


def _scalar(rng: random.Random) -> int:
    return rng.randrange(1, R)


def _mul(x: int, point: G1Point = G) -> G1Point:
    return point * to_scalar(x % R)


def dleq_vector(pool_id: int, index: int) -> dict[str, Any]:
    """Supervisor `index`'s valid decryption share of a fixed C1 for pool `pool_id` (the openings of that C1).

    Keys: pool_id, index, x (the secret share), y (raw Y_i), c1, d (raw), c, z (ints),
    a1, a2 (raw commitments the verifier recomputes), packed (the bytes keccak256 hashes,
    i.e. abi.encodePacked("xcentre-dleq/1", poolId, i, Yi, C1, Di, A1, A2) with EIP-2537 points),
    valid (True).
    """
    rng = _rng("dleq", pool_id, index)
    x, r = _scalar(rng), _scalar(rng)
    y, c1 = _mul(x), _mul(r)
    share = decryption_share(x, index, c1, pool_id)
    a1 = _mul(share.z) + (-_mul(share.c, y))
    a2 = _mul(share.z, c1) + (-_mul(share.c, share.d))
    packed = DLEQ_TAG + uint256(pool_id) + uint256(index) + b"".join(g1_chain(p) for p in (y, c1, share.d, a1, a2))
    return {
        "pool_id": pool_id,
        "index": index,
        "x": x,
        "y": g1_raw(y),
        "c1": g1_raw(c1),
        "d": g1_raw(share.d),
        "c": share.c,
        "z": share.z,
        "a1": g1_raw(a1),
        "a2": g1_raw(a2),
        "packed": packed,
        "valid": verify_share(share, y, c1, pool_id),
    }


def dleq_check(pool_id: int, index: int, y: bytes, c1: bytes, d: bytes, c: int, z: int) -> bool:
    """The Python verdict on a share given as the contract gets it (False for any invalid point)."""
    try:
        y_i, c1_p, d_p = (g1_from_raw(b) for b in (y, c1, d))
    except GroupError:
        return False
    return verify_share(Share(index=index, d=d_p, c=c, z=z), y_i, c1_p, pool_id)


def feldman_vector(t: int, j: int) -> dict[str, Any]:
    """A dealer's commitments (t × 96 raw bytes) and its valid share for recipient j.

    Keys: t, j, commitments (bytes), share (int, valid), bad_share (share + 1 mod r),
    coefficients (the dealer's secret polynomial, for tests that reveal).
    """
    rng = _rng("feldman", t, j)
    dealer = dkg.Dealer(tuple(_scalar(rng) for _ in range(t)))
    share = dealer.share_for(j)
    return {
        "t": t,
        "j": j,
        "commitments": dealer.commitments_raw(),
        "share": share,
        "bad_share": (share + 1) % R,
        "coefficients": list(dealer.coefficients),
    }


def feldman_check(commitments: bytes, j: int, s: int) -> bool:
    """The Python verdict on a revealed share s for recipient j (False for malformed commitments)."""
    try:
        return dkg.verify_share(dkg.parse_commitments(commitments), j, s)
    except GroupError:
        return False


def combine_vector(n: int, t: int, indexes: Sequence[int]) -> dict[str, Any]:
    """A t-of-n key, a ciphertext of a member's T and the shares of `indexes`.

    Keys: n, t, indexes, public_key (raw Y), verification_keys (raw Y_1..Y_n),
    c1, c2 (raw), shares (list of (index, raw D_i)), lambdas (Lagrange at 0 over indexes, mod r),
    tracing_key (raw T), opens (whether `indexes` are at least t: then C2 − Σ λ_i·D_i = T).
    """
    rng = _rng("combine", n, t)
    coefficients = [_scalar(rng) for _ in range(t)]
    xs = [dkg.Dealer(tuple(coefficients)).share_for(i) for i in range(1, n + 1)]
    Y = _mul(coefficients[0])
    sk, r = _scalar(rng), _scalar(rng)
    T = tracing_key(sk)
    c1, c2 = _mul(r), T + _mul(r, Y)
    shares = [Share(index=i, d=_mul(xs[i - 1], c1), c=0, z=0) for i in indexes]
    return {
        "n": n,
        "t": t,
        "indexes": list(indexes),
        "public_key": g1_raw(Y),
        "verification_keys": [g1_raw(_mul(x)) for x in xs],
        "c1": g1_raw(c1),
        "c2": g1_raw(c2),
        "shares": [(s.index, g1_raw(s.d)) for s in shares],
        "lambdas": lagrange_at_zero(list(indexes)),
        "tracing_key": g1_raw(T),
        "opens": combine(c2, shares) == T,
    }


def dkg_vector(n: int, t: int) -> dict[str, Any]:
    """A whole DKG among n honest parties, as the chain sees it.

    Keys: n, t, encryption_secrets (e_1..e_n), encryption_keys (raw E_1..E_n),
    deals (per dealer 1..n: {"commitments": t×96 bytes, "shares": n×128 bytes}),
    secret_shares (x_1..x_n), public_key (raw Y), verification_keys (raw Y_1..Y_n).
    """
    keys = [dkg.EncryptionKey.from_secret(_scalar(_rng("dkg-e", n, t, j))) for j in range(1, n + 1)]
    dealers = [dkg.Dealer(tuple(_scalar(_rng("dkg-a", n, t, i, k)) for k in range(t))) for i in range(1, n + 1)]
    deals = [
        {"commitments": d.commitments_raw(), "shares": d.deal(i, [k.E for k in keys])} for i, d in enumerate(dealers, 1)
    ]
    commitments = [dkg.parse_commitments(deal["commitments"], t) for deal in deals]
    xs = [
        dkg.secret_share(dkg.decrypt_share(keys[j - 1].e, deal["shares"], i, j) for i, deal in enumerate(deals, 1))
        for j in range(1, n + 1)
    ]
    return {
        "n": n,
        "t": t,
        "encryption_secrets": [k.e for k in keys],
        "encryption_keys": [k.raw() for k in keys],
        "deals": deals,
        "secret_shares": xs,
        "public_key": g1_raw(dkg.public_key(commitments)),
        "verification_keys": [g1_raw(dkg.verification_key(commitments, j)) for j in range(1, n + 1)],
    }


def signature_vector(n: int = 3, t: int = 2, *, home: str = "hpc-a", project: str = "astro") -> dict[str, Any]:
    """A real group signature (over an order message) under dkg_vector(n, t)'s key.

    Keys: dkg (the dkg_vector), signature (bytes; C1 at [9, 105), C2 at [105, 201)),
    message, issuer_pk, tracing_key (raw T of the signer), home, project.
    """
    d = dkg_vector(n, t)
    Y = g1_from_raw(d["public_key"])
    isk, ipk = generate_issuer_key(bytes(32))
    sk = _scalar(_rng("signer", home, project))
    req = join_request(sk, home=home, project=project, member="alice")
    cred = issue_group_credential(isk, ipk, req, home=home, member="alice", revocation_epoch=0, expires_at=2**40)
    message = order_message(bytes(range(32)))
    return {
        "dkg": d,
        "signature": sign(cred, sk, ipk, Y, message),
        "message": message,
        "issuer_pk": ipk,
        "tracing_key": g1_raw(_mul(sk, h_sk())),
        "home": home,
        "project": project,
    }
