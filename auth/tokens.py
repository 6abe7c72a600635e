"""Session tokens: a centre vouches for a user to one centre, the audience.

A token is a JWS compact serialisation signed with the issuing centre's Ed25519 key
(alg "Ed25519", RFC 9864's name for EdDSA over Ed25519). Verifiers resolve the
issuer's 32-byte public key from the consortium registry (on chain, via the local
index), so a removed centre's tokens stop working at once.

Every token names its audience (`aud`), the one centre that accepts it, so a token
shown to one member is worth nothing at any other: no member can act elsewhere with
a user's token. Two kinds exist:

- a password token (amr ["pwd"]) is issued by the user's home (iss == home, sub =
  uid@home). Home may address it to any member (token exchange, as in RFC 8693):
  a user signed on at home asks home for a token for another centre, once per centre,
  without a second password;
- a presentation token (amr ["bbs"]) is issued by the centre that verified a BBS
  credential presentation, for itself only (iss == aud), under a fresh random session
  pseudonym "<16 hex>@home". Its attrs are exactly the disclosed attributes; rev is
  the home's revocation epoch the credential carried.

Claims: iss, aud, sub, home, attrs, iat, exp, jti, amr, rev (required for bbs,
optional for pwd).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.jwk import OKPKey

from ledger.primitives.canonical import canonical_json
from ledger.primitives.files import write_private
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name

ALGORITHM = "Ed25519"
MAX_TOKEN_LENGTH = 16 * 1024
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_PSEUDONYM = re.compile(r"^[0-9a-f]{16}$")  # issue_presented's secrets.token_hex(8)
PASSWORD = "pwd"
PRESENTED = "bbs"
#: Disclosed attributes the token carries as claims (rev, exp) rather than in attrs.
_NOT_ATTRS = frozenset({"revocation_epoch", "expires_at"})


class TokenError(ValueError):
    """A token was refused. `reason` says why in words a person can act on; `code` is stable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    iss: str
    aud: str
    sub: str
    home: str
    attrs: dict[str, Any] = field(default_factory=dict)
    iat: int = 0
    exp: int = 0
    jti: str = ""
    amr: list[str] = field(default_factory=lambda: [PASSWORD])
    rev: int | None = None

    @property
    def presented(self) -> bool:
        """True for a session backed by a credential presentation (issued by the verifier, not home)."""
        return self.amr == [PRESENTED]


# -- keys -------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """A fresh token-signing key for a centre."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key, as registered on chain (bytes32 tokenKey)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def save_private_key(key: Ed25519PrivateKey, path: str | os.PathLike) -> None:
    """Write the key as unencrypted PKCS#8 PEM, mode 0600, atomically (never a half-written file)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem, replace=True)


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    """Read a PEM private key written by save_private_key; refuse anything but Ed25519."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"token key file {path} does not exist") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"token key file {path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"token key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


# -- issuing ----------------------------------------------------------------------------


class TokenIssuer:
    """Issues tokens valid for `ttl` seconds: for this centre's own people (password sign-on),
    or for anyone who proved a member's credential to this centre (issue_presented)."""

    def __init__(self, centre: str, key: Ed25519PrivateKey, ttl: int = 900) -> None:
        if not is_centre_name(centre):
            raise ValueError(f"centre name must match {CENTRE_NAME_RULE}, got {centre!r}")
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError("key must be an Ed25519PrivateKey")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.centre = centre
        self.ttl = ttl
        self._jwk = OKPKey.import_key(key)
        self.public_key = public_key_bytes(key)

    def issue(
        self,
        principal: str,
        home: str,
        attributes: Mapping[str, Any],
        *,
        audience: str | None = None,
        revocation_epoch: int | None = None,
        now: int | None = None,
        expires_at: int | None = None,
    ) -> str:
        """A signed token saying `principal` of `home` (this centre) has `attributes`, for `audience`.

        `audience` is the one centre that will accept the token (default: this one).
        With `revocation_epoch` (this centre's current one), the audience refuses the
        token once this centre revokes anyone, as it refuses credentials. `expires_at`
        caps the token's life (an exchanged token never outlives the one it replaces).
        """
        if home != self.centre:
            raise ValueError(f"centre {self.centre!r} can only issue tokens for its own people, not {home!r}")
        _check_principal(principal, home, ValueError)
        audience = self.centre if audience is None else audience
        if not is_centre_name(audience):
            raise ValueError(f"audience must be a centre name, got {audience!r:.40}")
        if not isinstance(attributes, Mapping):
            raise ValueError("attributes must be a mapping")
        iat = int(time.time()) if now is None else int(now)
        exp = iat + self.ttl if expires_at is None else min(iat + self.ttl, int(expires_at))
        if exp <= iat:
            raise ValueError("the session this token would extend has expired")
        claims = {
            "iss": self.centre,
            "aud": audience,
            "sub": principal,
            "home": home,
            "attrs": dict(attributes),
            "iat": iat,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
            "amr": [PASSWORD],
        }
        if revocation_epoch is not None:
            if not isinstance(revocation_epoch, int) or isinstance(revocation_epoch, bool) or revocation_epoch < 0:
                raise ValueError(f"revocation_epoch must be a non-negative integer, got {revocation_epoch!r}")
            claims["rev"] = revocation_epoch
        return self._sign(claims)

    def issue_presented(
        self, home: str, disclosed: Mapping[str, str], revocation_epoch: int, *, now: int | None = None
    ) -> str:
        """A session token, valid at this centre only, for someone who just proved a credential of `home` to it.

        The subject is a fresh random pseudonym at `home` (unlinkable across sign-ons);
        attrs are the disclosed attributes except revocation_epoch/expires_at (rev, and
        exp is capped at the credential's expires_at when disclosed). Call it only after
        verify_presentation succeeded.
        """
        if not is_centre_name(home):
            raise ValueError(f"home must be a centre name, got {home!r:.40}")
        if not isinstance(disclosed, Mapping):
            raise ValueError("disclosed must be a mapping of attribute name to value")
        if "home" in disclosed and disclosed["home"] != home:
            raise ValueError(f"the disclosed home {disclosed['home']!r:.40} is not {home!r}")
        if not isinstance(revocation_epoch, int) or isinstance(revocation_epoch, bool) or revocation_epoch < 0:
            raise ValueError(f"revocation_epoch must be a non-negative integer, got {revocation_epoch!r}")
        if "revocation_epoch" in disclosed and str(disclosed["revocation_epoch"]) != str(revocation_epoch):
            raise ValueError("the disclosed revocation_epoch differs from revocation_epoch")
        iat = int(time.time()) if now is None else int(now)
        exp = iat + self.ttl
        if "expires_at" in disclosed:
            try:
                exp = min(exp, int(disclosed["expires_at"]))
            except (TypeError, ValueError):
                raise ValueError("disclosed expires_at must be an integer") from None
            if exp <= iat:
                raise ValueError("the credential has expired; no session can be issued for it")
        claims = {
            "iss": self.centre,
            "aud": self.centre,
            "sub": f"{secrets.token_hex(8)}@{home}",
            "home": home,
            "attrs": {k: v for k, v in disclosed.items() if k not in _NOT_ATTRS},
            "iat": iat,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
            "amr": [PRESENTED],
            "rev": revocation_epoch,
        }
        return self._sign(claims)

    def _sign(self, claims: dict[str, Any]) -> str:
        try:
            payload = canonical_json(claims)
        except ValueError as exc:
            raise ValueError(f"attributes must be JSON values: {exc}") from None
        return jws.serialize_compact(
            {"alg": ALGORITHM, "typ": "JWT", "kid": self.centre}, payload, self._jwk, algorithms=[ALGORITHM]
        )


# -- verifying --------------------------------------------------------------------------

#: Header parameters a token may carry (what TokenIssuer writes); anything else is refused.
_HEADER_PARAMETERS = frozenset({"alg", "typ", "kid"})


@dataclass(frozen=True)
class _Signed:
    """A token whose signature verified: its issuer, the key it verified under, its payload's JSON."""

    iss: str
    key: bytes
    payload: bytes


class VerifiedTokens:
    """The signature checks of tokens seen recently, so a session's token shown again skips the
    JWS parse and the Ed25519 check (verify_token(cache=...)).

    An entry is a token string with the issuer key bytes its signature verified under; it is
    used only while key_for(iss) still returns those bytes (a rotated or removed key takes
    effect at once). Only the signature is kept: the audience, the times, the claims and the
    revocation epoch are checked on every use. Holds at most `size` tokens, the least recently
    used forgotten first; safe to share between threads.
    """

    def __init__(self, size: int = 4096) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"size must be a positive number of tokens, got {size!r}")
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Signed] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _get(self, token: str) -> _Signed | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def _put(self, token: str, entry: _Signed) -> None:
        with self._lock:
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def verify_token(
    token: str,
    key_for: Callable[[str], bytes | None],
    now: int | None = None,
    *,
    audience: str,
    leeway: int = 30,
    revocation_epoch_for: Callable[[str], int] | None = None,
    cache: VerifiedTokens | None = None,
) -> Claims:
    """Check a token presented to `audience` (the verifying centre) and return its claims,
    or raise TokenError saying why it is refused.

    key_for(centre) -> the centre's registered 32-byte public key, or None when the
    centre is unknown or was removed from the consortium. `leeway` tolerates clock
    differences between centres (seconds) for both iat and exp. When
    `revocation_epoch_for(home)` is given, a credential-backed ("bbs") token whose rev
    is no longer the home's current revocation epoch is refused ("revoked"). With a
    `cache`, a token accepted before under the key registered now is not verified again
    (the one check of a session's token that costs); every other check runs each time.
    """
    signed = _cached(token, key_for, cache)
    fresh = signed is None
    if signed is None:
        signed = _verify_signature(token, key_for)
    claims = _claims(json.loads(signed.payload))
    if claims.aud != audience:
        raise TokenError(
            "wrong_audience",
            f"this token is for {claims.aud!r}, not {audience!r}: a token is good at one "
            f"centre only; sign on at {audience!r} (or ask your home for a token for it)",
        )
    _check_principal(claims.sub, claims.home, lambda m: TokenError("malformed", m))
    if claims.presented and not _PSEUDONYM.fullmatch(claims.sub.rsplit("@", 1)[0]):
        # The verifier vouches for another centre's user only under a fresh pseudonym;
        # a real uid@home here would let any member act as that user elsewhere.
        raise TokenError(
            "malformed",
            f"a credential-backed token's subject must be a session pseudonym "
            f"(16 hex digits@home), got {claims.sub!r:.80}",
        )
    if claims.home != claims.iss and not claims.presented:
        raise TokenError(
            "wrong_issuer", f"centre {claims.iss!r} may not vouch for {claims.sub!r}, whose home is {claims.home!r}"
        )
    if claims.presented and claims.iss != claims.aud:
        # A verifier vouches for a presentation to itself alone: it is the one that checked the proof.
        raise TokenError(
            "wrong_issuer", f"centre {claims.iss!r} verified this sign-on and may not vouch for it to {claims.aud!r}"
        )
    now = int(time.time()) if now is None else int(now)
    if now >= claims.exp + leeway:
        raise TokenError("expired", f"token expired at {claims.exp} (now {now}); log in again")
    if claims.iat > now + leeway:
        raise TokenError(
            "not_yet_valid", f"token is issued in the future ({claims.iat}, now {now}); check the clocks of the centres"
        )
    if claims.exp <= claims.iat:
        raise TokenError("malformed", "token expires before it was issued")
    if claims.rev is not None and revocation_epoch_for is not None and claims.rev != revocation_epoch_for(claims.home):
        if claims.presented:
            raise TokenError(
                "revoked",
                f"this session rests on a credential that predates a revocation at "
                f"{claims.home}: refresh your credential at your home centre and sign on again",
            )
        raise TokenError("revoked", f"this session predates a revocation at {claims.home}: log in again at home")
    if fresh and cache is not None:
        cache._put(token, signed)  # accepted: kept for the next request of this session
    return claims


def _cached(token: object, key_for: Callable[[str], bytes | None], cache: VerifiedTokens | None) -> _Signed | None:
    """The cached signature check of `token`, if its issuer's registered key is still the one it verified under."""
    if cache is None or not isinstance(token, str):
        return None
    signed = cache._get(token)
    if signed is None:
        return None
    raw = _issuer_key(signed.iss, key_for)
    return signed if bytes(raw) == signed.key else None  # a new key: verify afresh


def _verify_signature(token: object, key_for: Callable[[str], bytes | None]) -> _Signed:
    """Parse the compact JWS and check its Ed25519 signature with the issuer's registered key."""
    header, payload, payload_json, signing_input, signature = _split(token)
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise TokenError("bad_algorithm", f"algorithm {alg!r} is not accepted; tokens must be signed with {ALGORITHM}")
    if "crit" in header:
        raise TokenError("malformed", "token header has critical extensions this verifier does not support")
    unknown = sorted(set(header) - _HEADER_PARAMETERS)
    if unknown:
        raise TokenError("malformed", f"token header has parameters this verifier does not support: {unknown}")
    if not all(isinstance(header.get(name, ""), str) for name in ("typ", "kid")):
        raise TokenError("malformed", "token header's typ and kid must be strings")
    iss = payload.get("iss")
    if not is_centre_name(iss):
        raise TokenError("malformed", "token has no valid issuer (iss)")
    raw = bytes(_issuer_key(iss, key_for))
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise TokenError("unknown_issuer", f"issuer {iss!r} has no valid Ed25519 key registered") from None
    try:
        raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        if base64.urlsafe_b64encode(raw_signature).rstrip(b"=") != signature.encode("ascii"):
            raise InvalidSignature  # another spelling of the signature: one token, one string
        public.verify(raw_signature, signing_input)
    except (InvalidSignature, binascii.Error, ValueError):
        raise TokenError(
            "bad_signature",
            f"signature does not verify with the key registered for {iss!r}: "
            "the token was altered or not signed by that centre",
        ) from None
    return _Signed(iss, raw, payload_json)


def _issuer_key(iss: str, key_for: Callable[[str], bytes | None]) -> bytes:
    raw = key_for(iss)
    if raw is None:
        raise TokenError(
            "unknown_issuer",
            f"issuer {iss!r} is not a member of the consortium (unknown or removed); log in again at your home centre",
        )
    return raw


def _split(token: object) -> tuple[dict, dict, bytes, bytes, str]:
    """Header, payload, the payload's JSON text, the signing input and the signature's base64url."""
    if not isinstance(token, str):
        raise TokenError("malformed", "token must be a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed", f"token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]) or not all(_B64URL.fullmatch(p) for p in parts):
        raise TokenError("malformed", "not a compact JWS (three base64url parts separated by dots)")
    header = _json_part(_decoded(parts[0], "header"), "header")
    payload_json = _decoded(parts[1], "payload")
    payload = _json_part(payload_json, "payload")
    return header, payload, payload_json, f"{parts[0]}.{parts[1]}".encode("ascii"), parts[2]


def _decoded(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", f"token {what} is not base64url-encoded JSON") from None


def _json_part(text: bytes, what: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed", f"token {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise TokenError("malformed", f"token {what} is not a JSON object")
    return value


def _claims(payload: dict) -> Claims:
    kinds = {"iss": str, "aud": str, "sub": str, "home": str, "attrs": dict, "iat": int, "exp": int, "jti": str}
    for name, kind in kinds.items():
        value = payload.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TokenError("malformed", f"token claim {name!r} is missing or not a {kind.__name__}")
    amr = payload.get("amr", [PASSWORD])
    if amr not in ([PASSWORD], [PRESENTED]):
        raise TokenError("malformed", f"token claim 'amr' must be [{PASSWORD!r}] or [{PRESENTED!r}]")
    rev = payload.get("rev")
    if (amr == [PRESENTED] or "rev" in payload) and (not isinstance(rev, int) or isinstance(rev, bool) or rev < 0):
        raise TokenError("malformed", "'rev' must be a non-negative integer (credential-backed tokens need one)")
    return Claims(**{name: payload[name] for name in kinds}, amr=list(amr), rev=rev)


def _check_principal(principal: object, home: str, error: Callable[[str], Exception]) -> None:
    if not isinstance(principal, str) or "@" not in principal:
        raise error(f"principal must look like uid@{home}, got {principal!r:.80}")
    uid, centre = principal.rsplit("@", 1)
    if not uid or centre != home:
        raise error(f"principal {principal!r:.80} does not belong to home centre {home!r}")
