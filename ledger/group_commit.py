"""Group commit: the writes of many threads to one SQLite connection, one COMMIT (one fsync) per group of them.

With synchronous=FULL each COMMIT waits for the disk, so one transaction per
write caps a file at the disk's fsyncs per second. Here each write still runs
in its caller's thread, under the connection's lock, but inside a SAVEPOINT of
a transaction its group shares (BEGIN IMMEDIATE, opened by the group's first
writer). A block that raises is rolled back to its savepoint alone. After its
block a writer lets the lock go and waits until its group's COMMIT has
returned: no writer returns before its data is durable. The writer that finds
no other writer waiting to join (or the group full, or that held the lock
before it began: it cannot wait for anyone) commits the group while holding
the lock, so the next group gathers during that fsync. If the COMMIT fails, or
SQLite rolls the whole transaction back under a failing block (a full disk,
an I/O error), every writer of the group gets that exception: nothing of the
group was written.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["GroupCommit", "WriteLock"]

_SAVEPOINT = "group_commit_write"

WAL_LIMIT = 8 * 2**20
"""Bytes of write-ahead log past which a commit restarts it (twice what SQLite's automatic checkpoint keeps)."""
CHECKPOINT_EVERY = 1.0
"""Seconds between two attempts at most, so a reader that keeps the log busy never makes every commit wait."""
CHECKPOINT_WAIT_MS = 200
"""How long an attempt waits for the readers of the log's older frames to finish their snapshots."""

log = logging.getLogger(__name__)


class WriteLock:
    """A re-entrant lock that can tell whether the calling thread holds it (threading.RLock cannot, publicly)."""

    __slots__ = ("_depth", "_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner, self._depth = me, 1
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release a WriteLock this thread does not hold")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()

    def held(self) -> bool:
        """Whether the calling thread holds the lock (at any depth)."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Group:
    """The writers of one shared transaction: how many blocks it holds, and how it ended."""

    __slots__ = ("done", "error", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """The write side of one SQLite connection (autocommit mode, as `ledger.db.open_durable` opens it).

    `write()` is the one way to write through it; `lock` guards the connection
    (take it to use the connection directly; a `write()` inside commits at
    once). `max_group` bounds how many writes share one COMMIT, so the first
    writer of a busy group never waits for an endless stream of others.
    """

    def __init__(
        self, db: sqlite3.Connection, *, max_group: int = 64, patience: float = 0.1, wal_limit: int = WAL_LIMIT
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, got {max_group}")
        self.db = db
        self.lock = WriteLock()
        self._max_group = max_group
        self._patience = patience
        self._state = threading.Condition(threading.Lock())  # guards _queued and each group's `done`
        self._queued = 0
        self._group: _Group | None = None  # the open group (its transaction), touched under `lock` only
        self._local = threading.local()
        self._wal = _wal_of(db)
        self._wal_limit = wal_limit
        self._checkpointed_at = float("-inf")

    @property
    def queued(self) -> int:
        """Writers waiting for the lock to write their block (they will join the open group)."""
        return self._queued

    def in_block(self) -> bool:
        """Whether the calling thread is inside its own write block: its reads belong on this connection."""
        return bool(getattr(self._local, "depth", 0))

    @contextmanager
    def write(self, *, alone: bool = False) -> Iterator[sqlite3.Connection]:
        """One write, durable when this returns; nested use (a callback inside a write) joins the outer block.

        The block sees the writes of its group that came before it (they commit or fail with it).
        If the block raises, nothing of it is written; when it ran after other writes of its group
        (what it saw may never commit) its exception is raised once the group has ended, or the
        group's exception if the group failed (then nothing of the group was written); else at once.
        `alone` is for a long block (an epoch's close): the group open when it gets the lock is
        committed first and it commits on its own, so no write that finished before it waits for it.
        """
        local = self._local
        if getattr(local, "depth", 0):
            yield self.db  # the outer block commits or rolls back the whole
            return
        inline = self.lock.held()  # a thread holding the lock outside write() cannot wait for others
        with self._state:
            self._queued += 1
        try:
            self.lock.acquire()
        finally:
            with self._state:
                self._queued -= 1
        try:
            if alone and self._group is not None:
                self._commit(self._group)
            group = self._join()
        except BaseException:
            self.lock.release()
            raise
        inline = inline or alone
        local.depth = 1
        try:
            yield self.db
            self.db.execute(f"RELEASE {_SAVEPOINT}")
        except BaseException as exc:
            local.depth = 0
            saw_uncommitted = group.writes > 0
            self._undo(group, exc)
            self._leave(group, inline, wait=saw_uncommitted)
            if group.error is not None and group.error is not exc:
                raise _copy(group.error) from exc
            raise
        local.depth = 0
        group.writes += 1
        self._leave(group, inline, wait=True)
        if group.error is not None:
            raise _copy(group.error)

    def close(self) -> None:
        """Commit (or fail) the open group, then close the connection: later writes fail as on a closed one."""
        with self.lock:
            group = self._group
            if group is not None:
                self._commit(group)
            self.db.close()

    # ------------------------------------------------------------ under the lock

    def _join(self) -> _Group:
        group = self._group
        if group is not None and not self.db.in_transaction:  # ended behind group commit's back: never reuse it
            self._end(group, sqlite3.OperationalError("the group's transaction was ended outside group commit"))
            group = None
        if group is None:
            self.db.execute("BEGIN IMMEDIATE")
            group = self._group = _Group()
        try:
            self.db.execute(f"SAVEPOINT {_SAVEPOINT}")
        except BaseException as exc:
            self._fail(group, exc)
            raise
        return group

    def _undo(self, group: _Group, exc: BaseException) -> None:
        """Roll a failed block back to its savepoint; if SQLite has rolled back the whole transaction (a full
        disk, an I/O error) or the savepoint cannot be undone, the group fails with the block's exception."""
        try:
            if self.db.in_transaction:
                self.db.execute(f"ROLLBACK TO {_SAVEPOINT}")
                self.db.execute(f"RELEASE {_SAVEPOINT}")
                return
        except sqlite3.Error:
            pass  # the whole group is rolled back below
        self._fail(group, exc)

    def _leave(self, group: _Group, inline: bool, wait: bool) -> None:
        """After a block: commit the group now, or let the lock go (and, if `wait`, wait for whoever commits)."""
        if not group.done and (inline or self._queued == 0 or group.writes >= self._max_group):
            self._commit(group)
        self.lock.release()
        if wait and not group.done:
            self._wait(group)

    def _commit(self, group: _Group) -> None:
        try:
            self.db.execute("COMMIT" if group.writes else "ROLLBACK")
        except BaseException as exc:  # noqa: BLE001 -- not swallowed: every writer of the group raises it
            self._fail(group, exc)
            return
        self._end(group, None)
        self._restart_log_if_large()

    def _restart_log_if_large(self) -> None:
        """Checkpoint the log into the file and truncate it once it outgrows `wal_limit`.

        SQLite's automatic checkpoint is passive: it copies only the frames no reader's snapshot still
        needs, and restarts the log only when no reader is using it. Readers on their own connections,
        one always in flight, never leave it so, and the log would grow by every write until the disk is
        full. TRUNCATE waits (briefly) for the readers of older frames to finish, copies everything and
        empties the log; new readers are not held up. Called holding the lock, between groups.
        """
        if self._wal is None or time.monotonic() - self._checkpointed_at < CHECKPOINT_EVERY:
            return
        try:
            if self._wal.stat().st_size <= self._wal_limit:
                return
        except OSError:
            return
        self._checkpointed_at = time.monotonic()
        waited = self.db.execute("PRAGMA busy_timeout").fetchone()[0]
        try:
            self.db.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                log.info(
                    "the write-ahead log of %s stays over %d bytes: readers kept it busy", self._wal, self._wal_limit
                )
        except sqlite3.Error as exc:  # a full disk, an I/O error: the next commit says so to its writers
            log.warning("checkpoint of %s failed: %s", self._wal, exc)
        finally:
            self.db.execute(f"PRAGMA busy_timeout={int(waited)}")

    def _fail(self, group: _Group, exc: BaseException) -> None:
        try:
            if self.db.in_transaction:  # never leave one open for the next group to join
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the error that failed the group is the one its writers get
        self._end(group, exc)

    def _end(self, group: _Group, error: BaseException | None) -> None:
        if self._group is group:
            self._group = None
        with self._state:
            group.error = error
            group.done = True
            self._state.notify_all()

    # ------------------------------------------------------------ outside the lock

    def _wait(self, group: _Group) -> None:
        """Until the group has ended. A writer that was to join it but never did (it gave up waiting for the
        lock) would leave it open: every `patience` seconds a waiter checks, and commits it itself when no
        writer is left to join it."""
        while True:
            with self._state:
                if self._state.wait_for(lambda: group.done, timeout=self._patience):
                    return
            with self.lock:
                if not group.done and self._queued == 0:
                    self._commit(group)


def _wal_of(db: sqlite3.Connection) -> Path | None:
    """The write-ahead log file of `db`'s main database; None for one in memory."""
    main = next((row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main"), "")
    return Path(main + "-wal") if main else None


def _copy(error: BaseException) -> BaseException:
    """The group's exception for one more of its writers (each raises its own copy: tracebacks are per raise)."""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 -- an exception that cannot be copied is raised itself, never lost
        return error
