"""keccak256 without eth_hash's dispatch: the audit of a large epoch hashes millions of times.

eth_utils.keccak goes through eth_hash's backend lookup and input checks on every call
(≈ 7 µs for a record's 640 bytes here); the C hasher called directly costs a third of
that. safe-pysha3's keccak_256 is used when installed, else pycryptodome's (a declared
dependency through eth-hash[pycryptodome]); both are the original Keccak-256 of Ethereum,
not NIST SHA3-256.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BACKEND", "keccak256", "new"]


def _pick() -> tuple[str, Callable[[bytes], Any]]:
    try:
        from sha3 import keccak_256  # type: ignore[import-untyped]  # safe-pysha3 ships no type information
    except ImportError:
        from Crypto.Hash import keccak as _cd

        def cryptodome(data: bytes) -> Any:
            return _cd.new(digest_bits=256, data=data)

        return "pycryptodome", cryptodome
    return "safe-pysha3", keccak_256


BACKEND, new = _pick()
"""Which library hashes, and new(data): a hash object whose .digest() is keccak256(data) (for hot loops)."""


def keccak256(data: bytes) -> bytes:
    """keccak256(data), 32 bytes."""
    digest: bytes = new(data).digest()
    return digest
