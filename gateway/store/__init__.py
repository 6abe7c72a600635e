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

One Store object per database file and process; it is thread-safe (one
connection behind a re-entrant lock; every write is a `ledger.db.transaction`,
BEGIN IMMEDIATE, which also serialises writers in other processes). Opening a
file brings its schema up to date (`schema.MIGRATIONS`) and refuses one written
by a newer version (`ledger.db.DatabaseTooNew`).
"""

from __future__ import annotations

import sqlite3
import threading
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
    and `policy_texts.PolicyTexts`, which share this object's connection, lock and clock
    (`base.StoreBase`).
    """

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._db = open_durable(self.path, busy_timeout_ms=30_000)
        self._db.row_factory = sqlite3.Row
        try:
            migrate(self._db, MIGRATIONS, what=f"the gateway store {self.path}")
            with self._tx() as db:
                open_first_epoch(db, self._now())
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
