"""What the parts of the store (jobs, books, decisions) share: one SQLite connection, its lock and the clock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.db import transaction


class StoreBase:
    """One connection behind a re-entrant lock; `Store` opens it, `Jobs` and `Books` write through `_tx`."""

    path: Path
    _db: sqlite3.Connection
    _lock: threading.RLock
    _clock: Callable[[], float]

    def _now(self) -> int:
        return int(self._clock())

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested use (from a callback) joins the outer one."""
        with self._lock, transaction(self._db) as db:
            yield db

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()


def open_epoch_in(db: sqlite3.Connection) -> int:
    """The epoch open now, read inside the caller's transaction: what a record or decision written in it joins."""
    epoch: int = db.execute("SELECT epoch FROM epochs WHERE status = 'open'").fetchone()[0]
    return epoch
