"""expand_message (RFC 9380 §5.3) and the hash-to-field / hash-to-curve glue.

The library's G1 ``hash_to_curve`` only knows the SHA-256 XMD suite, so the
SHAKE-256 suite is built here from ``expand_message_xof`` + ``hash_to_field`` +
the library's SSWU map (``map_from_fp_be``, which clears the cofactor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from py_arkworks_bls12381 import G1Point

# Base field modulus of BLS12-381.
P = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
# Security parameter k = 128 -> L = ceil((ceil(log2(p)) + k) / 8) = 64 (RFC 9380 §5).
FIELD_L = 64

ExpandMessage = Callable[[bytes, bytes, int], bytes]


def i2osp(value: int, length: int) -> bytes:
    """I2OSP of RFC 8017: big-endian, fixed length, refusing overflow."""
    if value < 0 or value >= 1 << (8 * length):
        raise ValueError(f"integer {value} does not fit in {length} octets")
    return value.to_bytes(length, "big")


def os2ip(octets: bytes) -> int:
    """OS2IP of RFC 8017."""
    return int.from_bytes(octets, "big")


def expand_message_xmd_sha256(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """expand_message_xmd with SHA-256 (RFC 9380 §5.3.1)."""
    b_in_bytes, s_in_bytes = 32, 64
    if len(dst) > 255:
        dst = hashlib.sha256(b"H2C-OVERSIZE-DST-" + dst).digest()
    ell = -(-len_in_bytes // b_in_bytes)
    if ell > 255 or len_in_bytes > 65535:
        raise ValueError("expand_message_xmd: requested output too long")
    dst_prime = dst + i2osp(len(dst), 1)
    msg_prime = bytes(s_in_bytes) + msg + i2osp(len_in_bytes, 2) + b"\x00" + dst_prime
    b0 = hashlib.sha256(msg_prime).digest()
    bi = hashlib.sha256(b0 + b"\x01" + dst_prime).digest()
    out = [bi]
    for i in range(2, ell + 1):
        bi = hashlib.sha256(bytes(x ^ y for x, y in zip(b0, bi, strict=True)) + i2osp(i, 1) + dst_prime).digest()
        out.append(bi)
    return b"".join(out)[:len_in_bytes]


def expand_message_xof_shake256(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """expand_message_xof with SHAKE-256 (RFC 9380 §5.3.2), k = 128."""
    if len(dst) > 255:
        # ceil(2 * k / 8) = 32 octets for k = 128.
        dst = hashlib.shake_256(b"H2C-OVERSIZE-DST-" + dst).digest(32)
    if len_in_bytes > 65535:
        raise ValueError("expand_message_xof: requested output too long")
    dst_prime = dst + i2osp(len(dst), 1)
    msg_prime = msg + i2osp(len_in_bytes, 2) + dst_prime
    return hashlib.shake_256(msg_prime).digest(len_in_bytes)


def hash_to_field_fp(msg: bytes, dst: bytes, count: int, expand: ExpandMessage) -> list[int]:
    """hash_to_field for Fp (m = 1), RFC 9380 §5.2."""
    uniform = expand(msg, dst, count * FIELD_L)
    return [os2ip(uniform[i * FIELD_L : (i + 1) * FIELD_L]) % P for i in range(count)]


def hash_to_curve_g1(msg: bytes, dst: bytes, expand: ExpandMessage) -> G1Point:
    """hash_to_curve (random-oracle variant) onto G1 for any expand_message.

    ``map_from_fp_be`` clears the cofactor of each mapped point; clearing is
    linear, so the sum equals RFC 9380's clear_cofactor(Q0 + Q1).
    """
    u0, u1 = hash_to_field_fp(msg, dst, 2, expand)
    return G1Point.map_from_fp_be(u0.to_bytes(48, "big")) + G1Point.map_from_fp_be(u1.to_bytes(48, "big"))
