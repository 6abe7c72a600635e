"""The embedded demo directory (ldaptor) answers the same Directory code as slapd."""

from __future__ import annotations

import shutil
import subprocess
import threading

import ldap3
import pytest

from auth.directory import Directory, DirectoryUnavailable, InvalidCredentials, UnknownUser
from auth.ldap_embedded import EmbeddedLdap, EmbeddedLdapError
from auth.ldif import centre_ldif, check_password, ssha
from tests.fixtures.slapd import DEFAULT_GROUPS, DEFAULT_USERS

BASE = "dc=hpc-a,dc=xcentre"
SERVICE_DN = f"cn=service,{BASE}"
LDIF = centre_ldif(BASE, DEFAULT_USERS, DEFAULT_GROUPS, service_password="service-secret")


@pytest.fixture(scope="module")
def server():
    with EmbeddedLdap(LDIF) as running:
        yield running


@pytest.fixture(scope="module", params=["service", "anonymous"])
def directory(request, server) -> Directory:
    if request.param == "service":
        return Directory(server.url, BASE, SERVICE_DN, "service-secret", centre="hpc-a")
    return Directory(server.url, BASE, centre="hpc-a")


def test_authenticate(directory):
    entry = directory.authenticate("alice", "alice-pw")
    assert entry.uid == "alice"
    assert entry.dn == f"uid=alice,ou=people,{BASE}"
    assert entry.attributes["departmentNumber"] == "physics"
    assert entry.attributes["employeeType"] == "staff"
    assert entry.groups == ["gpu-users", "physics"]
    assert "userPassword" not in entry.attributes
    assert sorted(directory.authenticate("carol", "carol-pw").attributes["employeeType"]) == ["faculty", "staff"]


def test_wrong_and_empty_password(directory):
    with pytest.raises(InvalidCredentials):
        directory.authenticate("alice", "bob-pw")
    with pytest.raises(InvalidCredentials):
        directory.authenticate("alice", "")


@pytest.mark.parametrize("uid", ["zed", "*", "*)(uid=*", "admin)(|(uid=*", "al*"])
def test_unknown_and_injected_uids(directory, uid):
    with pytest.raises(UnknownUser):
        directory.authenticate(uid, "alice-pw")


def test_groups_of(directory):
    assert directory.groups_of("dave@hpc-b") == ["gpu-users", "visitors"]
    assert directory.groups_of("alice@hpc-a") == ["gpu-users", "physics"]
    assert directory.groups_of("alice@hpc-b") == []


def test_directory_is_read_only(server):
    conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), SERVICE_DN, "service-secret", auto_bind=True)
    assert not conn.add(f"uid=mallory,ou=people,{BASE}", "inetOrgPerson", {"cn": "m", "sn": "m"})
    assert conn.result["description"] == "unwillingToPerform"
    assert not conn.modify(f"uid=alice,ou=people,{BASE}", {"employeeType": [(ldap3.MODIFY_REPLACE, ["admin"])]})
    assert not conn.delete(f"uid=bob,ou=people,{BASE}")
    assert Directory(server.url, BASE).authenticate("bob", "bob-pw").uid == "bob"


def test_passwords_cannot_be_read_or_probed(server):
    conn = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), auto_bind=True)
    conn.search(BASE, "(userPassword=*)")
    assert conn.response == []
    conn.search(BASE, "(uid=alice)", attributes=[ldap3.ALL_ATTRIBUTES, "userPassword"])
    assert (
        "userPassword" not in conn.response[0]["raw_attributes"]
        or not conn.response[0]["raw_attributes"]["userPassword"]
    )


@pytest.mark.skipif(shutil.which("ldapwhoami") is None, reason="ldap-utils not installed")
def test_unauthenticated_bind_is_refused(server):
    # ldap3 refuses to send a DN with an empty password; ldapwhoami does send it.
    done = subprocess.run(
        ["ldapwhoami", "-x", "-H", server.url, "-D", f"uid=alice,ou=people,{BASE}", "-w", ""],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "nwilling" in done.stderr


def test_several_servers_share_one_reactor_and_stop_cleanly():
    other = centre_ldif(
        "dc=hpc-b,dc=xcentre", [{"uid": "dave", "password": "dave-pw"}], [{"cn": "ai", "members": ["dave"]}]
    )
    first, second = EmbeddedLdap(LDIF), EmbeddedLdap(other)
    urls = [first.start(), second.start()]
    assert urls[0] != urls[1] and first.start() == urls[0]
    assert Directory(urls[1], "dc=hpc-b,dc=xcentre").authenticate("dave", "dave-pw").groups == ["ai"]
    first.stop()
    first.stop()
    with pytest.raises(DirectoryUnavailable):
        Directory(urls[0], BASE, timeout=1).authenticate("alice", "alice-pw")
    assert Directory(second.url, "dc=hpc-b,dc=xcentre").authenticate("dave", "dave-pw").uid == "dave"
    second.stop()
    with pytest.raises(EmbeddedLdapError):
        _ = second.url


def test_start_and_stop_from_another_thread():
    results: list = []

    def run():
        with EmbeddedLdap(LDIF) as server:
            results.append(Directory(server.url, BASE).authenticate("bob", "bob-pw").uid)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert results == ["bob"]


def test_bad_ldif_is_a_clear_error():
    with pytest.raises(EmbeddedLdapError):
        EmbeddedLdap("dn: dc=x\nthis is not ldif\n").start()


def test_ssha_round_trip():
    stored = ssha("s3cret")
    assert stored.startswith("{SSHA}")
    assert check_password(stored, "s3cret")
    assert not check_password(stored, "s3cret ")
    assert check_password("plain", "plain") and not check_password("plain", "Plain")
    assert not check_password("{CRYPT}abc", "{CRYPT}abc")
