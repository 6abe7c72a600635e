"""Benchmark of auth.group: group sign and verify, a decryption share, combining, the DKG.

Measured in the same run beside the BBS proof they are built on
(auth.bbs.SHA256 proof_gen / proof_verify, 5 messages, 4 disclosed: the shape
of a group credential) and the floor of every pairing-based verification, one
`GT.pairing_check` of two pairs. The published peer, BBS04 on the mcl C
library over BN254 with a single trusted opener, is shown as published (not
re-measured here). Group verify runs the BBS pairing check on a worker
thread, so sign and verify are also measured pinned to one core.

    .venv/bin/python scripts/bench/bench_group.py [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    GROUP_COMBINE,
    GROUP_DKG,
    GROUP_SHARE,
    GROUP_SIGN,
    GROUP_VERIFY,
    Result,
    measure,
    one_core,
    print_results,
)
from py_arkworks_bls12381 import GT, G1Point, G2Point

from auth import bbs
from auth.bbs.encoding import to_scalar
from auth.credentials import generate_issuer_key, key_id
from auth.group import (
    combine,
    decryption_share,
    dkg,
    issue_group_credential,
    join_request,
    new_member_secret,
    order_message,
    sign,
    tracing_key,
    verify,
    verify_share,
)

TITLE = "Group signatures and supervised opening (auth.group)"
ABOUT = (
    "A group signature is a BBS proof over a 5-message group credential (4 disclosed) plus an ElGamal "
    "encryption of the tracing key and its proof; verify checks a signature over a 32-byte order digest. "
    "An opening share is one Chaum–Pedersen-proven decryption share; combining is 3 shares; the DKG is "
    "every step for 5 supervisors with threshold 3 (keys, commitments, encrypted shares, every recipient "
    "decrypting and Feldman-checking every share). Peers in the same run: BBS proof_gen/proof_verify of "
    "the same shape, and `GT.pairing_check` of two pairs, the floor of any pairing-based verification. "
    "BBS04 (mcl, BN254, one trusted opener) is the published figure, not measured here."
)

PAIRING = "group.pairing_check"
BBS_GEN = "group.bbs.L5.proof_gen"
BBS_VERIFY = "group.bbs.L5.proof_verify"
SIGN, VERIFY, SHARE, COMBINE, DKG = GROUP_SIGN, GROUP_VERIFY, GROUP_SHARE, GROUP_COMBINE, GROUP_DKG
VERIFY_SHARE = "group.verify_share"
BBS04_SIGN = "group.peer.bbs04.sign"
BBS04_VERIFY = "group.peer.bbs04.verify"
#: The issue's targets, in ms.
TARGETS = {SIGN: 5.0, VERIFY: 6.0, SHARE: 2.0, COMBINE: 1.0, DKG: 1000.0}
PUBLISHED = "published (mcl C library, BN254, one trusted opener): not measured here"


def run(quick: bool = False, rounds: int | None = None) -> list[Result]:
    """Measure every operation; ``rounds`` timed calls each (the DKG a tenth of them)."""
    rounds = rounds or (10 if quick else 100)
    dkg_rounds = max(3, rounds // 10)
    g1, g2 = G1Point(), G2Point()
    isk, ipk = generate_issuer_key(os.urandom(32))
    sk = new_member_secret()
    req = join_request(sk, home="hpc-a", project="astro", member="alice")
    cred = issue_group_credential(isk, ipk, req, home="hpc-a", member="alice", revocation_epoch=0, expires_at=2**40)
    Y, xs = dkg.run_local(5, 3)
    ys = [g1 * to_scalar(x) for x in xs]
    message = order_message(os.urandom(32))
    kid = key_id(ipk)

    def issuer_pk_for(home: str, key: str) -> bytes | None:
        return ipk if (home, key) == ("hpc-a", kid) else None

    sig = sign(cred, sk, ipk, Y, message)
    signed = verify(sig, message, issuer_pk_for=issuer_pk_for, supervision_key=Y)
    shares = [decryption_share(xs[i - 1], i, signed.c1, 1) for i in (1, 2, 3)]
    if not all(verify_share(s, ys[s.index - 1], signed.c1, 1) for s in shares):
        raise RuntimeError("a fresh decryption share does not verify")
    if combine(signed.c2, shares) != tracing_key(sk):
        raise RuntimeError("three shares do not open the signature to its signer")

    messages = [os.urandom(32) for _ in range(5)]
    header, ph = b"bench-header", b"bench-presentation-header"
    bbs_sig = bbs.SHA256.sign(isk, ipk, header, messages)
    proof = bbs.SHA256.proof_gen(ipk, bbs_sig, header, ph, messages, [1, 2, 3, 4])
    if not bbs.SHA256.proof_verify(ipk, proof, header, ph, messages[1:], [1, 2, 3, 4]):
        raise RuntimeError("a fresh BBS proof does not verify")

    ops = {
        SIGN: ("group sign", partial(sign, cred, sk, ipk, Y, message), BBS_GEN),
        VERIFY: (
            "group verify",
            partial(verify, sig, message, issuer_pk_for=issuer_pk_for, supervision_key=Y),
            BBS_VERIFY,
        ),
        SHARE: ("decryption share + DLEQ proof", partial(decryption_share, xs[0], 1, signed.c1, 1), PAIRING),
        VERIFY_SHARE: ("verify a share", partial(verify_share, shares[0], ys[0], signed.c1, 1), PAIRING),
        COMBINE: ("combine 3 shares", partial(combine, signed.c2, shares), PAIRING),
    }
    results = [
        Result.from_timing(
            PAIRING, "floor", "pairing_check (2 pairs)", measure(lambda: GT.pairing_check([g1, -g1], [g2, g2]), rounds)
        ),
        Result.from_timing(
            BBS_GEN,
            "BBS SHA-256, 5 msgs, 4 disclosed",
            "proof_gen",
            measure(partial(bbs.SHA256.proof_gen, ipk, bbs_sig, header, ph, messages, [1, 2, 3, 4]), rounds),
            peer=PAIRING,
        ),
        Result.from_timing(
            BBS_VERIFY,
            "BBS SHA-256, 5 msgs, 4 disclosed",
            "proof_verify",
            measure(partial(bbs.SHA256.proof_verify, ipk, proof, header, ph, messages[1:], [1, 2, 3, 4]), rounds),
            peer=PAIRING,
        ),
    ]
    for id, (operation, fn, peer) in ops.items():
        results.append(Result.from_timing(id, "group (BLS12-381)", operation, measure(fn, rounds), peer=peer))
    results.append(
        Result.from_timing(
            DKG,
            "DKG, n = 5, t = 3",
            "every party, every step",
            measure(partial(dkg.run_local, 5, 3), dkg_rounds, warmup=1),
            peer=PAIRING,
        )
    )
    with one_core() as pinned:
        if pinned:
            for id in (SIGN, VERIFY):
                operation, fn, peer = ops[id]
                results.append(
                    Result.from_timing(
                        f"{id}.1core",
                        "group (BLS12-381)",
                        f"{operation} (1 core)",
                        measure(fn, rounds),
                        peer=peer,
                        note="process pinned to one CPU",
                    )
                )
    results += [
        Result(id=BBS04_SIGN, case="BBS04 (published)", operation="sign", value=1.73, runs=0, note=PUBLISHED),
        Result(id=BBS04_VERIFY, case="BBS04 (published)", operation="verify", value=1.79, runs=0, note=PUBLISHED),
    ]
    return results


def targets(results: list[Result]) -> list[tuple[str, float, float, bool]]:
    """(id, measured ms, target ms, met) for every target of the issue present in `results`."""
    by_id = {r.id: r for r in results}
    return [(id, by_id[id].value, limit, by_id[id].value <= limit) for id, limit in TARGETS.items() if id in by_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    results = run(rounds=args.rounds)
    checked = targets(results)
    if args.json:
        print(
            json.dumps(
                {
                    "cpus": os.cpu_count(),
                    "results": [dataclasses.asdict(r) for r in results],
                    "targets": [{"id": i, "ms": v, "target_ms": t, "met": ok} for i, v, t, ok in checked],
                },
                indent=2,
            )
        )
        return
    print(f"cpus: {os.cpu_count()}")
    print_results(results)
    print()
    for id, value, limit, ok in checked:
        print(f"target {id:<24} {value:10.3f} ms  ≤ {limit:g} ms  {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
