"""What the parts of the store (jobs, books, decisions) share: the write connection behind group commit, the
per-thread read connections, and the clock."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ledger.group_commit import GroupCommit, WriteLock
from ledger.read_connections import ThreadReaders

PAGE = 500
"""Rows a long listing reads per query (`StoreBase._read_by_seq`)."""


class StoreBase:
    """Writes through `_tx` (group commit), reads through `_read`/`_reading` (this thread's read connection).

    `Store` opens the connections; `HoldBook` and `GroupBook` share a store's (`_share`).
    """

    path: Path
    _db: sqlite3.Connection
    """The write connection (its lock is `_lock`); a read on it outside the thread's own `_tx` could see
    another writer's uncommitted rows: read through `_read`/`_reading`."""
    _lock: WriteLock
    _writer: GroupCommit
    _readers: ThreadReaders
    _clock: Callable[[], float]

    def _share(self, other: StoreBase) -> None:
        """Use another part's file, connections, lock and clock."""
        self.path = other.path
        self._db = other._db
        self._lock = other._lock
        self._writer = other._writer
        self._readers = other._readers
        self._clock = other._clock

    def _now(self) -> int:
        return int(self._clock())

    def _tx(self, *, alone: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        """One write, committed (with the other writes of its group, one fsync) before the `with` ends;
        nested use (from a callback) joins the outer one. `ledger.group_commit` says what a failure does;
        `alone` (a long write) commits the group before it first and then on its own."""
        return self._writer.write(alone=alone)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for several reads of one snapshot: this thread's read connection in a read
        transaction, or inside this thread's own `_tx` block the write connection (it sees its own writes)."""
        if self._writer.in_block():
            yield self._db
            return
        db = self._readers.get()
        if db.in_transaction:  # an outer _reading of this thread: same snapshot
            yield db
            return
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")  # a read transaction: nothing to write, it only ends the snapshot

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """One query's rows, committed ones only (or, inside this thread's own `_tx`, with its writes)."""
        db = self._db if self._writer.in_block() else self._readers.get()
        return db.execute(sql, args).fetchall()

    def _read_by_seq(self, sql: str, args: tuple[Any, ...], *, seq: str = "seq") -> list[sqlite3.Row]:
        """`sql` (a SELECT whose WHERE clause ends it) ordered by `seq`, read PAGE rows at a time, each page
        a query of its own: a long listing (an epoch's records) never holds one snapshot open for long, which
        would keep the write-ahead log from being restarted (`ledger.group_commit`). For rows that no longer
        change (a closed epoch's records) the pages are the one listing; rows added meanwhile come last."""
        rows: list[sqlite3.Row] = []
        after = -1
        while True:
            page = self._read(f"{sql} AND {seq} > ? ORDER BY {seq} LIMIT {PAGE}", (*args, after))
            rows += page
            if len(page) < PAGE:
                return rows
            after = page[-1]["seq"]


def open_epoch_in(db: sqlite3.Connection) -> int:
    """The epoch open now, read inside the caller's transaction: what a record or decision written in it joins."""
    epoch: int = db.execute("SELECT epoch FROM epochs WHERE status = 'open'").fetchone()[0]
    return epoch
