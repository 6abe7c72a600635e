"""The consortium-wide credential schema: which attributes a credential signs, in which order.

Every centre must agree on the order (BBS signs a list) and on the header (so a
credential of one schema version can never pass as another), hence one TOML file
in the consortium configuration::

    id = "xcentre.user"
    version = 1

    [[attribute]]
    name = "holder_secret"
    source = "generated"      # an LDAP attribute name, or generated/centre/registry/clock
    disclosable = false       # default true
    # type = "int"            # default "string"; ints are canonical decimals
    # default = "0"           # used when the source has no value

A schema must contain the attributes the protocol itself relies on: holder_secret
(never disclosable), home, revocation_epoch, issued_at and expires_at.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SchemaError

HEADER_PREFIX = b"xcentre-credential/"
HOLDER_SECRET = "holder_secret"
#: Attributes the protocol needs, with the type it needs them to have.
REQUIRED = {
    HOLDER_SECRET: "string",
    "home": "string",
    "revocation_epoch": "int",
    "issued_at": "int",
    "expires_at": "int",
}
#: Attributes every presentation request must ask for (the verifier's own checks need them).
ALWAYS_REQUESTED = ("home", "revocation_epoch", "expires_at")
#: Sources that are not LDAP attributes.
SPECIAL_SOURCES = frozenset({"generated", "centre", "registry", "clock"})
#: The LDAP source whose values are the user's group cns (DirectoryEntry.groups).
GROUPS_SOURCE = "memberOf"
TYPES = frozenset({"string", "int"})
MAX_VALUE_LENGTH = 4096
INT_MAX = 2**63 - 1  # Cedar Long

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SCHEMA_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_INT = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_ATTRIBUTE_KEYS = frozenset({"name", "source", "type", "default", "disclosable"})


@dataclass(frozen=True)
class Attribute:
    """One signed attribute: its name, where the home centre takes it from, how it is typed."""

    name: str
    source: str
    type: str = "string"
    default: str | None = None
    disclosable: bool = True


@dataclass(frozen=True)
class CredentialSchema:
    """Ordered attributes plus the id/version that go into every signature's header."""

    id: str
    version: int
    attributes: tuple[Attribute, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _SCHEMA_ID.fullmatch(self.id):
            raise SchemaError(f"schema id must match [a-z0-9][a-z0-9._-]{{0,63}}, got {self.id!r}")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise SchemaError(f"schema version must be a positive integer, got {self.version!r}")
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise SchemaError(f"schema {self.id} lists an attribute twice: {names}")
        for attribute in self.attributes:
            _check_attribute(attribute)
        for name, kind in REQUIRED.items():
            found = next((a for a in self.attributes if a.name == name), None)
            if found is None:
                raise SchemaError(f"schema {self.id} lacks the attribute {name!r} the protocol relies on")
            if found.type != kind:
                raise SchemaError(f"schema attribute {name!r} must have type {kind!r}")
        if self.attribute(HOLDER_SECRET).disclosable:
            raise SchemaError(f"{HOLDER_SECRET!r} binds the credential to its holder and must not be disclosable")
        for name in ALWAYS_REQUESTED:
            if not self.attribute(name).disclosable:
                raise SchemaError(f"{name!r} is disclosed on every sign-on and must be disclosable")

    # -- loading --------------------------------------------------------------------

    @classmethod
    def load(cls, source: str | os.PathLike[str]) -> CredentialSchema:
        """Read a schema from a file path, or parse TOML text (a str with a newline is text)."""
        if isinstance(source, str) and "\n" in source:
            return cls.parse(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"cannot read credential schema {source}: {exc.strerror or exc}") from None
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> CredentialSchema:
        """Parse TOML text (see the module docstring for the format)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"credential schema is not valid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CredentialSchema:
        unknown = set(data) - {"id", "version", "attribute"}
        if unknown:
            raise SchemaError(f"credential schema has unknown keys: {sorted(unknown)}")
        entries = data.get("attribute")
        if not isinstance(entries, list) or not entries:
            raise SchemaError("credential schema needs a list of [[attribute]] tables")
        attributes = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise SchemaError(f"attribute #{i + 1} is not a table")
            extra = set(entry) - _ATTRIBUTE_KEYS
            if extra:
                raise SchemaError(f"attribute #{i + 1} has unknown keys: {sorted(extra)}")
            if "name" not in entry or "source" not in entry:
                raise SchemaError(f"attribute #{i + 1} needs a name and a source")
            attributes.append(
                Attribute(
                    name=entry["name"],
                    source=entry["source"],
                    type=entry.get("type", "string"),
                    default=entry.get("default"),
                    disclosable=entry.get("disclosable", True),
                )
            )
        missing = sorted({"id", "version"} - set(data))
        if missing:
            raise SchemaError(f"credential schema needs {' and '.join(missing)}")
        return cls(id=data["id"], version=data["version"], attributes=tuple(attributes))

    def to_dict(self) -> dict[str, Any]:
        """The schema as from_dict reads it, so a wallet can carry the schema of its credential."""
        attributes = []
        for a in self.attributes:
            entry = {"name": a.name, "source": a.source, "type": a.type, "disclosable": a.disclosable}
            if a.default is not None:
                entry["default"] = a.default
            attributes.append(entry)
        return {"id": self.id, "version": self.version, "attribute": attributes}

    # -- use ------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def header(self) -> bytes:
        """The BBS header: binds every signature and proof to this schema id and version."""
        return HEADER_PREFIX + self.id.encode() + b"/" + str(self.version).encode()

    def attribute(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise SchemaError(f"schema {self.id} v{self.version} has no attribute {name!r}")

    def index_of(self, name: str) -> int:
        """Position of `name` in the signed message list."""
        for i, attribute in enumerate(self.attributes):
            if attribute.name == name:
                return i
        raise SchemaError(f"schema {self.id} v{self.version} has no attribute {name!r}")

    def message(self, name: str, value: str) -> bytes:
        """Message bytes for one attribute: the name is signed with the value so values can't be swapped."""
        return f"{name}={value}".encode()

    def messages(self, values: Mapping[str, str]) -> list[bytes]:
        """The full signed message list, in schema order; `values` must hold exactly the schema's names."""
        missing = [n for n in self.names if n not in values]
        extra = [n for n in values if n not in self.names]
        if missing or extra:
            raise SchemaError(
                f"values do not match schema {self.id} v{self.version}: missing {missing}, unknown {extra}"
            )
        return [self.message(a.name, check_value(a, values[a.name])) for a in self.attributes]

    def from_directory(
        self, attributes: Mapping[str, str | Sequence[str]], groups: Sequence[str] = ()
    ) -> dict[str, str]:
        """Values of the LDAP-sourced attributes of one directory entry (lists become sorted, comma-joined).

        Attributes the entry lacks take the schema default or are left out (issuing
        then says which one is missing). `groups` are the entry's group cns, used for
        the "memberOf" source.
        """
        values: dict[str, str] = {}
        for attribute in self.attributes:
            if attribute.source in SPECIAL_SOURCES:
                continue
            raw = list(groups) if attribute.source == GROUPS_SOURCE else attributes.get(attribute.source)
            if raw is None or (isinstance(raw, (list, tuple)) and not raw and attribute.default is not None):
                if attribute.default is not None:
                    values[attribute.name] = attribute.default
                continue
            values[attribute.name] = normalise(attribute, raw)
        return values


def normalise(attribute: Attribute, value: object) -> str:
    """The canonical string of a value: ints as decimals, lists sorted, de-duplicated and comma-joined."""
    if isinstance(value, bool):
        raise SchemaError(f"attribute {attribute.name!r}: booleans are not attribute values")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = sorted({str(v) for v in value})
        if any("," in v for v in items):
            raise SchemaError(f"attribute {attribute.name!r}: list items may not contain commas")
        value = ",".join(items)
    return check_value(attribute, value)


def check_value(attribute: Attribute, value: object) -> str:
    """Refuse values that would make the signed message ambiguous or unparseable for verifiers."""
    if not isinstance(value, str):
        raise SchemaError(f"attribute {attribute.name!r} must be a string, got {type(value).__name__}")
    if len(value) > MAX_VALUE_LENGTH:
        raise SchemaError(f"attribute {attribute.name!r} is longer than {MAX_VALUE_LENGTH} characters")
    if attribute.type == "int" and (not _INT.fullmatch(value) or int(value) > INT_MAX):
        raise SchemaError(f"attribute {attribute.name!r} must be a non-negative decimal integer, got {value!r:.40}")
    return value


def _check_attribute(attribute: Attribute) -> None:
    if not isinstance(attribute.name, str) or not _NAME.fullmatch(attribute.name):
        raise SchemaError(f"attribute name must match [a-z][a-z0-9_]{{0,31}}, got {attribute.name!r}")
    if not isinstance(attribute.source, str) or not _SOURCE.fullmatch(attribute.source):
        raise SchemaError(
            f"attribute {attribute.name!r}: source must be an LDAP attribute name or one of "
            f"{sorted(SPECIAL_SOURCES)}, got {attribute.source!r}"
        )
    if attribute.type not in TYPES:
        raise SchemaError(f"attribute {attribute.name!r}: type must be one of {sorted(TYPES)}")
    if not isinstance(attribute.disclosable, bool):
        raise SchemaError(f"attribute {attribute.name!r}: disclosable must be true or false")
    if attribute.default is not None:
        if not isinstance(attribute.default, str):
            raise SchemaError(f"attribute {attribute.name!r}: default must be a string")
        check_value(attribute, attribute.default)
