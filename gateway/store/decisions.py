"""The decision log of the store: one entry per policy evaluation (allow and deny), durable before the answer.

An entry is written in its own transaction (log_decision) or in the one that
stores the job it admitted (Jobs.create_job), and joins the epoch open at that
moment, read inside that transaction. Closing an epoch builds the tree of its
log (ledger.decisions.log_tree over the entries' digests) inside the closing
transaction, so no entry is left out of both epochs nor counted in two, and keeps
its node array (`decision_trees`): a proof later reads a few nodes, never the
log, however many epochs are asked about. An
entry is stored once: its id (the capability to fetch it) and its digest (what a
usage record names) are unique.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.store import checks
from gateway.store.base import StoreBase, open_epoch_in
from gateway.store.errors import StoreError
from ledger.decisions import DecisionLogError, check_entry, entry_digest, log_tree, proof_in
from ledger.merkle import NodeArray

__all__ = ["DECISION_ID_BYTES", "Decisions", "DuplicateDecision", "NewDecision", "StoredDecision"]

DECISION_ID_BYTES = 16
"""An entry's id: random bytes, the capability its principal is given to fetch it."""


class DuplicateDecision(StoreError):
    """A decision with this id or digest is already stored: an entry is logged once."""


def decision_id(value: Any) -> str:
    """An entry id (16 bytes, or their hex with or without 0x) as the store spells it: 32 hex, no 0x."""
    raw = checks.raw_bytes("decision id", value)
    if len(raw) != DECISION_ID_BYTES:
        raise StoreError(f"a decision id is {DECISION_ID_BYTES} bytes (0x + 32 hex), got {len(raw)} bytes")
    return raw.hex()


@dataclass(frozen=True)
class NewDecision:
    """A decision-log entry (ledger.decisions.new_entry) to store, with its id, digest and outcome.

    Checked when built: the entry's shape (check_entry), and that its id,
    decision and digest (entry_digest) are the ones given, so the store never
    holds an entry under another's id or digest. `entry` is a private copy.
    """

    id: bytes
    digest: bytes
    allowed: bool
    entry: dict[str, Any]
    text: str = field(init=False, repr=False, compare=False)
    """The entry's canonical JSON: what is stored, and what its digest is of."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "id", bytes.fromhex(decision_id(self.id)))
        set_(self, "digest", bytes.fromhex(checks.hex32("digest", self.digest)))
        if not isinstance(self.allowed, bool):
            raise StoreError(f"allowed must be a bool, got {self.allowed!r}")
        if not isinstance(self.entry, dict):
            raise StoreError("a decision entry must be a JSON object (dict), as ledger.decisions.new_entry makes")
        try:
            check_entry(self.entry)
        except DecisionLogError as exc:
            raise StoreError(f"not a decision-log entry: {exc}") from None
        text = checks.canonical_json("decision entry", self.entry)
        entry = json.loads(text)
        if entry["id"] != "0x" + self.id.hex():
            raise StoreError(f"the entry's id is {entry['id']}, not the 0x{self.id.hex()} it is stored under")
        outcome = "allow" if self.allowed else "deny"
        if entry["decision"] != outcome:
            raise StoreError(f"the entry's decision is {entry['decision']!r}, not {outcome!r}")
        actual = entry_digest(entry)
        if actual != self.digest:
            raise StoreError(f"the entry's digest is 0x{actual.hex()}, not the 0x{self.digest.hex()} given")
        set_(self, "entry", entry)
        set_(self, "text", text)

    @classmethod
    def of(cls, entry: dict[str, Any]) -> NewDecision:
        """The NewDecision of an entry: its id, its digest and its decision read from it."""
        if not isinstance(entry, dict):
            raise StoreError("a decision entry must be a JSON object (dict), as ledger.decisions.new_entry makes")
        try:  # the entry's shape is checked once, by the constructor
            digest = entry_digest(entry)
        except DecisionLogError as exc:
            raise StoreError(f"not a decision-log entry: {exc}") from None
        return cls(id=entry.get("id", b""), digest=digest, allowed=entry.get("decision") == "allow", entry=entry)


@dataclass(frozen=True)
class StoredDecision:
    """A stored entry. id is 32 hex and digest 64 hex, without 0x; epoch is the one open when it was written."""

    seq: int
    id: str
    digest: str
    epoch: int
    allowed: bool
    entry: dict[str, Any]
    created_at: int

    @property
    def digest_bytes(self) -> bytes:
        return bytes.fromhex(self.digest)


def _decision(row: sqlite3.Row) -> StoredDecision:
    return StoredDecision(
        seq=row["seq"],
        id=row["id"],
        digest=row["digest"],
        epoch=row["epoch"],
        allowed=bool(row["allowed"]),
        entry=json.loads(row["entry"]),
        created_at=row["created_at"],
    )


# ---------------------------------------------------------------- inside a transaction


def insert_decision(db: sqlite3.Connection, new: NewDecision, now: int) -> StoredDecision:
    """Store the entry in the epoch open now (the caller's transaction); DuplicateDecision if its id or
    digest is stored already."""
    if not isinstance(new, NewDecision):
        raise StoreError("a decision must be a NewDecision")
    entry_id, digest = new.id.hex(), new.digest.hex()
    seen = db.execute(
        "SELECT id, digest, epoch FROM decisions WHERE id = ? OR digest = ?", (entry_id, digest)
    ).fetchone()
    if seen is not None:
        same = "id" if seen["id"] == entry_id else "digest"
        raise DuplicateDecision(
            f"a decision with {same} 0x{entry_id if same == 'id' else digest} is already stored (epoch "
            f"{seen['epoch']}): an entry is logged once; a new evaluation needs a new entry with a fresh id"
        )
    epoch = open_epoch_in(db)
    cursor = db.execute(
        "INSERT INTO decisions (id, digest, epoch, allowed, entry, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (entry_id, digest, epoch, int(new.allowed), new.text, now),
    )
    assert cursor.lastrowid is not None
    return StoredDecision(cursor.lastrowid, entry_id, digest, epoch, new.allowed, json.loads(new.text), now)


def close_decision_log(db: sqlite3.Connection, epoch: int) -> tuple[bytes, int]:
    """(root, count) of the epoch's decision log as stored now, what its close fixes and its anchor commits;
    its tree's nodes are kept for proofs (the closing transaction's; no tree for an empty log)."""
    digests = [bytes.fromhex(r[0]) for r in db.execute("SELECT digest FROM decisions WHERE epoch = ?", (epoch,))]
    tree = log_tree(digests)
    if digests:
        db.execute("INSERT INTO decision_trees (epoch, nodes) VALUES (?, ?)", (epoch, tree.nodes))
    return tree.root, len(digests)


# ---------------------------------------------------------------- the store's methods


class Decisions(StoreBase):
    """The decision log (mixed into `Store`)."""

    def log_decision(self, new: NewDecision) -> StoredDecision:
        """Store one entry in the open epoch, durably (committed before this returns).

        For a deny, a quote, or a submission refused after the policy allowed it;
        a job's admitting entry is stored by create_job(decision=...) with the job.
        """
        if not isinstance(new, NewDecision):
            raise StoreError("a decision must be a NewDecision")
        with self._tx() as db:
            return insert_decision(db, new, self._now())

    def decision(self, entry_id: bytes | str) -> StoredDecision | None:
        """The entry with this id (16 bytes or their hex, with or without 0x), or None."""
        rows = self._read("SELECT * FROM decisions WHERE id = ?", (decision_id(entry_id),))
        return _decision(rows[0]) if rows else None

    def decision_by_digest(self, digest: bytes | str) -> StoredDecision | None:
        """The entry with this digest (what a job and its usage record name), or None."""
        rows = self._read("SELECT * FROM decisions WHERE digest = ?", (checks.hex32("digest", digest),))
        return _decision(rows[0]) if rows else None

    def decisions_for_epoch(self, epoch: int) -> list[StoredDecision]:
        """The epoch's entries in the order they were stored: the leaves of its decision log."""
        checks.positive_int("epoch", epoch)
        rows = self._read("SELECT * FROM decisions WHERE epoch = ? ORDER BY seq", (epoch,))
        return [_decision(r) for r in rows]

    def decision_digests(self, epoch: int) -> list[bytes]:
        """The digests of the epoch's entries in store order, without reading or parsing the entries."""
        checks.positive_int("epoch", epoch)
        rows = self._read("SELECT digest FROM decisions WHERE epoch = ? ORDER BY seq", (epoch,))
        return [bytes.fromhex(r[0]) for r in rows]

    def decision_proof(self, epoch: int, digest: bytes | str) -> list[bytes] | None:
        """The entry's proof in the tree its epoch's close kept: a few node reads, never the log. None when the
        epoch kept no tree (open, or closed with an empty log); StoreError when the entry is not in it or the
        stored nodes are not a tree's (the store is damaged)."""
        checks.positive_int("epoch", epoch)
        digest_bytes = bytes.fromhex(checks.hex32("digest", digest))
        with self._reading() as db:
            if db.execute("SELECT 1 FROM decision_trees WHERE epoch = ?", (epoch,)).fetchone() is None:
                return None
            with db.blobopen("decision_trees", "nodes", epoch, readonly=True) as nodes:
                try:
                    return proof_in(cast(NodeArray, nodes), digest_bytes)  # a Blob's slice is bytes
                except DecisionLogError as exc:
                    raise StoreError(f"epoch {epoch}'s decision log tree: {exc}") from None

    def decisions_page(self, epoch: int, after: int, limit: int) -> list[StoredDecision]:
        """At most `limit` of the epoch's entries stored after `after` (a seq), in order: one page of the
        log, read by the (epoch, seq) index without loading the rest."""
        checks.positive_int("epoch", epoch)
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
            raise StoreError(f"after must be a seq (an integer from 0 to 2**63 - 1), got {after!r:.40}")
        checks.positive_int("limit", limit)
        rows = self._read(
            "SELECT * FROM decisions WHERE epoch = ? AND seq > ? ORDER BY seq LIMIT ?", (epoch, after, limit)
        )
        return [_decision(r) for r in rows]
