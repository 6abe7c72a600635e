"""The books half of the store: signed usage records and the epochs they are committed in.

A record always lands in the epoch open at the moment it is stored, inside
the transaction that stores it, and never in one whose Merkle root has been
fixed; closing an epoch and opening the next is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.store import checks
from gateway.store.base import StoreBase
from gateway.store.errors import DuplicateRecord, EpochClosed, EpochError, EpochMismatch, JobNotFound, StoreError

__all__ = ["Books", "ClosedEpoch", "NewRecord", "RecordInput", "StoredRecord"]


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
        set_(self, "epoch", checks.positive_int("epoch", self.epoch))
        set_(self, "record_id", checks.hex32("record_id", self.record_id))
        set_(self, "home_centre", checks.hex32("home_centre", self.home_centre))
        text, data = _record_text(self.record)
        set_(self, "record", text)
        set_(self, "signature", checks.raw_bytes("signature", self.signature))
        set_(self, "leaf", bytes.fromhex(checks.hex32("leaf", self.leaf)))
        stated = data.get("epoch")
        if stated is not None and checks.as_int(stated) != self.epoch:
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


RecordInput = NewRecord | tuple[Any, bytes | str, bytes | str]
"""A NewRecord, or (ledger.records.UsageRecord, signature, leaf)."""


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
        parsed: dict[str, Any] = json.loads(self.record)
        return parsed

    @property
    def leaf_bytes(self) -> bytes:
        return bytes.fromhex(self.leaf)

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature)


@dataclass(frozen=True)
class ClosedEpoch:
    """How an epoch was closed: its Merkle root (hex without 0x), record count and claims."""

    epoch: int
    root: str
    count: int
    claims: dict[str, int] = field(default_factory=dict)
    closed_at: int = 0

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)


def as_new_record(value: Any) -> NewRecord:
    """A NewRecord from either form of RecordInput; StoreError for anything else."""
    if isinstance(value, NewRecord):
        return value
    if isinstance(value, tuple) and len(value) == 3:
        return NewRecord.of(*value)
    raise StoreError("a record must be a NewRecord or a tuple (UsageRecord, signature, leaf)")


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
        text = checks.canonical_json("record", value)
    else:
        raise StoreError("record must be JSON text or a dict (UsageRecord.to_json())")
    if not isinstance(data, dict) or not data:
        raise StoreError("record must be a non-empty JSON object (UsageRecord.to_json())")
    return text, data


def _claims(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise StoreError("claims must be a dict of home centre -> int amount")
    for key, amount in value.items():
        checks.text("claims key", key)
        checks.natural(f"claims[{key!r}]", amount)
    return dict(value)


def _record(row: sqlite3.Row) -> StoredRecord:
    return StoredRecord(
        record_id=row["record_id"],
        job_id=row["job_id"],
        epoch=row["epoch"],
        home_centre=row["home_centre"],
        record=row["record"],
        signature=row["signature"],
        leaf=row["leaf"],
        created_at=row["created_at"],
    )


def _closure(row: sqlite3.Row) -> ClosedEpoch:
    return ClosedEpoch(
        epoch=row["epoch"],
        root=row["root"],
        count=row["record_count"],
        claims=json.loads(row["claims"]),
        closed_at=row["closed_at"],
    )


# ---------------------------------------------------------------- inside a transaction


def open_first_epoch(db: sqlite3.Connection, now: int) -> None:
    """Open epoch 1 in a store that has no epoch yet."""
    if db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0:
        db.execute("INSERT INTO epochs (epoch, status, opened_at) VALUES (1, 'open', ?)", (now,))


def open_epoch_in(db: sqlite3.Connection) -> int:
    epoch: int = db.execute("SELECT epoch FROM epochs WHERE status = 'open'").fetchone()[0]
    return epoch


def insert_record(db: sqlite3.Connection, new: NewRecord, job_id: str, now: int) -> StoredRecord:
    """Store a record for the job in the open epoch and link the job to it (the caller's transaction)."""
    open_epoch = open_epoch_in(db)
    if new.epoch < open_epoch:
        raise EpochClosed(f"epoch {new.epoch} is closed; the open epoch is {open_epoch}")
    if new.epoch > open_epoch:
        raise EpochError(f"epoch {new.epoch} is not open yet; the open epoch is {open_epoch}")
    record_id, home, text, signature, leaf = new.record_id, new.home_centre, new.record, new.signature, new.leaf
    assert isinstance(record_id, str) and isinstance(home, str) and isinstance(text, str)  # NewRecord's
    assert isinstance(signature, bytes) and isinstance(leaf, bytes)
    try:
        db.execute(
            "INSERT INTO usage_records (record_id, job_id, epoch, home_centre, record, signature, leaf,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record_id, job_id, new.epoch, home, text, signature.hex(), leaf.hex(), now),
        )
    except sqlite3.IntegrityError as exc:
        raise DuplicateRecord(
            f"a usage record with record id {record_id}, this leaf, or for job {job_id} already exists ({exc})"
        ) from None
    db.execute("UPDATE jobs SET record_id = ?, updated_at = ? WHERE id = ?", (record_id, now, job_id))
    return StoredRecord(record_id, job_id, new.epoch, home, text, signature.hex(), leaf.hex(), now)


# ---------------------------------------------------------------- the store's methods


class Books(StoreBase):
    """Usage records and epochs (mixed into `Store`)."""

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
        new = NewRecord(
            epoch=epoch,
            record_id=record_id,
            home_centre=home_centre,
            record=record_json,
            signature=signature,
            leaf=leaf,
        )
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise JobNotFound(f"no job {job_id!r}")
            return insert_record(db, new, job_id, self._now())

    def record(self, record_id: bytes | str) -> StoredRecord | None:
        """The stored record with this id, or None."""
        rows = self._read("SELECT * FROM usage_records WHERE record_id = ?", (checks.hex32("record_id", record_id),))
        return _record(rows[0]) if rows else None

    def records_for_epoch(self, epoch: int) -> list[StoredRecord]:
        """The epoch's records in the order they were stored (the order of the Merkle leaves)."""
        checks.positive_int("epoch", epoch)
        rows = self._read("SELECT * FROM usage_records WHERE epoch = ? ORDER BY seq", (epoch,))
        return [_record(r) for r in rows]

    def open_epoch(self) -> int:
        """The epoch new records are assigned to (1 for a new store)."""
        with self._lock:
            return open_epoch_in(self._db)

    def close_epoch(self, epoch: int, root: bytes | str, count: int, claims: dict[str, int]) -> ClosedEpoch:
        """Fix the open epoch's Merkle root, record count and claims, and open the next epoch.

        count must equal the number of records stored in the epoch
        (EpochMismatch otherwise: a record arrived after the root was
        computed; recompute, or use close_open_epoch()). Closing an epoch that
        is already closed with the same root, count and claims returns the
        stored closure (safe to retry); with different values, or for an
        epoch that is not open yet, raises EpochError.
        """
        checks.positive_int("epoch", epoch)
        root = checks.hex32("root", root)
        checks.natural("count", count)
        claims = _claims(claims)
        claims_text = checks.canonical_json("claims", claims)
        with self._tx() as db:
            row = db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
            if row is None:
                raise EpochError(f"epoch {epoch} is not open yet; the open epoch is {open_epoch_in(db)}")
            if row["status"] == "closed":
                stored = _closure(row)
                same = (stored.root, stored.count, checks.canonical_json("claims", stored.claims))
                if same != (root, count, claims_text):
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
    ) -> ClosedEpoch:
        """Close the open epoch with build(epoch, records) -> (root, claims), computed inside the transaction.

        No record can arrive between reading the records and closing, so the
        root always covers exactly the epoch's records.
        """
        with self._tx() as db:
            epoch = open_epoch_in(db)
            records = self.records_for_epoch(epoch)
            result = build(epoch, records)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise StoreError("build must return (root, claims)")
            root, claims = result
            return self.close_epoch(epoch, root, len(records), claims)

    def closure(self, epoch: int) -> ClosedEpoch | None:
        """How the epoch was closed, or None while it is open (or does not exist yet)."""
        checks.positive_int("epoch", epoch)
        rows = self._read("SELECT * FROM epochs WHERE epoch = ? AND status = 'closed'", (epoch,))
        return _closure(rows[0]) if rows else None

    def closures(self, since: int = 1) -> list[ClosedEpoch]:
        """All closed epochs from `since` on, oldest first (to re-queue anchoring after a restart)."""
        checks.positive_int("since", since)
        rows = self._read("SELECT * FROM epochs WHERE status = 'closed' AND epoch >= ? ORDER BY epoch", (since,))
        return [_closure(r) for r in rows]
