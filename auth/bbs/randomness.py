"""calculate_random_scalars (§4.2.1) and its deterministic test double (Appendix).

ProofGen takes the random-scalar function as a parameter so that the draft's
fixtures can be reproduced byte for byte with the seeded mock.
"""

from __future__ import annotations

import secrets
from typing import Callable

from .ciphersuite import EXPAND_LEN, Ciphersuite
from .encoding import R
from .hashing import os2ip

RandomScalars = Callable[[int], list[int]]

# The seed used by the draft's fixtures ("3.141592653589793238462643383279").
FIXTURE_SEED = b"3.141592653589793238462643383279"


def calculate_random_scalars(count: int) -> list[int]:
    """``count`` uniform scalars from the OS CSPRNG (48 octets each, reduced mod r)."""
    return [os2ip(secrets.token_bytes(EXPAND_LEN)) % R for _ in range(count)]


def mocked_calculate_random_scalars(suite: Ciphersuite, seed: bytes = FIXTURE_SEED,
                                    dst: bytes | None = None) -> RandomScalars:
    """Deterministic stand-in for calculate_random_scalars. FOR TESTS ONLY.

    Proofs made with it are linkable and leak the undisclosed messages to
    anyone who knows the seed.
    """
    dst = suite.api_id + b"MOCK_RANDOM_SCALARS_DST_" if dst is None else dst

    def mocked(count: int) -> list[int]:
        v = suite.expand_message(seed, dst, EXPAND_LEN * count)
        return [os2ip(v[i * EXPAND_LEN:(i + 1) * EXPAND_LEN]) % R for i in range(count)]

    return mocked
