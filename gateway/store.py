"""The gateway's durable state: jobs, signed usage records and epochs, in SQLite.

A request is acknowledged only after its write is committed (WAL,
synchronous=FULL), so a crash never loses an accepted job or a signed record.
Completing a job and storing its usage record happen in one transaction, and
so do closing an epoch and opening the next: a record always lands in the
epoch that is open at that moment, and never in one whose Merkle root has
been fixed.

One Store object per database file and process; it is thread-safe (one
connection behind a re-entrant lock; every write is a BEGIN IMMEDIATE
transaction, which also serialises writers in other processes).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.db import open_durable

__all__ = [
    "JOB_STATUSES",
    "ACTIVE_STATUSES",
    "COMPLETION_STATUSES",
    "StoreError",
    "IdempotencyConflict",
    "JobNotFound",
    "JobStateError",
    "DuplicateRecord",
    "EpochError",
    "EpochClosed",
    "EpochMismatch",
    "Job",
    "NewRecord",
    "RecordInput",
    "StoredRecord",
    "EpochClosure",
    "Store",
]

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "forwarded", "denied")
ACTIVE_STATUSES = ("queued", "running")
"""Jobs in these states must be resumed after a restart."""
COMPLETION_STATUSES = ("succeeded", "failed", "timed_out")
"""The outcomes complete_job() accepts: the job ran here."""

_UPDATABLE = ("status", "serving_centre", "forwarded_url", "exit_code", "stdout_tail", "stderr_tail", "detail")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS epochs (
    epoch        INTEGER PRIMARY KEY CHECK (epoch >= 1),
    status       TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    opened_at    INTEGER NOT NULL,
    closed_at    INTEGER,
    root         TEXT,
    record_count INTEGER,
    claims       TEXT,
    CHECK ((status = 'open') = (closed_at IS NULL AND root IS NULL AND record_count IS NULL AND claims IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS epochs_one_open ON epochs(status) WHERE status = 'open';

CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT,
    principal       TEXT NOT NULL,
    home            TEXT NOT NULL,
    request         TEXT NOT NULL,
    serving_centre  TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                    ('queued','running','succeeded','failed','timed_out','forwarded','denied')),
    forwarded_url   TEXT,
    exit_code       INTEGER,
    record_id       TEXT REFERENCES usage_records(record_id),
    stdout_tail     TEXT,
    stderr_tail     TEXT,
    detail          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    rates_version   INTEGER CHECK (rates_version >= 1),
    UNIQUE (principal, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);

CREATE TABLE IF NOT EXISTS usage_records (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id   TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL UNIQUE REFERENCES jobs(id),
    epoch       INTEGER NOT NULL REFERENCES epochs(epoch),
    home_centre TEXT NOT NULL,
    record      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    leaf        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_epoch ON usage_records(epoch, seq);
"""


class StoreError(ValueError):
    """Bad input to the store or an operation the stored state does not allow."""


class IdempotencyConflict(StoreError):
    """The idempotency key was already used by this principal for a different request."""


class JobNotFound(StoreError, LookupError):
    """No job with that id."""


class JobStateError(StoreError):
    """The job is not in a state that allows this (e.g. completing a finished job)."""


class DuplicateRecord(StoreError):
    """A usage record with this record id or leaf, or for this job, is already stored."""


class EpochError(StoreError):
    """An epoch operation that does not fit the epoch's state."""


class EpochClosed(EpochError):
    """The record names an epoch that is no longer open: re-sign it for the open epoch."""


class EpochMismatch(EpochError):
    """The closure's record count differs from the records stored in that epoch."""


@dataclass(frozen=True)
class Job:
    id: str
    idempotency_key: str | None
    principal: str
    home: str
    request: dict[str, Any]
    serving_centre: str
    status: str
    forwarded_url: str | None
    exit_code: int | None
    record_id: str | None
    stdout_tail: str | None
    stderr_tail: str | None
    detail: str | None
    created_at: int
    updated_at: int
    rates_version: int | None = None
    """The serving centre's rates version in force when it accepted the job: what it is priced at."""


@dataclass(frozen=True)
class NewRecord:
    """A signed usage record to store with its job's completion.

    record_id and home_centre are bytes32, given as bytes or hex (with or
    without 0x); record is UsageRecord.to_json() (JSON text, or the dict of
    it); signature and leaf are bytes (or hex). After construction every
    field is normalised: hex strings are lowercase without 0x, record is
    JSON text, signature and leaf are bytes.
    """

    epoch: int
    record_id: bytes | str
    home_centre: bytes | str
    record: str | dict[str, Any]
    signature: bytes | str
    leaf: bytes | str

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "epoch", _positive_int("epoch", self.epoch))
        set_(self, "record_id", _hex32("record_id", self.record_id))
        set_(self, "home_centre", _hex32("home_centre", self.home_centre))
        text, data = _record_text(self.record)
        set_(self, "record", text)
        set_(self, "signature", _bytes("signature", self.signature))
        set_(self, "leaf", bytes.fromhex(_hex32("leaf", self.leaf)))
        stated = data.get("epoch")
        if stated is not None and _as_int(stated) != self.epoch:
            raise StoreError(f"record says epoch {stated!r} but is being stored in epoch {self.epoch}")

    @classmethod
    def of(cls, usage_record: Any, signature: bytes | str, leaf: bytes | str) -> NewRecord:
        """From a ledger.records.UsageRecord (epoch, record_id, home_centre, to_json()), its signature and leaf."""
        try:
            return cls(
                epoch=usage_record.epoch,
                record_id=usage_record.record_id,
                home_centre=usage_record.home_centre,
                record=usage_record.to_json(),
                signature=signature,
                leaf=leaf,
            )
        except AttributeError as exc:
            raise StoreError(f"not a usage record: {exc}") from None


@dataclass(frozen=True)
class StoredRecord:
    """A stored usage record. Hex strings are lowercase without 0x; record is the JSON text."""

    record_id: str
    job_id: str
    epoch: int
    home_centre: str
    record: str
    signature: str
    leaf: str
    created_at: int

    @property
    def data(self) -> dict[str, Any]:
        """The record's JSON, parsed."""
        return json.loads(self.record)

    @property
    def leaf_bytes(self) -> bytes:
        return bytes.fromhex(self.leaf)

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature)


@dataclass(frozen=True)
class EpochClosure:
    """How an epoch was closed: its Merkle root (hex without 0x), record count and claims."""

    epoch: int
    root: str
    count: int
    claims: dict[str, int] = field(default_factory=dict)
    closed_at: int = 0

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)


RecordInput = NewRecord | tuple[Any, bytes | str, bytes | str]
"""A NewRecord, or (ledger.records.UsageRecord, signature, leaf)."""


def _new_record(value: Any) -> NewRecord:
    if isinstance(value, NewRecord):
        return value
    if isinstance(value, tuple) and len(value) == 3:
        return NewRecord.of(*value)
    raise StoreError("a record must be a NewRecord or a tuple (UsageRecord, signature, leaf)")


# ---------------------------------------------------------------- validation


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StoreError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _nat(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _text(name: str, value: Any, *, optional: bool = False, max_len: int | None = None) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise StoreError(f"{name} must be a non-empty string, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise StoreError(f"{name} is longer than {max_len} characters")
    return value


def _opt_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise StoreError(f"{name} must be a string or None, got {type(value).__name__}")
    return value


def _opt_int(name: str, value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise StoreError(f"{name} must be an int or None, got {value!r}")
    return value


def _status(value: Any, allowed: tuple[str, ...] = JOB_STATUSES) -> str:
    if value not in allowed:
        raise StoreError(f"status must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _bytes(name: str, value: Any) -> bytes:
    """Non-empty bytes, given as bytes or hex (with or without 0x)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        digits = value[2:] if value[:2].lower() == "0x" else value
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raise StoreError(f"{name} is not hex: {value!r}") from None
    else:
        raise StoreError(f"{name} must be bytes or their hex, got {type(value).__name__}")
    if not raw:
        raise StoreError(f"{name} must not be empty")
    return raw


def _hex32(name: str, value: Any) -> str:
    """32 bytes (given as bytes or hex) as lowercase hex without 0x: the store's one spelling."""
    raw = _bytes(name, value)
    if len(raw) != 32:
        raise StoreError(f"{name} must be 32 bytes, got {len(raw)}")
    return raw.hex()


def _canonical(name: str, value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{name} is not JSON-serialisable: {exc}") from None


def _record_text(value: Any) -> tuple[str, dict[str, Any]]:
    """(JSON text, parsed object) of a record; text given is kept byte for byte, a dict is canonicalised."""
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except ValueError:
            raise StoreError("record is not valid JSON") from None
        text = value
    elif isinstance(value, dict):
        data = value
        try:  # the same spelling as UsageRecord.to_json()
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"record is not JSON-serialisable: {exc}") from None
    else:
        raise StoreError("record must be JSON text or a dict (UsageRecord.to_json())")
    if not isinstance(data, dict) or not data:
        raise StoreError("record must be a non-empty JSON object (UsageRecord.to_json())")
    return text, data


def _claims(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise StoreError("claims must be a dict of home centre -> int amount")
    for key, amount in value.items():
        _text("claims key", key)
        _nat(f"claims[{key!r}]", amount)
    return dict(value)


# ---------------------------------------------------------------- row mapping


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], idempotency_key=row["idempotency_key"], principal=row["principal"],
        home=row["home"], request=json.loads(row["request"]), serving_centre=row["serving_centre"],
        status=row["status"], forwarded_url=row["forwarded_url"], exit_code=row["exit_code"],
        record_id=row["record_id"], stdout_tail=row["stdout_tail"], stderr_tail=row["stderr_tail"],
        detail=row["detail"], created_at=row["created_at"], updated_at=row["updated_at"],
        rates_version=row["rates_version"],
    )


def _record(row: sqlite3.Row) -> StoredRecord:
    return StoredRecord(
        record_id=row["record_id"], job_id=row["job_id"], epoch=row["epoch"],
        home_centre=row["home_centre"], record=row["record"],
        signature=row["signature"], leaf=row["leaf"], created_at=row["created_at"],
    )


def _closure(row: sqlite3.Row) -> EpochClosure:
    return EpochClosure(
        epoch=row["epoch"], root=row["root"], count=row["record_count"],
        claims=json.loads(row["claims"]), closed_at=row["closed_at"],
    )


class Store:
    """Jobs, usage records and epochs of one gateway, in one SQLite file."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._db = open_durable(self.path, busy_timeout_ms=30_000)
        self._db.row_factory = sqlite3.Row
        with self._tx() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
            if "rates_version" not in columns:  # a file from before rates were pinned: its jobs have none
                db.execute("ALTER TABLE jobs ADD COLUMN rates_version INTEGER CHECK (rates_version >= 1)")
            if db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0:
                db.execute("INSERT INTO epochs (epoch, status, opened_at) VALUES (1, 'open', ?)", (self._now(),))
            db.execute("PRAGMA user_version = 1")

    # -------------------------------------------------------------- plumbing

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> int:
        return int(self._clock())

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested use (from a callback) joins the outer one."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -------------------------------------------------------------- jobs

    def create_job(
        self,
        principal: str,
        home: str,
        request: dict[str, Any],
        serving_centre: str,
        idempotency_key: str | None = None,
        status: str = "queued",
        forwarded_url: str | None = None,
        rates_version: int | None = None,
    ) -> tuple[Job, bool]:
        """Store a new job, or return the one this principal created with this key.

        Returns (job, created). A retry with the same key and the same request
        body gets the original job back (created=False), with the rates version
        it was accepted under; the same key with a different body raises
        IdempotencyConflict. Keys are per principal.
        """
        _text("principal", principal, max_len=512)
        _text("home", home, max_len=512)
        _text("serving_centre", serving_centre, max_len=512)
        _text("idempotency_key", idempotency_key, optional=True, max_len=255)
        _status(status)
        _opt_str("forwarded_url", forwarded_url)
        if rates_version is not None:
            _positive_int("rates_version", rates_version)
        if not isinstance(request, dict):
            raise StoreError("request must be a JSON object (dict)")
        body = _canonical("request", request)
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE principal = ? AND idempotency_key = ?", (principal, idempotency_key)
                ).fetchone()
                if row is not None:
                    if row["request"] != body:
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was already used for a different request "
                            f"(job {row['id']}); use a new key for a new request"
                        )
                    return _job(row), False
            job_id = "job-" + secrets.token_hex(8)
            now = self._now()
            db.execute(
                "INSERT INTO jobs (id, idempotency_key, principal, home, request, serving_centre, status,"
                " forwarded_url, created_at, updated_at, rates_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, idempotency_key, principal, home, body, serving_centre, status, forwarded_url, now, now,
                 rates_version),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), True

    def job_by_key(self, principal: str, idempotency_key: str) -> Job | None:
        """The job this principal created with this idempotency key, if any."""
        rows = self._read(
            "SELECT * FROM jobs WHERE principal = ? AND idempotency_key = ?", (principal, idempotency_key)
        )
        return _job(rows[0]) if rows else None

    def get_job(self, job_id: str) -> Job | None:
        """The job, or None if there is no such job."""
        if not isinstance(job_id, str):
            raise StoreError("job id must be a string")
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Change some of a job's mutable fields; returns the updated job.

        Updatable: status, serving_centre, forwarded_url, exit_code,
        stdout_tail, stderr_tail, detail. The record link is set only by
        complete_job()/add_record(), with the record, so it cannot dangle.
        """
        unknown = sorted(set(fields) - set(_UPDATABLE))
        if unknown:
            raise StoreError(f"cannot update job field(s) {', '.join(unknown)}; updatable: {', '.join(_UPDATABLE)}")
        for name, value in fields.items():
            if name == "status":
                _status(value)
            elif name == "serving_centre":
                _text(name, value, max_len=512)
            elif name == "exit_code":
                _opt_int(name, value)
            else:
                _opt_str(name, value)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise JobNotFound(f"no job {job_id!r}")
            if fields:
                names = list(fields)
                assignments = ", ".join(f"{name} = ?" for name in names)
                db.execute(
                    f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",
                    (*(fields[name] for name in names), self._now(), job_id),
                )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def jobs_in_status(self, status: str, *more: str) -> list[Job]:
        """Jobs in any of the given statuses, oldest first (e.g. queued/running, to resume after a restart)."""
        statuses = [_status(s) for s in (status, *more)]
        marks = ", ".join("?" for _ in statuses)
        rows = self._read(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, rowid", tuple(statuses))
        return [_job(r) for r in rows]

    def list_jobs(self, principal: str | None = None, limit: int = 100) -> list[Job]:
        """Most recent jobs first, optionally of one principal."""
        _positive_int("limit", limit)
        if principal is None:
            rows = self._read("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                "SELECT * FROM jobs WHERE principal = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (principal, limit),
            )
        return [_job(r) for r in rows]

    def complete_job(
        self,
        job_id: str,
        status: str,
        exit_code: int | None,
        stdout_tail: str | None,
        stderr_tail: str | None,
        record: RecordInput | Callable[[int], RecordInput] | None = None,
        detail: str | None = None,
    ) -> Job:
        """Mark a queued/running job finished and store its usage record, atomically.

        `record` is a record already signed for the open epoch — a NewRecord
        or a tuple (UsageRecord, signature, leaf) — (EpochClosed if that
        epoch has closed meanwhile: re-sign and retry), or a function called
        *inside* the transaction with the open epoch number that builds and
        signs one, which cannot miss the epoch. If anything fails, nothing is
        written: the job keeps its old status.
        """
        _status(status, COMPLETION_STATUSES)
        _opt_int("exit_code", exit_code)
        _opt_str("stdout_tail", stdout_tail)
        _opt_str("stderr_tail", stderr_tail)
        _opt_str("detail", detail)
        if record is not None and not callable(record):
            record = _new_record(record)  # bad input fails before anything is written
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if row["status"] not in ACTIVE_STATUSES:
                raise JobStateError(f"job {job_id} is already {row['status']}; only queued or running jobs complete")
            now = self._now()
            db.execute(
                "UPDATE jobs SET status = ?, exit_code = ?, stdout_tail = ?, stderr_tail = ?,"
                " detail = COALESCE(?, detail), updated_at = ? WHERE id = ?",
                (status, exit_code, stdout_tail, stderr_tail, detail, now, job_id),
            )
            if record is not None:
                epoch = self._open_epoch(db)
                new = record if isinstance(record, NewRecord) else _new_record(record(epoch))
                self._insert_record(db, new, job_id, epoch, now)
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    # -------------------------------------------------------------- usage records

    def add_record(
        self,
        epoch: int,
        record_json: str | dict[str, Any],
        signature: bytes | str,
        leaf: bytes | str,
        job_id: str,
        home_centre: bytes | str,
        record_id: bytes | str,
    ) -> StoredRecord:
        """Store a signed record for an existing job (that has none) in the open epoch, and link the job to it.

        Prefer complete_job(record=...), which also marks the job done in the
        same transaction.
        """
        new = NewRecord(epoch=epoch, record_id=record_id, home_centre=home_centre,
                        record=record_json, signature=signature, leaf=leaf)
        with self._tx() as db:
            row = db.execute("SELECT record_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            return self._insert_record(db, new, job_id, self._open_epoch(db), self._now())

    def _insert_record(self, db: sqlite3.Connection, new: NewRecord, job_id: str, open_epoch: int,
                       now: int) -> StoredRecord:
        if new.epoch < open_epoch:
            raise EpochClosed(f"epoch {new.epoch} is closed; the open epoch is {open_epoch}")
        if new.epoch > open_epoch:
            raise EpochError(f"epoch {new.epoch} is not open yet; the open epoch is {open_epoch}")
        try:
            db.execute(
                "INSERT INTO usage_records (record_id, job_id, epoch, home_centre, record, signature, leaf,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (new.record_id, job_id, new.epoch, new.home_centre, new.record,
                 new.signature.hex(), new.leaf.hex(), now),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateRecord(
                f"a usage record with record id {new.record_id}, this leaf, or for job {job_id} already exists ({exc})"
            ) from None
        db.execute("UPDATE jobs SET record_id = ?, updated_at = ? WHERE id = ?", (new.record_id, now, job_id))
        row = db.execute("SELECT * FROM usage_records WHERE record_id = ?", (new.record_id,)).fetchone()
        return _record(row)

    def record(self, record_id: bytes | str) -> StoredRecord | None:
        """The stored record with this id, or None."""
        rows = self._read("SELECT * FROM usage_records WHERE record_id = ?", (_hex32("record_id", record_id),))
        return _record(rows[0]) if rows else None

    def records_for_epoch(self, epoch: int) -> list[StoredRecord]:
        """The epoch's records in the order they were stored (the order of the Merkle leaves)."""
        _positive_int("epoch", epoch)
        rows = self._read("SELECT * FROM usage_records WHERE epoch = ? ORDER BY seq", (epoch,))
        return [_record(r) for r in rows]

    # -------------------------------------------------------------- epochs

    @staticmethod
    def _open_epoch(db: sqlite3.Connection) -> int:
        return db.execute("SELECT epoch FROM epochs WHERE status = 'open'").fetchone()[0]

    def open_epoch(self) -> int:
        """The epoch new records are assigned to (1 for a new store)."""
        with self._lock:
            return self._open_epoch(self._db)

    def close_epoch(self, epoch: int, root: bytes | str, count: int, claims: dict[str, int]) -> EpochClosure:
        """Fix the open epoch's Merkle root, record count and claims, and open the next epoch.

        count must equal the number of records stored in the epoch
        (EpochMismatch otherwise: a record arrived after the root was
        computed; recompute, or use close_open_epoch()). Closing an epoch that
        is already closed with the same root, count and claims returns the
        stored closure (safe to retry); with different values, or for an
        epoch that is not open yet, raises EpochError.
        """
        _positive_int("epoch", epoch)
        root = _hex32("root", root)
        _nat("count", count)
        claims = _claims(claims)
        claims_text = _canonical("claims", claims)
        with self._tx() as db:
            row = db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
            if row is None:
                raise EpochError(f"epoch {epoch} is not open yet; the open epoch is {self._open_epoch(db)}")
            if row["status"] == "closed":
                stored = _closure(row)
                if (stored.root, stored.count, _canonical("claims", stored.claims)) != (root, count, claims_text):
                    raise EpochError(f"epoch {epoch} is already closed with a different root, count or claims")
                return stored
            stored_count = db.execute("SELECT COUNT(*) FROM usage_records WHERE epoch = ?", (epoch,)).fetchone()[0]
            if stored_count != count:
                raise EpochMismatch(f"epoch {epoch} holds {stored_count} records, not {count}: recompute its root")
            now = self._now()
            db.execute(
                "UPDATE epochs SET status = 'closed', closed_at = ?, root = ?, record_count = ?, claims = ?"
                " WHERE epoch = ?",
                (now, root, count, claims_text, epoch),
            )
            db.execute("INSERT INTO epochs (epoch, status, opened_at) VALUES (?, 'open', ?)", (epoch + 1, now))
            return _closure(db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,)).fetchone())

    def close_open_epoch(
        self, build: Callable[[int, list[StoredRecord]], tuple[bytes | str, dict[str, int]]]
    ) -> EpochClosure:
        """Close the open epoch with build(epoch, records) -> (root, claims), computed inside the transaction.

        No record can arrive between reading the records and closing, so the
        root always covers exactly the epoch's records.
        """
        with self._tx() as db:
            epoch = self._open_epoch(db)
            records = self.records_for_epoch(epoch)
            result = build(epoch, records)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise StoreError("build must return (root, claims)")
            root, claims = result
            return self.close_epoch(epoch, root, len(records), claims)

    def closure(self, epoch: int) -> EpochClosure | None:
        """How the epoch was closed, or None while it is open (or does not exist yet)."""
        _positive_int("epoch", epoch)
        rows = self._read("SELECT * FROM epochs WHERE epoch = ? AND status = 'closed'", (epoch,))
        return _closure(rows[0]) if rows else None

    def closures(self, since: int = 1) -> list[EpochClosure]:
        """All closed epochs from `since` on, oldest first (to re-queue anchoring after a restart)."""
        _positive_int("since", since)
        rows = self._read("SELECT * FROM epochs WHERE status = 'closed' AND epoch >= ? ORDER BY epoch", (since,))
        return [_closure(r) for r in rows]
