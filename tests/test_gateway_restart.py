"""A centre's gateway stops (or dies) and starts again on the same data folder: what resumes.

Runs on a consortium of its own (a fresh deployment on the session's anvil and a new
slapd per centre), because it stops and restarts gateways and closes epochs out of step.
Each restart builds a new node with gateway.node.assemble.build_node on the centre's data
folder, as `xcentre gateway` does at every start.
"""

from __future__ import annotations

import time

import pytest

from auth.credentials import generate_issuer_key
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.node.signon import IssuerKey
from ledger.ids import centre_id
from tests.fixtures.consortium import start_consortium
from tests.fixtures.jobs import eventually, final, job, submit


@pytest.fixture(scope="module")
def fresh(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("restart"))
    yield running
    running.stop()


def anchored(consortium, name: str, epoch: int) -> bool:
    node = consortium.centres[name].node
    node.parts.index.sync()
    return node.parts.index.anchor(centre_id(name), epoch) is not None


def test_an_epoch_closed_just_before_a_crash_is_anchored_after_the_restart(fresh):
    node = fresh.centres["hpc-a"].node
    job_id = submit(fresh, "alice", "hpc-a", job("hpc-a"))
    final(node.parts.store, job_id)
    # the crash: the closure is committed, the process dies before the anchor reaches the outbox
    closure = node.parts.store.close_open_epoch(node.parts.epochs._commit)
    assert closure.count >= 1
    fresh.stop_centre("hpc-a")
    fresh.start_centre("hpc-a")
    eventually(lambda: anchored(fresh, "hpc-a", closure.epoch))
    anchor = fresh.centres["hpc-a"].node.parts.index.anchor(centre_id("hpc-a"), closure.epoch)
    assert anchor.record_count == closure.count
    assert {h.hex(): (c.root.hex(), c.count, c.total) for h, c in anchor.homes.items()} == {
        h: (c.root, c.count, c.total) for h, c in closure.homes.items()
    }


def test_a_new_issuer_key_queued_before_a_crash_is_published_after_the_restart(fresh, monkeypatch):
    rotated = IssuerKey(*generate_issuer_key())
    fresh.stop_centre("cloud-b")
    # the first start with the new key queues its publication, then dies before sending it
    fresh.build_centre("cloud-b", issuer_key=rotated).parts.signon.publish_issuer_key()
    later = time.time() + 5  # the restart comes a few seconds later
    monkeypatch.setattr("gateway.node.signon.time.time", lambda: later)
    node = fresh.start_centre("cloud-b", issuer_key=rotated)
    monkeypatch.undo()
    fresh.centres["cloud-b"].issuer_key = rotated
    eventually(lambda: (node.parts.index.sync() or node.parts.index.current_issuer_key("cloud-b")).pk == rotated.pk)


def test_stopping_leaves_the_backlog_queued_and_the_restart_runs_it(fresh):
    fresh.stop_centre("ai-c")
    node = fresh.start_centre("ai-c", workers=1)
    first = submit(fresh, "dave", "ai-c", job("ai-c", seconds=5))  # runs while the backlog is paid for
    backlog = [submit(fresh, "dave", "ai-c", job("ai-c")) for _ in range(3)]
    eventually(lambda: node.parts.store.get_job(first).status == "running")
    fresh.stop_centre("ai-c")  # waits for the running job, does not start the queued ones
    store = node.parts.store
    assert store.get_job(first).status == "succeeded"
    assert [store.get_job(j).status for j in backlog] == ["queued"] * 3
    node = fresh.start_centre("ai-c")
    assert [final(node.parts.store, j).status for j in backlog] == ["succeeded"] * 3


def test_a_job_whose_record_cannot_be_made_fails_instead_of_running_forever(fresh, monkeypatch):
    node = fresh.centres["hpc-a"].node

    def broken(*_: object) -> int:
        raise RuntimeError("price list unreadable")

    monkeypatch.setattr("gateway.node.centre.price", broken)
    job_id = submit(fresh, "alice", "hpc-a", job("hpc-a"))
    with GatewayClient(fresh.url("hpc-a"), token=fresh.login("alice", "hpc-a")) as client:
        done = final(node.parts.store, job_id, within=10)
        assert done.status == "failed" and done.record_id is None
        assert "usage record" in done.detail
        assert client.job(job_id)["status"] == "failed"


def test_closing_an_epoch_while_the_chain_is_unreachable_answers_and_anchors_later(fresh, monkeypatch):
    node = fresh.centres["hpc-a"].node
    epochs = node.parts.epochs
    flush = epochs.flush

    def chain_down() -> None:
        raise ConnectionError("chain node unreachable")

    monkeypatch.setattr(epochs, "flush", chain_down)
    with GatewayClient(fresh.url("hpc-a")) as client:
        closure = client.close_epoch(fresh.operator_key("hpc-a"), wait=False)  # answered at once (202)
    assert closure["anchored"] is False
    monkeypatch.setattr(epochs, "flush", flush)
    eventually(lambda: anchored(fresh, "hpc-a", closure["epoch"]))


def test_closing_a_named_epoch_is_safe_to_retry(fresh):
    store = fresh.centres["cloud-b"].node.parts.store
    key = fresh.operator_key("cloud-b")
    with GatewayClient(fresh.url("cloud-b")) as client:
        open_epoch = store.open_epoch()
        with pytest.raises(GatewayRefused) as wrong:
            client.close_epoch(key, epoch=open_epoch + 1)
        assert wrong.value.status == 409 and f"the open epoch is {open_epoch}" in wrong.value.error
        assert store.open_epoch() == open_epoch

        first = client.close_epoch(key, epoch=open_epoch)
        retry = client.close_epoch(key, epoch=open_epoch)  # e.g. the first answer was lost
        assert retry == first and retry["epoch"] == open_epoch
        assert store.open_epoch() == open_epoch + 1  # closed once, not twice
