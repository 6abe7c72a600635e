"""Session tokens verified once: a re-presented token skips its signature check, never any other check."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from auth import tokens
from auth.tokens import TokenError, TokenIssuer, VerifiedTokens, generate_key, public_key_bytes, verify_token
from gateway.node.centre import CentreNode
from gateway.node.errors import Unauthenticated

NOW = 1_700_000_000
KEY_A = generate_key()
KEY_B = generate_key()
ISSUER = TokenIssuer("hpc-a", KEY_A, ttl=900)
VERIFIER = TokenIssuer("hpc-b", KEY_B, ttl=900)
REGISTRY = {"hpc-a": public_key_bytes(KEY_A), "hpc-b": public_key_bytes(KEY_B)}
DISCLOSED = {"home": "hpc-a", "department": "physics", "revocation_epoch": "4"}


@pytest.fixture
def signature_checks(monkeypatch) -> list[str]:
    """The tokens whose signature verify_token checked (rather than took from the cache)."""
    checked: list[str] = []
    real = tokens._verify_signature

    def counting(token, key_for):
        checked.append(token)
        return real(token, key_for)

    monkeypatch.setattr(tokens, "_verify_signature", counting)
    return checked


def _verify(token, cache, *, registry=REGISTRY, now=NOW + 10, audience="hpc-a", epochs=None):
    return verify_token(
        token,
        registry.get,
        now=now,
        audience=audience,
        revocation_epoch_for=None if epochs is None else epochs.get,
        cache=cache,
    )


def _refused(token, cache, **kw) -> TokenError:
    with pytest.raises(TokenError) as err:
        _verify(token, cache, **kw)
    return err.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_sign(header: dict, claims: dict, key=KEY_A) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def test_a_token_shown_again_is_not_verified_again(signature_checks):
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {"department": "physics"}, now=NOW)
    first = _verify(token, cache)
    second = _verify(token, cache)
    assert first == second and second.sub == "alice@hpc-a" and second.attrs == {"department": "physics"}
    assert signature_checks == [token] and len(cache) == 1


def test_each_use_gets_its_own_claims():
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {"groups": ["gpu-users"]}, now=NOW)
    first = _verify(token, cache)
    first.attrs["groups"].append("admins")  # a caller changing what it got changes nothing kept
    assert _verify(token, cache).attrs == {"groups": ["gpu-users"]}


def test_without_a_cache_every_use_is_verified(signature_checks):
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    _verify(token, None)
    _verify(token, None)
    assert signature_checks == [token, token]


def test_a_cached_token_is_refused_after_its_expiry():
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    _verify(token, cache)
    err = _refused(token, cache, now=NOW + 900 + 30)
    assert err.code == "expired" and "log in again" in err.reason
    assert _refused(token, cache, now=NOW - 31).code == "not_yet_valid"


def test_a_cached_token_is_refused_once_its_issuers_key_changes(signature_checks):
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    _verify(token, cache)
    rotated = {**REGISTRY, "hpc-a": public_key_bytes(generate_key())}
    err = _refused(token, cache, registry=rotated)
    assert err.code == "bad_signature" and "hpc-a" in err.reason
    assert signature_checks == [token, token]  # the new key: verified afresh, not taken from the cache
    assert _refused(token, cache, registry={**REGISTRY, "hpc-a": b"\x01" * 31}).code == "unknown_issuer"


def test_a_cached_token_is_refused_once_its_issuer_is_removed():
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    _verify(token, cache)
    err = _refused(token, cache, registry={"hpc-b": REGISTRY["hpc-b"]})
    assert err.code == "unknown_issuer" and "removed" in err.reason


def test_a_cached_token_is_refused_after_a_revocation():
    cache = VerifiedTokens()
    presented = VERIFIER.issue_presented("hpc-a", DISCLOSED, 4, now=NOW)
    password = ISSUER.issue("alice@hpc-a", "hpc-a", {}, revocation_epoch=4, now=NOW)
    assert _verify(presented, cache, audience="hpc-b", epochs={"hpc-a": 4}).rev == 4
    assert _verify(password, cache, epochs={"hpc-a": 4}).rev == 4
    err = _refused(presented, cache, audience="hpc-b", epochs={"hpc-a": 5})
    assert err.code == "revoked" and "refresh your credential" in err.reason
    err = _refused(password, cache, epochs={"hpc-a": 5})
    assert err.code == "revoked" and "log in again at home" in err.reason


def test_a_cached_token_is_good_only_at_its_audience():
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, audience="hpc-b", now=NOW)
    _verify(token, cache, audience="hpc-b")
    assert _refused(token, cache, audience="hpc-a").code == "wrong_audience"


@pytest.mark.parametrize("part", [1, 2])
def test_an_altered_token_is_never_served_from_the_cache(part, signature_checks):
    cache = VerifiedTokens()
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {"department": "physics"}, now=NOW)
    _verify(token, cache)
    pieces = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, char in enumerate(pieces[part]):
        other = alphabet[(alphabet.index(char) + 1) % len(alphabet)]
        altered = ".".join([*pieces[:part], pieces[part][:i] + other + pieces[part][i + 1 :], *pieces[part + 1 :]])
        err = _refused(altered, cache)
        assert err.code in {"bad_signature", "malformed", "unknown_issuer"}, (i, err.code)
    assert len(cache) == 1 and _verify(token, cache).sub == "alice@hpc-a"
    assert signature_checks.count(token) == 1


def test_refused_tokens_are_not_kept():
    cache = VerifiedTokens()
    expired = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW - 10_000)
    _refused(expired, cache)
    _refused(ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW), cache, audience="hpc-b")
    _refused(TokenIssuer("hpc-a", KEY_B).issue("alice@hpc-a", "hpc-a", {}, now=NOW), cache)
    assert len(cache) == 0


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(signature_checks):
    cache = VerifiedTokens(size=3)
    issued = [ISSUER.issue(f"user{i}@hpc-a", "hpc-a", {}, now=NOW) for i in range(5)]
    for token in issued[:3]:
        _verify(token, cache)
    _verify(issued[0], cache)  # used again: now the most recent
    for token in issued[3:]:
        _verify(token, cache)
    assert len(cache) == 3
    signature_checks.clear()
    for token in (issued[0], issued[3], issued[4]):
        _verify(token, cache)
    assert signature_checks == []
    _verify(issued[1], cache)
    assert signature_checks == [issued[1]] and len(cache) == 3


def test_the_cache_size_must_be_positive():
    for size in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="size"):
            VerifiedTokens(size=size)


def test_threads_share_one_cache():
    cache = VerifiedTokens(size=16)
    issued = [ISSUER.issue(f"user{i}@hpc-a", "hpc-a", {}, now=NOW) for i in range(40)]

    def work(offset: int) -> None:
        for _ in range(3):
            for token in issued[offset:] + issued[:offset]:
                assert _verify(token, cache).sub == f"user{issued.index(token)}@hpc-a"

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(0, 40, 5)))  # re-raises any thread's failure
    assert len(cache) == 16


# -- the signature checked with `cryptography` directly ------------------------------------


def test_header_parameters_beyond_alg_typ_kid_are_refused():
    claims = {"iss": "hpc-a", "aud": "hpc-a", "sub": "alice@hpc-a", "home": "hpc-a", "attrs": {}}
    claims |= {"iat": NOW, "exp": NOW + 900, "jti": "j1"}
    assert _verify(_raw_sign({"alg": "Ed25519", "typ": "JWT", "kid": "hpc-a"}, claims), None).sub == "alice@hpc-a"
    err = _refused(_raw_sign({"alg": "Ed25519", "jku": "https://evil.example/keys"}, claims), None)
    assert err.code == "malformed" and "jku" in err.reason
    err = _refused(_raw_sign({"alg": "Ed25519", "kid": 7}, claims), None)
    assert err.code == "malformed" and "kid" in err.reason


def test_a_signature_of_the_wrong_length_is_a_bad_signature():
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    header, payload, signature = token.split(".")
    for bad in (signature[:-2], signature + "AA", "A", "AAAAA"):
        assert _refused(f"{header}.{payload}.{bad}", VerifiedTokens()).code == "bad_signature"


def test_another_spelling_of_the_same_signature_is_refused():
    """Base64url lets the last character of a 64-byte signature carry bits no one reads: one token, one string."""
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, now=NOW)
    header, payload, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    respelt = [alphabet[last ^ bits] for bits in (1, 2, 3)]  # the two unused low bits of the last character
    cache = VerifiedTokens()
    for char in respelt:
        assert base64.urlsafe_b64decode(signature[:-1] + char + "==") == base64.urlsafe_b64decode(signature + "==")
        assert _refused(f"{header}.{payload}.{signature[:-1]}{char}", cache).code == "bad_signature"
    assert len(cache) == 0 and _verify(token, cache).sub == "alice@hpc-a"


# -- the node: CentreNode.authenticate keeps one cache and checks against its index every time -----


def test_the_node_checks_a_kept_session_against_its_index_every_time(signature_checks):
    registry = dict(REGISTRY)
    epochs = {"hpc-a": 4}
    index = SimpleNamespace(token_key=registry.get, revocation_epoch=epochs.get)
    parts = SimpleNamespace(index=index, signon=SimpleNamespace(is_revoked=lambda uid: False))
    node = SimpleNamespace(name="hpc-a", parts=parts, _verified_tokens=VerifiedTokens())
    token = ISSUER.issue("alice@hpc-a", "hpc-a", {}, revocation_epoch=4)
    assert CentreNode.authenticate(node, token).sub == "alice@hpc-a"
    assert CentreNode.authenticate(node, token).sub == "alice@hpc-a"
    assert signature_checks == [token]
    epochs["hpc-a"] = 5
    with pytest.raises(Unauthenticated, match="predates a revocation"):
        CentreNode.authenticate(node, token)
    epochs["hpc-a"] = 4
    registry["hpc-a"] = public_key_bytes(generate_key())
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        CentreNode.authenticate(node, token)
    del registry["hpc-a"]
    with pytest.raises(Unauthenticated, match="not a member"):
        CentreNode.authenticate(node, token)
