"""One read-only connection per thread to a WAL file, beside its one writer.

In WAL mode a reader never waits for the writer (not even for its fsync) and
only ever sees committed transactions, so reads need neither the writer's
lock nor its connection. A thread's connection is opened on its first read
and closed when the thread ends or when `close()` is called.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.db import open_reader

__all__ = ["ThreadReaders"]


class _Reader:
    """A thread's connection; the registry holds it weakly, so a thread that ends takes its connection along."""

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


class ThreadReaders:
    """The read connections of one file, one per thread (`get()`), all closed by `close()`."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        row_factory: Callable[[sqlite3.Cursor, tuple[Any, ...]], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._row_factory = row_factory
        self._local = threading.local()
        self._open: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._lock = threading.Lock()  # guards _open, _closed and _trace
        self._closed = False
        self._trace: Callable[[str], object] | None = None

    def get(self) -> sqlite3.Connection:
        """The calling thread's read connection (opened on first use)."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is not None:
            return reader.db
        db = open_reader(self.path, busy_timeout_ms=self._busy_timeout_ms)
        db.row_factory = self._row_factory
        with self._lock:
            if self._closed:
                db.close()
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            db.set_trace_callback(self._trace)
            reader = _Reader(db)
            self._open.add(reader)
        self._local.reader = reader
        return db

    def set_trace_callback(self, callback: Callable[[str], object] | None) -> None:
        """Trace every statement of every read connection, open now or later (sqlite3's trace callback)."""
        with self._lock:
            self._trace = callback
            for reader in list(self._open):
                reader.db.set_trace_callback(callback)

    def close(self) -> None:
        """Close every thread's connection; a read after this fails as on a closed connection."""
        with self._lock:
            self._closed = True
            readers = list(self._open)
            self._open.clear()
        for reader in readers:
            reader.db.close()
