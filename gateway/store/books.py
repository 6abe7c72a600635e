"""The books half of the store: signed usage records and the epochs they are committed in.

A record always lands in the epoch open at the moment it is stored, inside
the transaction that stores it, and never in one whose claims have been
fixed; closing an epoch (a sum tree per home, and the root and tree of its decision log) and
opening the next is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.store import checks, credit
from gateway.store.base import StoreBase, open_epoch_in
from gateway.store.decisions import close_decision_log
from gateway.store.errors import DuplicateRecord, EpochClosed, EpochError, EpochMismatch, JobNotFound, StoreError
from gateway.store.holds import pay_own_records

__all__ = ["Books", "ClosedEpoch", "HomeClosure", "NewRecord", "PaidRecord", "RecordInput", "StoredRecord"]


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
    lapsed_at: int | None = None
    """When its epoch closed without it (its claim could no longer be anchored in time): never anchored."""
    seq: int = field(default=0, compare=False)
    """Its place in store order (a home's leaves are its records of the epoch in this order); 0 before it is stored."""

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
class HomeClosure:
    """An epoch's records for one home's users, committed as a sum tree: root (hex without 0x),
    leaf count and total price. Epochs closed before sum trees have root and count None."""

    root: str | None
    count: int | None
    total: int

    @property
    def root_bytes(self) -> bytes | None:
        return None if self.root is None else bytes.fromhex(self.root)


@dataclass(frozen=True)
class ClosedEpoch:
    """How an epoch was closed: its record count and, per home centre (hex id without 0x), the claim;
    and its decision log's root and entry count (root 0 and count 0: no entry)."""

    epoch: int
    count: int
    homes: dict[str, HomeClosure] = field(default_factory=dict)
    closed_at: int = 0
    decision_root: bytes = bytes(32)
    decision_count: int = 0

    @property
    def claims(self) -> dict[str, int]:
        """The total per home, in closing order."""
        return {home: h.total for home, h in self.homes.items()}


@dataclass(frozen=True)
class PaidRecord:
    """A stored record with what its job was paid under: the evidence a claim on its home rests on.

    Hex strings without 0x; order and grant are the JSON the job was accepted with; None where the
    job has none (a receipt not given yet, a job accepted before payment).
    """

    record: StoredRecord
    order: str | None
    order_signature: str | None
    grant: str | None
    grant_signature: str | None
    receipt_signature: str | None
    key: str | None
    lock_hash: str | None


_PAID = (
    "SELECT r.*, j.pay_order, j.pay_order_sig, j.pay_grant, j.pay_grant_sig, j.receipt_sig, j.result_key, j.lock_hash"
    " FROM usage_records AS r JOIN jobs AS j ON j.id = r.job_id"
)


def _paid(r: sqlite3.Row) -> PaidRecord:
    return PaidRecord(
        record=_record(r),
        order=r["pay_order"],
        order_signature=r["pay_order_sig"],
        grant=r["pay_grant"],
        grant_signature=r["pay_grant_sig"],
        receipt_signature=r["receipt_sig"],
        key=r["result_key"],
        lock_hash=r["lock_hash"],
    )


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


def _homes(value: Any) -> dict[str, HomeClosure]:
    """Home (bytes32 as hex) -> (root, count, total) or HomeClosure, checked and normalised."""
    if not isinstance(value, dict):
        raise StoreError("homes must be a dict of home centre id -> (root, count, total)")
    homes: dict[str, HomeClosure] = {}
    for key, given in value.items():
        home = checks.hex32("home", key)
        claim = (given.root, given.count, given.total) if isinstance(given, HomeClosure) else given
        if not (isinstance(claim, tuple) and len(claim) == 3):
            raise StoreError(f"homes[{key!r}] must be (root, count, total)")
        root, count, total = claim
        homes[home] = HomeClosure(
            checks.hex32(f"homes[{key!r}] root", root),
            checks.positive_int(f"homes[{key!r}] count", count),
            checks.natural(f"homes[{key!r}] total", total),
        )
    return homes


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
        lapsed_at=row["lapsed_at"],
        seq=row["seq"],
    )


def _closure(db: sqlite3.Connection, row: sqlite3.Row) -> ClosedEpoch:
    homes = db.execute("SELECT * FROM epoch_homes WHERE epoch = ? ORDER BY position", (row["epoch"],)).fetchall()
    return ClosedEpoch(
        epoch=row["epoch"],
        count=row["record_count"],
        homes={h["home"]: HomeClosure(h["root"], h["count"], int(h["total"])) for h in homes},
        closed_at=row["closed_at"],
        decision_root=bytes.fromhex(row["decision_root"]),
        decision_count=row["decision_count"],
    )


# ---------------------------------------------------------------- inside a transaction


def open_first_epoch(db: sqlite3.Connection, now: int) -> None:
    """Open epoch 1 in a store that has no epoch yet."""
    if db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0:
        db.execute("INSERT INTO epochs (epoch, status, opened_at) VALUES (1, 'open', ?)", (now,))


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
    credit.add(db, home, new.epoch, credit.record_price(text))
    return StoredRecord(record_id, job_id, new.epoch, home, text, signature.hex(), leaf.hex(), now)


def _lapse(db: sqlite3.Connection, epoch: int, deadline_before: int, now: int) -> None:
    """Mark the open epoch's records whose order's deadline is before `deadline_before` lapsed, and say so
    in their jobs' detail; nobody owes their price."""
    rows = db.execute(
        "SELECT r.record_id, r.job_id, r.home_centre, r.record, j.pay_order"
        " FROM usage_records AS r JOIN jobs AS j ON j.id = r.job_id"
        " WHERE r.epoch = ? AND r.lapsed_at IS NULL AND j.pay_order IS NOT NULL",
        (epoch,),
    ).fetchall()
    for row in rows:
        deadline = int(json.loads(row["pay_order"])["deadline"])
        if deadline >= deadline_before:
            continue
        db.execute("UPDATE usage_records SET lapsed_at = ? WHERE record_id = ?", (now, row["record_id"]))
        credit.add(db, row["home_centre"], epoch, -credit.record_price(row["record"]))
        note = (
            f"unbilled: its record lapsed when epoch {epoch} closed, too late to anchor it by its order's "
            f"deadline {deadline} plus the booking delay; your home refunds the hold"
        )
        db.execute(
            "UPDATE jobs SET detail = COALESCE(detail || '; ', '') || ?, updated_at = ? WHERE id = ?",
            (note, now, row["job_id"]),
        )


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
        """The epoch's records in the order they were stored (the lapsed ones left out: they are no leaves)."""
        checks.positive_int("epoch", epoch)
        rows = self._read_by_seq("SELECT * FROM usage_records WHERE epoch = ? AND lapsed_at IS NULL", (epoch,))
        return [_record(r) for r in rows]

    def records_page(
        self, epoch: int, after: int, limit: int, home: bytes | str | None = None
    ) -> list[tuple[int, StoredRecord]]:
        """At most `limit` of the epoch's records (with `home`, of that home's users only) stored after seq `after`,
        in store order, each with its seq: one page of a listing, one query on the (epoch, seq) or (epoch, home,
        seq) index, never the whole epoch read (a million records are hundreds of MB). Lapsed records are left
        out, as in `records_for_epoch`: they are no leaves. Follow the last seq of a page as the next `after`."""
        checks.positive_int("epoch", epoch)
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
            raise StoreError(f"after must be a seq (an integer from 0 to 2**63 - 1), got {after!r:.40}")
        checks.positive_int("limit", limit)
        where: str = "epoch = ?"
        args: tuple[object, ...] = (epoch,)
        if home is not None:  # the (epoch, home_centre, seq) index
            where, args = "epoch = ? AND home_centre = ?", (epoch, checks.hex32("home", home))
        rows = self._read(
            f"SELECT * FROM usage_records WHERE {where} AND lapsed_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (*args, after, limit),
        )
        return [(int(r["seq"]), _record(r)) for r in rows]

    def keep_tree(self, epoch: int, home: bytes | str, width: int, seqs: bytes, nodes: bytes) -> None:
        """Keep a closed epoch's sum tree of one home as proofs need it (`gateway.books.kept_trees`), in place of one
        kept before (the caller stores only a tree whose root, count and total are the closure's: a damaged row is
        replaced by the tree made again from the records)."""
        checks.positive_int("epoch", epoch)
        checks.positive_int("width", width)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM epochs WHERE epoch = ? AND status = 'closed'", (epoch,)).fetchone() is None:
                raise EpochError(f"epoch {epoch} is not closed: its trees are not fixed")
            db.execute(
                "INSERT OR REPLACE INTO kept_trees (epoch, home_centre, width, seqs, nodes) VALUES (?, ?, ?, ?, ?)",
                (epoch, checks.hex32("home", home), width, seqs, nodes),
            )

    def kept_tree(self, epoch: int, home: bytes | str) -> tuple[int, bytes, bytes] | None:
        """The kept tree of a closed epoch's home as `keep_tree` stored it (width, seqs, nodes), or None."""
        checks.positive_int("epoch", epoch)
        rows = self._read(
            "SELECT width, seqs, nodes FROM kept_trees WHERE epoch = ? AND home_centre = ?",
            (epoch, checks.hex32("home", home)),
        )
        return (int(rows[0][0]), bytes(rows[0][1]), bytes(rows[0][2])) if rows else None

    def record_count(self, epoch: int) -> int:
        """How many records the epoch holds that have not lapsed (one count on the (epoch, seq) index)."""
        checks.positive_int("epoch", epoch)
        rows = self._read("SELECT COUNT(*) FROM usage_records WHERE epoch = ? AND lapsed_at IS NULL", (epoch,))
        return int(rows[0][0])

    def records_for_home(self, epoch: int, home: bytes | str) -> list[StoredRecord]:
        """The epoch's records for one home's users in store order: the leaves of that home's sum tree."""
        checks.positive_int("epoch", epoch)
        rows = self._read_by_seq(
            "SELECT * FROM usage_records WHERE epoch = ? AND home_centre = ? AND lapsed_at IS NULL",
            (epoch, checks.hex32("home", home)),
        )
        return [_record(r) for r in rows]

    def paid_records(self, epoch: int, home: bytes | str) -> list[PaidRecord]:
        """`records_for_home` with the order, grant, receipt and key of each record's job, in one query."""
        checks.positive_int("epoch", epoch)
        rows = self._read_by_seq(
            f"{_PAID} WHERE r.epoch = ? AND r.home_centre = ? AND r.lapsed_at IS NULL",
            (epoch, checks.hex32("home", home)),
            seq="r.seq",
        )
        return [_paid(r) for r in rows]

    def paid_records_page(self, epoch: int, home: bytes | str, after: int, limit: int) -> list[tuple[int, PaidRecord]]:
        """At most `limit` of `paid_records` stored after seq `after`, each with its seq: one page of a claim's
        evidence, one query on the (epoch, home_centre, seq) index, never the home's whole epoch read. Follow the
        last seq of a page as the next `after`."""
        checks.positive_int("epoch", epoch)
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
            raise StoreError(f"after must be a seq (an integer from 0 to 2**63 - 1), got {after!r:.40}")
        checks.positive_int("limit", limit)
        rows = self._read(
            f"{_PAID} WHERE r.epoch = ? AND r.home_centre = ? AND r.lapsed_at IS NULL AND r.seq > ?"
            " ORDER BY r.seq LIMIT ?",
            (epoch, checks.hex32("home", home), after, limit),
        )
        return [(int(r["seq"]), _paid(r)) for r in rows]

    def open_epoch(self) -> int:
        """The epoch new records are assigned to (1 for a new store)."""
        with self._reading() as db:
            return open_epoch_in(db)

    def first_epoch(self) -> int:
        """This store's first epoch: 1, or the chain's epoch it opened at (`start_epochs_at`)."""
        with self._reading() as db:
            first: int = db.execute("SELECT MIN(epoch) FROM epochs").fetchone()[0]
            return first

    def start_epochs_at(self, epoch: int) -> int:
        """Number the open epoch `epoch` while this store has closed none and holds nothing in it; the open epoch.

        A centre that joins a consortium whose epochs run on the chain's clock starts at the
        chain's epoch, not at 1: closing every epoch since the deployment, empty, would cost an
        anchor each. Once anything is in the open epoch its number stays, and closes catch up.
        """
        checks.positive_int("epoch", epoch)
        with self._tx() as db:
            current = open_epoch_in(db)
            used = db.execute(
                "SELECT EXISTS (SELECT 1 FROM epochs WHERE status = 'closed')"
                " OR EXISTS (SELECT 1 FROM usage_records WHERE epoch = ?)"
                " OR EXISTS (SELECT 1 FROM decisions WHERE epoch = ?)",
                (current, current),
            ).fetchone()[0]
            if used or epoch <= current:
                return current
            db.execute("UPDATE epochs SET epoch = ? WHERE status = 'open'", (epoch,))
            return epoch

    def jobs_by_status(self) -> dict[str, int]:
        """How many jobs are in each status (for /metrics): one indexed count per status."""
        rows = self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    def open_epoch_opened_at(self) -> int | None:
        """When the open epoch began (UTC seconds): what a close schedule counts from."""
        with self._reading() as db:
            epoch = open_epoch_in(db)
            row = db.execute("SELECT opened_at FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
        return None if row is None else int(row[0])

    def close_epoch(self, epoch: int, homes: dict[str, Any]) -> ClosedEpoch:
        """Fix the open epoch's claim per home ((root, count, total) of its sum tree) and open the next epoch.

        The epoch's decision log (root and count) is fixed in the same transaction, over every
        entry stored in it, and its tree kept for proofs: an entry written after this commits joins
        the next epoch.

        Every home with records in the epoch must be there with its record count
        (EpochMismatch otherwise: a record arrived after the trees were built;
        rebuild, or use close_open_epoch()). Closing an epoch already closed with
        the same claims returns the stored closure (safe to retry); with other
        claims, or an epoch not open yet, raises EpochError. The holds of this
        home's own users' records in the epoch are paid in the same transaction
        (`holds.pay_own_records`).
        """
        checks.positive_int("epoch", epoch)
        claims = _homes(homes)
        with self._tx() as db:
            row = db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
            if row is None:
                raise EpochError(f"epoch {epoch} is not open yet; the open epoch is {open_epoch_in(db)}")
            if row["status"] == "closed":
                stored = _closure(db, row)
                if stored.homes != claims:
                    raise EpochError(f"epoch {epoch} is already closed with other claims")
                return stored
            counts = dict(
                db.execute(
                    "SELECT home_centre, COUNT(*) FROM usage_records WHERE epoch = ? AND lapsed_at IS NULL"
                    " GROUP BY home_centre",
                    (epoch,),
                ).fetchall()
            )
            given = {home: claim.count for home, claim in claims.items()}
            if counts != given:
                raise EpochMismatch(
                    f"epoch {epoch} holds {sum(counts.values())} records for {len(counts)} homes, not the "
                    f"{sum(c or 0 for c in given.values())} given: rebuild its trees"
                )
            now = self._now()
            decision_root, decision_count = close_decision_log(db, epoch)
            db.execute(
                "UPDATE epochs SET status = 'closed', closed_at = ?, record_count = ?, decision_root = ?,"
                " decision_count = ? WHERE epoch = ?",
                (now, sum(counts.values()), decision_root.hex(), decision_count, epoch),
            )
            for position, (home, claim) in enumerate(claims.items()):
                db.execute(
                    "INSERT INTO epoch_homes (epoch, home, position, root, count, total) VALUES (?, ?, ?, ?, ?, ?)",
                    (epoch, home, position, claim.root, claim.count, str(claim.total)),
                )
            pay_own_records(db, epoch, now)  # no claim on chain pays a home's own users' holds: the close does
            db.execute("INSERT INTO epochs (epoch, status, opened_at) VALUES (?, 'open', ?)", (epoch + 1, now))
            return _closure(db, db.execute("SELECT * FROM epochs WHERE epoch = ?", (epoch,)).fetchone())

    def close_open_epoch(
        self, build: Callable[[int, list[StoredRecord]], dict[str, Any]], lapse_before: int | None = None
    ) -> ClosedEpoch:
        """Close the open epoch with build(epoch, records) -> {home: (root, count, total)}, inside the transaction.

        No record can arrive between reading the records and closing, so the
        trees always cover exactly the epoch's records. Records whose order's
        deadline is before `lapse_before` lapse first: marked, kept, left out of
        the trees (their jobs say so), because no claim anchored now could
        answer a dispute of them. A write of its own (`alone`): building the trees
        of a large epoch takes a while, and no submission waits for it to commit.
        """
        with self._tx(alone=True) as db:
            epoch = open_epoch_in(db)
            if lapse_before is not None:
                _lapse(db, epoch, checks.natural("lapse_before", lapse_before), self._now())
            return self.close_epoch(epoch, build(epoch, self.records_for_epoch(epoch)))

    def lapsed_records(self, epoch: int) -> list[StoredRecord]:
        """The records of `epoch` that lapsed at its close, in store order: in no tree, never billed."""
        checks.positive_int("epoch", epoch)
        rows = self._read(
            "SELECT * FROM usage_records WHERE epoch = ? AND lapsed_at IS NOT NULL ORDER BY seq", (epoch,)
        )
        return [_record(r) for r in rows]

    def closure(self, epoch: int) -> ClosedEpoch | None:
        """How the epoch was closed, or None while it is open (or does not exist yet)."""
        checks.positive_int("epoch", epoch)
        with self._reading() as db:
            row = db.execute("SELECT * FROM epochs WHERE epoch = ? AND status = 'closed'", (epoch,)).fetchone()
            return _closure(db, row) if row else None

    def closed_epochs(self, since: int = 1) -> list[int]:
        """The numbers of the closed epochs from `since` on, oldest first."""
        checks.positive_int("since", since)
        rows = self._read("SELECT epoch FROM epochs WHERE status = 'closed' AND epoch >= ? ORDER BY epoch", (since,))
        return [int(r["epoch"]) for r in rows]

    def closures(self, since: int = 1) -> list[ClosedEpoch]:
        """All closed epochs from `since` on, oldest first (to re-queue anchoring after a restart)."""
        checks.positive_int("since", since)
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM epochs WHERE status = 'closed' AND epoch >= ? ORDER BY epoch", (since,)
            ).fetchall()
            return [_closure(db, r) for r in rows]
