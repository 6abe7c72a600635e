"""Benchmark of auth.bbs: medians of sign, verify, proof_gen and proof_verify.

Runs both ciphersuites with 10 and 100 messages (3 and 10 disclosed) and, as
the peer measured in the same run, the bare pairing check of two pairings
that every verification needs: the ratio column is the cost in pairing checks.
proof_verify runs its pairing check on a worker thread (auth/bbs/parallel.py),
so the 10-message SHA-256 proof operations are also measured pinned to one core.

    .venv/bin/python scripts/bench/bench_bbs.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, measure, one_core, print_results
from py_arkworks_bls12381 import GT, G1Point, G2Point

from auth import bbs

TITLE = "BBS signatures (auth.bbs)"
ABOUT = (
    "Both ciphersuites of the CFRG BBS draft, with 10 messages (3 disclosed) and "
    "100 messages (10 disclosed); 32-byte random messages, a short header and "
    "presentation header. Peer: `GT.pairing_check` of two pairings "
    "(py_arkworks_bls12381), the floor of every verification — the ratio is the "
    "cost in pairing checks. proof_verify runs its pairing check on a worker "
    "thread, so the 10-message SHA-256 proof operations are repeated with the "
    "process pinned to one core."
)

PAIRING = "bbs.pairing_check"
SHAPES = ((10, 3), (100, 10))


def suite_key(suite: bbs.BBS) -> str:
    """ "sha256" / "shake256" for result ids."""
    return "sha256" if suite is bbs.SHA256 else "shake256"


def run(quick: bool = False, rounds: int | None = None) -> list[Result]:
    """Measure every operation; ``rounds`` timed calls each (fewer when ``quick``)."""
    rounds = rounds or (10 if quick else 100)
    g1, g2 = G1Point(), G2Point()
    results = [
        Result.from_timing(
            PAIRING,
            "peer",
            "pairing_check (2 pairings)",
            measure(lambda: GT.pairing_check([g1, -g1], [g2, g2]), rounds),
        )
    ]
    for suite in (bbs.SHA256, bbs.SHAKE256):
        sk = suite.keygen(os.urandom(32))
        pk = suite.sk_to_pk(sk)
        for count, shown in SHAPES:
            messages = [os.urandom(32) for _ in range(count)]
            header, ph = b"bench-header", b"bench-presentation-header"
            indexes = list(range(0, count, count // shown))[:shown]
            sig = suite.sign(sk, pk, header, messages)
            proof = suite.proof_gen(pk, sig, header, ph, messages, indexes)
            disclosed = [messages[i] for i in indexes]
            if not (
                suite.verify(pk, sig, header, messages)
                and suite.proof_verify(pk, proof, header, ph, disclosed, indexes)
            ):
                raise RuntimeError(f"{suite}: a fresh signature or proof did not verify")
            ops = {
                "sign": partial(suite.sign, sk, pk, header, messages),
                "verify": partial(suite.verify, pk, sig, header, messages),
                "proof_gen": partial(suite.proof_gen, pk, sig, header, ph, messages, indexes),
                "proof_verify": partial(suite.proof_verify, pk, proof, header, ph, disclosed, indexes),
            }
            case = f"{suite.suite.name}, {count} msgs, {shown} disclosed"
            prefix = f"bbs.{suite_key(suite)}.L{count}"
            for name, fn in ops.items():
                results.append(Result.from_timing(f"{prefix}.{name}", case, name, measure(fn, rounds), peer=PAIRING))
            if suite is bbs.SHA256 and count == 10:
                with one_core() as pinned:
                    if pinned:
                        for name in ("proof_gen", "proof_verify"):
                            results.append(
                                Result.from_timing(
                                    f"{prefix}.{name}.1core",
                                    case,
                                    f"{name} (1 core)",
                                    measure(ops[name], rounds),
                                    peer=PAIRING,
                                    note="process pinned to one CPU",
                                )
                            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}")
    print_results(run(rounds=args.rounds))


if __name__ == "__main__":
    main()
