"""auth.directory against a real OpenLDAP slapd (tests/fixtures/slapd.py)."""

from __future__ import annotations

import socket

import ldap3
import pytest

from auth.directory import (
    Directory,
    DirectoryEntry,
    DirectoryError,
    DirectoryUnavailable,
    InvalidCredentials,
    UnknownUser,
)
from tests.fixtures.slapd import DEFAULT_GROUPS, DEFAULT_USERS

INJECTIONS = ["*", "*)(uid=*", "admin)(|(uid=*", "alice)(uid=*", "*)(|(objectClass=*", "alice\\", "al*"]


@pytest.fixture(scope="module")
def directory(slapd) -> Directory:
    return Directory(slapd.url, slapd.base_dn, slapd.service_dn, slapd.service_password, centre="hpc-a")


@pytest.fixture(scope="module")
def anonymous(slapd) -> Directory:
    return Directory(slapd.url, slapd.base_dn, centre="hpc-a")


def test_authenticate_returns_attributes_and_groups(directory):
    entry = directory.authenticate("alice", "alice-pw")
    assert isinstance(entry, DirectoryEntry)
    assert entry.uid == "alice"
    assert entry.dn == "uid=alice,ou=people,dc=hpc-a,dc=xcentre"
    assert entry.attributes["departmentNumber"] == "physics"
    assert entry.attributes["employeeType"] == "staff"
    assert entry.attributes["mail"] == "alice@hpc-a.example"
    assert entry.groups == ["gpu-users", "physics"]
    assert not {k.lower() for k in entry.attributes} & {"userpassword", "memberof"}


def test_multi_valued_attributes_are_lists(directory):
    entry = directory.authenticate("carol", "carol-pw")
    assert sorted(entry.attributes["employeeType"]) == ["faculty", "staff"]
    assert entry.groups == ["physics"]


def test_user_in_no_group(directory):
    assert directory.authenticate("bob", "bob-pw").groups == []


def test_anonymous_search_then_user_bind_works(anonymous):
    entry = anonymous.authenticate("alice", "alice-pw")
    assert entry.groups == ["gpu-users", "physics"]
    assert entry.attributes["employeeType"] == "staff"


def test_uid_is_returned_as_stored(directory):
    assert directory.authenticate("ALICE", "alice-pw").uid == "alice"


@pytest.mark.parametrize("typed", ["alice ", " alice", "Alice  ", " ALICE "])
def test_uid_spelt_with_insignificant_spaces_is_the_stored_uid(directory, typed):
    # LDAP's uid matching ignores case and surrounding spaces, so slapd finds alice for
    # "alice ". The uid handed back must be the directory's own: the home derives the
    # enrolment id (and its revocation) from it, and a second spelling would be a
    # second, unrevoked enrolment of the same person.
    assert directory.authenticate(typed, "alice-pw").uid == "alice"
    assert directory.entry(typed).uid == "alice"


@pytest.mark.parametrize("password", ["wrong", "ALICE-PW", "alice-pw ", "bob-pw"])
def test_wrong_password(directory, password):
    with pytest.raises(InvalidCredentials):
        directory.authenticate("alice", password)


def test_empty_password_is_refused_not_an_anonymous_bind(directory):
    with pytest.raises(InvalidCredentials):
        directory.authenticate("alice", "")


def test_unknown_user(directory):
    with pytest.raises(UnknownUser):
        directory.authenticate("zed", "whatever")


@pytest.mark.parametrize("uid", INJECTIONS)
def test_filter_injection_is_just_an_unknown_user(directory, uid):
    with pytest.raises(UnknownUser):
        directory.authenticate(uid, "alice-pw")


@pytest.mark.parametrize("uid", ["", "x" * 300, "a\x00b", None, 7])
def test_invalid_uids_are_unknown(directory, uid):
    with pytest.raises(UnknownUser):
        directory.authenticate(uid, "pw")


def test_errors_share_a_base_class():
    assert issubclass(InvalidCredentials, DirectoryError)
    assert issubclass(UnknownUser, DirectoryError)
    assert issubclass(DirectoryUnavailable, DirectoryError)


def test_special_characters_in_uid_are_escaped_in_dns_and_filters(slapd_factory):
    odd = "o'neil,(x)*+\\"
    server = slapd_factory(
        [{"uid": odd, "password": "odd-pw"}, {"uid": "plain", "password": "plain-pw"}],
        [
            {"cn": "odd-group", "members": [odd]},
            {"cn": 'odd, group #1 + "x"\\', "members": [odd], "principals": ["x@hpc-b"]},
        ],
    )
    d = Directory(server.url, server.base_dn, server.service_dn, server.service_password)
    entry = d.authenticate(odd, "odd-pw")
    assert entry.uid == odd
    assert entry.groups == ['odd, group #1 + "x"\\', "odd-group"]
    assert d.groups_of("x@hpc-b") == ['odd, group #1 + "x"\\']
    with pytest.raises(UnknownUser):
        d.authenticate("o'neil,(x)", "odd-pw")
    assert d.authenticate("plain", "plain-pw").groups == []


def test_groups_of_remote_principal_uses_memberuid(directory):
    assert directory.groups_of("dave@hpc-b") == ["gpu-users", "visitors"]
    assert directory.groups_of("erin@hpc-c") == ["visitors"]
    assert directory.groups_of("nobody@hpc-b") == []


def test_groups_of_local_principal_includes_groupofnames(directory):
    assert directory.groups_of("alice@hpc-a") == ["gpu-users", "physics"]
    assert directory.groups_of("carol@hpc-a") == ["physics"]
    assert directory.groups_of("ghost@hpc-a") == []


def test_same_uid_at_another_centre_is_not_local(directory):
    assert directory.groups_of("alice@hpc-b") == []


def test_without_centre_name_only_memberuid_counts(slapd):
    d = Directory(slapd.url, slapd.base_dn, slapd.service_dn, slapd.service_password)
    assert d.groups_of("alice@hpc-a") == []
    assert d.groups_of("dave@hpc-b") == ["gpu-users", "visitors"]


@pytest.mark.parametrize("principal", ["alice", "@hpc-a", "alice@", "", None])
def test_groups_of_rejects_malformed_principals(directory, principal):
    with pytest.raises(ValueError):
        directory.groups_of(principal)


@pytest.mark.parametrize("principal", ["*", "*)(memberUid=*", "dave@hpc-b)(cn=*"])
def test_groups_of_escapes_principal(directory, principal):
    if "@" not in principal:
        with pytest.raises(ValueError):
            directory.groups_of(principal)
    else:
        assert directory.groups_of(principal) == []


def test_entry_reads_with_service_account(directory):
    entry = directory.entry("bob")
    assert entry.attributes["employeeType"] == "student"
    with pytest.raises(UnknownUser):
        directory.entry("zed")


def test_membership_changes_are_seen_at_once(slapd_factory):
    server = slapd_factory(DEFAULT_USERS, DEFAULT_GROUPS)
    d = Directory(server.url, server.base_dn, server.service_dn, server.service_password, centre="hpc-a")
    assert d.authenticate("bob", "bob-pw").groups == []
    server.modify(
        "dn: cn=gpu-users,ou=groups,dc=hpc-a,dc=xcentre\nchangetype: modify\n"
        "add: member\nmember: uid=bob,ou=people,dc=hpc-a,dc=xcentre\n-\n"
        "add: memberUid\nmemberUid: frank@hpc-d\n"
    )
    assert d.authenticate("bob", "bob-pw").groups == ["gpu-users"]
    assert d.groups_of("frank@hpc-d") == ["gpu-users"]
    server.modify("dn: uid=bob,ou=people,dc=hpc-a,dc=xcentre\nchangetype: delete\n")
    with pytest.raises(UnknownUser):
        d.authenticate("bob", "bob-pw")


def test_unreachable_directory_names_the_url(slapd):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    d = Directory(f"ldap://127.0.0.1:{port}", slapd.base_dn, slapd.service_dn, "svc-secret-xyz", timeout=1)
    with pytest.raises(DirectoryUnavailable) as err:
        d.authenticate("alice", "alice-pw")
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "svc-secret-xyz" not in str(err.value)


def test_wrong_service_password_is_unavailable_without_leaking_it(slapd):
    d = Directory(slapd.url, slapd.base_dn, slapd.service_dn, "not-the-password-42")
    with pytest.raises(DirectoryUnavailable) as err:
        d.authenticate("alice", "alice-pw")
    assert slapd.service_dn in str(err.value)
    assert "not-the-password-42" not in str(err.value) + repr(d)


def test_constructor_validates():
    with pytest.raises(ValueError):
        Directory("ldap://127.0.0.1:1", "")
    with pytest.raises(ValueError):
        Directory("ldap://127.0.0.1:1", "dc=x", bind_dn="cn=s,dc=x")
    with pytest.raises(ValueError):
        Directory("ldap://127.0.0.1:1", "dc=x", bind_dn="cn=s,dc=x", bind_password="")


# -- the slapd fixture's access rules (what a centre is expected to configure) --------------


def _conn(slapd, dn=None, password=None) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(slapd.url, get_info=ldap3.NONE), dn, password, auto_bind=True)


def _attrs(conn, base, flt="(objectClass=*)") -> dict:
    conn.search(base, flt, search_scope=ldap3.BASE, attributes=[ldap3.ALL_ATTRIBUTES, "memberOf"])
    if not conn.response:
        return {}
    return {k.lower(): v for k, v in conn.response[0]["raw_attributes"].items() if v}


def test_nobody_reads_passwords_and_people_read_only_themselves(slapd):
    alice_dn = "uid=alice,ou=people,dc=hpc-a,dc=xcentre"
    bob_dn = "uid=bob,ou=people,dc=hpc-a,dc=xcentre"
    alice = _conn(slapd, alice_dn, "alice-pw")
    own = _attrs(alice, alice_dn)
    assert own["departmentnumber"] == [b"physics"] and "memberof" in own and "userpassword" not in own
    other = _attrs(alice, bob_dn)
    assert set(other) <= {"uid", "objectclass"}
    service = _conn(slapd, slapd.service_dn, slapd.service_password)
    assert "userpassword" not in _attrs(service, bob_dn)
    assert _attrs(service, bob_dn)["employeetype"] == [b"student"]
    anonymous = _conn(slapd)
    assert set(_attrs(anonymous, bob_dn)) <= {"uid", "objectclass"}
    anonymous.search("ou=groups,dc=hpc-a,dc=xcentre", "(cn=*)")
    assert anonymous.response == []
    alice.search("ou=groups,dc=hpc-a,dc=xcentre", "(cn=*)", attributes=["cn"])
    assert len(alice.response) == 3


def test_concurrent_calls_do_not_share_ldap3_server_state(directory, monkeypatch):
    # The gateway calls the directory from a thread pool. ldap3 keeps the address of the
    # open connection on the Server object (set in open, cleared in close), so threads
    # sharing one Server can see another's close between "connected" and "am I
    # connected?" and fail with "invalid server address". Replay that interleaving:
    # while one call is opening, another runs to completion on another thread.
    import threading

    original = ldap3.Server.update_availability
    interleaved: list[object] = []

    def meanwhile(server, address, available):
        original(server, address, available)
        if available and not interleaved:
            interleaved.append(None)
            other = threading.Thread(target=lambda: interleaved.append(directory.entry("bob")))
            other.start()
            other.join()

    monkeypatch.setattr(ldap3.Server, "update_availability", meanwhile)
    assert directory.entry("alice").uid == "alice"
    assert interleaved[1].uid == "bob"
