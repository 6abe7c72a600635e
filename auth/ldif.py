"""Render a centre's directory (people and groups) as LDIF from a plain description.

One description feeds the real slapd used by tests, the embedded demo server and
the demo's own files, so they cannot drift apart. Passwords are stored salted
({SSHA}), which both slapd and ldaptor verify on bind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import warnings
from collections.abc import Iterable, Mapping

with warnings.catch_warnings():  # ldap3 2.9 imports names pyasn1 has deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldap3.utils.dn import escape_rdn, parse_dn

# inetOrgPerson/organizationalPerson/person attributes a user description may carry.
USER_ATTRIBUTES = (
    "cn",
    "sn",
    "givenName",
    "displayName",
    "initials",
    "mail",
    "telephoneNumber",
    "mobile",
    "title",
    "description",
    "departmentNumber",
    "employeeType",
    "employeeNumber",
    "o",
    "ou",
    "l",
    "st",
    "roomNumber",
    "businessCategory",
    "preferredLanguage",
    "manager",
)
_ALIASES = {"department": "departmentNumber"}
_USER_KEYS = frozenset(USER_ATTRIBUTES) | frozenset(_ALIASES) | {"uid", "password"}
_GROUP_KEYS = frozenset({"cn", "members", "principals", "gid", "description"})
FIRST_GID = 20000


class LdifError(ValueError):
    """The directory description cannot be rendered (missing or unknown fields)."""


def ssha(password: str, salt: bytes | None = None) -> str:
    """Salted SHA-1 as slapd and ldaptor expect in userPassword: {SSHA}base64(sha1(pw+salt)+salt)."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def people_dn(base_dn: str) -> str:
    return f"ou=people,{base_dn}"


def groups_dn(base_dn: str) -> str:
    return f"ou=groups,{base_dn}"


def user_dn(base_dn: str, uid: str) -> str:
    return f"uid={escape_rdn(uid)},{people_dn(base_dn)}"


def group_dn(base_dn: str, cn: str) -> str:
    return f"cn={escape_rdn(cn)},{groups_dn(base_dn)}"


def service_dn(base_dn: str) -> str:
    """The read-only account a gateway binds as to look people and groups up."""
    return f"cn=service,{base_dn}"


def centre_ldif(
    base_dn: str,
    users: Iterable[Mapping],
    groups: Iterable[Mapping] = (),
    *,
    service_password: str | None = None,
) -> str:
    """LDIF for a centre: base entry, ou=people, ou=groups, users, groups[, service account].

    users: {"uid", "password"?, "cn"?, "sn"?, "department"|"departmentNumber"?,
    "employeeType"?, ... any of USER_ATTRIBUTES}; values are str or list of str.
    groups: {"cn", "members"?: [local uid], "principals"?: ["uid@centre"], "gid"?: int,
    "description"?}. A group with local members is a groupOfNames (so slapd's memberOf
    overlay fills memberOf); one listing only principals is a posixGroup (memberUid);
    one with both is a groupOfNames that also carries memberUid (extensibleObject).
    """
    entries: list[list[tuple[str, str]]] = [_base_entry(base_dn)]
    entries.append([("dn", people_dn(base_dn)), ("objectClass", "organizationalUnit"), ("ou", "people")])
    entries.append([("dn", groups_dn(base_dn)), ("objectClass", "organizationalUnit"), ("ou", "groups")])
    if service_password is not None:
        if not service_password:
            raise LdifError("service_password must not be empty")
        entries.append(
            [
                ("dn", service_dn(base_dn)),
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "service"),
                ("userPassword", ssha(service_password)),
            ]
        )
    uids: set[str] = set()
    for user in users:
        entry = _user_entry(base_dn, user)
        uids.add(user["uid"])
        entries.append(entry)
    for index, group in enumerate(groups):
        entries.append(_group_entry(base_dn, group, uids, FIRST_GID + index))
    return "\n".join(_render(entry) for entry in entries)


def _base_entry(base_dn: str) -> list[tuple[str, str]]:
    try:
        attr, value, _ = parse_dn(base_dn)[0]
    except Exception as exc:  # ldap3 raises LDAPInvalidDnError and friends
        raise LdifError(f"invalid base DN {base_dn!r}: {exc}") from exc
    attr = attr.lower()
    if attr == "dc":
        return [
            ("dn", base_dn),
            ("objectClass", "dcObject"),
            ("objectClass", "organization"),
            ("dc", value),
            ("o", value),
        ]
    if attr == "o":
        return [("dn", base_dn), ("objectClass", "organization"), ("o", value)]
    if attr == "ou":
        return [("dn", base_dn), ("objectClass", "organizationalUnit"), ("ou", value)]
    raise LdifError(f"base DN {base_dn!r} must start with dc=, o= or ou=")


def _values(value: object, what: str) -> list[str]:
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if values is None or not all(isinstance(v, str) and v for v in values):
        raise LdifError(f"{what} must be a non-empty string or a list of them, got {value!r}")
    return values


def _user_entry(base_dn: str, user: Mapping) -> list[tuple[str, str]]:
    unknown = sorted(set(user) - _USER_KEYS)
    if unknown:
        raise LdifError(
            f"unknown user field(s) {unknown}; allowed: uid, password, department, {', '.join(USER_ATTRIBUTES)}"
        )
    uid = user.get("uid")
    if not isinstance(uid, str) or not uid:
        raise LdifError(f"user without a uid: {dict(user)!r}")
    attrs: dict[str, list[str]] = {}
    for key, value in user.items():
        if key in ("uid", "password"):
            continue
        attrs.setdefault(_ALIASES.get(key, key), []).extend(_values(value, f"{uid}.{key}"))
    attrs.setdefault("cn", [uid])
    attrs.setdefault("sn", [attrs["cn"][0].split()[-1]])
    entry = [("dn", user_dn(base_dn, uid)), ("objectClass", "inetOrgPerson"), ("uid", uid)]
    entry += [(name, v) for name, values in attrs.items() for v in values]
    if "password" in user:
        password = user["password"]
        if not isinstance(password, str) or not password:
            raise LdifError(f"user {uid!r}: password must be a non-empty string")
        entry.append(("userPassword", ssha(password)))
    return entry


def _group_entry(base_dn: str, group: Mapping, uids: set[str], default_gid: int) -> list[tuple[str, str]]:
    unknown = sorted(set(group) - _GROUP_KEYS)
    if unknown:
        raise LdifError(f"unknown group field(s) {unknown}; allowed: {', '.join(sorted(_GROUP_KEYS))}")
    cn = group.get("cn")
    if not isinstance(cn, str) or not cn:
        raise LdifError(f"group without a cn: {dict(group)!r}")
    members = _values(group.get("members", []), f"group {cn}.members") if group.get("members") else []
    principals = _values(group.get("principals", []), f"group {cn}.principals") if group.get("principals") else []
    strangers = sorted(set(members) - uids)
    if strangers:
        raise LdifError(f"group {cn!r} lists unknown local user(s) {strangers}")
    entry = [("dn", group_dn(base_dn, cn))]
    if members:
        entry.append(("objectClass", "groupOfNames"))
        if principals:
            entry.append(("objectClass", "extensibleObject"))
    else:
        entry += [("objectClass", "posixGroup"), ("gidNumber", str(int(group.get("gid", default_gid))))]
    entry.append(("cn", cn))
    if group.get("description"):
        entry.append(("description", str(group["description"])))
    entry += [("member", user_dn(base_dn, uid)) for uid in members]
    entry += [("memberUid", p) for p in principals]
    return entry


def _render(entry: list[tuple[str, str]]) -> str:
    return "".join(_line(attr, value) for attr, value in entry)


def _line(attr: str, value: str) -> str:
    """One attribute line; values LDIF cannot carry verbatim are base64-encoded (RFC 2849)."""
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")) and not value.endswith(" ")
    if safe:
        return f"{attr}: {value}\n"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"


def check_password(stored: str | bytes, password: str) -> bool:
    """True if `password` matches a userPassword value ({SSHA} or plaintext), in constant time."""
    stored = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else stored
    candidate = password.encode("utf-8")
    if stored[:6].upper() == "{SSHA}":
        try:
            raw = base64.b64decode(stored[6:], validate=True)
        except ValueError:
            return False
        if len(raw) <= 20:
            return False
        digest, salt = raw[:20], raw[20:]
        return hmac.compare_digest(hashlib.sha1(candidate + salt).digest(), digest)
    if stored.startswith("{"):
        return False  # a scheme we do not know ({CRYPT}, {ARGON2}, ...): never compare as text
    return hmac.compare_digest(stored.encode("utf-8"), candidate)
