"""Group signatures (auth.group.signature): a signature verifies for its message only, shows its
disclosed fields and nothing else, and the issuer cannot make one that opens to its member."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from eth_hash.auto import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import R, to_scalar
from auth.credentials import generate_issuer_key, key_id
from auth.group import (
    GroupCredential,
    GroupError,
    blind_sign,
    ciphertext,
    g1_raw,
    issue_group_credential,
    join_request,
    new_member_secret,
    order_message,
    parse,
    quote_message,
    sign,
    signature_hash,
    tracing_key,
    verify,
)
from auth.group.credential import h_sk
from auth.group.signature import JSON_AT, PROOF_LENGTH

G = G1Point()
HOME, PROJECT = "hpc-a", "astro"
X = 0x1234567890ABCDEF1234567890ABCDEF  # the supervisors' joint secret (one party here)
Y = G * to_scalar(X)
MESSAGE = order_message(bytes(range(32)))
Member = tuple[int, GroupCredential]
IssuerKeys = Callable[[str, str], bytes | None]


def decrypt(sig: bytes) -> G1Point:
    """What t supervisors together compute: C2 − x·C1."""
    c1, c2 = ciphertext(sig)
    return c2 + (-(c1 * to_scalar(X)))


@pytest.fixture(scope="module")
def issuer() -> tuple[bytes, bytes]:
    return generate_issuer_key(b"group-signature-issuer".ljust(32, b"."))


@pytest.fixture(scope="module")
def alice(issuer: tuple[bytes, bytes]) -> Member:
    sk = new_member_secret()
    req = join_request(sk, home=HOME, project=PROJECT, member="alice")
    return sk, issue_group_credential(*issuer, req, home=HOME, member="alice", revocation_epoch=2, expires_at=2**40)


@pytest.fixture(scope="module")
def keys(issuer: tuple[bytes, bytes]) -> IssuerKeys:
    table = {(HOME, key_id(issuer[1])): issuer[1]}
    return lambda home, kid: table.get((home, kid))


@pytest.fixture(scope="module")
def signature(issuer: tuple[bytes, bytes], alice: Member) -> bytes:
    sk, cred = alice
    return sign(cred, sk, issuer[1], Y, MESSAGE)


def test_a_signature_verifies_and_shows_only_its_fields(signature: bytes, keys: IssuerKeys, alice: Member) -> None:
    signed = verify(signature, MESSAGE, issuer_pk_for=keys, supervision_key=Y)
    cred = alice[1]
    assert (signed.project, signed.home, signed.key_id) == (PROJECT, HOME, cred.key_id)
    assert (signed.revocation_epoch, signed.expires_at) == (2, cred.expires_at)
    assert signed.hash == signature_hash(signature) == keccak(signature)
    assert parse(signature) == signed
    # the layout the Supervision contract relies on
    assert signature[0] == 1 and signature[1:9] == bytes.fromhex(cred.key_id)
    assert signature[9:105] == g1_raw(signed.c1) and signature[105:201] == g1_raw(signed.c2)
    assert len(signature) <= 4096
    length = int.from_bytes(signature[233:235], "big")
    assert json.loads(signature[235 : 235 + length]) == {
        "expires_at": cred.expires_at,
        "home": HOME,
        "project": PROJECT,
        "revocation_epoch": 2,
    }
    assert len(signature) == JSON_AT + length + PROOF_LENGTH


def test_the_ciphertext_opens_to_the_signers_tracing_key(signature: bytes, alice: Member) -> None:
    assert decrypt(signature) == tracing_key(alice[0])


def test_a_signature_is_for_its_message_only(signature: bytes, keys: IssuerKeys) -> None:
    for other in (
        order_message(bytes(31) + b"\x01"),
        quote_message(bytes(range(32))),
        MESSAGE + b"\x00",
        MESSAGE[:-1],
        b"",
    ):
        with pytest.raises(GroupError, match="does not verify for this message"):
            verify(signature, other, issuer_pk_for=keys, supervision_key=Y)


def test_a_signature_under_another_supervision_key_is_refused(signature: bytes, keys: IssuerKeys) -> None:
    with pytest.raises(GroupError, match="does not verify"):
        verify(signature, MESSAGE, issuer_pk_for=keys, supervision_key=G * to_scalar(X + 1))
    with pytest.raises(GroupError, match="supervision key"):
        verify(signature, MESSAGE, issuer_pk_for=keys, supervision_key=G1Point.identity())


def test_unknown_or_wrong_issuer_key(signature: bytes, issuer: tuple[bytes, bytes]) -> None:
    kid = key_id(issuer[1])
    with pytest.raises(GroupError, match=f"unknown issuer key {kid} of {HOME}"):
        verify(signature, MESSAGE, issuer_pk_for=lambda h, k: None, supervision_key=Y)
    other = generate_issuer_key(b"o" * 32)[1]
    for wrong in (other, b"\x01" * 96, b"short"):
        with pytest.raises(GroupError):
            verify(signature, MESSAGE, issuer_pk_for=lambda h, k, w=wrong: w, supervision_key=Y)


def _regions() -> dict[str, tuple[int, int]]:
    return {"key_id": (1, 9), "C1": (9, 105), "C2": (105, 201), "r_hat": (201, 233)}


@pytest.mark.parametrize("region", ["key_id", "C1", "C2", "r_hat", "proof"])
def test_tampered_bytes_are_refused(signature: bytes, keys: IssuerKeys, region: str) -> None:
    start, end = _regions()[region] if region != "proof" else (len(signature) - PROOF_LENGTH, len(signature))
    rng = random.Random(region)
    for _ in range(6):
        bad = bytearray(signature)
        bad[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
        with pytest.raises(GroupError):
            verify(bytes(bad), MESSAGE, issuer_pk_for=keys, supervision_key=Y)


@pytest.mark.parametrize(
    "field, value",
    [("project", "astrx"), ("home", "hpc-b"), ("revocation_epoch", 3), ("expires_at", 2**40 + 3600)],
)
def test_a_changed_disclosed_field_is_refused(
    signature: bytes, issuer: tuple[bytes, bytes], field: str, value: object
) -> None:
    signed = parse(signature)
    fields = {
        "expires_at": signed.expires_at,
        "home": signed.home,
        "project": signed.project,
        "revocation_epoch": signed.revocation_epoch,
        field: value,
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    bad = signature[:233] + len(text).to_bytes(2, "big") + text + signature[-PROOF_LENGTH:]
    assert parse(bad).__getattribute__(field) == value
    with pytest.raises(GroupError, match="does not verify for this message"):
        verify(bad, MESSAGE, issuer_pk_for=lambda h, k: issuer[1], supervision_key=Y)


def test_two_signatures_by_one_member_share_nothing_beyond_the_disclosed_fields(
    issuer: tuple[bytes, bytes], alice: Member, keys: IssuerKeys
) -> None:
    sk, cred = alice
    a, b = (sign(cred, sk, issuer[1], Y, MESSAGE) for _ in range(2))
    for sig in (a, b):
        verify(sig, MESSAGE, issuer_pk_for=keys, supervision_key=Y)
    head = JSON_AT + int.from_bytes(a[233:235], "big")
    assert a[:9] == b[:9] and a[233:head] == b[233:head]  # version, key id, disclosed fields
    assert a[9:105] != b[9:105] and a[105:201] != b[105:201] and a[201:233] != b[201:233]
    proof_a, proof_b = a[head:], b[head:]
    parts = [(0, 48), (48, 96), (96, 144), *((144 + 32 * k, 176 + 32 * k) for k in range(5))]
    for start, end in parts:  # Abar, Bbar, D, e^, r1^, r3^, m^_0, c: every one fresh
        assert proof_a[start:end] != proof_b[start:end]
    # and the signer's tracing key appears in neither, in any encoding
    T = tracing_key(sk)
    for encoding in (bytes(T.to_compressed_bytes()), g1_raw(T)):
        for sig in (a, b):
            for k in range(0, len(encoding) - 16):
                assert encoding[k : k + 16] not in sig


def test_the_issuer_cannot_make_a_signature_that_opens_to_its_member(
    issuer: tuple[bytes, bytes], alice: Member, keys: IssuerKeys
) -> None:
    isk, ipk = issuer
    alice_sk, alice_cred = alice
    T = tracing_key(alice_sk)
    # The issuer knows its key and alice's T, not her sk. It can make itself a credential over a
    # T' of its own choosing (here with a secret sk' it picks): its signatures are valid ...
    sk_forger = new_member_secret()
    forged = blind_sign(
        isk,
        ipk,
        tracing_key(sk_forger),
        project=PROJECT,
        home=HOME,
        revocation_epoch=alice_cred.revocation_epoch,
        expires_at=alice_cred.expires_at,
    )
    forged_cred = GroupCredential(PROJECT, HOME, alice_cred.key_id, 2, alice_cred.expires_at, forged)
    sig = sign(forged_cred, sk_forger, ipk, Y, MESSAGE)
    verify(sig, MESSAGE, issuer_pk_for=keys, supervision_key=Y)
    # ... but they open to T', never to alice's T.
    assert decrypt(sig) == tracing_key(sk_forger) != T
    # With alice's own credential (over her T) and any secret but hers, nothing verifies.
    for guess in (sk_forger, new_member_secret(), (alice_sk + 1) % R):
        with pytest.raises(GroupError, match="does not verify"):
            verify(sign(alice_cred, guess, ipk, Y, MESSAGE), MESSAGE, issuer_pk_for=keys, supervision_key=Y)
    # Nor does splicing an encryption of alice's T into the forger's valid signature.
    r = 12345
    c1, c2 = G * to_scalar(r), T + Y * to_scalar(r)
    spliced = sig[:9] + g1_raw(c1) + g1_raw(c2) + sig[201:]
    with pytest.raises(GroupError, match="does not verify"):
        verify(spliced, MESSAGE, issuer_pk_for=keys, supervision_key=Y)


def test_a_signature_encrypting_another_key_than_the_credentials_is_refused(
    issuer: tuple[bytes, bytes], alice: Member, keys: IssuerKeys
) -> None:
    """C2 must encrypt the T inside the credential: an honest proof over a swapped C2 fails."""
    sk, cred = alice
    sig = sign(cred, sk, issuer[1], Y, MESSAGE)
    _, c2 = ciphertext(sig)
    shifted = c2 + h_sk()  # encrypts T + H_sk = (sk + 1)·H_sk
    bad = sig[:105] + g1_raw(shifted) + sig[201:]
    with pytest.raises(GroupError, match="does not verify"):
        verify(bad, MESSAGE, issuer_pk_for=keys, supervision_key=Y)


def test_sign_refuses_bad_arguments(issuer: tuple[bytes, bytes], alice: Member) -> None:
    sk, cred = alice
    other_pk = generate_issuer_key(b"p" * 32)[1]
    with pytest.raises(GroupError, match="not the credential's key"):
        sign(cred, sk, other_pk, Y, MESSAGE)
    with pytest.raises(GroupError, match="supervision key"):
        sign(cred, sk, issuer[1], G1Point.identity(), MESSAGE)
    with pytest.raises(GroupError, match="bytes"):
        sign(cred, sk, issuer[1], Y, "text")  # type: ignore[arg-type]
    with pytest.raises(GroupError, match="member secret"):
        sign(cred, 0, issuer[1], Y, MESSAGE)
    with pytest.raises(GroupError):
        order_message(b"short")


# --- malformed input: only GroupError, always --------------------------------------------------


def _variants(sig: bytes) -> list[tuple[str, object]]:
    length = int.from_bytes(sig[233:235], "big")
    text = sig[235 : 235 + length]
    proof = sig[235 + length :]
    fields = json.loads(text)

    def with_text(t: bytes) -> bytes:
        return sig[:233] + len(t).to_bytes(2, "big") + t + proof

    def with_fields(**change: object) -> bytes:
        f = dict(fields, **change)
        return with_text(json.dumps(f, sort_keys=True, separators=(",", ":")).encode())

    rng = random.Random(7)
    out: list[tuple[str, object]] = [(f"truncated-{n}", sig[:n]) for n in (0, 1, 9, 105, 200, 235, len(sig) - 1)]
    out += [
        (f"flip-{k}", bytes(b ^ (1 << rng.randrange(8)) if i == k else b for i, b in enumerate(sig)))
        for k in rng.sample(range(len(sig)), 40)
    ]
    out += [
        ("extended", sig + b"\x00"),
        ("too-long", sig + bytes(5000)),
        ("version-0", b"\x00" + sig[1:]),
        ("version-2", b"\x02" + sig[1:]),
        ("huge-length", sig[:233] + b"\xff\xff" + sig[235:]),
        ("zero-length", sig[:233] + b"\x00\x00" + sig[235:]),
        ("not-json", with_text(b"{" * len(text))),
        ("json-list", with_text(b"[1,2]")),
        ("deep-json", with_text(b"[" * 3000)),
        ("non-ascii", with_text(b"\xff\xfe" * 10)),
        ("extra-key", with_fields(extra=1)),
        ("missing-key", with_text(json.dumps({k: v for k, v in fields.items() if k != "home"}).encode())),
        ("epoch-text", with_fields(revocation_epoch="2")),
        ("epoch-float", with_fields(revocation_epoch=2.0)),
        ("epoch-bool", with_fields(revocation_epoch=True)),
        ("epoch-negative", with_fields(revocation_epoch=-1)),
        ("epoch-huge", with_fields(revocation_epoch=10**30)),
        ("expiry-null", with_fields(expires_at=None)),
        ("home-not-a-name", with_fields(home="HPC A")),
        ("project-int", with_fields(project=7)),
        ("not-canonical", with_text(json.dumps(fields).encode())),
        ("C1-identity", sig[:9] + bytes(96) + sig[105:]),
        ("C2-zero-x", sig[:105] + bytes(95) + b"\x01" + sig[201:]),
        ("r-hat-too-big", sig[:201] + b"\xff" * 32 + sig[233:]),
        ("proof-zero-c", sig[:-32] + bytes(32)),
        ("proof-short", sig[:-32]),
        ("proof-identity-abar", sig[: 235 + length] + bytes([0xC0]) + bytes(47) + proof[48:]),
        ("text", sig.hex()),
        ("none", None),
        ("int", 5),
    ]
    return out


def test_malformed_signatures_raise_group_error_only(signature: bytes, keys: IssuerKeys) -> None:
    for name, bad in _variants(signature):
        with pytest.raises(GroupError) as caught:
            verify(bad, MESSAGE, issuer_pk_for=keys, supervision_key=Y)  # type: ignore[arg-type]
        assert type(caught.value) is GroupError, name
        if name.startswith(("truncated", "extended", "too-long", "version", "huge", "not-json", "extra", "epoch")):
            assert "malformed group signature" in str(caught.value), name


def test_verify_refuses_a_message_that_is_not_bytes(signature: bytes, keys: IssuerKeys) -> None:
    for message in ("text", None, 5):
        with pytest.raises(GroupError, match="bytes"):
            verify(signature, message, issuer_pk_for=keys, supervision_key=Y)  # type: ignore[arg-type]


def test_parse_and_ciphertext_do_not_verify_but_check_encodings(signature: bytes) -> None:
    c1, c2 = ciphertext(signature)
    assert g1_raw(c1) == signature[9:105] and g1_raw(c2) == signature[105:201]
    with pytest.raises(GroupError, match="malformed"):
        ciphertext(signature[:9] + bytes(96) + signature[105:])
