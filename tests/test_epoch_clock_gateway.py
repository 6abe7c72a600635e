"""Epochs on the chain's clock, on real parts (slapd, an anvil of its own, three gateways).

Deployed with `epoch_length`, every centre's epoch e ends at the same chain time: the gateways
number their epochs by it (a fresh one starts at the chain's epoch, not at 1), close each one
when it ends with nobody asking, refuse an early close, and anchor no sooner than the chain
allows; the epochs settle with every anchor on time, and a gateway that was down closes the
epochs it missed when it is back.
"""

from __future__ import annotations

import time

import pytest

from gateway.client.http import GatewayClient
from gateway.node.errors import Conflict
from ledger.ids import centre_id
from tests.fixtures.anvil import running_anvil
from tests.fixtures.consortium import court, eventually
from tests.fixtures.payment import paid

LENGTH = 6
"""Seconds an epoch lasts: at most a quarter of the booking delay below, less the anchor margin."""
JOB = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


@pytest.fixture(scope="module")
def clocked(slapd_factory, tmp_path_factory):
    with running_anvil(tmp_path_factory.mktemp("clock-anvil")) as url:
        # an anchor window long enough that every gateway anchors on time, even on a loaded machine
        settings = {"epoch_length": LENGTH, "booking_delay": 60, "anchor_window": 120}
        with court(slapd_factory, url, tmp_path_factory.mktemp("clock"), 2, **settings) as running:
            yield running


def chain_time(clocked) -> int:
    return int(clocked.chain.w3.eth.get_block("latest")["timestamp"])


def test_gateways_number_epochs_by_the_chain_clock_and_close_them_when_it_ends(clocked):
    clock = clocked.deployment.epoch_clock()
    assert clock is not None and clock.length == LENGTH and clock.origin % LENGTH == 0
    index = clocked.centres["hpc-a"].node.parts.index
    first = {name: clocked.store(name).open_epoch() for name in clocked.centres}
    now = clock.epoch_at(max(time.time(), chain_time(clocked)))
    assert all(now - 2 <= e <= now for e in first.values()), (first, now)  # the chain's number, within a close
    # a gateway started after an epoch ended never anchors it (it settles at its deadline without that anchor):
    # bill in an epoch every centre has open or to come, so all three anchor it
    eventually(lambda: clocked.store("cloud-b").open_epoch() >= max(first.values()), within=30)

    token = clocked.login("alice", "hpc-a", at="cloud-b")
    with GatewayClient(clocked.url("cloud-b"), token=token) as client:
        view = client.submit(JOB | {"centre": "cloud-b"} | paid(clocked, JOB, "cloud-b", "hpc-a").fields())
        done = client.wait(view["id"])
    assert done["status"] == "succeeded"
    billed = clocked.store("cloud-b").record(done["record_id"]).epoch

    # nobody closes: the epoch closes when the chain's clock ends it, anchored by all three, then settles
    clocked.wait_settled(billed, timeout=180)
    for name in clocked.centres:
        anchor = index.anchor(centre_id(name), billed)
        assert anchor is not None and anchor.anchored_at >= clock.end(billed)
    ledger = clocked.chain.contract("UsageLedger", clocked.deployment.usage_ledger).functions
    assert ledger.lateOf(centre_id("cloud-b"), billed).call()[0] is False  # on time: netted with the epoch
    assert list(index.anchor(centre_id("cloud-b"), billed).homes) == [centre_id("hpc-a")]


def test_an_early_close_is_refused_with_the_time_it_ends(clocked):
    epochs = clocked.centres["ai-c"].node.parts.epochs
    open_epoch = clocked.store("ai-c").open_epoch()
    end = clocked.deployment.epoch_clock().end(open_epoch)
    if end - time.time() < 2:  # too near its end to be refused reliably: take the next one
        eventually(lambda: clocked.store("ai-c").open_epoch() > open_epoch, within=30)
        open_epoch += 1
        end += LENGTH
    with pytest.raises(Conflict, match=f"epoch {open_epoch} runs until {end}"):
        epochs.close()
    assert clocked.store("ai-c").open_epoch() == open_epoch


def test_a_gateway_back_after_missed_epochs_closes_them_and_catches_up(clocked):
    index = clocked.centres["hpc-a"].node.parts.index
    before = clocked.store("ai-c").open_epoch()
    clocked.stop_centre("ai-c")
    time.sleep(2.5 * LENGTH)  # two epochs or more end while it is down
    clocked.start_centre("ai-c")
    clock = clocked.deployment.epoch_clock()
    now = clock.epoch_at(max(time.time(), chain_time(clocked)))
    eventually(lambda: clocked.store("ai-c").open_epoch() >= now, within=30)
    assert clocked.store("ai-c").closed_epochs(since=before) == list(range(before, clocked.store("ai-c").open_epoch()))
    missed = clocked.store("ai-c").open_epoch() - 1
    eventually(lambda: index.sync() is not None and index.anchor(centre_id("ai-c"), missed), within=30)


def test_a_gateway_refuses_a_schedule_other_than_the_chains_clock(clocked):
    with pytest.raises(ValueError, match=f"run on the chain's clock, {LENGTH} s each: leave every out"):
        clocked.build_centre("hpc-a", epoch_every=LENGTH - 1)
