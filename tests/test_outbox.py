"""The outbox keeps chain writes durable, idempotent and in order."""

from __future__ import annotations

import threading
import time

import pytest

from ledger.chain import ChainRevert
from ledger.outbox import DONE, FAILED, PENDING, Outbox, OutboxConflict, OutboxError


@pytest.fixture
def path(tmp_path):
    return tmp_path / "outbox.sqlite"


def test_enqueue_then_drain_runs_handler_and_marks_done(path):
    box = Outbox(path)
    seen = []
    box.register("anchor", lambda p: seen.append(p) or "0xabc")
    item_id = box.enqueue("anchor", "anchor:hpc-a:1", {"epoch": 1, "root": "0x01"})

    assert [i.id for i in box.pending()] == [item_id]
    results = box.drain()

    assert seen == [{"epoch": 1, "root": "0x01"}]
    assert [(r.id, r.status, r.tx_hash) for r in results] == [(item_id, DONE, "0xabc")]
    item = box.item(item_id)
    assert item.status == DONE and item.tx_hash == "0xabc" and item.attempts == 1
    assert box.pending() == []
    assert box.drain() == []  # nothing runs twice


def test_enqueue_is_idempotent_on_key(path):
    box = Outbox(path)
    a = box.enqueue("anchor", "k1", {"epoch": 1, "root": "0x01"})
    b = box.enqueue("anchor", "k1", {"root": "0x01", "epoch": 1})  # same content, other order
    assert a == b
    assert len(box.pending()) == 1
    with pytest.raises(OutboxConflict, match="k1"):
        box.enqueue("anchor", "k1", {"epoch": 2, "root": "0x01"})
    with pytest.raises(OutboxConflict):
        box.enqueue("settle", "k1", {"epoch": 1, "root": "0x01"})
    assert box.item(a).payload == {"epoch": 1, "root": "0x01"}


def test_bad_input_is_refused_without_writing(path):
    box = Outbox(path)
    with pytest.raises(OutboxError):
        box.enqueue("anchor", "k", {"root": b"\x01"})  # bytes are not JSON
    with pytest.raises(OutboxError):
        box.enqueue("", "k", {})
    with pytest.raises(OutboxError):
        box.enqueue("anchor", "", {})
    assert box.pending() == []


def test_transient_failure_stays_pending_then_succeeds(path):
    box = Outbox(path)
    calls = {"n": 0}

    def flaky(payload):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("node unreachable")
        return "0xdone"

    box.register("anchor", flaky)
    item_id = box.enqueue("anchor", "k", {"epoch": 3})

    [first] = box.drain()
    assert first.status == PENDING and "node unreachable" in first.error
    item = box.item(item_id)
    assert item.status == PENDING and item.attempts == 1
    assert "ConnectionError" in item.last_error

    [second] = box.drain()
    assert second.status == DONE and second.tx_hash == "0xdone"
    assert box.item(item_id).attempts == 2


def test_revert_is_final(path):
    box = Outbox(path)
    calls = []

    def reverting(payload):
        calls.append(payload)
        raise ChainRevert("NotMember")

    box.register("anchor", reverting)
    item_id = box.enqueue("anchor", "k", {"epoch": 1})
    [result] = box.drain()
    assert result.status == FAILED and "NotMember" in result.error
    item = box.item(item_id)
    assert item.status == FAILED and "NotMember" in item.last_error
    assert [i.id for i in box.failed()] == [item_id]
    assert box.drain() == [] and len(calls) == 1  # not retried


def test_handler_may_treat_a_revert_as_already_done(path):
    box = Outbox(path)

    def anchor(payload):
        try:
            raise ChainRevert("AlreadyAnchored")
        except ChainRevert as exc:
            if "AlreadyAnchored" in str(exc):
                return None
            raise

    box.register("anchor", anchor)
    item_id = box.enqueue("anchor", "k", {"epoch": 1})
    [result] = box.drain()
    assert result.status == DONE and result.tx_hash is None
    assert box.item(item_id).status == DONE


def test_restart_resumes_pending_items(path):
    box = Outbox(path)
    first = box.enqueue("anchor", "a1", {"n": 1})
    second = box.enqueue("anchor", "a2", {"n": 2})
    box.register("anchor", lambda p: "0x1")
    box.drain()
    third = box.enqueue("anchor", "a3", {"n": 3})
    box.close()  # the process "dies" with a3 pending

    reopened = Outbox(path)
    assert [i.id for i in reopened.pending()] == [third]
    assert reopened.item(first).status == DONE and reopened.item(second).status == DONE
    assert reopened.enqueue("anchor", "a1", {"n": 1}) == first  # keys survive too
    done = []
    reopened.register("anchor", lambda p: done.append(p["n"]) or "0x3")
    assert [r.id for r in reopened.drain()] == [third]
    assert done == [3]


def test_order_is_kept_within_a_kind_across_failures(path):
    box = Outbox(path)
    log = []
    fail = {"on": True}

    def anchor(payload):
        if payload["n"] == 2 and fail["on"]:
            raise TimeoutError("slow node")
        log.append(("anchor", payload["n"]))
        return f"0x{payload['n']}"

    box.register("anchor", anchor)
    box.register("vote", lambda p: log.append(("vote", p["n"])) or "0xv")
    for n in (1, 2, 3):
        box.enqueue("anchor", f"a{n}", {"n": n})
    box.enqueue("vote", "v1", {"n": 1})

    results = box.drain()
    # anchor 3 must not overtake the failed anchor 2; other kinds carry on.
    assert log == [("anchor", 1), ("vote", 1)]
    assert [(r.key, r.status) for r in results] == [("a1", DONE), ("a2", PENDING), ("v1", DONE)]
    fail["on"] = False
    box.drain()
    assert log == [("anchor", 1), ("vote", 1), ("anchor", 2), ("anchor", 3)]


def test_items_without_handler_wait(path):
    box = Outbox(path)
    item_id = box.enqueue("settle", "s1", {"epoch": 1})
    assert box.drain() == []
    assert box.item(item_id).status == PENDING
    box.register("settle", lambda p: "0xs")
    assert [r.status for r in box.drain()] == [DONE]


def test_concurrent_enqueue_and_drain(path):
    box = Outbox(path)
    ran = []
    lock = threading.Lock()

    def handler(p):
        with lock:
            ran.append(p["n"])
        return "0x"

    box.register("anchor", handler)
    stop = threading.Event()

    def drainer():
        while not stop.is_set():
            box.drain()

    threads = [threading.Thread(target=drainer) for _ in range(2)]
    for t in threads:
        t.start()
    writers = [
        threading.Thread(target=lambda w=w: [box.enqueue("anchor", f"{w}-{n}", {"n": w * 100 + n}) for n in range(50)])
        for w in range(4)
    ]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    box.drain()
    assert sorted(ran) == sorted(w * 100 + n for w in range(4) for n in range(50))  # each once
    assert box.pending() == []


def test_background_worker_drains_after_enqueue(path):
    box = Outbox(path)
    done = threading.Event()
    box.register("anchor", lambda p: done.set() or "0x1")
    box.start(interval=60.0)  # only the enqueue wake-up can make it run in time
    try:
        item_id = box.enqueue("anchor", "k", {"n": 1})
        assert done.wait(10)
    finally:
        box.stop()
    assert box.item(item_id).status == DONE


def test_attempt_answers_with_what_the_chain_did(path):
    """A caller that must tell a person what happened gets done, reverted or still queued, never a guess."""
    box = Outbox(path)
    outcomes = {"ok": "0xfeed", "revert": ChainRevert("NotMember"), "down": ConnectionError("node unreachable")}

    def handler(payload):
        outcome = outcomes[payload["case"]]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    box.register("revoke", handler)
    done = box.attempt(box.enqueue("revoke", "ok", {"case": "ok"}), timeout=10)
    assert (done.status, done.tx_hash, done.attempts) == (DONE, "0xfeed", 1)
    reverted = box.attempt(box.enqueue("revoke", "revert", {"case": "revert"}), timeout=10)
    assert (reverted.status, reverted.last_error, reverted.tx_hash) == (FAILED, "NotMember", None)
    queued = box.attempt(box.enqueue("revoke", "down", {"case": "down"}), timeout=10)
    assert queued.status == PENDING and queued.attempts == 1 and "node unreachable" in queued.last_error
    assert box.attempt(done.id, timeout=10) == box.item(done.id)  # a finished item is only read
    with pytest.raises(OutboxError, match="no outbox item"):
        box.attempt(999, timeout=1)


def test_attempt_waits_no_longer_than_its_timeout(path):
    """A chain node that accepts the connection and never answers must not hold the caller."""
    box = Outbox(path)
    release = threading.Event()
    box.register("revoke", lambda p: release.wait(30) and "0xlate")
    item_id = box.enqueue("revoke", "k", {"n": 1})
    try:
        waiting = box.attempt(item_id, timeout=0.2)
        assert waiting.status == PENDING and waiting.attempts == 0
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while box.item(item_id).status != DONE:  # the helper's drain goes on and finishes the write
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert box.item(item_id).tx_hash == "0xlate"


def test_retry_puts_a_reverted_item_back_in_the_queue(path):
    """A revert is final for that attempt; asking for the write again sends it again."""
    box = Outbox(path)
    answers = [ChainRevert("NotMember"), "0x2"]

    def handler(payload):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    box.register("revoke", handler)
    item_id = box.enqueue("revoke", "k", {"n": 1})
    [first] = box.drain()
    assert first.status == FAILED and box.drain() == []
    again = box.retry(item_id)
    assert again.status == PENDING and again.last_error == "NotMember" and again.attempts == 1
    [second] = box.drain()
    assert second.status == DONE and box.item(item_id).attempts == 2
    assert box.retry(item_id).status == DONE  # only a failed item goes back
    with pytest.raises(OutboxError, match="no outbox item"):
        box.retry(999)
