"""A principal's directory groups kept groups_ttl seconds (auth/groups_cache.py), against a real slapd."""

from __future__ import annotations

import threading

import pytest

from auth.directory import Directory, DirectoryUnavailable
from auth.groups_cache import MAX_GROUPS_TTL, KeptGroups, check_ttl
from gateway.consortium import slapd as consortium_slapd
from gateway.consortium.processes import accepting
from gateway.node.config import ConfigError
from tests.fixtures.configs import minimal_config
from tests.fixtures.consortium import eventually
from tests.fixtures.slapd import DEFAULT_GROUPS, DEFAULT_USERS

GPU = "dn: cn=gpu-users,ou=groups,dc=hpc-a,dc=xcentre\nchangetype: modify\n"
BOB_DN = "uid=bob,ou=people,dc=hpc-a,dc=xcentre"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reader:
    """A stand-in for the directory: answers from `groups`, or raises `error`; counts the reads."""

    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {}
        self.error: Exception | None = None
        self.reads = 0

    def __call__(self, principal: str) -> list[str]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return list(self.groups.get(principal, []))


def directory(server, clock: Clock, ttl: float = 60, **options) -> Directory:
    return Directory(
        server.url,
        server.base_dn,
        server.service_dn,
        server.service_password,
        centre="hpc-a",
        groups_ttl=ttl,
        clock=clock,
        **options,
    )


# -- KeptGroups on its own -----------------------------------------------------------------------


def test_groups_are_kept_for_the_ttl_then_read_again():
    clock, read = Clock(), Reader()
    kept = KeptGroups(60, clock=clock)
    read.groups["dave@hpc-b"] = ["visitors"]
    assert kept.get("dave@hpc-b", read) == ["visitors"]
    read.groups["dave@hpc-b"] = []
    clock.now += 59.9
    assert kept.get("dave@hpc-b", read) == ["visitors"] and read.reads == 1
    clock.now += 0.1
    assert kept.get("dave@hpc-b", read) == [] and read.reads == 2


def test_a_caller_changing_its_list_does_not_change_what_is_kept():
    read = Reader()
    read.groups["a@x"] = ["g"]
    kept = KeptGroups(60, clock=Clock())
    kept.get("a@x", read).append("admin")
    assert kept.get("a@x", read) == ["g"]


def test_ttl_zero_reads_every_time():
    read = Reader()
    kept = KeptGroups(0, clock=Clock())
    for _ in range(3):
        kept.get("a@x", read)
    assert read.reads == 3 and len(kept) == 0


def test_a_failure_is_never_kept():
    clock, read = Clock(), Reader()
    kept = KeptGroups(60, clock=clock)
    read.groups["a@x"] = ["g"]
    kept.get("a@x", read)
    clock.now += 61
    read.error = DirectoryUnavailable("down")
    for _ in range(2):  # each call asks again, and the stale answer is not served instead
        with pytest.raises(DirectoryUnavailable):
            kept.get("a@x", read)
    assert read.reads == 3
    read.error = None
    read.groups["a@x"] = ["h"]
    assert kept.get("a@x", read) == ["h"]


def test_the_table_is_bounded_least_recently_used_first():
    read = Reader()
    kept = KeptGroups(60, max_principals=2, clock=Clock())
    kept.get("a@x", read)
    kept.get("b@x", read)
    kept.get("a@x", read)  # a is now the most recently used
    kept.get("c@x", read)  # so b goes
    assert len(kept) == 2 and read.reads == 3
    kept.get("a@x", read)
    assert read.reads == 3
    kept.get("b@x", read)
    assert read.reads == 4


def test_forget_drops_one_principal_or_all():
    read = Reader()
    kept = KeptGroups(60, clock=Clock())
    kept.get("a@x", read)
    kept.get("b@x", read)
    kept.forget("a@x")
    kept.get("a@x", read)
    kept.get("b@x", read)
    assert read.reads == 3
    kept.forget()
    assert len(kept) == 0


def test_an_answer_read_earlier_does_not_replace_one_read_later():
    clock, read = Clock(), Reader()
    kept = KeptGroups(60, clock=clock)
    started = threading.Event()
    finish = threading.Event()

    def slow(principal: str) -> list[str]:  # began before the removal, answers after it
        started.set()
        finish.wait(10)
        return ["removed-group"]

    slow_call = threading.Thread(target=kept.get, args=("a@x", slow))
    slow_call.start()
    started.wait(10)
    clock.now += 1
    assert kept.get("a@x", read) == []  # the later read, stored first
    finish.set()
    slow_call.join(10)
    assert kept.get("a@x", read) == [] and read.reads == 1


def test_many_threads_share_one_table():
    read = Reader()
    lock = threading.Lock()

    def counted(principal: str) -> list[str]:
        with lock:
            return read(principal)

    kept = KeptGroups(60, max_principals=50, clock=Clock())
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(500):
                principal = f"u{(n * 7 + i) % 80}@x"
                assert kept.get(principal, counted) == []
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(kept) <= 50


@pytest.mark.parametrize("ttl", [-1, MAX_GROUPS_TTL + 1, float("nan"), float("inf"), "60", True, None])
def test_a_bad_ttl_is_refused_saying_what_it_must_be(ttl):
    with pytest.raises(ValueError, match="groups_ttl must be a number of seconds from 0 to 3600"):
        check_ttl(ttl)
    with pytest.raises(ValueError, match="groups_ttl"):
        Directory("ldap://127.0.0.1:1", "dc=x", groups_ttl=ttl)


def test_a_bad_bound_is_refused():
    for bound in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="max_principals must be a positive integer"):
            KeptGroups(60, max_principals=bound)


# -- against slapd ----------------------------------------------------------------------------------


def test_a_group_added_or_removed_in_ldap_is_seen_after_the_ttl(slapd_factory):
    server = slapd_factory(DEFAULT_USERS, DEFAULT_GROUPS)
    clock = Clock()
    d = directory(server, clock, ttl=60)
    assert d.groups_of("frank@hpc-d") == []
    assert d.groups_of("bob@hpc-a") == []
    server.modify(f"{GPU}add: memberUid\nmemberUid: frank@hpc-d\n-\nadd: member\nmember: {BOB_DN}\n")
    clock.now += 59
    assert d.groups_of("frank@hpc-d") == []  # kept within the ttl
    assert d.groups_of("bob@hpc-a") == []
    clock.now += 1
    assert d.groups_of("frank@hpc-d") == ["gpu-users"]  # seen once it has passed
    assert d.groups_of("bob@hpc-a") == ["gpu-users"]

    server.modify(f"{GPU}delete: memberUid\nmemberUid: frank@hpc-d\n-\ndelete: member\nmember: {BOB_DN}\n")
    clock.now += 30
    assert d.groups_of("frank@hpc-d") == ["gpu-users"]  # a removal still counts up to the ttl later
    assert d.groups_of("bob@hpc-a") == ["gpu-users"]
    assert d.authenticate("bob", "bob-pw").groups == []  # a sign-on always reads the directory
    clock.now += 30
    assert d.groups_of("frank@hpc-d") == []
    assert d.groups_of("bob@hpc-a") == []


def test_ttl_zero_reads_the_directory_every_time(slapd_factory):
    server = slapd_factory(DEFAULT_USERS, DEFAULT_GROUPS)
    d = directory(server, Clock(), ttl=0)
    assert d.groups_of("frank@hpc-d") == []
    server.modify(f"{GPU}add: memberUid\nmemberUid: frank@hpc-d\n")
    assert d.groups_of("frank@hpc-d") == ["gpu-users"]
    server.modify(f"{GPU}delete: memberUid\nmemberUid: frank@hpc-d\n")
    assert d.groups_of("frank@hpc-d") == []


def test_a_malformed_principal_is_refused_before_anything_is_kept(slapd):
    d = directory(slapd, Clock(), ttl=60)
    with pytest.raises(ValueError, match="principal must look like uid@centre"):
        d.groups_of("no-centre")
    assert len(d.kept_groups) == 0


def test_the_breaker_still_opens_on_a_stopped_directory_and_failures_are_not_kept(slapd_factory):
    server = slapd_factory(DEFAULT_USERS, DEFAULT_GROUPS)
    clock = Clock()
    d = directory(server, clock, ttl=60, timeout=1.0, cooldown=0.5)
    assert d.groups_of("dave@hpc-b") == ["gpu-users", "visitors"]
    consortium_slapd.SlapdServer.stop(server)  # the process only: its folder and database stay
    try:
        with pytest.raises(DirectoryUnavailable, match="unreachable"):
            d.groups_of("erin@hpc-c")  # not kept: the directory is asked, and is down
        assert d.breaker.is_open
        with pytest.raises(DirectoryUnavailable, match="asked again in"):
            d.groups_of("erin@hpc-c")  # refused at once: the failure was not kept, the breaker says no
        assert d.groups_of("dave@hpc-b") == ["gpu-users", "visitors"]  # kept within the ttl: not asked
        clock.now += 60
        with pytest.raises(DirectoryUnavailable):
            d.groups_of("dave@hpc-b")  # past it, the directory's outage shows
    finally:
        server.process = consortium_slapd.launch(server.folder, server.port)
        eventually(lambda: accepting(server.port), within=10)
    eventually(lambda: _answers(d, "erin@hpc-c"), within=20)  # the probe after the cool-down closes it
    assert d.groups_of("erin@hpc-c") == ["visitors"]
    assert not d.breaker.is_open


def _answers(d: Directory, principal: str) -> bool:
    try:
        d.groups_of(principal)
        return True
    except DirectoryUnavailable:
        return False


# -- configuration -------------------------------------------------------------------------------------


def test_groups_ttl_is_a_setting_of_the_directory_table(tmp_path):
    assert minimal_config(tmp_path).directory.groups_ttl == 60  # absent: a minute
    assert minimal_config(tmp_path, "[directory]").directory.groups_ttl == 60
    assert minimal_config(tmp_path, "[directory]", "groups_ttl = 0").directory.groups_ttl == 0
    assert minimal_config(tmp_path, "[directory]", "groups_ttl = 2.5").directory.groups_ttl == 2.5
    assert minimal_config(tmp_path, "[directory]", "groups_ttl = 3600").directory.groups_ttl == 3600


@pytest.mark.parametrize("value", ["-1", "3601", '"60"', "true", "nan", "inf", "[60]"])
def test_a_bad_groups_ttl_is_refused_naming_the_setting(tmp_path, value):
    with pytest.raises(ConfigError, match=r"directory\.groups_ttl must be a number of seconds from 0 to 3600.* got "):
        minimal_config(tmp_path, "[directory]", f"groups_ttl = {value}")


def test_an_unknown_directory_setting_is_refused(tmp_path):
    with pytest.raises(
        ConfigError, match=r"directory\.groups_tl is not a setting: \[directory\] takes only `groups_ttl`"
    ):
        minimal_config(tmp_path, "[directory]", "groups_tl = 5")
    with pytest.raises(ConfigError, match=r"directory must be a table"):
        minimal_config(tmp_path, "directory = 5")


def test_the_epochs_table_is_still_explained_as_before(tmp_path):
    with pytest.raises(ConfigError, match=r"epochs\.often is not a setting: \[epochs\] takes only `every`"):
        minimal_config(tmp_path, "[epochs]", "often = 5")


def test_the_gateway_builds_its_directory_with_the_configured_ttl(tmp_path, monkeypatch):
    from gateway.node import assemble

    built: dict = {}
    for name in ("job_executor", "load_private_key", "load_issuer_key"):
        monkeypatch.setattr(assemble, name, lambda *a, **k: None)
    monkeypatch.setattr(assemble, "Deployment", type("D", (), {"from_json": staticmethod(lambda text: None)}))
    monkeypatch.setattr(assemble, "Account", type("A", (), {"from_key": staticmethod(lambda key: None)}))
    monkeypatch.setattr(assemble, "CredentialSchema", type("S", (), {"load": staticmethod(lambda path: None)}))
    monkeypatch.setattr(assemble, "build_node", lambda **parts: built.update(parts))
    for name in ("x.json", "k"):
        (tmp_path / name).write_text("{}")
    assemble.node_from_config(minimal_config(tmp_path, "[directory]", "groups_ttl = 15"), chain=object())
    assert built["directory"].kept_groups.ttl == 15
    assemble.node_from_config(minimal_config(tmp_path), chain=object())
    assert built["directory"].kept_groups.ttl == 60
