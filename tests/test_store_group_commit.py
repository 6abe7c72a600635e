"""Gateway store, group commit and read connections: many threads' writes share one COMMIT, none returns before
its data is durable, a refused write fails alone, a failed COMMIT fails its whole group, and readers (on their
own connections) never wait for the writer nor see another thread's uncommitted rows. Real files, real threads."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.node.errors import DiskFull, disk_refusal
from gateway.store import IdempotencyConflict, ReplayedOrder, Store
from ledger.db import open_durable
from ledger.group_commit import GroupCommit
from tests.test_store import REQ, payment, running_job, signer
from tests.test_store_decisions import decision

WAIT = 30  # seconds a step may take on a busy machine before the test calls it a hang


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


class Commits:
    """The COMMITs run on the store's write connection (sqlite3's trace callback)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        store._db.set_trace_callback(self._seen)

    def _seen(self, statement: str) -> None:
        if statement.strip().upper().startswith("COMMIT"):
            self.count += 1


class Call(threading.Thread):
    """One store call on its own thread: its result or its exception, and whether it has returned."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.returned = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 -- the test asserts on it
            self.error = exc
        finally:
            self.returned.set()

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the call never returned"
        return self.result


def one_group(store: Store, calls: list[Call]) -> None:
    """Run the calls as one group: all queue for the store's lock (held here) before any writes."""
    with store._lock:
        for call in calls:
            call.start()
        _until(lambda: store._writer.queued == len(calls), f"{len(calls)} writers queue")
    for call in calls:
        call.outcome()


def other_connection_count(path: Path, sql: str, args: tuple[Any, ...] = ()) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(sql, args).fetchone()[0])
    finally:
        db.close()


# ------------------------------------------------------------------ many writers, few commits


def test_32_threads_writing_share_commits_and_each_job_is_durable_when_its_call_returns(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = Store(path)
    commits = Commits(store)
    threads, per_thread = 32, 6
    created: list[list[str]] = [[] for _ in range(threads)]
    problems: list[str] = []
    start = threading.Barrier(threads + 1)

    def writer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            n = t * 100 + i
            job, fresh = store.create_job(
                f"u{t}@hpc-a", "hpc-a", REQ | {"n": n}, "hpc-a", f"k{n}", payment=payment(n), decision=decision(n)
            )
            # committed when the call returns: this thread's read connection and another process's see it
            if not fresh or store.get_job(job.id) != job or store.job_by_key(f"u{t}@hpc-a", f"k{n}") != job:
                problems.append(f"{job.id} not readable after create_job returned")
            if other_connection_count(path, "SELECT COUNT(*) FROM jobs WHERE id = ?", (job.id,)) != 1:
                problems.append(f"{job.id} not committed when create_job returned")
            if store.decision_by_digest(job.decision or "00" * 32) is None:
                problems.append(f"{job.id}'s decision not readable")
            created[t].append(job.id)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    with store._lock:  # the first round queues whole, so at least that group shares a COMMIT
        for w in workers:
            w.start()
        start.wait()
        _until(lambda: store._writer.queued == threads, "every writer queues")
    for w in workers:
        w.join(WAIT)
    assert not any(w.is_alive() for w in workers), "a writer never returned"
    writes = threads * per_thread
    assert not problems, problems[:3]
    assert sum(len(ids) for ids in created) == writes
    assert commits.count < writes, f"{commits.count} COMMITs for {writes} writes: no group commit"
    store.close()
    with Store(path) as again:
        assert {j.id for j in again.list_jobs(limit=10_000)} == {i for ids in created for i in ids}
        assert len(again.decisions_for_epoch(1)) == writes


def test_a_refused_write_fails_alone_and_the_rest_of_its_group_commits(store: Store) -> None:
    taken, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "key", payment=payment(1))
    running = running_job(store)
    commits = Commits(store)

    def exploding(epoch: int) -> Any:
        raise RuntimeError("the signer is down")

    good = [
        Call(lambda n=n: store.create_job("bob@hpc-a", "hpc-a", REQ | {"n": n}, "hpc-a", f"b{n}", payment=payment(n)))
        for n in range(10, 16)
    ]
    replayed = Call(lambda: store.create_job("carol@hpc-a", "hpc-a", REQ, "hpc-a", "c", payment=payment(1)))
    conflict = Call(lambda: store.create_job("alice@hpc-a", "hpc-a", REQ | {"other": 1}, "hpc-a", "key"))
    half_done = Call(lambda: store.complete_job(running, "succeeded", 0, "", "", record=exploding))
    one_group(store, [*good[:3], replayed, conflict, half_done, *good[3:]])

    assert commits.count == 1, "the group shares one COMMIT"
    assert isinstance(replayed.error, ReplayedOrder) and taken.id in str(replayed.error)
    assert isinstance(conflict.error, IdempotencyConflict)
    assert isinstance(half_done.error, RuntimeError)
    assert store.get_job(running).status == "running" and store.records_for_epoch(1) == []  # its UPDATE undone
    for call in good:
        assert call.error is None
        job, fresh = call.result
        assert fresh and store.get_job(job.id) == job
    assert len(store.list_jobs(limit=100)) == 2 + len(good)
    assert store.job_by_key("carol@hpc-a", "c") is None


def test_nested_writes_join_the_outer_block(store: Store) -> None:
    commits = Commits(store)
    with pytest.raises(RuntimeError, match="after the nested write"):
        with store._tx():
            store.log_decision(decision(1))  # a callback's write inside a write
            assert store.decision_by_digest(decision(1).digest) is not None  # its own write, read on its connection
            raise RuntimeError("after the nested write")
    assert store.decision_by_digest(decision(1).digest) is None  # nothing of the block, the nested write included
    with store._tx():
        store.log_decision(decision(2))
        store.log_decision(decision(3))
    assert [d.digest_bytes for d in store.decisions_for_epoch(1)] == [decision(2).digest, decision(3).digest]
    assert commits.count == 1


# ------------------------------------------------------------------ a failed COMMIT fails its whole group


def test_a_commit_that_fails_fails_every_write_of_its_group_and_leaves_nothing(store: Store) -> None:
    """A real COMMIT failure: a deferred foreign key left dangling by one block fails the group's COMMIT."""
    before = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "before")[0]

    def dangling() -> None:
        with store._tx() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute(
                "INSERT INTO usage_records (record_id, job_id, epoch, home_centre, record, signature, leaf, created_at)"
                " VALUES ('0x01', 'job-nope', 1, '0x', '{}', '00', '00', 0)"
            )

    calls = [
        Call(lambda n=n: store.create_job("bob@hpc-a", "hpc-a", REQ | {"n": n}, "hpc-a", f"b{n}", decision=decision(n)))
        for n in range(5)
    ]
    failing = Call(dangling)
    one_group(store, [*calls[:2], failing, *calls[2:]])

    for call in [*calls, failing]:
        assert isinstance(call.error, sqlite3.IntegrityError), call.error
        assert "FOREIGN KEY constraint failed" in str(call.error)
    assert store.list_jobs(limit=100) == [before]
    assert store.decisions_for_epoch(1) == []
    # the store goes on: the next write opens a new group
    after, created = store.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a", "b0", decision=decision(0))
    assert created and store.get_job(after.id) == after
    assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []


def _fill(folder: Path) -> Path:
    """Fill the file system to its last byte; the file that does it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_fails_the_whole_group_and_the_store_goes_on_when_space_is_back(tiny_disk: Path) -> None:
    path = tiny_disk / "gateway.db"
    store = Store(path)
    try:
        kept = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "kept")[0]
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the group's COMMIT must grow the WAL
        filler = _fill(tiny_disk)
        calls = [
            Call(lambda n=n: store.create_job("bob@hpc-a", "hpc-a", {"x": "y" * 2000, "n": n}, "hpc-a", f"b{n}"))
            for n in range(8)
        ]
        one_group(store, calls)
        for call in calls:
            assert call.error is not None and isinstance(disk_refusal(call.error), DiskFull), call.error
        assert store.list_jobs(limit=100) == [kept]
        filler.unlink()
        again, created = store.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a", "b0")
        assert created and store.get_job(again.id) == again
    finally:
        store.close()
    with Store(path) as reopened:
        assert reopened._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert {j.idempotency_key for j in reopened.list_jobs(limit=100)} == {"kept", "b0"}


# ------------------------------------------------------------------ readers


def test_readers_never_wait_for_the_writer_nor_see_uncommitted_rows(store: Store) -> None:
    first, second = running_job(store), running_job(store)
    in_first, in_second = threading.Event(), threading.Event()
    let_first, let_second = threading.Event(), threading.Event()
    seen_inside: list[str] = []

    def holding(job_id: str, inside: threading.Event, let_go: threading.Event) -> Callable[[int], Any]:
        def sign(epoch: int) -> Any:
            seen_inside.append(store.get_job(job_id).status)  # its own write, on the write connection
            inside.set()
            assert let_go.wait(WAIT)
            return signer(job_id)(epoch)

        return sign

    a = Call(lambda: store.complete_job(first, "succeeded", 0, "", "", record=holding(first, in_first, let_first)))
    a.start()
    assert in_first.wait(WAIT)
    # a's block holds the write lock: a read on another thread neither waits for it nor sees a's UPDATE
    reader = Call(lambda: (store.get_job(first).status, store.records_for_epoch(1), store.jobs_by_status()))
    reader.start()
    assert reader.outcome() == ("running", [], {"running": 2})
    b = Call(lambda: store.complete_job(second, "failed", 1, "", "", record=holding(second, in_second, let_second)))
    b.start()
    _until(lambda: store._writer.queued == 1, "b queues behind a's block")
    let_first.set()
    assert in_second.wait(WAIT)
    # a's block is over, its group's COMMIT waits for b: a has not returned, and nobody sees its write
    assert not a.returned.is_set()
    assert store.get_job(first).status == "running" and store.closure(1) is None
    assert other_connection_count(store.path, "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == 0
    let_second.set()
    assert a.outcome().status == "succeeded" and b.outcome().status == "failed"
    assert seen_inside == ["succeeded", "failed"]
    assert store.get_job(first).status == "succeeded" and len(store.records_for_epoch(1)) == 2


def test_a_thread_holding_the_lock_outside_a_write_commits_inline(store: Store) -> None:
    queued = Call(lambda: store.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a", "queued"))

    def holder() -> str:
        with store._lock:
            queued.start()
            _until(lambda: store._writer.queued == 1, "another writer queues")
            job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "inline")
            # durable while this thread still holds the lock: it did not wait for the queued writer
            assert other_connection_count(store.path, "SELECT COUNT(*) FROM jobs WHERE id = ?", (job.id,)) == 1
            assert not queued.returned.is_set()
            return job.id

    inline = Call(holder)
    inline.start()
    job_id = inline.outcome()
    assert inline.error is None, inline.error
    assert queued.outcome()[1] and store.get_job(job_id) is not None


def test_reads_inside_a_write_see_its_own_rows_and_reads_outside_see_committed_ones(store: Store) -> None:
    with store._tx():
        job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "k")
        assert store.get_job(job.id) == job and store.job_by_key("alice@hpc-a", "k") == job
        outside = Call(lambda: store.get_job(job.id))
        outside.start()
        assert outside.outcome() is None
    assert store.get_job(job.id) == job


# ------------------------------------------------------------------ closing


def test_close_with_writers_pending_commits_them_or_fails_them_and_never_hangs(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = Store(path)
    job_id = running_job(store)
    inside, let_go = threading.Event(), threading.Event()

    def sign(epoch: int) -> Any:
        inside.set()
        assert let_go.wait(WAIT)
        return signer(job_id)(epoch)

    a = Call(lambda: store.complete_job(job_id, "succeeded", 0, "", "", record=sign))
    a.start()
    assert inside.wait(WAIT)
    b = Call(lambda: store.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a", "b"))
    b.start()
    _until(lambda: store._writer.queued == 1, "b queues")
    closer = Call(store.close)
    closer.start()
    let_go.set()  # a's group now waits for b, which races close() for the lock
    closer.outcome()
    assert a.outcome().status == "succeeded"
    b.outcome()
    assert b.error is None or isinstance(b.error, sqlite3.ProgrammingError), b.error
    with pytest.raises(sqlite3.ProgrammingError):
        store.create_job("carol@hpc-a", "hpc-a", REQ, "hpc-a", "c")
    with pytest.raises(sqlite3.ProgrammingError):
        store.get_job(job_id)
    with Store(path) as again:
        assert again.get_job(job_id).status == "succeeded"
        assert (again.job_by_key("bob@hpc-a", "b") is not None) == (b.error is None)


def test_close_amid_many_writers_keeps_exactly_what_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = Store(path)
    acknowledged: list[str] = []
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        for i in range(10_000):
            try:
                acknowledged.append(store.create_job(f"u{t}@hpc-a", "hpc-a", REQ, "hpc-a", f"k{i}")[0].id)
            except sqlite3.ProgrammingError as exc:  # the store closed
                errors.append(exc)
                return

    workers = [Call(lambda t=t: writer(t)) for t in range(16)]
    for w in workers:
        w.start()
    _until(lambda: len(acknowledged) >= 50, "some writes are acknowledged")
    store.close()
    for w in workers:
        w.outcome()
        assert w.error is None, w.error
    assert len(errors) == len(workers)
    with Store(path) as again:
        assert sorted(j.id for j in again.list_jobs(limit=100_000)) == sorted(acknowledged)


# ------------------------------------------------------------------ bad input


def test_a_group_size_below_one_is_refused() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    with pytest.raises(ValueError, match="max_group must be at least 1"):
        GroupCommit(db, max_group=0)
    db.close()


def test_a_group_bounded_at_one_write_commits_each_write(tmp_path: Path) -> None:
    single = Store(tmp_path / "one.sqlite", max_group=1)
    try:
        commits = Commits(single)
        calls = [Call(lambda n=n: single.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a", f"b{n}")) for n in range(4)]
        one_group(single, calls)
        assert all(c.error is None for c in calls) and commits.count == 4
        assert len(single.list_jobs()) == 4
    finally:
        single.close()


def test_a_long_write_alone_never_holds_up_a_write_that_finished_before_it(tmp_path: Path) -> None:
    """An epoch's close (`alone`: its trees take a while) commits the group waiting when it gets the lock, then
    runs on its own: a submission whose block ended before the close began is durable and answered meanwhile."""
    writer = GroupCommit(open_durable(tmp_path / "w.sqlite"))
    with writer.write() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
    in_short, go_short, in_long, release_long = (threading.Event() for _ in range(4))

    def short() -> None:
        with writer.write() as db:
            in_short.set()
            go_short.wait(WAIT)
            db.execute("INSERT INTO t VALUES (1)")

    def long() -> None:
        with writer.write(alone=True) as db:
            in_long.set()
            release_long.wait(WAIT)
            db.execute("INSERT INTO t VALUES (2)")

    first, second = Call(short), Call(long)
    try:
        first.start()
        assert in_short.wait(WAIT)
        second.start()
        _until(lambda: writer.queued == 1, "the long write queues behind the short one")
        go_short.set()  # the short block ends with a writer queued: it waits for its group's COMMIT
        assert in_long.wait(WAIT)
        assert first.returned.wait(WAIT), "the short write waited for the long one"
        assert first.error is None and not second.returned.is_set()
        assert other_connection_count(tmp_path / "w.sqlite", "SELECT count(*) FROM t") == 1
    finally:
        release_long.set()
    second.outcome()
    assert second.error is None
    assert other_connection_count(tmp_path / "w.sqlite", "SELECT count(*) FROM t") == 2
    writer.close()
