"""Benchmark of auth.bbs: medians of sign, verify, proof_gen and proof_verify.

Runs both ciphersuites with 10 and 100 messages (3 and 10 disclosed) and, as
the peer measured in the same run, the bare pairing check of two pairings
that every verification needs: the ``x pairing`` column is the ratio to it.

    .venv/bin/python scripts/bench/bench_bbs.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from py_arkworks_bls12381 import G1Point, G2Point, GT  # noqa: E402

from auth import bbs  # noqa: E402


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm caches (generators, public key)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()

    g1, g2 = G1Point(), G2Point()
    peer = median_ms(lambda: GT.pairing_check([g1, -g1], [g2, g2]), args.rounds)
    print(f"peer: pairing_check of 2 pairings  {peer:7.3f} ms  (cpus: {os.cpu_count()})")
    print(f"{'suite':<22}{'L':>4}{'R':>4}  {'operation':<13}{'median ms':>10}{'x pairing':>11}")
    for suite in (bbs.SHA256, bbs.SHAKE256):
        sk = suite.keygen(os.urandom(32))
        pk = suite.sk_to_pk(sk)
        for count, shown in ((10, 3), (100, 10)):
            messages = [os.urandom(32) for _ in range(count)]
            header, ph = b"bench-header", b"bench-presentation-header"
            indexes = list(range(0, count, count // shown))[:shown]
            sig = suite.sign(sk, pk, header, messages)
            proof = suite.proof_gen(pk, sig, header, ph, messages, indexes)
            disclosed = [messages[i] for i in indexes]
            assert suite.verify(pk, sig, header, messages)
            assert suite.proof_verify(pk, proof, header, ph, disclosed, indexes)
            ops = {
                "sign": lambda: suite.sign(sk, pk, header, messages),
                "verify": lambda: suite.verify(pk, sig, header, messages),
                "proof_gen": lambda: suite.proof_gen(pk, sig, header, ph, messages, indexes),
                "proof_verify": lambda: suite.proof_verify(pk, proof, header, ph, disclosed, indexes),
            }
            for name, fn in ops.items():
                ms = median_ms(fn, args.rounds)
                print(f"{suite.suite.name:<22}{count:>4}{shown:>4}  {name:<13}{ms:>10.3f}{ms / peer:>11.2f}")


if __name__ == "__main__":
    main()
