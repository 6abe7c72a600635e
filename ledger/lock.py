"""The result lock: a job's outputs sealed under a fresh key k, released for a receipt.

The serving centre records lockHash = keccak256(k) in the usage record; the user
gets k for a signed receipt, or reads it from the chain if the centre had to reveal
it to keep its claim. AES-256-GCM with the lock hash as associated data binds a
sealed blob to the record's lock: a blob sealed under another key never opens.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils import keccak

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class LockError(ValueError):
    """A key that is not 32 bytes, or data that is not bytes."""


class WrongKey(LockError):
    """The blob does not open under this key: the wrong k, or a tampered blob."""


def _key(k: object) -> bytes:
    if not isinstance(k, (bytes, bytearray)) or len(k) != KEY_BYTES:
        raise LockError(f"a result key must be {KEY_BYTES} bytes, got {k!r:.80}")
    return bytes(k)


def _data(name: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise LockError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def new_key() -> bytes:
    """A fresh random key for one job's outputs."""
    return os.urandom(KEY_BYTES)


def lock_hash(k: bytes) -> bytes:
    """keccak256 of the raw 32-byte key: what the record names and the contract checks a reveal against."""
    return keccak(_key(k))


def seal(k: bytes, plaintext: bytes) -> bytes:
    """nonce (12 random bytes) ‖ AES-256-GCM(k, plaintext, aad = lock_hash(k)) with its 16-byte tag."""
    key = _key(k)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, _data("plaintext", plaintext), keccak(key))


def open_sealed(k: bytes, blob: bytes) -> bytes:
    """The plaintext of a sealed blob; WrongKey if `k` is not its key or the blob was altered."""
    key = _key(k)
    blob = _data("sealed blob", blob)
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise WrongKey(f"a sealed blob has at least {NONCE_BYTES + TAG_BYTES} bytes, got {len(blob)}")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], keccak(key))
    except InvalidTag:
        raise WrongKey("the result does not open under this key (wrong key, or the blob was altered)") from None
