"""Durable outbox for chain writes.

A chain write (anchor an epoch, settle, vote …) is first committed to this
SQLite file (WAL, synchronous=FULL) and only then acknowledged to whoever asked
for it; a worker drains the outbox and sends the transactions. If the process
dies between the two, the write is still pending on restart and is sent then.

Because a crash can also happen *after* the transaction was mined but before
the item was marked done, handlers must be idempotent: a handler that sees its
write already on chain (e.g. the contract reverts with "already anchored")
returns normally (tx hash None) instead of raising.

Semantics of `drain()`:
- items run in id order; a handler returns the tx hash (str) or None;
- a handler raising `ledger.chain.ChainRevert` marks the item "failed" with the
  revert reason: a revert is final, retrying cannot help;
- any other exception is transient (node down, timeout): the item stays
  "pending" with attempts+1 and last_error, and no later item of the same kind
  runs in this drain, so writes of one kind land in the order they were made.

`attempt(item_id, timeout)` is for a caller that must answer with what really
happened to its write (a revocation): it drains on a helper thread and returns
the item as that drain left it, or as it stands when the timeout ends, so a
chain node that never answers cannot hold the caller. `retry(item_id)` puts a
reverted item back in the queue when someone asks for the write again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ledger.db import Migration, migrate, open_durable, transaction
from ledger.primitives.canonical import canonical_json
from ledger.primitives.hex import to_hex

Handler = Callable[[dict], "str | None"]
Status = Literal["pending", "done", "failed"]

log = logging.getLogger(__name__)

PENDING: Status = "pending"
DONE: Status = "done"
FAILED: Status = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL UNIQUE,
    payload     TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    tx_hash     TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, id);
"""

MIGRATIONS = (Migration(1, "the outbox table (IF NOT EXISTS: adopts files from before it was versioned)", _SCHEMA),)
"""The outbox file's schema steps (ledger.db.migrate); add the next one, never edit one that shipped."""


class OutboxError(ValueError):
    """Bad use of the outbox (bad kind/key/payload)."""


class OutboxConflict(OutboxError):
    """The idempotency key was already used for a different write."""


@dataclass(frozen=True)
class OutboxItem:
    """One durable write as stored."""

    id: int
    kind: str
    key: str
    payload: dict
    status: Status
    attempts: int
    last_error: str | None
    tx_hash: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class OutboxResult:
    """What happened to one item during a drain."""

    id: int
    kind: str
    key: str
    status: Status  # "done", "failed" (revert) or "pending" (transient error)
    tx_hash: str | None = None
    error: str | None = None


def _canonical(payload: dict) -> str:
    if not isinstance(payload, dict):
        raise OutboxError(f"payload must be a dict, got {type(payload).__name__}")
    try:
        return canonical_json(payload)
    except ValueError as exc:
        raise OutboxError(f"payload is not plain JSON (hex-encode bytes): {exc}") from exc


def _revert_class() -> type[BaseException]:
    # Imported late so that the outbox module itself does not pull in web3.
    from ledger.chain import ChainRevert

    return ChainRevert


class Outbox:
    """SQLite-backed queue of chain writes; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = open_durable(self.path)
        try:
            migrate(self._db, MIGRATIONS, what=f"the outbox {self.path}")
        except BaseException:
            self._db.close()
            raise
        self._lock = threading.RLock()  # guards the connection
        self._drain_lock = threading.Lock()  # one drain at a time
        self._handlers: dict[str, Handler] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._on_error: Callable[[BaseException], None] | None = None

    # -- writing -----------------------------------------------------------

    def register(self, kind: str, handler: Handler) -> None:
        """Set the function that performs writes of `kind` (replaces any earlier one)."""
        if not kind or not isinstance(kind, str):
            raise OutboxError("kind must be a non-empty string")
        if not callable(handler):
            raise OutboxError("handler must be callable")
        self._handlers[kind] = handler

    def enqueue(self, kind: str, key: str, payload: dict) -> int:
        """Durably record a write and return its id.

        Idempotent on `key`: the same (kind, key, payload) returns the same id;
        the same key with another kind or payload raises OutboxConflict.
        """
        if not kind or not isinstance(kind, str):
            raise OutboxError("kind must be a non-empty string")
        if not key or not isinstance(key, str):
            raise OutboxError("key must be a non-empty string")
        body = _canonical(payload)
        now = int(time.time())
        with self._lock, transaction(self._db) as db:
            row = db.execute("SELECT id, kind, payload FROM outbox WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row[1] != kind or row[2] != body:
                    raise OutboxConflict(
                        f"outbox key {key!r} already used for a different write (item {row[0]}, kind {row[1]!r})"
                    )
                item_id = int(row[0])
            else:
                cur = db.execute(
                    "INSERT INTO outbox (kind, key, payload, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (kind, key, body, now, now),
                )
                assert cur.lastrowid is not None  # an INSERT's
                item_id = cur.lastrowid
        self._wake.set()
        return item_id

    # -- draining ----------------------------------------------------------

    def drain(self) -> list[OutboxResult]:
        """Run pending items with a registered handler, in id order.

        Items of kinds without a handler stay pending and are not reported.
        """
        revert = _revert_class()
        results: list[OutboxResult] = []
        with self._drain_lock:
            blocked: set[str] = set()
            last_id = 0
            while True:
                item = self._next_pending(last_id, blocked)
                if item is None:
                    break
                last_id = item.id
                handler = self._handlers[item.kind]
                try:
                    tx_hash = handler(dict(item.payload))
                except revert as exc:
                    reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
                    self._finish(item.id, FAILED, None, reason)
                    results.append(OutboxResult(item.id, item.kind, item.key, FAILED, None, reason))
                except Exception as exc:  # noqa: BLE001 - any other failure is transient: keep it, keep the order
                    error = f"{type(exc).__name__}: {exc}"
                    self._retry_later(item.id, error)
                    blocked.add(item.kind)
                    results.append(OutboxResult(item.id, item.kind, item.key, PENDING, None, error))
                else:
                    if isinstance(tx_hash, (bytes, bytearray)):  # web3's HexBytes
                        tx_hash = to_hex(tx_hash)
                    elif tx_hash is not None and not isinstance(tx_hash, str):
                        tx_hash = str(tx_hash)
                    self._finish(item.id, DONE, tx_hash, None)
                    results.append(OutboxResult(item.id, item.kind, item.key, DONE, tx_hash))
        return results

    def attempt(self, item_id: int, timeout: float) -> OutboxItem:
        """Drain now and return the item once that drain is over, or as it stands after `timeout` s.

        The drain runs on a helper thread (after any drain already under way), so an
        unanswered chain request delays the answer by `timeout` at most; the drain
        itself goes on and its outcome is recorded as usual. A done or failed item is
        only read.
        """
        item = self.item(item_id)
        if item is None:
            raise OutboxError(f"no outbox item {item_id}")
        if item.status != PENDING:
            return item
        over = threading.Event()

        def run() -> None:
            try:
                self.drain()
            except Exception as exc:  # noqa: BLE001 - not a handler's error (those are recorded): the database itself
                log.warning("outbox drain for item %d failed: %s", item_id, exc)
            finally:
                over.set()

        threading.Thread(target=run, name=f"xcentre-outbox-attempt-{item_id}", daemon=True).start()
        over.wait(timeout)
        return self.item(item_id)  # type: ignore[return-value]

    def retry(self, item_id: int) -> OutboxItem:
        """Queue a failed (reverted) item again, keeping its last error until the next attempt.

        A revert is final for the attempt that met it; a new request for the same
        write is a new decision, and the chain may have changed since. Pending and
        done items are returned unchanged.
        """
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET status = 'pending', updated_at = ? WHERE id = ? AND status = 'failed'",
                (int(time.time()), item_id),
            )
        item = self.item(item_id)
        if item is None:
            raise OutboxError(f"no outbox item {item_id}")
        self._wake.set()
        return item

    def _next_pending(self, after_id: int, blocked: set[str]) -> OutboxItem | None:
        kinds = [k for k in list(self._handlers) if k not in blocked]
        if not kinds:
            return None
        marks = ",".join("?" * len(kinds))
        with self._lock:
            row = self._db.execute(
                f"SELECT * FROM outbox WHERE status = 'pending' AND id > ? AND kind IN ({marks}) ORDER BY id LIMIT 1",
                (after_id, *kinds),
            ).fetchone()
        return _item(row) if row else None

    def _finish(self, item_id: int, status: Status, tx_hash: str | None, error: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET status = ?, tx_hash = ?, last_error = ?,"
                " attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (status, tx_hash, error, int(time.time()), item_id),
            )

    def _retry_later(self, item_id: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?",
                (error, int(time.time()), item_id),
            )

    # -- background worker -------------------------------------------------

    def start(self, interval: float = 1.0, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Drain in a daemon thread: right after each enqueue, and every `interval` s."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._on_error = on_error
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, args=(interval,), name="xcentre-outbox", daemon=True)
        self._worker.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the background worker (a drain in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.drain()
            except Exception as exc:  # noqa: BLE001 - never let the worker die silently
                if self._on_error is not None:
                    self._on_error(exc)

    # -- reading -----------------------------------------------------------

    def item(self, item_id: int) -> OutboxItem | None:
        """The stored item, or None if there is no such id."""
        with self._lock:
            row = self._db.execute("SELECT * FROM outbox WHERE id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def item_by_key(self, key: str) -> OutboxItem | None:
        """The stored item for an idempotency key, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM outbox WHERE key = ?", (key,)).fetchone()
        return _item(row) if row else None

    def pending(self, kind: str | None = None) -> list[OutboxItem]:
        """Items not yet done or failed, in id order."""
        return self._by_status(PENDING, kind)

    def depth(self) -> dict[str, int]:
        """Pending items per kind (what /metrics shows as the outbox's depth): one count, no payloads read."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY kind"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def pending_failing_with(self, error: type[Exception]) -> int:
        """Pending items whose last try failed with `error` (by its name, as the try recorded it)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND substr(last_error, 1, ?) = ?",
                (len(error.__name__) + 1, f"{error.__name__}:"),
            ).fetchone()
        return int(row[0])

    def failed(self, kind: str | None = None) -> list[OutboxItem]:
        """Items whose transaction reverted, in id order."""
        return self._by_status(FAILED, kind)

    def _by_status(self, status: Status, kind: str | None) -> list[OutboxItem]:
        sql = "SELECT * FROM outbox WHERE status = ?"
        args: tuple[Any, ...] = (status,)
        if kind is not None:
            sql += " AND kind = ?"
            args += (kind,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [_item(r) for r in rows]

    def close(self) -> None:
        """Stop the worker and close the database."""
        self.stop()
        with self._lock:
            self._db.close()


def _item(row: tuple) -> OutboxItem:
    return OutboxItem(
        id=int(row[0]),
        kind=row[1],
        key=row[2],
        payload=json.loads(row[3]),
        status=row[4],
        attempts=int(row[5]),
        last_error=row[6],
        tx_hash=row[7],
        created_at=int(row[8]),
        updated_at=int(row[9]),
    )
