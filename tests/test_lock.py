"""Result lock: AES-256-GCM under a fresh key, bound to the key's hash."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils import keccak

from ledger.lock import LockError, WrongKey, lock_hash, new_key, open_sealed, seal


def test_round_trip_and_fresh_keys():
    k = new_key()
    assert len(k) == 32 and new_key() != k
    blob = seal(k, b"stdout tail\n")
    assert open_sealed(k, blob) == b"stdout tail\n"
    assert seal(k, b"stdout tail\n") != blob  # a fresh nonce each time
    assert open_sealed(k, seal(k, b"")) == b""


def test_lock_hash_is_keccak_of_the_raw_key():
    k = bytes(range(32))
    assert lock_hash(k) == keccak(k)


def test_layout_is_nonce_then_aes_gcm_with_the_lock_hash_as_aad():
    k = new_key()
    blob = seal(k, b"payload")
    assert len(blob) == 12 + len(b"payload") + 16
    assert AESGCM(k).decrypt(blob[:12], blob[12:], lock_hash(k)) == b"payload"


def test_wrong_key_or_tampering_is_refused():
    k = new_key()
    blob = seal(k, b"result")
    with pytest.raises(WrongKey):
        open_sealed(new_key(), blob)
    flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    with pytest.raises(WrongKey):
        open_sealed(k, flipped)
    with pytest.raises(WrongKey):
        open_sealed(k, blob[:-1])
    with pytest.raises(WrongKey):
        open_sealed(k, blob[:11])  # shorter than a nonce and a tag


def test_sealed_without_the_lock_hash_as_aad_does_not_open():
    k = new_key()
    nonce = b"\x00" * 12
    with pytest.raises(WrongKey):
        open_sealed(k, nonce + AESGCM(k).encrypt(nonce, b"x", None))


@pytest.mark.parametrize("bad", [b"\x00" * 31, b"\x00" * 33, "00" * 32, None, bytearray(16)])
def test_bad_keys(bad):
    with pytest.raises(LockError):
        seal(bad, b"x")
    with pytest.raises(LockError):
        lock_hash(bad)
    with pytest.raises(LockError):
        open_sealed(bad, b"\x00" * 40)


def test_bad_plaintext_and_blob_types():
    with pytest.raises(LockError):
        seal(new_key(), "text")
    with pytest.raises(LockError):
        open_sealed(new_key(), "00" * 40)
