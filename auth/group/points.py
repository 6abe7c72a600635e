"""Encodings of G1 points and scalars as they cross the wire and the chain.

Three spellings of a G1 point: compressed (48 bytes, what is hashed into BBS
challenges), raw (96 bytes x‖y big-endian, what calldata carries) and chain
(128 bytes, EIP-2537's padded form: 16 zero bytes ‖ x ‖ 16 zero bytes ‖ y,
what the precompiles take and the DLEQ challenge hashes). The identity is all
zero bytes in raw and chain form, as EIP-2537 writes it.

Every decoder checks the length, that the point is on the curve and in the
prime-order subgroup (py_arkworks_bls12381 0.5.0's ``from_xy_bytes_be`` does
both, measured: ~60 µs, most of it the subgroup check; tests/test_group_credential.py
pins that an off-subgroup point is refused), and refuses the identity unless the caller says it is meaningful there.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import OCTET_SCALAR_LENGTH, R

from .errors import GroupError

RAW_LENGTH = 96
CHAIN_LENGTH = 128
FIELD_LENGTH = 48
_PAD = bytes(CHAIN_LENGTH // 2 - FIELD_LENGTH)  # 16 zero bytes before each coordinate
_IDENTITY = G1Point.identity()


def g1_raw(point: G1Point) -> bytes:
    """x‖y, 96 bytes big-endian; the identity is 96 zero bytes."""
    return bytes(point.to_xy_bytes_be())


def g1_from_raw(data: bytes, *, what: str = "point", allow_identity: bool = False) -> G1Point:
    """The G1 point of a raw encoding; GroupError naming `what` unless it is a subgroup point.

    The identity (96 zero bytes) is refused unless ``allow_identity``: every
    point of this package (C1, C2, D_i, T, Y, E_i, K, commitments) is meaningless as the identity.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GroupError(f"{what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) != RAW_LENGTH:
        raise GroupError(f"{what} must be {RAW_LENGTH} bytes (x‖y), got {len(data)}")
    try:
        point = G1Point.from_xy_bytes_be(data)
    except (ValueError, TypeError, OverflowError):
        raise GroupError(
            f"{what} is not a point of G1 (off the curve, outside the subgroup or not canonical)"
        ) from None
    if point == _IDENTITY and not allow_identity:
        raise GroupError(f"{what} is the identity point")
    return point


def g1_chain(point: G1Point) -> bytes:
    """EIP-2537 encoding, 128 bytes: 16 zero bytes ‖ x ‖ 16 zero bytes ‖ y (identity: all zero)."""
    raw = g1_raw(point)
    return _PAD + raw[:FIELD_LENGTH] + _PAD + raw[FIELD_LENGTH:]


def g1_from_chain(data: bytes, *, what: str = "point", allow_identity: bool = False) -> G1Point:
    """The G1 point of an EIP-2537 encoding (padding must be zero), checked as g1_from_raw."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GroupError(f"{what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) != CHAIN_LENGTH:
        raise GroupError(f"{what} must be {CHAIN_LENGTH} bytes (EIP-2537), got {len(data)}")
    half = CHAIN_LENGTH // 2
    if data[: len(_PAD)] != _PAD or data[half : half + len(_PAD)] != _PAD:
        raise GroupError(f"{what}: the 16 padding bytes before each coordinate must be zero")
    raw = data[len(_PAD) : half] + data[half + len(_PAD) :]
    return g1_from_raw(raw, what=what, allow_identity=allow_identity)


def scalar32(x: int) -> bytes:
    """A scalar mod r as 32 bytes big-endian (Solidity's uint256)."""
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < R:
        raise GroupError(f"a scalar must be an integer in [0, r), got {x!r:.80}")
    return x.to_bytes(OCTET_SCALAR_LENGTH, "big")


def uint256(x: int) -> bytes:
    """An unsigned integer as Solidity's 32-byte uint256 (abi.encodePacked)."""
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < 1 << 256:
        raise GroupError(f"{x!r:.80} is not a uint256")
    return x.to_bytes(32, "big")


def random_scalar() -> int:
    """A uniform scalar in [1, r) from the OS CSPRNG."""
    return secrets.randbelow(R - 1) + 1


def lagrange_at_zero(indexes: Sequence[int]) -> list[int]:
    """Lagrange coefficients λ_i = Π_{j≠i} j / (j − i) mod r, interpolating at 0 over `indexes`.

    The indexes are the x-coordinates of the shares (1..n); they must be
    distinct and in [1, r), else the interpolation is undefined.
    """
    xs = list(indexes)
    for i in xs:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 < i < R:
            raise GroupError(f"a share index must be an integer in [1, r), got {i!r:.40}")
    if len(set(xs)) != len(xs):
        raise GroupError("a share index is repeated")
    out = []
    for i in xs:
        num, den = 1, 1
        for j in xs:
            if j != i:
                num = num * j % R
                den = den * (j - i) % R
        out.append(num * pow(den, -1, R) % R)
    return out
