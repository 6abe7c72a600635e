"""OpenLDAP slapd instances on loopback: a centre's directory for a consortium on one machine (and for tests).

Each instance has its own folder: a cn=config loaded offline with `slapadd -n0` (mdb,
core/cosine/nis/inetorgperson schemas, the memberOf overlay, access rules), its database
and its log. Entries are loaded online with `ldapadd`, so the memberOf overlay fills
memberOf (slapadd skips overlays). The database stays in the folder: a slapd stopped and
started again on the same folder and port serves the same entries.

Access rules (what a centre would configure):
- userPassword: usable to bind, changeable by its owner, readable by nobody;
- anyone may find a person's DN by uid (entry, objectClass, uid);
- a person reads their own entry (incl. memberOf); the service account reads all people;
- groups are readable by any bound identity (people and the service account).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from auth.ldif import service_dn
from gateway.consortium.processes import accepting, free_port
from ledger.primitives.files import write_private

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else None)
SLAPADD = shutil.which("slapadd") or ("/usr/sbin/slapadd" if os.path.exists("/usr/sbin/slapadd") else None)
LDAPADD = shutil.which("ldapadd")
LDAPMODIFY = shutil.which("ldapmodify")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
INSTALL_HINT = "OpenLDAP is not installed (Debian: apt-get install slapd ldap-utils)"


def installed() -> bool:
    """Whether slapd, slapadd and ldapadd are on this machine."""
    return bool(SLAPD and SLAPADD and LDAPADD)


def config_ldif(folder: Path, base_dn: str, admin_dn: str, admin_password: str) -> str:
    """The cn=config of one instance whose database lives in `folder`/db."""
    people, groups, service = f"ou=people,{base_dn}", f"ou=groups,{base_dn}", service_dn(base_dn)
    includes = "".join(f"include: file://{SCHEMA_DIR / name}.ldif\n\n" for name in SCHEMAS)
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {folder}/slapd.pid
olcArgsFile: {folder}/slapd.args
olcLogLevel: none

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: back_mdb
olcModuleLoad: memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}\
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcSizeLimit: 500

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {base_dn}
olcRootDN: {admin_dn}
olcRootPW: {admin_password}
olcDbDirectory: {folder}/db
olcDbMaxSize: 16777216
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,memberUid eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword by self =wx by anonymous auth by * none
olcAccess: {{1}}to dn.subtree="{people}" attrs=entry,objectClass,uid by * read
olcAccess: {{2}}to dn.subtree="{people}" by self read by dn.exact="{service}" read by * none
olcAccess: {{3}}to dn.subtree="{groups}" by users read by * none
olcAccess: {{4}}to * by * read

dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
"""


@dataclass
class SlapdServer:
    """A running slapd: where it listens, its suffix, and the accounts to use it with."""

    url: str
    port: int
    base_dn: str
    admin_dn: str
    admin_password: str
    service_dn: str
    service_password: str
    folder: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def add(self, ldif: str) -> None:
        """Add entries online (as the root DN), so overlays such as memberOf apply."""
        self._tool(LDAPADD, ldif)

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change set online (changetype: modify/add/delete)."""
        self._tool(LDAPMODIFY, ldif)

    def _tool(self, tool: str | None, ldif: str) -> None:
        if tool is None:
            raise RuntimeError("ldap-utils (ldapadd/ldapmodify) are not installed")
        done = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", self.admin_dn, "-y", str(self.folder / "admin.pw")],
            input=ldif.encode("utf-8"),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(tool).name} failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}"
            )

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 5 s); the folder and its database stay."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self, *, detach: bool = False) -> SlapdServer:
        """Start slapd again on the same folder and port (after stop): the same entries are served."""
        self.stop()
        self.process = launch(self.folder, self.port, detach=detach)
        if not _wait_accepting(self.port, self.process):
            raise RuntimeError(f"slapd did not start again on port {self.port}: {_log_tail(self.folder)}")
        return self


def launch(folder: Path, port: int, *, detach: bool = False) -> subprocess.Popen:
    """slapd serving the configuration in `folder`/slapd.d on 127.0.0.1:port, its log appended to slapd.log."""
    if SLAPD is None:
        raise RuntimeError(INSTALL_HINT)
    with open(folder / "slapd.log", "ab") as log:
        return subprocess.Popen(
            [SLAPD, "-d", "0", "-F", str(folder / "slapd.d"), "-h", f"ldap://127.0.0.1:{port}/"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )


def start_slapd(
    folder: Path,
    ldif: str,
    *,
    base_dn: str,
    service_password: str,
    admin_password: str = "admin-secret",
    port: int | None = None,
    detach: bool = False,
    server_class: type[SlapdServer] = SlapdServer,
) -> SlapdServer:
    """Configure, start and fill one slapd in `folder` (which must not exist yet) with `ldif` (entries under
    `base_dn`, the base entry first). On `port`, else a free one; `detach` starts it in a session of its own."""
    if not installed():
        raise RuntimeError(INSTALL_HINT)
    assert SLAPADD is not None
    folder.mkdir(parents=True)
    (folder / "db").mkdir()
    (folder / "slapd.d").mkdir()
    admin_dn = f"cn=admin,{base_dn}"
    # both hold the root DN's password in clear: for this user alone (0600), never readable in between
    write_private(folder / "admin.pw", admin_password)
    write_private(folder / "config.ldif", config_ldif(folder, base_dn, admin_dn, admin_password))
    done = subprocess.run(
        [SLAPADD, "-n0", "-F", str(folder / "slapd.d"), "-l", str(folder / "config.ldif")],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"slapadd -n0 failed: {done.stderr.decode(errors='replace').strip()}")
    for _attempt in range(1 if port else 5):  # another process may take a free port before slapd binds it
        chosen = port or free_port()
        process = launch(folder, chosen, detach=detach)
        if _wait_accepting(chosen, process):
            break
        process.wait()
    else:
        raise RuntimeError(f"slapd did not start: {_log_tail(folder)}")
    server = server_class(
        url=f"ldap://127.0.0.1:{chosen}",
        port=chosen,
        base_dn=base_dn,
        admin_dn=admin_dn,
        admin_password=admin_password,
        service_dn=service_dn(base_dn),
        service_password=service_password,
        folder=folder,
        process=process,
    )
    try:
        server.add(ldif)
    except BaseException:
        server.stop()
        raise
    return server


def _log_tail(folder: Path) -> str:
    try:
        return (folder / "slapd.log").read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _wait_accepting(port: int, process: subprocess.Popen, timeout: float = 10.0) -> bool:
    """True once the port accepts connections; False if slapd exited first (e.g. port taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if accepting(port):
            return True
        time.sleep(0.002)
    process.kill()
    return False
