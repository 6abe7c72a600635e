"""A consortium on embedded defaults, served until stdin closes or the process is ended.

Prints one JSON line — the URL of the first centre's gateway and a demo user of
that centre — so a benchmark in another process can load that one gateway.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import tempfile
from pathlib import Path

from auth.directory import Directory
from auth.ldap_embedded import EmbeddedLdap
from auth.ldif import centre_ldif, service_dn
from gateway.demo.local import LocalConsortium, demo_spec
from ledger.chain import connect


def main() -> None:
    spec = demo_spec()
    password = secrets.token_urlsafe(16)
    ldaps = {
        c.name: EmbeddedLdap(centre_ldif(c.base_dn, c.users, c.groups, service_password=password)) for c in spec.centres
    }
    with tempfile.TemporaryDirectory(prefix="xcentre-bench-") as tmp:
        directories = {
            c.name: Directory(ldaps[c.name].start(), c.base_dn, service_dn(c.base_dn), password, centre=c.name)
            for c in spec.centres
        }
        consortium = LocalConsortium(connect("embedded"), spec, directories, Path(tmp)).start()
        home = spec.centres[0]
        user = home.users[0]
        print(
            json.dumps(
                {"url": consortium.url(home.name), "user": {"username": user["uid"], "password": user["password"]}}
            ),
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        finally:
            consortium.stop()
            for ldap in ldaps.values():
                ldap.stop()


if __name__ == "__main__":
    main()
