"""SSO tokens: issued by a home centre, checked by any member against the registered key."""

from __future__ import annotations

import base64
import json
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from joserfc import jws
from joserfc.jwk import OctKey, OKPKey

from auth.tokens import (
    Claims,
    TokenError,
    TokenIssuer,
    generate_key,
    load_private_key,
    public_key_bytes,
    save_private_key,
    verify_token,
)

NOW = 1_700_000_000
KEY_A = generate_key()
KEY_B = generate_key()
ISSUER = TokenIssuer("hpc-a", KEY_A, ttl=900)
REGISTRY = {"hpc-a": public_key_bytes(KEY_A), "hpc-b": public_key_bytes(KEY_B)}
ATTRS = {"department": "physics", "employeeType": "staff", "groups": ["gpu-users"]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _sign(header: dict, claims: dict, key=KEY_A) -> str:
    return jws.serialize_compact(header, json.dumps(claims), OKPKey.import_key(key), algorithms=[header["alg"]])


def _raw_sign(header: dict, claims: dict, key=KEY_A) -> str:
    """Sign without joserfc's checks, to build tokens a careful library would not."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def _claims(**overrides) -> dict:
    base = {
        "iss": "hpc-a",
        "aud": "hpc-a",
        "sub": "alice@hpc-a",
        "home": "hpc-a",
        "attrs": {},
        "iat": NOW,
        "exp": NOW + 900,
        "jti": "j1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def _audience(token: str) -> str:
    """The centre a test token is meant for: tests of other properties present it there."""
    try:
        return json.loads(_unb64(token.split(".")[1]))["aud"]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):  # a malformed token: any centre refuses it
        return "hpc-a"


def _refused(token, now=NOW + 10, key_for=REGISTRY.get, audience=None, **kw) -> TokenError:
    with pytest.raises(TokenError) as err:
        verify_token(token, key_for, now=now, audience=audience or _audience(token), **kw)
    assert err.value.reason == str(err.value) and err.value.reason
    return err.value


def test_round_trip():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", ATTRS, now=NOW)
    claims = verify_token(token, REGISTRY.get, audience="hpc-a", now=NOW + 60)
    assert isinstance(claims, Claims)
    assert (claims.iss, claims.sub, claims.home, claims.attrs) == ("hpc-a", "alice@hpc-a", "hpc-a", ATTRS)
    assert (claims.iat, claims.exp) == (NOW, NOW + 900)
    assert len(claims.jti) >= 16
    header = json.loads(_unb64(token.split(".")[0]))
    assert header["alg"] == "Ed25519" and header["kid"] == "hpc-a"


def test_every_token_has_its_own_jti():
    first, second = (
        verify_token(ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW), REGISTRY.get, audience="hpc-a", now=NOW)
        for _ in range(2)
    )
    assert first.jti != second.jti


def test_unknown_issuer():
    token = TokenIssuer("hpc-z", generate_key()).issue("zoe@hpc-z", "hpc-z", {}, now=NOW)
    err = _refused(token)
    assert err.code == "unknown_issuer" and "hpc-z" in err.reason


def test_removed_issuer_is_refused_at_once():
    registry = dict(REGISTRY)
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    assert verify_token(token, registry.get, audience="hpc-a", now=NOW).sub == "alice@hpc-a"
    del registry["hpc-a"]
    err = _refused(token, key_for=registry.get)
    assert err.code == "unknown_issuer" and "removed" in err.reason


def test_signed_by_another_centres_key():
    forged = TokenIssuer("hpc-a", KEY_B).issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    err = _refused(forged)
    assert err.code == "bad_signature" and "hpc-a" in err.reason


def test_rotated_key_invalidates_old_tokens():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    assert _refused(token, key_for={"hpc-a": public_key_bytes(generate_key())}.get).code == "bad_signature"


@pytest.mark.parametrize(
    "change",
    [
        {"attrs": {"department": "physics", "employeeType": "admin", "groups": ["gpu-users"]}},
        {"exp": NOW + 10_000_000},
        {"sub": "bob@hpc-a"},
    ],
)
def test_tampered_payload(change):
    token = ISSUER.issue("alice@hpc-a", "hpc-a", ATTRS, now=NOW)
    header, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    claims.update(change)
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert _refused(tampered).code == "bad_signature"


def test_tampered_signature():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    header, payload, signature = token.split(".")
    raw = bytearray(_unb64(signature))
    raw[0] ^= 1
    assert _refused(f"{header}.{payload}.{_b64(bytes(raw))}").code == "bad_signature"
    assert _refused(f"{header}.{payload}.").code == "bad_signature"


def test_issuer_may_not_vouch_for_other_centres_people():
    token = _sign({"alg": "Ed25519"}, _claims(sub="dave@hpc-b", home="hpc-b"))
    err = _refused(token)
    assert err.code == "wrong_issuer" and "dave@hpc-b" in err.reason


def test_principal_must_belong_to_home():
    assert _refused(_sign({"alg": "Ed25519"}, _claims(sub="alice@hpc-b"))).code == "malformed"
    assert _refused(_sign({"alg": "Ed25519"}, _claims(sub="alice"))).code == "malformed"


def test_expired():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    assert verify_token(token, REGISTRY.get, audience="hpc-a", now=NOW + 899, leeway=0).sub == "alice@hpc-a"
    err = _refused(token, now=NOW + 900, leeway=0)
    assert err.code == "expired" and "log in again" in err.reason
    assert (
        verify_token(token, REGISTRY.get, audience="hpc-a", now=NOW + 920).sub == "alice@hpc-a"
    )  # default 30 s leeway
    assert _refused(token, now=NOW + 930).code == "expired"


def test_not_yet_valid():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW + 3600)
    err = _refused(token, now=NOW)
    assert err.code == "not_yet_valid"
    assert verify_token(token, REGISTRY.get, audience="hpc-a", now=NOW + 3600 - 30).iat == NOW + 3600


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "!!!.???.***",
        None,
        42,
        b"a.b.c",
        _b64(b"not json") + "." + _b64(b"{}") + ".AA",
        _b64(b"[1]") + "." + _b64(b"{}") + ".AA",
        _b64(b'{"alg":"Ed25519"}') + "." + _b64(b"[]") + ".AA",
        "x" * 20_000,
    ],
)
def test_malformed(token):
    assert _refused(token).code == "malformed"


@pytest.mark.parametrize("missing", ["sub", "home", "attrs", "iat", "exp", "jti"])
def test_missing_or_mistyped_claims(missing):
    assert _refused(_sign({"alg": "Ed25519"}, _claims(**{missing: None}))).code == "malformed"
    assert _refused(_sign({"alg": "Ed25519"}, _claims(**{missing: True}))).code == "malformed"


def test_alg_none_is_refused():
    claims = _b64(json.dumps(_claims()).encode())
    for alg in ("none", "None", "NONE"):
        err = _refused(f"{_b64(json.dumps({'alg': alg}).encode())}.{claims}.")
        assert err.code == "bad_algorithm" and alg in err.reason


def test_hs256_with_the_public_key_as_secret_is_refused():
    # The classic key-confusion attack: HMAC keyed with the issuer's (public) key.
    token = jws.serialize_compact(
        {"alg": "HS256"}, json.dumps(_claims()), OctKey.import_key(REGISTRY["hpc-a"]), algorithms=["HS256"]
    )
    assert _refused(token).code == "bad_algorithm"


def test_only_the_ed25519_alg_name_is_accepted():
    assert (
        verify_token(_raw_sign({"alg": "Ed25519"}, _claims()), REGISTRY.get, audience="hpc-a", now=NOW).sub
        == "alice@hpc-a"
    )
    assert _refused(_raw_sign({"alg": "EdDSA"}, _claims())).code == "bad_algorithm"
    assert _refused(_raw_sign({"alg": "ES256"}, _claims())).code == "bad_algorithm"
    assert _refused(_raw_sign({}, _claims())).code == "bad_algorithm"


def test_critical_header_extensions_are_refused():
    assert _refused(_raw_sign({"alg": "Ed25519", "crit": ["exp"], "exp": 1}, _claims())).code == "malformed"


def test_registered_key_of_wrong_length():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    assert _refused(token, key_for={"hpc-a": b"\x01" * 31}.get).code == "unknown_issuer"


def test_issuer_validates_its_input():
    with pytest.raises(ValueError):
        ISSUER.issue("dave@hpc-b", "hpc-b", {})
    with pytest.raises(ValueError):
        ISSUER.issue("alice@hpc-b", "hpc-a", {})
    with pytest.raises(ValueError):
        ISSUER.issue("alice@hpc-a", "hpc-a", {"x": object()})
    with pytest.raises(ValueError):
        TokenIssuer("HPC A", KEY_A)
    with pytest.raises(ValueError):
        TokenIssuer("hpc-a", KEY_A, ttl=0)
    with pytest.raises(TypeError):
        TokenIssuer("hpc-a", b"\x00" * 32)


def test_key_files(tmp_path):
    path = tmp_path / "token.pem"
    save_private_key(KEY_A, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(path)
    assert public_key_bytes(loaded) == REGISTRY["hpc-a"]
    assert len(public_key_bytes(loaded)) == 32
    assert public_key_bytes(loaded.public_key()) == REGISTRY["hpc-a"]
    save_private_key(KEY_B, path)  # replacing keeps the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_private_key(path)) == REGISTRY["hpc-b"]
    assert [p.name for p in tmp_path.iterdir()] == ["token.pem"]


def test_key_files_refuse_other_keys(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_private_key(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ValueError, match="PEM"):
        load_private_key(garbage)
    ec = tmp_path / "ec.pem"
    ec.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519"):
        load_private_key(ec)


# -- credential-backed (BBS) session tokens ------------------------------------------------

VERIFIER = TokenIssuer("hpc-b", KEY_B, ttl=900)
DISCLOSED = {"home": "hpc-a", "department": "physics", "revocation_epoch": "4", "expires_at": str(NOW + 86400)}


def test_password_tokens_say_so():
    claims = verify_token(ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW), REGISTRY.get, audience="hpc-a", now=NOW)
    assert claims.amr == ["pwd"] and claims.rev is None and not claims.presented


def test_presented_token_round_trip():
    token = VERIFIER.issue_presented("hpc-a", DISCLOSED, 4, now=NOW)
    claims = verify_token(token, REGISTRY.get, audience="hpc-b", now=NOW + 60)
    assert (claims.iss, claims.home, claims.amr, claims.rev) == ("hpc-b", "hpc-a", ["bbs"], 4)
    assert claims.presented
    uid, home = claims.sub.split("@")
    assert home == "hpc-a" and len(uid) == 16 and int(uid, 16) >= 0
    assert claims.attrs == {"home": "hpc-a", "department": "physics"}
    assert (claims.iat, claims.exp) == (NOW, NOW + 900)


def test_presented_tokens_use_a_fresh_pseudonym_each_time():
    subjects = {
        verify_token(
            VERIFIER.issue_presented("hpc-a", DISCLOSED, 4, now=NOW), REGISTRY.get, audience="hpc-b", now=NOW
        ).sub
        for _ in range(3)
    }
    assert len(subjects) == 3


def test_presented_token_does_not_outlive_the_credential():
    token = VERIFIER.issue_presented("hpc-a", {**DISCLOSED, "expires_at": str(NOW + 100)}, 4, now=NOW)
    assert verify_token(token, REGISTRY.get, audience="hpc-b", now=NOW).exp == NOW + 100
    with pytest.raises(ValueError, match="expired"):
        VERIFIER.issue_presented("hpc-a", {**DISCLOSED, "expires_at": str(NOW)}, 4, now=NOW)


def test_presented_token_is_refused_after_a_revocation():
    token = VERIFIER.issue_presented("hpc-a", DISCLOSED, 4, now=NOW)
    assert verify_token(token, REGISTRY.get, audience="hpc-b", now=NOW, revocation_epoch_for={"hpc-a": 4}.get).rev == 4
    err = _refused(token, revocation_epoch_for={"hpc-a": 5}.get)
    assert err.code == "revoked" and "hpc-a" in err.reason
    # A password token with the home's revocation epoch ends with a revocation too; one without is not checked.
    password = ISSUER.issue("alice@hpc-a", "hpc-a", {}, revocation_epoch=4, now=NOW)
    assert (
        verify_token(password, REGISTRY.get, audience="hpc-a", now=NOW, revocation_epoch_for={"hpc-a": 4}.get).rev == 4
    )
    err = _refused(password, revocation_epoch_for={"hpc-a": 5}.get)
    assert err.code == "revoked" and "log in again" in err.reason
    bare = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    assert verify_token(bare, REGISTRY.get, audience="hpc-a", now=NOW, revocation_epoch_for={"hpc-a": 5}.get).amr == [
        "pwd"
    ]
    with pytest.raises(ValueError, match="revocation_epoch"):
        ISSUER.issue("alice@hpc-a", "hpc-a", {}, revocation_epoch=-1)


def test_password_style_token_from_another_centre_is_still_refused():
    for amr in ({}, {"amr": ["pwd"]}):
        token = _sign({"alg": "Ed25519"}, {**_claims(iss="hpc-b", sub="alice@hpc-a"), **amr}, key=KEY_B)
        err = _refused(token)
        assert err.code == "wrong_issuer" and "alice@hpc-a" in err.reason


def test_presented_token_subject_must_belong_to_home():
    token = _sign({"alg": "Ed25519"}, _claims(iss="hpc-b", sub="0123456789abcdef@hpc-b", amr=["bbs"], rev=1), key=KEY_B)
    assert _refused(token).code == "malformed"


@pytest.mark.parametrize(
    "sub", ["alice@hpc-a", "0123456789ABCDEF@hpc-a", "0123456789abcde@hpc-a", "0123456789abcdef0@hpc-a"]
)
def test_presented_token_subject_is_a_session_pseudonym(sub):
    # A verifier may vouch for another centre's user only under a fresh pseudonym; naming a
    # real uid@home would let any member act as that user (its memberUid groups, its jobs).
    token = _sign({"alg": "Ed25519"}, _claims(iss="hpc-b", sub=sub, amr=["bbs"], rev=1), key=KEY_B)
    err = _refused(token)
    assert err.code == "malformed" and "pseudonym" in err.reason


@pytest.mark.parametrize(
    "extra",
    [
        {"amr": ["bbs"]},
        {"amr": ["bbs"], "rev": "1"},
        {"amr": ["bbs"], "rev": -1},
        {"amr": ["bbs"], "rev": True},
        {"amr": ["pwd"], "rev": "1"},
        {"rev": -1},
        {"amr": "bbs"},
        {"amr": ["otp"]},
        {"amr": ["pwd", "bbs"]},
        {"amr": []},
    ],
)
def test_amr_and_rev_must_fit_together(extra):
    token = _sign({"alg": "Ed25519"}, {**_claims(iss="hpc-b", sub="0123456789abcdef@hpc-a"), **extra}, key=KEY_B)
    assert _refused(token).code == "malformed"


def test_issue_presented_validates_its_input():
    with pytest.raises(ValueError):
        VERIFIER.issue_presented("HPC A", DISCLOSED, 4)
    with pytest.raises(ValueError, match="home"):
        VERIFIER.issue_presented("cloud-c", DISCLOSED, 4)
    with pytest.raises(ValueError, match="revocation_epoch"):
        VERIFIER.issue_presented("hpc-a", DISCLOSED, 5)
    with pytest.raises(ValueError):
        VERIFIER.issue_presented("hpc-a", DISCLOSED, -1)
    with pytest.raises(ValueError):
        VERIFIER.issue_presented("hpc-a", [("home", "hpc-a")], 4)


# -- audiences: a token is good at one centre only ----------------------------------------


def test_a_password_token_is_good_only_at_its_audience():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", ATTRS, now=NOW)
    assert verify_token(token, REGISTRY.get, audience="hpc-a", now=NOW).aud == "hpc-a"
    err = _refused(token, audience="hpc-b")
    assert err.code == "wrong_audience" and "hpc-b" in err.reason


def test_home_may_address_a_token_to_another_member():
    """Token exchange: home vouches for its own user to another centre, never past the original expiry."""
    token = ISSUER.issue("alice@hpc-a", "hpc-a", ATTRS, audience="hpc-b", now=NOW, expires_at=NOW + 60)
    claims = verify_token(token, REGISTRY.get, audience="hpc-b", now=NOW)
    assert (claims.iss, claims.aud, claims.sub, claims.exp) == ("hpc-a", "hpc-b", "alice@hpc-a", NOW + 60)
    assert _refused(token, audience="hpc-a").code == "wrong_audience"
    with pytest.raises(ValueError, match="expired"):
        ISSUER.issue("alice@hpc-a", "hpc-a", {}, audience="hpc-b", now=NOW, expires_at=NOW)
    with pytest.raises(ValueError, match="audience"):
        ISSUER.issue("alice@hpc-a", "hpc-a", {}, audience="HPC B")


def test_a_presentation_token_is_good_only_where_the_proof_was_verified():
    token = VERIFIER.issue_presented("hpc-a", DISCLOSED, 4, now=NOW)
    assert _refused(token, audience="hpc-a").code == "wrong_audience"


def test_a_member_cannot_vouch_for_a_presentation_to_another_member():
    """The finding: hpc-b mints a presentation session for a made-up hpc-a user and shows it to hpc-c."""
    claims = _claims(iss="hpc-b", aud="hpc-c", sub="0123456789abcdef@hpc-a", amr=["bbs"], rev=4)
    token = _sign({"alg": "Ed25519"}, claims, key=KEY_B)
    err = _refused(token, audience="hpc-c")
    assert err.code == "wrong_issuer" and "hpc-b" in err.reason


def test_a_token_without_an_audience_is_malformed():
    token = _sign({"alg": "Ed25519"}, _claims(aud=None))
    assert _refused(token, audience="hpc-a").code == "malformed"
