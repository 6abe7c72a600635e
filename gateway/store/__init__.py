"""The gateway's durable state in one SQLite file: jobs (`jobs`), the books (`books`: usage records, epochs),
the decision log (`decisions`) and the policy texts served (`policy_texts`).

A request is acknowledged only after its write is committed (WAL,
synchronous=FULL), so a crash never loses an accepted job or a signed record.
Completing a job and storing its usage record happen in one transaction, and
so do closing an epoch and opening the next: a record always lands in the
epoch that is open at that moment, and never in one whose Merkle root has
been fixed. A policy decision is stored before it is answered, in the epoch open
then; a job's admitting decision is stored with the job, and an epoch's close
fixes the root of its decision log in the same transaction.

One Store object per database file and process; it is thread-safe. Writes
share one connection through a group commit (`ledger.group_commit`): each
write runs in its caller's thread in a SAVEPOINT of a transaction its group
shares (BEGIN IMMEDIATE, which also serialises writers in other processes),
and returns only once its group's COMMIT has; a write that raises writes
nothing; a COMMIT that fails fails every write of its group. Reads go
through one read-only connection per thread (`ledger.read_connections`): they
never wait for the writer and see committed rows only, except inside the
thread's own write, which reads on the write connection. Opening a file
brings its schema up to date (`schema.MIGRATIONS`) and refuses one written by
a newer version (`ledger.db.DatabaseTooNew`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gateway.store.books import (
    Books,
    ClosedEpoch,
    HomeClosure,
    NewRecord,
    PaidRecord,
    RecordInput,
    StoredRecord,
    open_first_epoch,
)
from gateway.store.decisions import DECISION_ID_BYTES, Decisions, DuplicateDecision, NewDecision, StoredDecision
from gateway.store.errors import (
    DuplicateRecord,
    EpochClosed,
    EpochError,
    EpochMismatch,
    IdempotencyConflict,
    JobNotFound,
    JobStateError,
    ReplayedOrder,
    StoreError,
)
from gateway.store.jobs import ACTIVE_STATUSES, COMPLETION_STATUSES, JOB_STATUSES, Job, Jobs, Payment, SealedResult
from gateway.store.policy_texts import PolicyTexts
from gateway.store.schema import MIGRATIONS
from ledger.db import migrate, open_durable
from ledger.group_commit import GroupCommit
from ledger.read_connections import ThreadReaders

__all__ = [
    "ACTIVE_STATUSES",
    "COMPLETION_STATUSES",
    "DECISION_ID_BYTES",
    "JOB_STATUSES",
    "ClosedEpoch",
    "DuplicateDecision",
    "DuplicateRecord",
    "EpochClosed",
    "EpochError",
    "EpochMismatch",
    "HomeClosure",
    "IdempotencyConflict",
    "Job",
    "JobNotFound",
    "JobStateError",
    "NewDecision",
    "NewRecord",
    "PaidRecord",
    "Payment",
    "RecordInput",
    "ReplayedOrder",
    "SealedResult",
    "Store",
    "StoreError",
    "StoredDecision",
    "StoredRecord",
]


class Store(Jobs, Books, Decisions, PolicyTexts):
    """Jobs, usage records, epochs, decisions and policy texts of one gateway, in one SQLite file.

    The methods are those of its parts, `jobs.Jobs`, `books.Books`, `decisions.Decisions`
    and `policy_texts.PolicyTexts`, which share this object's connections and clock
    (`base.StoreBase`). `max_group` bounds how many writes share one COMMIT.
    """

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time, *, max_group: int = 64) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db = open_durable(self.path, busy_timeout_ms=30_000)
        self._db.row_factory = sqlite3.Row
        self._writer = GroupCommit(self._db, max_group=max_group)
        self._lock = self._writer.lock
        self._readers = ThreadReaders(self.path, busy_timeout_ms=30_000, row_factory=sqlite3.Row)
        try:
            migrate(self._db, MIGRATIONS, what=f"the gateway store {self.path}")
            with self._tx() as db:
                open_first_epoch(db, self._now())
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Commit (or fail) the writes pending in the open group, then close every connection."""
        try:
            self._writer.close()
        finally:
            self._readers.close()

    def set_trace_callback(self, callback: Callable[[str], object] | None) -> None:
        """Trace every SQL statement the store runs, on its write and read connections (sqlite3's trace)."""
        with self._lock:
            self._db.set_trace_callback(callback)
        self._readers.set_trace_callback(callback)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
