"""Input checks the store runs before it writes: each raises StoreError with a message a person can act on."""

from __future__ import annotations

from typing import Any

from gateway.store.errors import StoreError
from ledger.primitives.canonical import CanonicalError
from ledger.primitives.canonical import canonical_json as _canonical
from ledger.primitives.hex import HexError, bytes32, from_hex


def canonical_json(name: str, value: Any) -> str:
    """The JSON the store writes, in the project's one spelling (primitives.canonical).

    Stored text is compared by value, never byte for byte (see jobs.same_request):
    job requests were once written with non-ASCII unescaped.
    """
    try:
        return _canonical(value)
    except CanonicalError as exc:
        raise StoreError(f"{name} is not JSON-serialisable: {exc}") from None


def as_int(value: Any) -> int | None:
    """An int, or a decimal/0x string of one; None for anything else (bool included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StoreError(f"{name} must be an int >= 1, got {value!r}")
    return value


def natural(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreError(f"{name} must be a non-negative int, got {value!r}")
    return value


def text(name: str, value: Any, *, optional: bool = False, max_len: int | None = None) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise StoreError(f"{name} must be a non-empty string, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise StoreError(f"{name} is longer than {max_len} characters")
    return value


def optional_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise StoreError(f"{name} must be a string or None, got {type(value).__name__}")
    return value


def optional_int(name: str, value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise StoreError(f"{name} must be an int or None, got {value!r}")
    return value


def raw_bytes(name: str, value: Any) -> bytes:
    """Non-empty bytes, given as bytes or hex (with or without 0x)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = from_hex(value, what=name)
        except HexError as exc:
            raise StoreError(str(exc)) from None
    else:
        raise StoreError(f"{name} must be bytes or their hex, got {type(value).__name__}")
    if not raw:
        raise StoreError(f"{name} must not be empty")
    return raw


def hex32(name: str, value: Any) -> str:
    """32 bytes (given as bytes or hex) as lowercase hex without 0x: the store's one spelling."""
    if not isinstance(value, (bytes, bytearray, str)):
        raise StoreError(f"{name} must be bytes or their hex, got {type(value).__name__}")
    try:
        return bytes32(value, what=name).hex()
    except HexError as exc:
        raise StoreError(str(exc)) from None


MAX_GROUP_SIGNATURE = 4096
"""The longest group signature a job or hold keeps (auth.group.signature.MAX_LENGTH)."""


def group_signature(value: Any) -> bytes | None:
    """The group signature an anonymous job or hold was accepted under (bytes), or None for a signed-on one."""
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray)) or not 1 <= len(value) <= MAX_GROUP_SIGNATURE:
        raise StoreError(f"group_signature must be 1 to {MAX_GROUP_SIGNATURE} bytes, got {value!r:.40}")
    return bytes(value)
