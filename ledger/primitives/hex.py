"""Bytes as text: `0x`-prefixed lowercase hex out, strict hex in.

Chain values (bytes32 ids, roots, keys, signatures) cross JSON, TOML and SQLite
as hex. `to_hex` is the one spelling written; `from_hex` reads it back, and is
strict where `bytes.fromhex` is not: no spaces between digits, an even number
of digits, an optional `0x`.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"(?:[0-9a-fA-F]{2})*")


class HexError(ValueError):
    """Text that is not hex of the expected length; the message names what it was meant to be."""


def to_hex(data: bytes | bytearray | memoryview) -> str:
    """`0x` and two lowercase hex digits per byte."""
    return "0x" + bytes(data).hex()


def from_hex(text: object, *, size: int | None = None, what: str = "value") -> bytes:
    """The bytes `text` spells as hex (with or without `0x`); exactly `size` of them when given.

    Raises HexError naming `what` for anything else: not a string, an odd
    number of digits, a character that is not a hex digit, or the wrong length.
    """
    if not isinstance(text, str):
        raise HexError(f"{what} must be a hex string, got {type(text).__name__}")
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if not _DIGITS.fullmatch(digits):
        raise HexError(f"{what} is not hex (an even number of 0-9a-f digits, optionally after 0x): {text!r:.80}")
    raw = bytes.fromhex(digits)
    if size is not None and len(raw) != size:
        raise HexError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def bytes32(value: object, what: str = "value") -> bytes:
    """A bytes32 given as 32 bytes or as their hex; HexError for anything else."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise HexError(f"{what} must be 32 bytes, got {len(value)}")
        return bytes(value)
    return from_hex(value, size=32, what=what)
