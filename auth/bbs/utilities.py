"""Hashing utilities of the draft (§4.1–4.2): hash_to_scalar, messages_to_scalars,
calculate_domain."""

from __future__ import annotations

from collections.abc import Sequence

from .ciphersuite import EXPAND_LEN, Ciphersuite
from .encoding import R
from .errors import BBSError
from .generators import generator_octets
from .hashing import i2osp, os2ip


def hash_to_scalar(suite: Ciphersuite, msg_octets: bytes, dst: bytes) -> int:
    """hash_to_scalar (§4.2.1): expand to 48 octets, reduce mod r."""
    if len(dst) > 255:
        raise BBSError("hash_to_scalar: dst longer than 255 octets")
    return os2ip(suite.expand_message(msg_octets, dst, EXPAND_LEN)) % R


def messages_to_scalars(suite: Ciphersuite, messages: Sequence[bytes], api_id: bytes) -> list[int]:
    """messages_to_scalars (§4.1.2) with map_to_scalar = hash_to_scalar."""
    map_dst = api_id + b"MAP_MSG_TO_SCALAR_AS_HASH_"
    out = []
    for msg in messages:
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            raise BBSError(f"messages must be bytes, got {type(msg).__name__}")
        out.append(hash_to_scalar(suite, bytes(msg), map_dst))
    return out


def calculate_domain(suite: Ciphersuite, pk: bytes, L: int, header: bytes, api_id: bytes) -> int:
    """calculate_domain (§4.2.3): binds PK, the generators Q_1, H_1..H_L and the header.

    Takes the message count L instead of the generator points: the generators
    are fixed per suite, so their octets come from the memoised sequence.
    """
    if len(header) >= 1 << 64:
        raise BBSError("header too long")
    dom_octs = i2osp(L, 8) + b"".join(generator_octets(suite, L + 1, api_id)) + api_id
    dom_input = pk + dom_octs + i2osp(len(header), 8) + header
    return hash_to_scalar(suite, dom_input, api_id + b"H2S_")
