"""A centre's LDAP directory: check a password, read a person's attributes and groups.

Works the same against OpenLDAP slapd and the embedded demo server; only the URL
differs. Every value put into a filter is escaped and every value put into a DN is
escaped, so a uid such as ``*)(uid=*`` is just a uid nobody has. Schema discovery
is off (``get_info=NONE``): the default re-reads the schema on each bind.

Layout expected (see auth/ldif.py): people in ``ou=people,<base>`` (inetOrgPerson
with uid), groups in ``ou=groups,<base>`` — groupOfNames with member DNs (slapd's
memberOf overlay mirrors them on the person) and/or posixGroup with memberUid, which
is how a centre lists people of *other* centres, by principal ``uid@centre``.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

with warnings.catch_warnings():  # ldap3 2.9 imports names pyasn1 has deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap_exc
    from ldap3.protocol.sasl.sasl import sasl_prep
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

from auth.groups_cache import DEFAULT_MAX_PRINCIPALS, KeptGroups

MAX_UID_LENGTH = 256
_HIDDEN = frozenset({"userpassword", "memberof"})


class DirectoryError(Exception):
    """Something went wrong asking the directory (base class of all directory errors)."""


class InvalidCredentials(DirectoryError):
    """The person exists but the password is wrong (or empty)."""


class UnknownUser(DirectoryError):
    """No person with that uid in this directory."""


class DirectoryUnavailable(DirectoryError):
    """The directory cannot be reached or refused the service account."""


@dataclass(frozen=True)
class DirectoryEntry:
    """A person as the directory describes them. attributes never include the password."""

    uid: str
    dn: str
    attributes: dict[str, str | list[str]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


class Directory:
    """Read-only client for one centre's directory.

    bind_dn/bind_password: a service account used to find people and list groups;
    without it searches are anonymous (fine for finding a DN; a directory that
    hides groups from anonymous readers then shows none to groups_of).
    centre: this centre's name, so groups_of knows which principals are local.
    timeout: seconds to connect, and to wait for each answer, before the directory counts as down.
    cooldown: seconds a directory that was down is not asked again (`Breaker`): every call in
    them is DirectoryUnavailable at once, so a hung slapd costs one timeout, not one per request.
    groups_ttl: seconds groups_of keeps a principal's groups (`KeptGroups`, at most
    `groups_kept` principals); 0, the default here, asks the directory every time. A group
    removed in LDAP still counts up to groups_ttl later; a failure is never kept.
    `clock` (monotonic seconds) is the kept groups' clock, injected by tests.
    authenticate and entry always read the directory.
    """

    def __init__(
        self,
        url: str,
        base_dn: str,
        bind_dn: str | None = None,
        bind_password: str | None = None,
        *,
        centre: str | None = None,
        people_dn: str | None = None,
        groups_dn: str | None = None,
        timeout: float = 2.0,
        cooldown: float = 10.0,
        groups_ttl: float = 0.0,
        groups_kept: int = DEFAULT_MAX_PRINCIPALS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not base_dn:
            raise ValueError("base_dn must not be empty")
        if (bind_dn is None) != (bind_password is None) or bind_password == "":
            raise ValueError("give both bind_dn and a non-empty bind_password, or neither")
        self.url = url.rstrip("/")
        self.base_dn = base_dn
        self.bind_dn = bind_dn
        self._bind_password = bind_password
        self.centre = centre
        self.people_dn = people_dn or f"ou=people,{base_dn}"
        self.groups_dn = groups_dn or f"ou=groups,{base_dn}"
        self.timeout = timeout
        self.breaker = Breaker(cooldown)
        self.kept_groups = KeptGroups(groups_ttl, groups_kept, clock)
        try:
            parse_dn(self.groups_dn)
        except ldap_exc.LDAPException as exc:
            raise ValueError(f"invalid base DN {base_dn!r}: {exc}") from None
        self._groups_key = _dn_key(self.groups_dn)
        try:
            self._new_server()
        except ldap_exc.LDAPException as exc:
            raise ValueError(f"invalid directory URL {self.url!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"Directory({self.url!r}, {self.base_dn!r}, bind_dn={self.bind_dn!r})"

    # -- public API -----------------------------------------------------------------

    def authenticate(self, uid: str, password: str) -> DirectoryEntry:
        """Check uid's password by binding as them; return their attributes and groups.

        Raises UnknownUser, InvalidCredentials (also for an empty password: LDAP would
        treat it as an unauthenticated bind and *succeed*; and for one no bind can carry,
        see _bindable), DirectoryUnavailable.
        """
        _check_uid(uid)
        if not _bindable(password):
            raise InvalidCredentials(f"no one's password for {uid!r}: empty, or not a bindable string")
        with self._connection() as conn:
            dn = self._find_dn(conn, uid)
            try:
                bound = conn.rebind(user=dn, password=password)
            except ldap_exc.LDAPException as exc:
                raise DirectoryUnavailable(f"directory {self.url} failed during bind: {type(exc).__name__}") from None
            if not bound:
                if conn.result.get("result") == 49:  # invalidCredentials
                    raise InvalidCredentials(f"wrong password for {uid!r}")
                raise DirectoryError(f"bind as {dn!r} refused: {_describe(conn)}")
            return self._read_entry(conn, dn, uid)

    def entry(self, uid: str) -> DirectoryEntry:
        """A person's current attributes and groups, read with the service account."""
        _check_uid(uid)
        with self._connection() as conn:
            return self._read_entry(conn, self._find_dn(conn, uid), uid)

    def groups_of(self, principal: str) -> list[str]:
        """cn of this centre's groups that list `principal` ("uid@centre"), sorted.

        Groups list outside principals by memberUid; a principal of this centre
        (centre set and equal) also gets its groupOfNames groups and memberUid=uid.
        Kept groups_ttl seconds (within them the directory is not asked, even when down).
        """
        _split_principal(principal)  # a malformed principal is refused before the kept groups are consulted
        return self.kept_groups.get(principal, self._read_groups)

    def _read_groups(self, principal: str) -> list[str]:
        uid, home = _split_principal(principal)
        with self._connection() as conn:
            clauses = [f"(memberUid={escape_filter_chars(principal)})"]
            if self.centre is not None and home == self.centre:
                clauses.append(f"(memberUid={escape_filter_chars(uid)})")
                try:
                    dn = self._find_dn(conn, uid)
                except UnknownUser:
                    dn = None
                if dn is not None:
                    clauses.append(f"(member={escape_filter_chars(dn)})")
            return sorted(self._group_cns(conn, clauses))

    # -- internals ------------------------------------------------------------------

    def _new_server(self) -> ldap3.Server:
        return ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=self.timeout)

    def _connection(self) -> _Session:
        # A Server per connection: ldap3 records the open connection's address on the
        # Server (set on open, cleared on close), so calls from the gateway's thread
        # pool sharing one Server could see each other's close and fail to open.
        conn = ldap3.Connection(
            self._new_server(),
            user=self.bind_dn,
            password=self._bind_password,
            read_only=True,
            receive_timeout=max(1, math.ceil(self.timeout)),
            raise_exceptions=False,
        )
        return _Session(conn, self)

    def _find_dn(self, conn: ldap3.Connection, uid: str) -> str:
        flt = f"(uid={escape_filter_chars(uid)})"
        self._search(conn, self.people_dn, flt, ["uid"], size_limit=2)
        found = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if not found:
            raise UnknownUser(f"no user {uid!r} in {self.people_dn}")
        if len(found) > 1:
            raise DirectoryError(f"uid {uid!r} is ambiguous in {self.people_dn}")
        return found[0]["dn"]

    def _read_entry(self, conn: ldap3.Connection, dn: str, asked: str) -> DirectoryEntry:
        self._search(conn, dn, "(objectClass=*)", [ldap3.ALL_ATTRIBUTES, "memberOf"], scope=ldap3.BASE)
        found = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if not found:
            raise DirectoryError(f"cannot read {dn!r} (access denied?)")
        raw = found[0].get("raw_attributes") or {}
        attributes: dict[str, str | list[str]] = {}
        member_of: list[str] = []
        for name, values in raw.items():
            texts = _texts(values)
            if name.lower() == "memberof":
                member_of = texts
            elif name.lower() not in _HIDDEN and texts:
                attributes[name] = texts[0] if len(texts) == 1 else texts
        stored = attributes.get("uid", [])
        uid = _stored_uid(dn, [stored] if isinstance(stored, str) else stored, asked)
        groups = {cn for cn in map(self._group_cn, member_of) if cn}
        clauses = [f"(memberUid={escape_filter_chars(uid)})"]
        if self.centre is not None:
            clauses.append(f"(memberUid={escape_filter_chars(f'{uid}@{self.centre}')})")
        if not member_of:  # no memberOf overlay (or no groups): ask the groups themselves
            clauses.append(f"(member={escape_filter_chars(dn)})")
        groups |= self._group_cns(conn, clauses)
        return DirectoryEntry(uid=uid, dn=dn, attributes=attributes, groups=sorted(groups))

    def _group_cns(self, conn: ldap3.Connection, clauses: list[str]) -> set[str]:
        flt = clauses[0] if len(clauses) == 1 else f"(|{''.join(clauses)})"
        self._search(conn, self.groups_dn, flt, ["cn"])
        cns: set[str] = set()
        for e in conn.response or []:
            if e.get("type") == "searchResEntry":
                cn = self._group_cn(e["dn"])
                if cn:
                    cns.add(cn)
        return cns

    def _group_cn(self, dn: str) -> str | None:
        """The cn of a group DN directly under this centre's groups, else None."""
        first = _first_rdn(dn)
        if first is None:
            return None
        attr, value, parent = first
        return value if attr.lower() == "cn" and _dn_key(parent) == self._groups_key else None

    def _search(
        self,
        conn: ldap3.Connection,
        base: str,
        flt: str,
        attributes: list[str],
        *,
        scope: Literal["BASE", "LEVEL", "SUBTREE"] = ldap3.SUBTREE,
        size_limit: int = 0,
    ) -> None:
        try:
            conn.search(base, flt, search_scope=scope, attributes=attributes, size_limit=size_limit)
        except ldap_exc.LDAPCommunicationError as exc:
            raise DirectoryUnavailable(f"directory {self.url} unreachable: {type(exc).__name__}") from None
        except ldap_exc.LDAPException as exc:
            raise DirectoryError(f"search in {base!r} failed: {type(exc).__name__}: {exc}") from None
        code = conn.result.get("result") if conn.result else None
        if code in (0, 4):  # success, sizeLimitExceeded (we asked for at most N)
            return
        if code == 32:  # noSuchObject: e.g. a directory without ou=groups holds no groups
            conn.response = []
            return
        raise DirectoryError(f"search in {base!r} failed: {_describe(conn)}")


class Breaker:
    """A circuit breaker in front of the directory: a directory that failed is not asked for `cooldown` s.

    Closed, every call goes through. A call that finds the directory unavailable opens it:
    for `cooldown` seconds each call is refused at once (DirectoryUnavailable, saying why
    and for how long), instead of each waiting out its own timeout. Then one call is let
    through as a probe (the others are still refused): an answer of any kind closes the
    breaker, another failure opens it for a new cool-down.
    """

    def __init__(self, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._probing = False
        self._why = ""

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def enter(self, url: str) -> None:
        """Let a call through, or refuse it at once while the breaker is open (DirectoryUnavailable)."""
        with self._lock:
            if self._open_until is None:
                return
            left = self._open_until - self._clock()
            if left <= 0 and not self._probing:
                self._probing = True  # this call is the probe
                return
            wait = f"asked again in {math.ceil(left)} s" if left > 0 else "a probe is under way"
            raise DirectoryUnavailable(f"{url} did not answer ({self._why}); not asked meanwhile, {wait}")

    def answered(self) -> None:
        """The directory answered (whatever it said): close."""
        with self._lock:
            self._open_until, self._probing, self._why = None, False, ""

    def failed(self, why: str) -> None:
        """The directory could not be reached or did not answer in time: open for a cool-down."""
        with self._lock:
            self._open_until, self._probing, self._why = self._clock() + self.cooldown, False, why


class _Session:
    """Open + (service or anonymous) bind on enter, unbind on exit; maps socket errors; tells the breaker."""

    def __init__(self, conn: ldap3.Connection, directory: Directory) -> None:
        self.conn = conn
        self.directory = directory

    def __enter__(self) -> ldap3.Connection:
        d = self.directory
        d.breaker.enter(d.url)
        try:
            self.conn.open()
            ok = self.conn.bind()
        except ldap_exc.LDAPException as exc:
            d.breaker.failed(type(exc).__name__)
            raise DirectoryUnavailable(f"directory {d.url} unreachable: {type(exc).__name__}") from None
        except BaseException:
            d.breaker.answered()  # not the directory's failure: let the next call through
            raise
        if not ok:
            who = d.bind_dn or "anonymous"
            self.conn.unbind()
            d.breaker.answered()  # it answered: a refusal is no outage
            raise DirectoryUnavailable(f"directory {d.url} refused the bind as {who}: {_describe(self.conn)}")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, DirectoryUnavailable):
            self.directory.breaker.failed(str(exc).rsplit(": ", 1)[-1])
        else:
            self.directory.breaker.answered()
        try:
            self.conn.unbind()
        except ldap_exc.LDAPException:
            pass


def _first_rdn(dn: str) -> tuple[str, str, str] | None:
    """Split "attr=value,rest" at the first unescaped comma, unescaping value (RFC 4514)."""
    attr, eq, remainder = dn.partition("=")
    if not eq or not attr.strip():
        return None
    value = bytearray()
    i = 0
    while i < len(remainder):
        c = remainder[i]
        if c == "\\" and i + 1 < len(remainder):
            pair = remainder[i + 1 : i + 3]
            if len(pair) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in pair):
                value.append(int(pair, 16))
                i += 3
                continue
            value += remainder[i + 1].encode("utf-8")
            i += 2
            continue
        if c in ",+":
            break
        value += c.encode("utf-8")
        i += 1
    if i >= len(remainder) or remainder[i] != ",":
        return None  # no parent, or a multi-valued RDN: not one of our groups
    try:
        return attr.strip(), value.decode("utf-8").strip(), remainder[i + 1 :]
    except UnicodeDecodeError:
        return None


def _dn_key(dn: str) -> str:
    """A DN compared loosely: lower case, no spaces around separators (our own DNs only)."""
    return ",".join("=".join(p.strip() for p in rdn.split("=", 1)) for rdn in dn.lower().split(","))


def _describe(conn: ldap3.Connection) -> str:
    result = conn.result or {}
    text = result.get("description") or "error"
    message = result.get("message")
    return f"{text} ({message})" if message else text


def _texts(values: list) -> list[str]:
    out = []
    for value in values:
        if isinstance(value, bytes):
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                continue  # binary attribute (e.g. a photo): not an attribute a policy can use
        else:
            out.append(str(value))
    return out


def _stored_uid(dn: str, stored: list[str], asked: str) -> str:
    """The uid as the directory spells it, never as it was typed.

    The directory found the entry with its own matching rules (caseIgnoreMatch with
    insignificant-space handling: "Alice " finds alice), and callers derive identities
    from the uid: the home's enrolment id and its revocation, principals uid@home. Echoing
    the typed spelling would give one person several identities, one of them unrevoked.
    """
    wanted = _fold(asked)
    matches = sorted(u for u in stored if _fold(u) == wanted)
    if matches:
        return matches[0]
    if len(stored) == 1:  # matched by rules we do not replicate (e.g. Unicode normalisation)
        return stored[0]
    raise DirectoryError(f"cannot tell which uid of {dn!r} was meant by {asked!r:.80}")


def _fold(value: str) -> str:
    """An approximation of LDAP's caseIgnoreMatch: case-folded, runs of spaces as one, trimmed."""
    return " ".join(part for part in value.split(" ") if part).casefold()


def _bindable(password: object) -> bool:
    """Whether a simple bind can carry `password`: ldap3 sends SASLprep(password) (RFC 4013) as UTF-8.

    SASLprep refuses control characters (NUL among them), private-use and
    non-characters, and maps some characters to nothing, so a password of only those
    would be an empty, unauthenticated bind; lone surrogates are not UTF-8. Such a
    value is nobody's password: a wrong credential, never a failure of the directory.
    """
    if not isinstance(password, str) or not password:
        return False
    try:
        prepared = sasl_prep(password)
        return bool(prepared) and bool(prepared.encode("utf-8"))
    except (ldap_exc.LDAPSASLPrepError, UnicodeError):
        return False


def _check_uid(uid: object) -> None:
    if not isinstance(uid, str) or not uid or len(uid) > MAX_UID_LENGTH or "\x00" in uid:
        raise UnknownUser(f"not a valid uid: {uid!r:.80}")


def _split_principal(principal: object) -> tuple[str, str]:
    if not isinstance(principal, str) or principal.count("@") < 1:
        raise ValueError(f"principal must look like uid@centre, got {principal!r:.80}")
    uid, home = principal.rsplit("@", 1)
    if not uid or not home or len(principal) > MAX_UID_LENGTH or "\x00" in principal:
        raise ValueError(f"principal must look like uid@centre, got {principal!r:.80}")
    return uid, home
