"""Octet encodings of the draft (§4.2.4 serialize, §4.2.5–4.2.7 *_to_octets).

Every decoder here is strict: exact lengths, canonical scalars in [1, r),
points on the curve, in the subgroup and not the identity. The library accepts
the identity point when decompressing, so that check is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from py_arkworks_bls12381 import G1Point, G2Point, Scalar

from .errors import BBSError
from .hashing import i2osp, os2ip

# Order of the prime subgroups of BLS12-381.
R = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
OCTET_SCALAR_LENGTH = 32
OCTET_POINT_LENGTH = 48
OCTET_PUBKEY_LENGTH = 96
SIGNATURE_LENGTH = OCTET_POINT_LENGTH + OCTET_SCALAR_LENGTH

_G1_IDENTITY = G1Point.identity()
_G2_IDENTITY = G2Point.identity()

Serializable = Union[G1Point, "ScalarInt", int]


class ScalarInt(int):
    """An int meant as a scalar mod r (serialised on 32 octets, not 8).

    serialize() in the draft types its inputs; Python ints carry no type, so
    scalars are wrapped in this marker and plain ints are the 8-octet integers.
    """


def to_scalar(value: int) -> Scalar:
    """Library Scalar from an int in [0, r) (``Scalar(int)`` would reduce silently)."""
    return Scalar.from_be_bytes(value.to_bytes(OCTET_SCALAR_LENGTH, "big"))


def point_to_octets_E1(point: G1Point) -> bytes:
    """Compressed (ZCash) encoding of a G1 point, 48 octets."""
    return bytes(point.to_compressed_bytes())


def point_to_octets_E2(point: G2Point) -> bytes:
    """Compressed (ZCash) encoding of a G2 point, 96 octets."""
    return bytes(point.to_compressed_bytes())


def octets_to_point_E1(octets: bytes) -> G1Point:
    """Decode a G1 point; the identity and off-subgroup points are invalid."""
    if len(octets) != OCTET_POINT_LENGTH:
        raise BBSError(f"G1 point must be {OCTET_POINT_LENGTH} octets, got {len(octets)}")
    try:
        point = G1Point.from_compressed_bytes(bytes(octets))
    except (ValueError, TypeError) as exc:
        raise BBSError(f"not a G1 point: {exc}") from None
    if point == _G1_IDENTITY:
        raise BBSError("G1 point is the identity")
    return point


def octets_to_pubkey(pk: bytes) -> G2Point:
    """Decode a public key W (draft §4.2.7.3): a non-identity G2 subgroup point."""
    if len(pk) != OCTET_PUBKEY_LENGTH:
        raise BBSError(f"public key must be {OCTET_PUBKEY_LENGTH} octets, got {len(pk)}")
    try:
        point = G2Point.from_compressed_bytes(bytes(pk))
    except (ValueError, TypeError) as exc:
        raise BBSError(f"public key is not a G2 point: {exc}") from None
    if point == _G2_IDENTITY:
        raise BBSError("public key is the identity point")
    return point


def octets_to_scalar(octets: bytes) -> int:
    """Decode a 32-octet scalar that must lie in [1, r)."""
    value = os2ip(octets)
    if value == 0 or value >= R:
        raise BBSError("scalar out of range (must be in [1, r))")
    return value


def signature_to_octets(a: G1Point, e: int) -> bytes:
    """signature = A || e (draft §4.2.7.1)."""
    return point_to_octets_E1(a) + i2osp(e, OCTET_SCALAR_LENGTH)


def octets_to_signature(signature: bytes) -> tuple[G1Point, int]:
    """Decode (A, e) from 80 octets (draft §4.2.7.2)."""
    if len(signature) != SIGNATURE_LENGTH:
        raise BBSError(f"signature must be {SIGNATURE_LENGTH} octets, got {len(signature)}")
    a = octets_to_point_E1(signature[:OCTET_POINT_LENGTH])
    e = octets_to_scalar(signature[OCTET_POINT_LENGTH:])
    return a, e


def proof_to_octets(points: Sequence[G1Point], scalars: Sequence[int]) -> bytes:
    """proof = Abar || Bbar || D || e^ || r1^ || r3^ || m^_j... || c (draft §4.2.7.4)."""
    return b"".join(point_to_octets_E1(p) for p in points) + b"".join(i2osp(s, OCTET_SCALAR_LENGTH) for s in scalars)


def octets_to_proof(proof: bytes) -> tuple[G1Point, G1Point, G1Point, int, int, int, list[int], int]:
    """Decode (Abar, Bbar, D, e^, r1^, r3^, (m^_j...), c) (draft §4.2.7.5)."""
    head = 3 * OCTET_POINT_LENGTH
    floor = head + 4 * OCTET_SCALAR_LENGTH
    if len(proof) < floor:
        raise BBSError(f"proof must be at least {floor} octets, got {len(proof)}")
    if (len(proof) - head) % OCTET_SCALAR_LENGTH:
        raise BBSError("proof length is not 3 points plus a whole number of scalars")
    abar, bbar, d = (octets_to_point_E1(proof[i : i + OCTET_POINT_LENGTH]) for i in range(0, head, OCTET_POINT_LENGTH))
    scalars = [
        octets_to_scalar(proof[i : i + OCTET_SCALAR_LENGTH]) for i in range(head, len(proof), OCTET_SCALAR_LENGTH)
    ]
    e_hat, r1_hat, r3_hat, *commitments, c = scalars
    return abar, bbar, d, e_hat, r1_hat, r3_hat, commitments, c


def serialize(items: Sequence[Serializable]) -> bytes:
    """serialize() of draft §4.2.4.2: points compressed, scalars 32 octets, ints 8 octets."""
    out = []
    for item in items:
        if isinstance(item, G1Point):
            out.append(point_to_octets_E1(item))
        elif isinstance(item, ScalarInt):
            out.append(i2osp(item, OCTET_SCALAR_LENGTH))
        elif isinstance(item, int):
            out.append(i2osp(item, 8))
        else:
            raise TypeError(f"cannot serialize {type(item).__name__}")
    return b"".join(out)
