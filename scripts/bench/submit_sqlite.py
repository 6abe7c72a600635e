"""How many durable job rows per second SQLite itself allows on this disk, committed one by one or in groups.

The ceiling under any gateway design that commits each accepted job before it
answers: `ledger.db.open_durable` (WAL, synchronous=FULL, what the gateway's
store opens) with a job row and its decision-log row per submission, shaped like
the store's (a few hundred bytes of canonical JSON each, a unique order digest,
a per-principal idempotency key), committed one transaction per submission as
today, or several submissions per transaction (a group commit: each answered
only after its group's COMMIT returns, so every 202 stays durable), beside
synchronous=NORMAL (WAL: durable against a crash of the process, not of the
machine) for comparison.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from ledger.db import open_durable

SCHEMA = """
CREATE TABLE jobs (
  id TEXT PRIMARY KEY, principal TEXT NOT NULL, idempotency_key TEXT, request TEXT NOT NULL,
  order_json TEXT, order_signature TEXT, grant_json TEXT, grant_signature TEXT, order_digest TEXT UNIQUE,
  status TEXT NOT NULL, created_at INTEGER NOT NULL, decision TEXT
);
CREATE UNIQUE INDEX jobs_key ON jobs (principal, idempotency_key);
CREATE TABLE decisions (id TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, epoch INTEGER, entry TEXT NOT NULL);
"""


def _row(i: int) -> tuple[tuple, tuple]:
    digest = secrets.token_hex(32)
    request = json.dumps({"command": ["true"], "walltime": 60, "resources": {"cores": 1, "memory_mib": 256}})
    order = json.dumps({"centre": "0x" + "ab" * 32, "request": "0x" + secrets.token_hex(32), "max_price": 2400833})
    job = (
        secrets.token_hex(16),
        f"bench{i % 64:03d}@hpc-a",
        secrets.token_hex(16),
        request,
        order,
        "0x" + secrets.token_hex(65),
        order,
        "0x" + secrets.token_hex(65),
        digest,
        "queued",
        int(time.time()),
        digest,
    )
    decision = (secrets.token_hex(16), digest, 1, json.dumps({"cedar": request * 4, "decision": "allow"}))
    return job, decision


def _commits(db: sqlite3.Connection, rows: list[tuple[tuple, tuple]], group: int) -> float:
    """Seconds to store `rows`, `group` submissions per transaction."""
    start = time.perf_counter()
    for at in range(0, len(rows), group):
        db.execute("BEGIN IMMEDIATE")
        for job, decision in rows[at : at + group]:
            db.execute("INSERT INTO decisions VALUES (?, ?, ?, ?)", decision)
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", job)
        db.execute("COMMIT")
    return time.perf_counter() - start


def measure(count: int, folder: Path | None = None) -> dict[str, tuple[int, float]]:
    """{case: (rows, seconds)} for one job per COMMIT, 8 and 32 per COMMIT (synchronous=FULL), and one per COMMIT
    with synchronous=NORMAL; each on a fresh file in `folder` (default: the temp folder, where the gateway's
    data folder is in bench_submit.py)."""
    out: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="xcentre-bench-sqlite-", dir=folder) as tmp:
        for case, group, synchronous in (
            ("1 per COMMIT, synchronous=FULL", 1, "FULL"),
            ("8 per COMMIT, synchronous=FULL", 8, "FULL"),
            ("32 per COMMIT, synchronous=FULL", 32, "FULL"),
            ("1 per COMMIT, synchronous=NORMAL", 1, "NORMAL"),
        ):
            path = Path(tmp) / f"{group}-{synchronous}.db"
            db = open_durable(path)
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.executescript(SCHEMA)
            rows = [_row(i) for i in range(count)]
            _commits(db, [_row(i) for i in range(64)], group)  # warm: the file's first pages
            out[case] = (count, _commits(db, rows, group))
            db.close()
            os.sync()
    return out
