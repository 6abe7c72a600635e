"""An embedded, read-only LDAP server for the demo (ldaptor serving an LDIF).

So `xcentre demo` needs no system package: the gateway talks to it with the same
ldap3 code it uses against slapd. It is for demos only — it has no access control
beyond this: it refuses every write, and passwords are taken out of the tree
when loaded, so searches and compares can never reveal or probe them; they are
only used to check simple binds. An empty password is an unauthenticated bind,
which it refuses (as slapd does).

Twisted's reactor can run only once per process, so one daemon thread runs it for
every EmbeddedLdap in the process; start() and stop() are called from any other
thread and block until the reactor has done the work.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable
from typing import Any

from auth.ldif import check_password

_lock = threading.Lock()
_thread: threading.Thread | None = None


class EmbeddedLdapError(RuntimeError):
    """The embedded server could not load its LDIF or listen."""


def _import_quietly() -> None:
    """Import ldaptor and Twisted once, hiding their dependencies' deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import ldaptor.inmemory
        import ldaptor.ldapfilter
        import ldaptor.protocols.ldap.ldapserver  # noqa: F401
        import twisted.internet.reactor  # noqa: F401


def _global_reactor() -> Any:
    """Twisted's global reactor (Any: its zope.interface methods are typed only under the mypy-zope plugin)."""
    from twisted.internet import reactor

    return reactor


def _reactor() -> Any:
    """The process's Twisted reactor, running in our daemon thread (started on first use)."""
    global _thread  # noqa: PLW0603 - one reactor thread per process, as Twisted allows only one reactor
    with _lock:
        if _thread is None:
            _import_quietly()
    reactor = _global_reactor()

    with _lock:
        if _thread is None:
            if reactor.running:
                raise EmbeddedLdapError("a Twisted reactor already runs in this process outside EmbeddedLdap")
            ready = threading.Event()
            reactor.callWhenRunning(ready.set)
            _thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False}, name="xcentre-ldap-reactor", daemon=True
            )
            _thread.start()
            if not ready.wait(10):
                raise EmbeddedLdapError("the Twisted reactor thread did not start")
    if threading.current_thread() is _thread:
        raise EmbeddedLdapError("EmbeddedLdap.start()/stop() must not be called from the reactor thread")
    return reactor


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in the reactor thread and wait for its (possibly deferred) result."""
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(_reactor(), fn, *args)


def _server_factory(root: Any, passwords: dict[str, list[str]], protocols: set[Any]) -> Any:
    """A Twisted factory whose protocol serves `root` read-only, checking binds against `passwords`."""
    from ldaptor.interfaces import IConnectedLDAPEntry
    from ldaptor.protocols import pureldap
    from ldaptor.protocols.ldap import distinguishedname, ldaperrors
    from ldaptor.protocols.ldap.ldapserver import LDAPServer
    from twisted.internet import protocol
    from twisted.python.components import registerAdapter

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise ldaperrors.LDAPUnwillingToPerform("this demo directory is read-only")

    class ReadOnlyLDAPServer(LDAPServer):
        def connectionMade(self) -> None:
            super().connectionMade()
            protocols.add(self)

        def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
            protocols.discard(self)
            super().connectionLost(reason)

        speaks_ldap = False

        def dataReceived(self, recd: bytes) -> None:
            # Every LDAP message is a SEQUENCE (0x30). Anything else is another protocol (an HTTP client on
            # a port this server took over): drop it, before ldaptor prints its decoder's error on stdout.
            if not self.speaks_ldap and recd:
                if recd[:1] != b"\x30":
                    self.transport.loseConnection()
                    return
                self.speaks_ldap = True
            super().dataReceived(recd)

        def handle_LDAPBindRequest(self, request: Any, controls: Any, reply: Any) -> Any:
            if request.version != 3:
                raise ldaperrors.LDAPProtocolError(f"LDAP version {request.version} not supported")
            self.checkControls(controls)
            if not isinstance(request.auth, bytes):
                raise ldaperrors.LDAPAuthMethodNotSupported("only simple bind is supported")
            if request.dn == b"":
                self.boundUser = None
                return pureldap.LDAPBindResponse(resultCode=0)
            if request.auth == b"":
                raise ldaperrors.LDAPUnwillingToPerform("unauthenticated bind (DN with no password) refused")
            d = self.factory.root.lookup(distinguishedname.DistinguishedName(request.dn))

            def check(entry: Any) -> Any:
                stored = passwords.get(entry.dn.getText().lower(), [])
                password = request.auth.decode("utf-8", "replace")
                if not any(check_password(value, password) for value in stored):
                    raise ldaperrors.LDAPInvalidCredentials()
                self.boundUser = entry
                return pureldap.LDAPBindResponse(resultCode=0, matchedDN=entry.dn.getText())

            def no_entry(failure: Any) -> None:
                failure.trap(ldaperrors.LDAPNoSuchObject)
                raise ldaperrors.LDAPInvalidCredentials()

            d.addCallbacks(check, no_entry)
            return d

        handle_LDAPAddRequest = read_only
        handle_LDAPDelRequest = read_only
        handle_LDAPModifyRequest = read_only
        handle_LDAPModifyDNRequest = read_only
        handle_LDAPCompareRequest = read_only
        handle_LDAPExtendedRequest = read_only

    class Factory(protocol.ServerFactory):
        def __init__(self, root: Any) -> None:
            self.root = root

        def buildProtocol(self, addr: Any) -> ReadOnlyLDAPServer:
            proto = ReadOnlyLDAPServer()
            proto.factory = self
            return proto

    # LDAPServer finds its tree by adapting the factory to IConnectedLDAPEntry.
    registerAdapter(lambda f: f.root, Factory, IConnectedLDAPEntry)
    return Factory(root)


def _load(ldif: bytes) -> Any:
    """Parse the LDIF into an in-memory tree; pull the passwords out of it. Runs in the reactor."""
    from ldaptor.inmemory import fromLDIFFile

    d = fromLDIFFile(io.BytesIO(ldif.rstrip(b"\n") + b"\n\n"))  # the parser needs the last blank line

    def strip_passwords(root: Any) -> Any:
        passwords: dict[str, list[str]] = {}
        entries: list[Any] = []
        done = root.subtree(callback=entries.append)
        for entry in entries:
            for key in [k for k in entry.keys() if _text(k).lower() == "userpassword"]:
                passwords.setdefault(entry.dn.getText().lower(), []).extend(_text(v) for v in entry[key])
                del entry[key]
        done.addCallback(lambda _: (root, passwords))
        return done

    d.addCallback(strip_passwords)
    return d


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class EmbeddedLdap:
    """Serve `ldif` on host:port (port 0 = a free one) until stop(). Usable as a context manager."""

    def __init__(self, ldif: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ldif = ldif
        self.host = host
        self.port = port
        self._listening: Any = None  # Twisted's IListeningPort while running
        self._protocols: set[Any] = set()

    @property
    def url(self) -> str:
        if self._listening is None:
            raise EmbeddedLdapError("the embedded directory is not running")
        return f"ldap://{self.host}:{self.port}"

    def start(self) -> str:
        """Load the LDIF, listen, and return the ldap:// URL (idempotent)."""
        if self._listening is not None:
            return self.url
        try:
            root, passwords = _call(_load, self.ldif.encode("utf-8"))
        except Exception as exc:
            raise EmbeddedLdapError(f"cannot load the directory LDIF: {exc}") from exc
        factory = _server_factory(root, passwords, self._protocols)

        def listen() -> Any:
            return _global_reactor().listenTCP(self.port, factory, interface=self.host)

        try:
            self._listening = _call(listen)
        except Exception as exc:
            raise EmbeddedLdapError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = self._listening.getHost().port
        return self.url

    def stop(self) -> None:
        """Stop listening and drop open connections (idempotent)."""
        if self._listening is None:
            return
        listening, self._listening = self._listening, None

        def shutdown() -> Any:
            for proto in list(self._protocols):
                if proto.transport is not None:
                    proto.transport.abortConnection()
            return listening.stopListening()

        _call(shutdown)

    def __enter__(self) -> EmbeddedLdap:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
