"""SQLite as every durable file of a node opens it: WAL, synchronous writes, one shared connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: str | Path, schema: str = "", *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection in autocommit mode (callers open their own transactions) that survives power loss.

    WAL lets readers run beside the one writer; `synchronous=FULL` makes a
    committed transaction durable before the caller acknowledges anything.
    The connection may be shared between threads: callers guard it with a lock.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if schema:
        db.executescript(schema)
    return db
