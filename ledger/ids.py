"""Identifiers that cross the chain: centre ids and user ids are bytes32."""

from __future__ import annotations

from eth_utils import keccak

from ledger.primitives.hex import to_hex
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name


class InvalidName(ValueError):
    """A centre name outside [a-z0-9-]{1,32} (primitives.names), or a bytes32 that is not one."""


def centre_id(name: str) -> bytes:
    """bytes32 id of a centre: its short name, utf-8, right-padded with zeros.

    Readable on chain and reversible, so events and errors name the centre directly.
    """
    if not is_centre_name(name):
        raise InvalidName(f"centre name must match {CENTRE_NAME_RULE}: {name!r}")
    return name.encode("ascii").ljust(32, b"\0")


def centre_name(b32: bytes) -> str:
    """Inverse of centre_id."""
    if not isinstance(b32, (bytes, bytearray)) or len(b32) != 32:
        raise InvalidName(f"centre id must be 32 bytes: {b32!r}")
    raw = bytes(b32).rstrip(b"\0")
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidName(f"centre id is not an ascii name: {to_hex(b32)}") from None
    if not is_centre_name(name) or centre_id(name) != bytes(b32):
        raise InvalidName(f"centre id is not a valid centre name: {to_hex(b32)}")
    return name


def user_id(principal: str) -> bytes:
    """bytes32 user field of usage records: keccak256 of the principal ("uid@home")."""
    if not isinstance(principal, str) or not principal:
        raise ValueError("principal must be a non-empty string")
    return keccak(text=principal)
