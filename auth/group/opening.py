"""Threshold ElGamal decryption of a group signature's (C1, C2), each share proven.

Supervisor i (1..n) holds x_i, a share of the joint secret x (Y = x·G) from
the DKG (``dkg``), and publishes Y_i = x_i·G. For a ciphertext (C1, C2) =
(r·G, T + r·Y) it gives the decryption share D_i = x_i·C1 with a
Chaum–Pedersen proof ("Wallet databases with observers", CRYPTO 1992) that
log_G(Y_i) = log_C1(D_i), made non-interactive with Fiat–Shamir over keccak256
exactly as the Supervision contract recomputes it:
``c = keccak256(abi.encodePacked("xcentre-dleq/1", pool_id, i, Y_i, C1,
D_i, A1, A2)) mod r`` with uint256 integers and EIP-2537 (128-byte) points.
D_i does not depend on the opening, so the contract pools the shares of one C1
(its pool id, the id of the first opening of that C1, is the id hashed in), and
they open every opening of that C1 at once.
Any t valid shares give T = C2 − Σ λ_i·D_i (Lagrange at 0 over their
indexes); t−1 shares are independent of T (Shamir), and a share whose proof
fails names its sender.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_hash.auto import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.core import msm
from auth.bbs.encoding import R as ORDER
from auth.bbs.encoding import to_scalar

from .errors import GroupError
from .points import g1_chain, lagrange_at_zero, random_scalar, uint256

DLEQ_TAG = b"xcentre-dleq/1"
_G = G1Point()
_IDENTITY = G1Point.identity()


@dataclass(frozen=True)
class Share:
    """Supervisor `index`'s decryption share D_i = x_i·C1 and its proof (c, z)."""

    index: int
    d: G1Point
    c: int
    z: int


def dleq_challenge(pool_id: int, index: int, y_i: G1Point, c1: G1Point, d: G1Point, a1: G1Point, a2: G1Point) -> int:
    """The Fiat–Shamir challenge of a share, as Solidity computes it (keccak256 of the packed bytes, mod r)."""
    packed = DLEQ_TAG + uint256(pool_id) + uint256(index) + b"".join(g1_chain(p) for p in (y_i, c1, d, a1, a2))
    return int.from_bytes(keccak(packed), "big") % ORDER


def _index(i: object) -> int:
    if not isinstance(i, int) or isinstance(i, bool) or not 0 < i < 1 << 256:
        raise GroupError(f"a supervisor index is a positive integer, got {i!r:.40}")
    return i


def _point(p: object, what: str) -> G1Point:
    if not isinstance(p, G1Point) or p == _IDENTITY:
        raise GroupError(f"{what} must be a G1 point other than the identity")
    return p


def decryption_share(x_i: int, i: int, c1: G1Point, pool_id: int) -> Share:
    """Supervisor i's share of ciphertext (C1, ·) for the pool `pool_id` of its openings, with its DLEQ proof."""
    if not isinstance(x_i, int) or isinstance(x_i, bool) or not 0 < x_i < ORDER:
        raise GroupError("a supervisor's secret share must be an integer in [1, r)")
    i, c1 = _index(i), _point(c1, "C1")
    uint256(pool_id)
    x = to_scalar(x_i)
    w = random_scalar()
    ws = to_scalar(w)
    y_i, d = _G * x, c1 * x
    a1, a2 = _G * ws, c1 * ws
    c = dleq_challenge(pool_id, i, y_i, c1, d, a1, a2)
    return Share(index=i, d=d, c=c, z=(w + c * x_i) % ORDER)


def verify_share(share: Share, y_i: G1Point, c1: G1Point, pool_id: int) -> bool:
    """Is `share` supervisor share.index's true share of C1, by its verification key y_i? Never raises."""
    try:
        if not isinstance(share, Share):
            return False
        i = _index(share.index)
        y_i, c1, d = _point(y_i, "Y_i"), _point(c1, "C1"), _point(share.d, "D_i")
        for v in (share.c, share.z):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < ORDER:
                return False
        a1 = msm([_G, y_i], [share.z, -share.c])
        a2 = msm([c1, d], [share.z, -share.c])
        return dleq_challenge(pool_id, i, y_i, c1, d, a1, a2) == share.c
    except (GroupError, ValueError, TypeError, OverflowError):
        return False


def combine(c2: G1Point, shares: Sequence[Share]) -> G1Point:
    """T = C2 − Σ λ_i·D_i over the shares' indexes. The caller checks the shares and that there are t."""
    c2 = _point(c2, "C2")
    if not shares:
        raise GroupError("at least one decryption share is needed")
    for s in shares:
        if not isinstance(s, Share):
            raise GroupError("a decryption share is expected")
        _point(s.d, "D_i")
    lambdas = lagrange_at_zero([s.index for s in shares])
    return msm([c2, *(s.d for s in shares)], [1, *(-lam for lam in lambdas)])
