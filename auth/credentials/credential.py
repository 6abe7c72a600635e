"""Issuing credentials: the home centre's BBS signature over a user's attributes.

The home centre signs every attribute of the schema, in order, with its issuer
key. issued_at/expires_at are rounded down to the hour so that disclosing them
puts the holder in a crowd of everyone issued in the same hour rather than singling
them out. holder_secret is a random value drawn at issue and handed to the holder's
wallet (the home does not keep it); it is never disclosed, and it makes every
credential's hidden part unguessable even to someone who knows the user's other
attributes.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_hash.auto import keccak

from auth import bbs
from ledger.primitives.canonical import canonical_json
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name

from .errors import CredentialError, SchemaError
from .schema import HOLDER_SECRET, CredentialSchema, check_value, normalise

SUITE = bbs.SHA256
HOUR = 3600
DEFAULT_LIFETIME = 7 * 24 * HOUR
KEY_ID_BYTES = 8
PUBLIC_KEY_LENGTH = 96
SIGNATURE_LENGTH = 80
KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_HOLDER_SECRET = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]*$")
_CLOCK = ("issued_at", "expires_at")


def key_id(issuer_pk: bytes) -> str:
    """The key's short id as presentations name it: the first 8 bytes of keccak256(pk), hex.

    It equals the first 8 bytes of the IdentityRegistry's bytes32 keyId, so a
    verifier can look the key up in its index.
    """
    if not isinstance(issuer_pk, (bytes, bytearray)) or len(issuer_pk) != PUBLIC_KEY_LENGTH:
        raise CredentialError(f"an issuer public key is {PUBLIC_KEY_LENGTH} bytes")
    return keccak(bytes(issuer_pk))[:KEY_ID_BYTES].hex()


def generate_issuer_key(key_material: bytes | None = None) -> tuple[bytes, bytes]:
    """A centre's BBS issuer key pair (secret 32 bytes, public 96 bytes); fresh randomness unless given."""
    material = secrets.token_bytes(32) if key_material is None else key_material
    try:
        sk = SUITE.keygen(material)
    except bbs.BBSError as exc:
        raise CredentialError(f"cannot derive an issuer key: {exc}") from None
    return sk, SUITE.sk_to_pk(sk)


def hour_floor(t: int) -> int:
    """`t` rounded down to the hour (credential times are coarse on purpose)."""
    return t - t % HOUR


@dataclass(frozen=True)
class Credential:
    """A signed attribute set held by the user's wallet. values: name -> string, in schema order."""

    schema_id: str
    schema_version: int
    issuer: str
    key_id: str
    values: dict[str, str] = field(default_factory=dict)
    signature: bytes = b""

    def verify(self, schema: CredentialSchema, issuer_pk: bytes) -> bool:
        """Does the issuer's key sign these values under this schema? (A wallet checks on receipt.)"""
        if (self.schema_id, self.schema_version) != (schema.id, schema.version):
            return False
        if (
            not isinstance(issuer_pk, (bytes, bytearray))
            or len(issuer_pk) != PUBLIC_KEY_LENGTH
            or key_id(issuer_pk) != self.key_id
        ):
            return False
        try:
            messages = schema.messages(self.values)
        except SchemaError:
            return False
        return SUITE.verify(bytes(issuer_pk), self.signature, schema.header, messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema_id,
            "version": self.schema_version,
            "issuer": self.issuer,
            "key_id": self.key_id,
            "values": dict(self.values),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Credential:
        """Parse and shape-check a credential (the signature is checked by .verify)."""
        if not isinstance(data, Mapping):
            raise CredentialError("a credential must be a JSON object")
        expected = {"schema", "version", "issuer", "key_id", "values", "signature"}
        if set(data) != expected:
            raise CredentialError(f"a credential has exactly the fields {sorted(expected)}, got {sorted(data)}")
        version, issuer, kid = data["version"], data["issuer"], data["key_id"]
        values, signature = data["values"], data["signature"]
        if not isinstance(data["schema"], str) or not isinstance(version, int) or isinstance(version, bool):
            raise CredentialError("credential schema must be a string and version an integer")
        if not is_centre_name(issuer):
            raise CredentialError(f"credential issuer {issuer!r:.40} is not a centre name")
        if not isinstance(kid, str) or not KEY_ID.fullmatch(kid):
            raise CredentialError("credential key_id must be 16 lowercase hex digits")
        if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise CredentialError("credential values must map names to strings")
        return cls(
            schema_id=data["schema"],
            schema_version=version,
            issuer=issuer,
            key_id=kid,
            values=dict(values),
            signature=_unhex(signature, "signature", SIGNATURE_LENGTH),
        )

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Credential:
        if isinstance(text, Mapping):
            return cls.from_dict(text)
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise CredentialError("a credential must be JSON text") from None
        return cls.from_dict(data)


def issue_credential(
    schema: CredentialSchema,
    issuer_sk: bytes,
    issuer_pk: bytes,
    values: Mapping[str, Any],
    *,
    now: int | None = None,
    lifetime: int = DEFAULT_LIFETIME,
) -> Credential:
    """Sign `values` (name -> str; ints and lists are normalised) as the home centre `values["home"]`.

    Filled in when absent: holder_secret (fresh randomness), issued_at (now) and
    expires_at (now + lifetime), and any attribute with a schema default. Both
    times are rounded down to the hour. Everything else must be given.
    """
    if not isinstance(values, Mapping):
        raise CredentialError("values must be a mapping of attribute name to value")
    unknown = [name for name in values if name not in schema.names]
    if unknown:
        raise CredentialError(f"schema {schema.id} v{schema.version} has no attributes {unknown}")
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime < HOUR:
        raise CredentialError(f"lifetime must be at least an hour, got {lifetime!r}")
    now = int(time.time()) if now is None else int(now)
    signed: dict[str, str] = {}
    for attribute in schema.attributes:
        name = attribute.name
        if name in values:
            signed[name] = normalise(attribute, values[name])
        elif name == HOLDER_SECRET:
            signed[name] = secrets.token_hex(32)
        elif name == "issued_at":
            signed[name] = str(now)
        elif name == "expires_at":
            signed[name] = str(now + lifetime)
        elif attribute.default is not None:
            signed[name] = attribute.default
        else:
            raise CredentialError(f"attribute {name!r} (source {attribute.source}) has no value")
    for name in _CLOCK:
        signed[name] = check_value(schema.attribute(name), str(hour_floor(int(signed[name]))))
    if int(signed["expires_at"]) <= int(signed["issued_at"]):
        raise CredentialError("expires_at must be at least an hour after issued_at")
    if not _HOLDER_SECRET.fullmatch(signed[HOLDER_SECRET]):
        raise CredentialError(f"{HOLDER_SECRET} must be 32 random bytes as 64 lowercase hex digits")
    home = signed["home"]
    if not is_centre_name(home):
        raise CredentialError(f"home must be a centre name ({CENTRE_NAME_RULE}), got {home!r:.40}")
    kid = key_id(issuer_pk)
    try:
        if SUITE.sk_to_pk(issuer_sk) != bytes(issuer_pk):
            raise CredentialError("the issuer public key does not belong to the issuer secret key")
        signature = SUITE.sign(issuer_sk, bytes(issuer_pk), schema.header, schema.messages(signed))
    except bbs.BBSError as exc:
        raise CredentialError(f"cannot sign the credential: {exc}") from None
    return Credential(
        schema_id=schema.id, schema_version=schema.version, issuer=home, key_id=kid, values=signed, signature=signature
    )


def _unhex(
    value: object, what: str, length: int | None = None, error: Callable[[str], Exception] = CredentialError
) -> bytes:
    if not isinstance(value, str) or len(value) % 2 or not _HEX.fullmatch(value):
        raise error(f"{what} must be lowercase hex")
    raw = bytes.fromhex(value)
    if length is not None and len(raw) != length:
        raise error(f"{what} must be {length} bytes, got {len(raw)}")
    return raw
