"""The store's schema, as the ordered steps that build it: `PRAGMA user_version` is the last step a file has had.

A new file runs every step; a file written by an earlier version runs the
steps it lacks (ledger.db.migrate). Never edit a step that has shipped: add
the next one. Steps that rebuild a table do so because SQLite cannot change a
CHECK constraint or drop a constrained column in place.
"""

from __future__ import annotations

import sqlite3

from ledger.db import Migration

__all__ = ["LATEST", "MIGRATIONS"]

_V1_TABLES = """
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
"""Version 1, as first shipped. IF NOT EXISTS: files from before user_version was written adopt it."""


def _add_rates_version(db: sqlite3.Connection) -> None:
    # Files written while the column was added by hand at every open carry version 1 *and* the column.
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if "rates_version" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN rates_version INTEGER CHECK (rates_version >= 1)")


_V3_NO_FORWARDING = """
CREATE TABLE jobs_v3 (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT,
    principal       TEXT NOT NULL,
    home            TEXT NOT NULL,
    request         TEXT NOT NULL,
    serving_centre  TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                    ('queued','running','succeeded','failed','timed_out','denied')),
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
INSERT INTO jobs_v3 (rowid, id, idempotency_key, principal, home, request, serving_centre, status, exit_code,
                     record_id, stdout_tail, stderr_tail, detail, created_at, updated_at, rates_version)
SELECT rowid, id, idempotency_key, principal, home, request, serving_centre,
       CASE status WHEN 'forwarded' THEN 'failed' ELSE status END,
       exit_code, record_id, stdout_tail, stderr_tail,
       CASE status WHEN 'forwarded'
            THEN 'forwarded to ' || serving_centre || ' at ' || COALESCE(forwarded_url, 'an unrecorded URL')
                 || ' by a gateway that still forwarded jobs; it did not run here, its outcome is known only there'
                 || COALESCE('; ' || detail, '')
            ELSE detail END,
       created_at, updated_at, rates_version
FROM jobs ORDER BY rowid;
DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;
CREATE INDEX jobs_status ON jobs(status);
"""
"""Gateways no longer forward jobs: the `forwarded` status and `forwarded_url` go. A job forwarded
before keeps its row, as failed here, with where it went (the URL) in its detail."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "epochs, jobs, usage records", _V1_TABLES),
    Migration(2, "the rates version each job was accepted under", _add_rates_version),
    Migration(3, "no forwarded jobs", _V3_NO_FORWARDING),
)
LATEST = len(MIGRATIONS)
