"""Identifiers that cross the chain: centre ids and user ids are bytes32."""

from __future__ import annotations

import re

from eth_utils import keccak

_NAME = re.compile(r"[a-z0-9-]{1,32}")


class InvalidName(ValueError):
    """A centre name outside [a-z0-9-]{1,32}, or a bytes32 that is not one."""


def centre_id(name: str) -> bytes:
    """bytes32 id of a centre: its short name, utf-8, right-padded with zeros.

    Readable on chain and reversible, so events and errors name the centre directly.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName(f"centre name must match [a-z0-9-]{{1,32}}: {name!r}")
    return name.encode("ascii").ljust(32, b"\0")


def centre_name(b32: bytes) -> str:
    """Inverse of centre_id."""
    if not isinstance(b32, (bytes, bytearray)) or len(b32) != 32:
        raise InvalidName(f"centre id must be 32 bytes: {b32!r}")
    raw = bytes(b32).rstrip(b"\0")
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidName(f"centre id is not an ascii name: 0x{bytes(b32).hex()}") from None
    if not _NAME.fullmatch(name) or centre_id(name) != bytes(b32):
        raise InvalidName(f"centre id is not a valid centre name: 0x{bytes(b32).hex()}")
    return name


def user_id(principal: str) -> bytes:
    """bytes32 user field of usage records: keccak256 of the principal ("uid@home")."""
    if not isinstance(principal, str) or not principal:
        raise ValueError("principal must be a non-empty string")
    return keccak(text=principal)
