"""The two ciphersuites of the draft (§7): BLS12-381-SHA-256 and BLS12-381-SHAKE-256.

A ciphersuite fixes the hash (through expand_message), the hash-to-curve suite
and the base point P1; every DST is derived from its ``api_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from py_arkworks_bls12381 import G1Point

from .hashing import (
    ExpandMessage,
    expand_message_xmd_sha256,
    expand_message_xof_shake256,
    hash_to_curve_g1,
)

EXPAND_LEN = 48  # ceil((ceil(log2(r)) + k) / 8) for k = 128


@dataclass(frozen=True)
class Ciphersuite:
    """Parameters of one BBS ciphersuite."""

    name: str
    ciphersuite_id: bytes
    expand_message: ExpandMessage
    hash_to_curve_g1: Callable[[bytes, bytes], G1Point]
    p1_octets: bytes

    @property
    def api_id(self) -> bytes:
        """api_id of the BBS interface with hash-to-scalar message mapping (§5)."""
        return self.ciphersuite_id + b"H2G_HM2S_"

    @property
    def P1(self) -> G1Point:
        return _P1[self.name]


def _sha256_hash_to_curve(msg: bytes, dst: bytes) -> G1Point:
    # The library implements BLS12381G1_XMD:SHA-256_SSWU_RO_ natively.
    return G1Point.hash_to_curve(msg, dst)


BLS12_381_SHA_256 = Ciphersuite(
    name="BLS12-381-SHA-256",
    ciphersuite_id=b"BBS_BLS12381G1_XMD:SHA-256_SSWU_RO_",
    expand_message=expand_message_xmd_sha256,
    hash_to_curve_g1=_sha256_hash_to_curve,
    p1_octets=bytes.fromhex(
        "a8ce256102840821a3e94ea9025e4662b205762f9776b3a766c872b948f1fd225e7c59698588e70d11406d161b4e28c9"
    ),
)

BLS12_381_SHAKE_256 = Ciphersuite(
    name="BLS12-381-SHAKE-256",
    ciphersuite_id=b"BBS_BLS12381G1_XOF:SHAKE-256_SSWU_RO_",
    expand_message=expand_message_xof_shake256,
    hash_to_curve_g1=partial(hash_to_curve_g1, expand=expand_message_xof_shake256),
    p1_octets=bytes.fromhex(
        "8929dfbc7e6642c4ed9cba0856e493f8b9d7d5fcb0c31ef8fdcd34d50648a56c795e106e9eada6e0bda386b414150755"
    ),
)

_P1 = {s.name: G1Point.from_compressed_bytes(s.p1_octets) for s in (BLS12_381_SHA_256, BLS12_381_SHAKE_256)}
