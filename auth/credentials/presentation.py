"""Sign-on with a credential: the verifier's challenge, the holder's proof, the verifier's checks.

The verifier asks for the attributes its policy needs under a fresh nonce; the
holder answers with a BBS proof that discloses exactly those and hides the rest
(holder_secret, pseudonym, … unless asked). Every proof is freshly randomised, so
two sign-ons with the same credential cannot be linked by their bytes; the proof is
bound to {nonce, verifier, expires_at} through the BBS presentation header, so it
is useless at another centre or for another request.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auth import bbs
from auth.bbs.encoding import OCTET_POINT_LENGTH, OCTET_SCALAR_LENGTH
from ledger.primitives.canonical import canonical_bytes, canonical_json
from ledger.primitives.names import is_centre_name

from .credential import KEY_ID, SUITE, Credential, _unhex, key_id
from .errors import CredentialError, PresentationError, SchemaError
from .schema import ALWAYS_REQUESTED, CredentialSchema, check_value

REQUEST_TTL = 60
NONCE = re.compile(r"^(?:[0-9a-f]{2}){32,128}$")
"""A nonce is 32 to 128 bytes in lowercase hex (a verifier's sealed challenge; see challenges.py)."""
MAX_PROOF_LENGTH = 64 * 1024
MAX_ATTRIBUTES = 64
MAX_JSON_LENGTH = 256 * 1024

#: issuer_pk_for(issuer, key_id, at) -> the 96-byte key if that key of that centre is valid at `at`.
IssuerKeyLookup = Callable[[str, str, int], "bytes | None"]


def _malformed(reason: str) -> PresentationError:
    return PresentationError("malformed", reason)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the request ----------------------------------------------------------------------


@dataclass(frozen=True)
class PresentationRequest:
    """The verifier's challenge: prove these attributes, for me, with this nonce, before expires_at."""

    nonce: str
    verifier: str
    attributes: tuple[str, ...]
    expires_at: int

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, str) or not NONCE.fullmatch(self.nonce):
            raise _malformed("request nonce must be 32 to 128 bytes as lowercase hex")
        if not is_centre_name(self.verifier):
            raise _malformed(f"request verifier {self.verifier!r:.40} is not a centre name")
        if isinstance(self.attributes, (str, bytes)) or not isinstance(self.attributes, Iterable):
            raise _malformed("request attributes must be a list of names")
        names = tuple(self.attributes)
        if not names or len(names) > MAX_ATTRIBUTES or not all(isinstance(n, str) for n in names):
            raise _malformed(f"request attributes must be 1 to {MAX_ATTRIBUTES} names")
        if len(set(names)) != len(names):
            raise _malformed("request asks for an attribute twice")
        object.__setattr__(self, "attributes", names)
        if not _is_int(self.expires_at) or self.expires_at < 0:
            raise _malformed("request expires_at must be a non-negative integer")

    @property
    def presentation_header(self) -> bytes:
        """The BBS presentation header: canonical JSON of what the proof must be bound to.

        Fixed on the wire: every value is ASCII (hex nonce, centre name, integer),
        so these bytes are the same under any canonical spelling of JSON.
        """
        return canonical_bytes({"nonce": self.nonce, "verifier": self.verifier, "expires_at": self.expires_at})

    def to_dict(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "verifier": self.verifier,
            "attributes": list(self.attributes),
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PresentationRequest:
        _fields(data, ("nonce", "verifier", "attributes", "expires_at"), "presentation request")
        if not isinstance(data["attributes"], list):
            raise _malformed("request attributes must be a list of names")
        return cls(
            nonce=data["nonce"],
            verifier=data["verifier"],
            attributes=tuple(data["attributes"]),
            expires_at=data["expires_at"],
        )

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> PresentationRequest:
        return cls.from_dict(_load(text, "presentation request"))


def request_attributes(schema: CredentialSchema, attributes: Iterable[str]) -> tuple[str, ...]:
    """What a verifier asks for: `attributes` plus home, revocation_epoch and expires_at, in schema order.

    Asking for an unknown or undisclosable attribute (holder_secret) is a programming
    error of the verifier: CredentialError.
    """
    wanted = set(attributes) | set(ALWAYS_REQUESTED)
    for name in wanted:
        try:
            attribute = schema.attribute(name)
        except SchemaError as exc:
            raise CredentialError(str(exc)) from None
        if not attribute.disclosable:
            raise CredentialError(f"attribute {name!r} is never disclosed; a request may not ask for it")
    return tuple(n for n in schema.names if n in wanted)


def new_request(
    schema: CredentialSchema,
    verifier: str,
    attributes: Iterable[str],
    *,
    now: int | None = None,
    ttl: int = REQUEST_TTL,
) -> PresentationRequest:
    """A request under a random, unsealed nonce: for a holder's tests. Verifiers issue theirs with Challenges."""
    names = request_attributes(schema, attributes)
    if not _is_int(ttl) or ttl <= 0:
        raise CredentialError(f"ttl must be a positive number of seconds, got {ttl!r}")
    now = int(time.time()) if now is None else int(now)
    try:
        return PresentationRequest(
            nonce=secrets.token_hex(32), verifier=verifier, attributes=names, expires_at=now + ttl
        )
    except PresentationError as exc:
        raise CredentialError(exc.reason) from None


# -- the presentation -----------------------------------------------------------------


@dataclass(frozen=True)
class Presentation:
    """The holder's answer: who issued the credential, with which key, what it discloses, and the proof."""

    nonce: str
    issuer: str
    key_id: str
    disclosed: dict[str, str] = field(default_factory=dict)
    proof: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, str) or not NONCE.fullmatch(self.nonce):
            raise _malformed("presentation nonce must be 32 to 128 bytes as lowercase hex")
        if not is_centre_name(self.issuer):
            raise _malformed(f"presentation issuer {self.issuer!r:.40} is not a centre name")
        if not isinstance(self.key_id, str) or not KEY_ID.fullmatch(self.key_id):
            raise _malformed("presentation key_id must be 16 lowercase hex digits")
        if (
            not isinstance(self.disclosed, Mapping)
            or len(self.disclosed) > MAX_ATTRIBUTES
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.disclosed.items())
        ):
            raise _malformed("presentation disclosed must map attribute names to strings")
        if not isinstance(self.proof, bytes) or not 0 < len(self.proof) <= MAX_PROOF_LENGTH:
            raise _malformed("presentation proof must be non-empty bytes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "issuer": self.issuer,
            "key_id": self.key_id,
            "disclosed": dict(self.disclosed),
            "proof": self.proof.hex(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Presentation:
        _fields(data, ("nonce", "issuer", "key_id", "disclosed", "proof"), "presentation")
        proof = data["proof"]
        if isinstance(proof, str) and len(proof) > 2 * MAX_PROOF_LENGTH:
            raise _malformed("presentation proof is too long")
        return cls(
            nonce=data["nonce"],
            issuer=data["issuer"],
            key_id=data["key_id"],
            disclosed=data["disclosed"],
            proof=_unhex(proof, "presentation proof", error=_malformed),
        )

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Presentation:
        return cls.from_dict(_load(text, "presentation"))


def make_presentation(
    schema: CredentialSchema, credential: Credential, issuer_pk: bytes, request: PresentationRequest
) -> Presentation:
    """The holder's proof for `request`, disclosing exactly the requested attributes.

    Refuses (PresentationError "malformed") a request for an attribute the schema
    does not have or that is never disclosed; CredentialError when the credential
    does not fit the schema or the key.
    """
    if not isinstance(request, PresentationRequest):
        raise _malformed("make_presentation needs a PresentationRequest")
    if (credential.schema_id, credential.schema_version) != (schema.id, schema.version):
        raise CredentialError(
            f"credential is of schema {credential.schema_id} v{credential.schema_version}, "
            f"not {schema.id} v{schema.version}: refresh it at your home centre"
        )
    if key_id(issuer_pk) != credential.key_id:
        raise CredentialError("the issuer public key given is not the key that signed this credential")
    indexes = _requested_indexes(schema, request.attributes)
    try:
        messages = schema.messages(credential.values)
        proof = SUITE.proof_gen(
            bytes(issuer_pk), credential.signature, schema.header, request.presentation_header, messages, indexes
        )
    except (SchemaError, bbs.BBSError) as exc:
        raise CredentialError(f"cannot prove with this credential: {exc}") from None
    disclosed = {schema.names[i]: credential.values[schema.names[i]] for i in indexes}
    return Presentation(
        nonce=request.nonce, issuer=credential.issuer, key_id=credential.key_id, disclosed=disclosed, proof=proof
    )


# -- verifying ------------------------------------------------------------------------


def verify_presentation(
    schema: CredentialSchema,
    presentation: Presentation | Mapping[str, Any] | str | bytes,
    request: PresentationRequest,
    issuer_pk_for: IssuerKeyLookup,
    revocation_epoch_for: Callable[[str], int],
    now: int,
    *,
    verifier: str,
    issuer_known: Callable[[str], bool],
) -> dict[str, str]:
    """Check a presentation against the request this verifier issued; return the disclosed attributes.

    `request` is the one Challenges.open returned for the presentation's nonce (the
    caller spends the nonce once this returns: that is what catches replays). `verifier` is this centre's name.
    `issuer_pk_for(issuer, key_id, now)` gives the issuer's key with that id if it is
    valid now, else None; `issuer_known(issuer)` tells an unknown issuer (no keys at
    all: "unknown_issuer") from a rotated-out or unknown key ("key_not_valid").
    `revocation_epoch_for(issuer)` is the issuer's current on-chain revocation epoch.

    Raises PresentationError, checking in this order: malformed, wrong_verifier,
    request_expired, missing_attributes, unknown_issuer, key_not_valid, bad_proof,
    credential_expired, revoked, wrong_issuer.
    """
    if not isinstance(presentation, Presentation):
        presentation = Presentation.from_json(presentation)
    if not isinstance(request, PresentationRequest):
        raise _malformed("verify_presentation needs the PresentationRequest this verifier issued")
    if not _is_int(now):
        raise TypeError("now must be an int (UTC seconds)")
    if presentation.nonce != request.nonce:
        raise _malformed("the presentation answers another request (nonce differs)")
    indexes = _requested_indexes(schema, request.attributes)
    missing_always = [n for n in ALWAYS_REQUESTED if n not in request.attributes]
    if missing_always:
        raise _malformed(f"a request must ask for {list(ALWAYS_REQUESTED)}; this one lacks {missing_always}")
    for name, value in presentation.disclosed.items():
        try:
            attribute = schema.attribute(name)
            check_value(attribute, value)
        except SchemaError as exc:
            raise _malformed(f"presentation discloses {name!r:.40}: {exc}") from None
        if not attribute.disclosable:
            raise _malformed(f"attribute {name!r} is never disclosed")

    if request.verifier != verifier:
        raise PresentationError(
            "wrong_verifier", f"this request was made by {request.verifier!r}, not by this centre ({verifier!r})"
        )
    if request.expires_at < now:
        raise PresentationError(
            "request_expired", f"the sign-on request expired at {request.expires_at} (now {now}); ask for a new one"
        )
    requested, disclosed = set(request.attributes), set(presentation.disclosed)
    if requested != disclosed:
        missing, extra = sorted(requested - disclosed), sorted(disclosed - requested)
        parts = ([f"lacks requested attributes {missing}"] if missing else []) + (
            [f"discloses unrequested attributes {extra}"] if extra else []
        )
        raise PresentationError("missing_attributes", "the presentation " + " and ".join(parts))

    issuer = presentation.issuer
    pk = issuer_pk_for(issuer, presentation.key_id, now)
    if pk is None:
        if not issuer_known(issuer):
            raise PresentationError(
                "unknown_issuer",
                f"{issuer!r} has no credential issuer key in the "
                "identity registry (not a member, or never registered one)",
            )
        raise PresentationError(
            "key_not_valid",
            f"key {presentation.key_id} of {issuer!r} is unknown or no longer "
            "valid (rotated out); refresh your credential at your home centre",
        )
    hidden = len(schema.attributes) - len(indexes)
    if len(presentation.proof) != _proof_length(hidden):
        # Checked before BBS, which would take the message count from the proof itself and
        # derive (and keep) a generator per hidden message of an attacker's proof.
        raise PresentationError(
            "bad_proof",
            f"the proof is not one over the {len(schema.attributes)} attributes "
            f"of schema {schema.id} v{schema.version} with {hidden} hidden; "
            "refresh your credential at your home centre",
        )
    messages = [schema.message(schema.names[i], presentation.disclosed[schema.names[i]]) for i in indexes]
    if not SUITE.proof_verify(
        bytes(pk), presentation.proof, schema.header, request.presentation_header, messages, indexes
    ):
        raise PresentationError(
            "bad_proof",
            f"the proof does not verify under {issuer!r}'s key {presentation.key_id} "
            f"for this request and schema {schema.id} v{schema.version}",
        )

    expires_at = int(presentation.disclosed["expires_at"])
    if expires_at < now:
        raise PresentationError(
            "credential_expired", f"the credential expired at {expires_at} (now {now}); refresh it at your home centre"
        )
    epoch = int(presentation.disclosed["revocation_epoch"])
    current = revocation_epoch_for(issuer)
    if epoch != current:
        raise PresentationError(
            "revoked",
            f"this credential predates a revocation at {issuer} "
            f"(its epoch {epoch}, current {current}): refresh it at your home centre",
        )
    if presentation.disclosed["home"] != issuer:
        raise PresentationError(
            "wrong_issuer", f"{issuer!r} may not vouch for a user whose home is {presentation.disclosed['home']!r:.40}"
        )
    return {schema.names[i]: presentation.disclosed[schema.names[i]] for i in indexes}


# -- helpers --------------------------------------------------------------------------


def _proof_length(hidden: int) -> int:
    """Octets of a BBS proof hiding `hidden` messages: Abar, Bbar, D, then e^, r1^, r3^, m^_j…, c."""
    return 3 * OCTET_POINT_LENGTH + (4 + hidden) * OCTET_SCALAR_LENGTH


def _requested_indexes(schema: CredentialSchema, names: Iterable[str]) -> list[int]:
    """Schema positions of requested names; unknown or never-disclosed names make the request malformed."""
    indexes = []
    for name in names:
        try:
            attribute = schema.attribute(name)
        except SchemaError:
            raise _malformed(
                f"the request asks for {name!r:.40}, which schema {schema.id} v{schema.version} does not have"
            ) from None
        if not attribute.disclosable:
            raise _malformed(f"the request asks for {name!r}, which is never disclosed")
        indexes.append(schema.index_of(name))
    return sorted(indexes)


def _fields(data: object, names: tuple[str, ...], what: str) -> None:
    if not isinstance(data, Mapping):
        raise _malformed(f"a {what} must be a JSON object")
    if set(data) != set(names):
        raise _malformed(f"a {what} has exactly the fields {sorted(names)}, got {sorted(map(str, data))[:10]}")


def _load(text: object, what: str) -> Any:
    if isinstance(text, Mapping):
        return text
    if not isinstance(text, (str, bytes)) or len(text) > MAX_JSON_LENGTH:
        raise _malformed(f"a {what} must be JSON text of at most {MAX_JSON_LENGTH} bytes")
    try:
        return json.loads(text)
    except ValueError:
        raise _malformed(f"a {what} must be JSON text") from None
