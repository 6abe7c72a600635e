"""A node whose chain node or directory fails keeps serving what needs neither, and says what is down.

Found by stopping real processes: a gateway could not start while its chain node was down
(and took the silence for another chain history), a hung slapd made every LDAP-bound
request wait out its timeout, and closing an epoch waited on the chain. Each test uses
real parts: anvil behind a relay the test cuts, slapd stopped with SIGSTOP.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from auth.directory import Directory, DirectoryUnavailable, InvalidCredentials
from gateway.books.background import BackgroundRound
from gateway.books.epochs import check_schedule, lapse_before
from gateway.client.http import GatewayClient
from gateway.node.config import ConfigError, GatewayConfig
from ledger.chain import ChainError, ChainUnavailable, connect
from ledger.ids import centre_id
from ledger.index import IndexMismatch
from tests.fixtures.configs import minimal_config
from tests.fixtures.consortium import PASSWORDS, eventually, start_consortium
from tests.fixtures.relay import Relay

#: Generous: what a refusal by an open breaker must come well under (the directory's timeout is 2 s here).
AT_ONCE = 1.0


@pytest.fixture(scope="module")
def faults(slapd_factory, anvil_url, tmp_path_factory):
    """A consortium of this module's own: its centres are restarted on a cut chain, on a schedule, …"""
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("faults"))
    yield running
    running.stop()


def operator(c, name: str) -> dict[str, str]:
    return {"X-Operator-Key": c.operator_key(name)}


# -- the chain node down -------------------------------------------------------------------------


def test_connect_need_not_find_the_node_and_reads_say_it_is_unavailable():
    with pytest.raises(ChainError, match="no JSON-RPC node answers"):
        connect("http://127.0.0.1:9")
    chain = connect("http://127.0.0.1:9", require_node=False)
    with pytest.raises(ChainUnavailable, match="does not answer"):
        chain.block_number()
    assert chain.answers() is False


def test_a_gateway_starts_while_its_chain_node_is_down_and_catches_up(faults, anvil_url):
    """hpc-a restarts while its chain node is unreachable: it serves sign-on, health and its books,
    answers what needs the chain with 503 (never a history mismatch), closes an epoch at once (202),
    and anchors it by itself once the node is back."""
    c = faults
    relay = Relay(anvil_url).start()
    try:
        c.stop_centre("hpc-a")
        relay.cut()
        node = c.start_centre("hpc-a", chain=connect(relay.url, require_node=False))
        index = node.parts.index

        with pytest.raises(ChainUnavailable):  # silence is not another chain history
            index.sync()
        with pytest.raises(ChainUnavailable):
            index.sync()
        assert not isinstance(index.last_error, IndexMismatch)

        url = c.url("hpc-a")
        health = httpx.get(url + "/v1/health").json()
        assert health["chain"]["reachable"] is False and health["status"] == "degraded", health
        with GatewayClient(url) as client:  # password sign-on: the directory and the local index
            assert client.login("alice", PASSWORDS["alice"])["principal"] == "alice@hpc-a"
        assert httpx.get(url + "/v1/members").status_code == 200

        down = httpx.get(url + "/v1/audit/epochs/1")  # the chain's view: needs the chain
        assert down.status_code == 503, down.text
        assert "chain node of hpc-a is unavailable" in down.json()["error"]
        assert down.json()["reasons"] == ["chain-unavailable"]

        epoch = node.parts.store.open_epoch()
        started = time.monotonic()
        closed = httpx.post(url + "/v1/epochs/close", headers=operator(c, "hpc-a"), timeout=30)
        assert closed.status_code == 202, closed.text
        assert time.monotonic() - started < 10  # generous: nothing waits on the chain
        assert (closed.json()["epoch"], closed.json()["anchored"]) == (epoch, False)
        assert node.parts.store.open_epoch() == epoch + 1  # the closure is committed
        assert node.parts.epochs.outbox.depth().get("anchor") == 1  # its anchor waits in the outbox
        assert httpx.get(url + "/v1/health").status_code == 200  # and the node stays responsive

        relay.restore()
        eventually(lambda: index.anchor(centre_id("hpc-a"), epoch) is not None)
        assert httpx.get(url + "/v1/health").json()["chain"]["reachable"] is True
        assert httpx.get(url + "/v1/audit/epochs/1").status_code == 200
        with GatewayClient(url) as client:  # waits for the anchor: it is there already
            assert client.close_epoch(c.operator_key("hpc-a"), epoch)["anchored"] is True
    finally:
        relay.cut()
        c.stop_centre("hpc-a")
        c.start_centre("hpc-a", chain=c.chain)


def test_a_first_start_without_the_chain_says_so(faults, tmp_path):
    """A gateway that never read the chain has nothing to serve from: it refuses to start, and says why."""
    node = faults.build_centre("hpc-a", chain=connect("http://127.0.0.1:9", require_node=False), data_dir=tmp_path)
    with pytest.raises(ChainUnavailable, match="has never read the chain"):
        node.start()
    node.stop()


def test_close_epoch_without_waiting_returns_the_closure_at_once(faults):
    with GatewayClient(faults.url("cloud-b")) as client:
        epoch = faults.store("cloud-b").open_epoch()
        first = client.close_epoch(faults.operator_key("cloud-b"), wait=False)
        assert first["epoch"] == epoch
        waited = client.close_epoch(faults.operator_key("cloud-b"), epoch)
        assert waited["anchored"] is True and waited["epoch"] == epoch


# -- scheduled epochs ------------------------------------------------------------------------------


def test_housekeeping_closes_epochs_on_schedule_and_manual_close_stays(faults):
    c = faults
    c.stop_centre("ai-c")
    try:
        node = c.start_centre("ai-c", epoch_every=1)  # the longest the demo's 2 s booking delay allows
        store = node.parts.store
        first = store.open_epoch()
        eventually(lambda: store.open_epoch() > first, within=30)
        eventually(lambda: node.parts.index.anchor(centre_id("ai-c"), first) is not None)
        with GatewayClient(c.url("ai-c")) as client:  # an operator can still close one by hand
            before = store.open_epoch()
            assert client.close_epoch(c.operator_key("ai-c"), wait=False)["epoch"] >= before
    finally:
        c.stop_centre("ai-c")
        c.start_centre("ai-c")


def test_the_watcher_reads_claims_off_the_housekeeping_thread(faults):
    # a claim's evidence may take minutes to read: its round must not hold the scheduled close, anchors, settlement
    rounds = faults.centres["ai-c"].node.parts.epochs.rounds
    assert [r for r in rounds if isinstance(r, BackgroundRound)], rounds


def test_the_schedule_is_a_setting_of_the_centre(tmp_path):
    assert GatewayConfig.model_fields["epochs"].default.every == 0  # absent: manual only
    assert minimal_config(tmp_path, "[epochs]", 'every = "1h"').epochs.every == 3600
    assert minimal_config(tmp_path, "[epochs]", "every = 90").epochs.every == 90
    with pytest.raises(ConfigError, match=r"epochs\.every must be seconds .* got 'soon'"):
        minimal_config(tmp_path, "[epochs]", 'every = "soon"')


def test_the_longest_schedule_leaves_a_close_time_to_run_late_and_its_anchor_time_to_be_mined():
    assert check_schedule(85_440, 86_400) == 85_440  # a day's delay: 15 minutes late, a minute to anchor
    assert check_schedule(3_600, 86_400) == 3_600
    assert check_schedule(15, 60) == 15  # a short delay: a quarter of it late, half of it to anchor
    assert check_schedule(1, 2) == 1  # the demo's
    for every, delay in [(85_441, 86_400), (16, 60), (2, 2), (2, 1), (1, 0)]:
        with pytest.raises(ValueError, match=rf"every = {every} s closes epochs too far apart"):
            check_schedule(every, delay)


def test_a_record_due_just_after_a_close_does_not_lapse_at_the_next_under_the_longest_schedule_run_late():
    delay = 86_400
    every = check_schedule(85_440, delay)
    close = 1_900_000_000 - 1_900_000_000 % every
    due = close + 1  # a job that ended at its order's deadline, just after that close: in the next epoch
    for late in (0, 2, 60, 300, 900):  # the next close runs late (or the chain's clock is ahead) by this much
        assert due >= lapse_before(close + every + late, delay)


@pytest.mark.parametrize(("beyond", "refused"), [(0, False), (1, True), (7 * 86_400, True)])
def test_a_schedule_whose_epochs_outlast_the_booking_delay_is_refused_at_start(faults, beyond, refused):
    # A job that ends at its order's deadline just after a close has its record anchored at the next close, which
    # must come by deadline + the consortium's booking delay less the margin the anchor is given to be mined and
    # the time the close may run late, or the record lapses and the centre is never paid for the work.
    delay = faults.spec.booking_delay
    margin, late = min(60, delay // 2), min(900, delay // 4)
    every = delay - margin - late + beyond
    if not refused:
        assert faults.build_centre("ai-c", epoch_every=every, data_dir=faults.data_dir / "schedule-ok").parts.epochs
        return
    with pytest.raises(ValueError) as refusal:
        faults.build_centre("ai-c", epoch_every=every, data_dir=faults.data_dir / "schedule-refused")
    assert str(refusal.value) == (
        f"[epochs] every = {every} s closes epochs too far apart for the consortium's booking delay of {delay} s: "
        "a job that ends at its order's deadline just after a close would have its record anchored too late to "
        f"bill (it lapses, unpaid); set [epochs] every to at most {delay - margin - late} s (the booking delay "
        f"less {late} s for the close to run late and {margin} s to anchor)"
    )
    assert not (faults.data_dir / "schedule-refused").exists()  # refused before anything was made


# -- a hung directory ------------------------------------------------------------------------------


def test_a_hung_directory_costs_one_timeout_then_is_refused_at_once_until_it_answers(slapd_factory):
    users = [{"uid": "zoe", "password": "zoe-pw", "cn": "Zoe", "sn": "Z"}]
    slapd = slapd_factory(users=users)
    directory = Directory(
        slapd.url, slapd.base_dn, slapd.service_dn, slapd.service_password, centre="hpc-a", timeout=1.0, cooldown=2.0
    )
    assert directory.authenticate("zoe", "zoe-pw").uid == "zoe"
    with pytest.raises(InvalidCredentials):  # an answer, however unwelcome, is no outage
        directory.authenticate("zoe", "wrong")
    assert not directory.breaker.is_open

    hang(slapd.process)
    try:
        with pytest.raises(DirectoryUnavailable):  # waits out the timeout once
            directory.authenticate("zoe", "zoe-pw")
        assert directory.breaker.is_open
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable, match="asked again in"):
            directory.groups_of("zoe@hpc-a")
        assert time.monotonic() - started < AT_ONCE
    finally:
        slapd.process.send_signal(signal.SIGCONT)
    eventually(lambda: answers(directory), within=20)  # the probe after the cool-down closes it
    assert not directory.breaker.is_open


def hang(process) -> None:
    """SIGSTOP, and wait until the kernel shows every thread of it stopped."""
    process.send_signal(signal.SIGSTOP)
    tasks = Path(f"/proc/{process.pid}/task")

    def stopped() -> bool:
        return all((task / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t") for task in tasks.iterdir())

    eventually(stopped, within=10)


def answers(directory: Directory) -> bool:
    try:
        return directory.authenticate("zoe", "zoe-pw").uid == "zoe"
    except DirectoryUnavailable:
        return False


def test_a_hung_directory_answers_503_naming_the_centre(faults):
    c = faults
    slapd = c.slapds["cloud-b"]
    url = c.url("cloud-b")
    login = {"username": "carol", "password": PASSWORDS["carol"]}
    assert httpx.post(url + "/v1/login", json=login).status_code == 200
    hang(slapd.process)
    try:
        first = httpx.post(url + "/v1/login", json=login, timeout=30)
        assert first.status_code == 503, first.text
        assert first.json()["error"].startswith("the directory of cloud-b is unavailable")
        started = time.monotonic()
        second = httpx.post(url + "/v1/login", json=login, timeout=30)
        assert second.status_code == 503 and time.monotonic() - started < AT_ONCE
        assert second.json()["reasons"] == ["directory-unavailable"]
    finally:
        slapd.process.send_signal(signal.SIGCONT)
    eventually(lambda: httpx.post(url + "/v1/login", json=login).status_code == 200, within=30)
