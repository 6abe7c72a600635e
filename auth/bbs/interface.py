"""The public BBS interface (draft §3.4–3.5, "BBS_BLS12381G1_..._H2G_HM2S_").

Argument checking lives here: ``sign``/``proof_gen``/``keygen`` raise
``BBSError`` (a ValueError) with a message a caller can act on, while
``verify``/``proof_verify`` answer ``False`` for anything malformed and never
raise, because their inputs come from untrusted parties.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ciphersuite import Ciphersuite
from .core import BP2, CoreProofGen, CoreProofVerify, CoreSign, CoreVerify, cached_pubkey
from .encoding import OCTET_SCALAR_LENGTH, R, point_to_octets_E2, to_scalar
from .errors import BBSError
from .hashing import i2osp, os2ip
from .randomness import RandomScalars, calculate_random_scalars
from .utilities import hash_to_scalar, messages_to_scalars

_OCTETS = (bytes, bytearray, memoryview)


def _octets(name: str, value: object) -> bytes:
    if not isinstance(value, _OCTETS):
        raise BBSError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _messages(messages: object) -> list[bytes]:
    if isinstance(messages, _OCTETS) or not isinstance(messages, Sequence):
        raise BBSError("messages must be a list of bytes")
    return [_octets(f"messages[{i}]", m) for i, m in enumerate(messages)]


def _secret_key(sk: object) -> int:
    sk = _octets("secret key", sk)
    if len(sk) != OCTET_SCALAR_LENGTH:
        raise BBSError(f"secret key must be {OCTET_SCALAR_LENGTH} octets, got {len(sk)}")
    value = os2ip(sk)
    if not 0 < value < R:
        raise BBSError("secret key out of range (must be in [1, r))")
    return value


def _disclosed_indexes(indexes: object, L: int) -> list[int]:
    """Validate and sort disclosed indexes: integers in [0, L), each at most once."""
    if not isinstance(indexes, Sequence) or isinstance(indexes, (str, *_OCTETS)):
        raise BBSError("disclosed_indexes must be a list of integers")
    for i in indexes:
        if not isinstance(i, int) or isinstance(i, bool):
            raise BBSError(f"disclosed index {i!r} is not an integer")
        if not 0 <= i < L:
            raise BBSError(f"disclosed index {i} out of range for {L} messages")
    if len(set(indexes)) != len(indexes):
        raise BBSError("disclosed_indexes contains a repeated index")
    return sorted(indexes)


class BBS:
    """One ciphersuite's BBS operations on octet strings."""

    def __init__(self, suite: Ciphersuite) -> None:
        self.suite = suite
        self.api_id = suite.api_id

    def __repr__(self) -> str:
        return f"BBS({self.suite.name})"

    def keygen(self, key_material: bytes, key_info: bytes = b"", key_dst: bytes | None = None) -> bytes:
        """KeyGen (§3.4.1): derive SK from at least 32 octets of secret key material.

        ``key_dst`` defaults to ciphersuite_id || "KEYGEN_DST_" as the draft says
        (note: the draft's key-pair fixture passes api_id || "KEYGEN_DST_" explicitly).
        """
        key_material = _octets("key_material", key_material)
        key_info = _octets("key_info", key_info)
        key_dst = self.suite.ciphersuite_id + b"KEYGEN_DST_" if key_dst is None else _octets("key_dst", key_dst)
        if len(key_material) < 32:
            raise BBSError("key_material must be at least 32 octets")
        if len(key_info) > 65535:
            raise BBSError("key_info must be at most 65535 octets")
        derive_input = key_material + i2osp(len(key_info), 2) + key_info
        sk = hash_to_scalar(self.suite, derive_input, key_dst)
        if sk == 0:
            raise BBSError("derived secret key is zero; use other key material")
        return i2osp(sk, OCTET_SCALAR_LENGTH)

    def sk_to_pk(self, sk: bytes) -> bytes:
        """SkToPk (§3.4.2): W = BP2 * SK, compressed."""
        return point_to_octets_E2(BP2 * to_scalar(_secret_key(sk)))

    def sign(self, sk: bytes, pk: bytes, header: bytes, messages: list[bytes]) -> bytes:
        """Sign (§3.5.1). ``pk`` must be the public key of ``sk``; it is bound into the domain."""
        SK = _secret_key(sk)
        pk = _octets("public key", pk)
        cached_pubkey(pk)
        header = _octets("header", header)
        scalars = messages_to_scalars(self.suite, _messages(messages), self.api_id)
        return CoreSign(self.suite, SK, pk, header, scalars, self.api_id)

    def verify(self, pk: bytes, signature: bytes, header: bytes, messages: list[bytes]) -> bool:
        """Verify (§3.5.2). False for a wrong or malformed key, signature or message list."""
        try:
            pk, signature = _octets("public key", pk), _octets("signature", signature)
            header = _octets("header", header)
            scalars = messages_to_scalars(self.suite, _messages(messages), self.api_id)
            return CoreVerify(self.suite, pk, signature, header, scalars, self.api_id)
        except (ValueError, TypeError, OverflowError):
            return False

    def proof_gen(
        self,
        pk: bytes,
        signature: bytes,
        header: bytes,
        ph: bytes,
        messages: list[bytes],
        disclosed_indexes: list[int],
        *,
        random_scalars: RandomScalars | None = None,
    ) -> bytes:
        """ProofGen (§3.5.3): a zero-knowledge proof disclosing only ``disclosed_indexes``.

        ``random_scalars`` replaces calculate_random_scalars (the CSPRNG); it
        exists for reproducing the draft's fixtures and must not be used
        otherwise.
        """
        pk, signature = _octets("public key", pk), _octets("signature", signature)
        header, ph = _octets("header", header), _octets("presentation header", ph)
        msgs = _messages(messages)
        indexes = _disclosed_indexes(disclosed_indexes, len(msgs))
        scalars = messages_to_scalars(self.suite, msgs, self.api_id)
        rng = calculate_random_scalars if random_scalars is None else random_scalars
        return CoreProofGen(self.suite, pk, signature, header, ph, scalars, indexes, self.api_id, rng)

    def proof_verify(
        self,
        pk: bytes,
        proof: bytes,
        header: bytes,
        ph: bytes,
        disclosed_messages: list[bytes],
        disclosed_indexes: list[int],
    ) -> bool:
        """ProofVerify (§3.5.4). ``disclosed_messages[k]`` is the message at ``disclosed_indexes[k]``."""
        try:
            pk, proof = _octets("public key", pk), _octets("proof", proof)
            header, ph = _octets("header", header), _octets("presentation header", ph)
            msgs = _messages(disclosed_messages)
            if len(msgs) != len(disclosed_indexes):
                return False
            # Indexes are range-checked against L (known only from the proof) in CoreProofVerify.
            _disclosed_indexes(disclosed_indexes, 1 << 64)
            pairs = sorted(zip(disclosed_indexes, msgs, strict=True), key=lambda pair: pair[0])
            indexes = [i for i, _ in pairs]
            scalars = messages_to_scalars(self.suite, [m for _, m in pairs], self.api_id)
            return CoreProofVerify(self.suite, pk, proof, header, ph, scalars, indexes, self.api_id)
        except (ValueError, TypeError, OverflowError):
            return False
