"""calculate_random_scalars (§4.2.1).

ProofGen takes the random-scalar function as a parameter, so that the tests can
reproduce the draft's fixtures byte for byte with its seeded generator (which
lives with the tests: it makes proofs linkable). A caller that must know the
blindings may draw them itself, fresh from this CSPRNG, and pass them in:
auth/group/signature.py does, because its encryption proof reuses the
blinding of the hidden sk. Fixed or reused scalars leak the hidden messages.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .ciphersuite import EXPAND_LEN
from .encoding import R
from .hashing import os2ip

RandomScalars = Callable[[int], list[int]]


def calculate_random_scalars(count: int) -> list[int]:
    """``count`` uniform scalars from the OS CSPRNG (48 octets each, reduced mod r)."""
    return [os2ip(secrets.token_bytes(EXPAND_LEN)) % R for _ in range(count)]
