"""The store's schema, as the ordered steps that build it: `PRAGMA user_version` is the last step a file has had.

A new file runs every step; a file written by an earlier version runs the
steps it lacks (ledger.db.migrate). Never edit a step that has shipped: add
the next one. Steps that rebuild a table do so because SQLite cannot change a
CHECK constraint or drop a constrained column in place.
"""

from __future__ import annotations

import json
import re
import sqlite3

from gateway.store.credit import backfill
from ledger.db import Migration
from ledger.ids import centre_id

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

_V4_JOB_PAYMENT = """
ALTER TABLE jobs ADD COLUMN pay_order TEXT;
ALTER TABLE jobs ADD COLUMN pay_order_sig TEXT;
ALTER TABLE jobs ADD COLUMN pay_grant TEXT;
ALTER TABLE jobs ADD COLUMN pay_grant_sig TEXT;
ALTER TABLE jobs ADD COLUMN order_digest TEXT;
ALTER TABLE jobs ADD COLUMN pay_account TEXT;
ALTER TABLE jobs ADD COLUMN result_key TEXT;
ALTER TABLE jobs ADD COLUMN lock_hash TEXT;
ALTER TABLE jobs ADD COLUMN sealed_stdout TEXT;
ALTER TABLE jobs ADD COLUMN sealed_stderr TEXT;
ALTER TABLE jobs ADD COLUMN receipt_sig TEXT;
CREATE UNIQUE INDEX jobs_order_digest ON jobs(order_digest);
"""
"""Fair payment: each job's order and grant as the payer signed them (an order is accepted once: its
digest is unique), the key k its sealed outputs are released with, H(k), and the payer's receipt."""


def _claims_per_home(db: sqlite3.Connection) -> None:
    """An epoch is closed with a sum tree per home (root, count, total) instead of one Merkle root.

    Epochs closed before keep their totals per home, with no root or count (they were anchored
    under one root); the epochs table loses its `root` and `claims` columns.
    """
    db.execute(
        "CREATE TABLE epoch_homes (epoch INTEGER NOT NULL REFERENCES epochs(epoch), home TEXT NOT NULL,"
        " position INTEGER NOT NULL, root TEXT, count INTEGER, total TEXT NOT NULL, PRIMARY KEY (epoch, home))"
    )
    db.execute(
        "CREATE TABLE epochs_v6 (epoch INTEGER PRIMARY KEY CHECK (epoch >= 1),"
        " status TEXT NOT NULL CHECK (status IN ('open', 'closed')), opened_at INTEGER NOT NULL,"
        " closed_at INTEGER, record_count INTEGER,"
        " CHECK ((status = 'open') = (closed_at IS NULL AND record_count IS NULL)))"
    )
    for epoch, claims in db.execute("SELECT epoch, claims FROM epochs WHERE status = 'closed'").fetchall():
        for position, (home, total) in enumerate(json.loads(claims).items()):
            home_id = home if re.fullmatch(r"[0-9a-f]{64}", home) else centre_id(home).hex()  # names, once
            db.execute(
                "INSERT INTO epoch_homes (epoch, home, position, total) VALUES (?, ?, ?, ?)",
                (epoch, home_id, position, str(total)),
            )
    db.execute(
        "INSERT INTO epochs_v6 (epoch, status, opened_at, closed_at, record_count)"
        " SELECT epoch, status, opened_at, closed_at, record_count FROM epochs"
    )
    db.execute("DROP TABLE epochs")
    db.execute("ALTER TABLE epochs_v6 RENAME TO epochs")
    db.execute("CREATE UNIQUE INDEX epochs_one_open ON epochs(status) WHERE status = 'open'")
    db.execute("CREATE INDEX usage_records_home ON usage_records(epoch, home_centre, seq)")


_V5_HOLDS = """
CREATE TABLE holds (
    order_digest    TEXT PRIMARY KEY,
    grant_digest    TEXT NOT NULL UNIQUE,
    account         TEXT NOT NULL UNIQUE,
    principal       TEXT NOT NULL,
    project         TEXT NOT NULL,
    centre          TEXT NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    deadline        INTEGER NOT NULL CHECK (deadline >= 0),
    status          TEXT NOT NULL CHECK (status IN ('held', 'paid', 'refunded')),
    price           INTEGER CHECK (price >= 0 AND price <= amount),
    order_json      TEXT NOT NULL,
    grant_json      TEXT NOT NULL,
    grant_signature TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK ((status = 'paid') = (price IS NOT NULL))
);
CREATE INDEX holds_project ON holds(project, status);
CREATE INDEX holds_principal ON holds(principal, created_at);
CREATE INDEX holds_open ON holds(status, deadline);

CREATE TABLE complaints (
    record_digest TEXT PRIMARY KEY,
    grant_digest  TEXT NOT NULL REFERENCES holds(grant_digest),
    principal     TEXT NOT NULL,
    record        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'disputed')),
    created_at    INTEGER NOT NULL
);
CREATE INDEX complaints_open ON complaints(status);
"""
"""The payer home's book: one hold per order it granted (an account pays for one order only, so the
account is unique), reserved against a project's allocation until it is paid or refunded; and the
records its users say they got no key for, which its watcher disputes."""

_V7_LAPSED = """
ALTER TABLE usage_records ADD COLUMN lapsed_at INTEGER;
"""
"""A record left out of its epoch's trees at close, because its claim could not be anchored by its
order's deadline + the booking delay (no dispute of it could be answered): kept, never anchored, unbilled."""

_V8_DECISIONS = """
CREATE TABLE decisions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT UNIQUE NOT NULL CHECK (length(id) = 32),
    digest     TEXT UNIQUE NOT NULL CHECK (length(digest) = 64),
    epoch      INTEGER NOT NULL REFERENCES epochs(epoch),
    allowed    INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    entry      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX decisions_epoch ON decisions(epoch, seq);
ALTER TABLE jobs ADD COLUMN decision TEXT REFERENCES decisions(digest);
ALTER TABLE epochs ADD COLUMN decision_root TEXT CHECK (decision_root IS NULL OR length(decision_root) = 64);
ALTER TABLE epochs ADD COLUMN decision_count INTEGER CHECK (decision_count >= 0);
UPDATE epochs SET decision_root = '0000000000000000000000000000000000000000000000000000000000000000',
                  decision_count = 0
WHERE status = 'closed';
CREATE TABLE decision_trees (
    epoch INTEGER PRIMARY KEY REFERENCES epochs(epoch),
    nodes BLOB NOT NULL CHECK (typeof(nodes) = 'blob' AND length(nodes) % 64 = 32)
);

CREATE TABLE policy_texts (
    hash        TEXT NOT NULL CHECK (length(hash) = 64),
    schema_hash TEXT NOT NULL CHECK (length(schema_hash) = 64),
    policy      TEXT NOT NULL,
    schema      TEXT,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (hash, schema_hash)
);
"""
"""Access decisions on the record: every policy evaluation's log entry (canonical JSON) in the epoch open
when it was written, each job's admitting entry (its digest), each closed epoch's decision log root and
count, the tree each close built over a non-empty log (its node array, 2n - 1 nodes of 32 bytes: a proof
reads a few of them, never the log), and the policy texts this gateway served under, by hash. Epochs closed
before logged no decision: their log is the empty one (root 0, count 0), which is what they anchor if
their anchor is sent again."""

_V9_GROUPS = """
CREATE TABLE group_members (
    uid         TEXT NOT NULL,
    enrolment   TEXT NOT NULL CHECK (length(enrolment) = 64),
    project     TEXT NOT NULL,
    tracing_key TEXT NOT NULL UNIQUE CHECK (length(tracing_key) = 96),
    joined_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX group_members_uid ON group_members(uid, project);
CREATE TABLE identifications (
    opening       INTEGER PRIMARY KEY CHECK (opening >= 1),
    tracing_key   TEXT NOT NULL REFERENCES group_members(tracing_key),
    uid           TEXT NOT NULL,
    enrolment     TEXT NOT NULL CHECK (length(enrolment) = 64),
    project       TEXT NOT NULL,
    identified_at INTEGER NOT NULL
);
ALTER TABLE jobs ADD COLUMN group_signature BLOB
    CHECK (group_signature IS NULL OR (typeof(group_signature) = 'blob' AND length(group_signature) <= 4096));
ALTER TABLE jobs ADD COLUMN group_signature_hash TEXT
    CHECK ((group_signature IS NULL) = (group_signature_hash IS NULL)
           AND (group_signature_hash IS NULL OR length(group_signature_hash) = 64));
CREATE UNIQUE INDEX jobs_group_signature ON jobs(group_signature_hash);
ALTER TABLE holds ADD COLUMN group_signature BLOB
    CHECK (group_signature IS NULL OR (typeof(group_signature) = 'blob' AND length(group_signature) <= 4096));
ALTER TABLE holds ADD COLUMN group_signature_hash TEXT
    CHECK ((group_signature IS NULL) = (group_signature_hash IS NULL)
           AND (group_signature_hash IS NULL OR length(group_signature_hash) = 64));
CREATE UNIQUE INDEX holds_group_signature ON holds(group_signature_hash);
"""
"""Anonymous membership and supervision: the home's members of its projects' groups (the uid, enrolment and
project each tracing key T = sk·H_0 was registered by; T is unique), the openings it identified (which
member an opened T was, as it told the chain), and the group signature an anonymous job was accepted under,
or an anonymous grant's hold was granted under, with its keccak256, by which supervisors and auditors ask
for it (signed-on jobs and holds: NULL)."""

_V10_KEY_SCOPE = """
ALTER TABLE jobs ADD COLUMN idempotency_scope TEXT
    CHECK (idempotency_scope IS NULL OR length(idempotency_scope) <= 512);
UPDATE jobs SET idempotency_scope = principal WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency_scope ON jobs(idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
"""
"""Whose an idempotency key is: the user a password session names (uid@home, as before: kept as it was), or the
order's payment account for a presented or anonymous session, whose principal is a fresh pseudonym at every
sign-on. A retry after a new sign-on, with the same order, finds its job."""

_V11_KEPT_TREES = """
CREATE TABLE kept_trees (
    epoch       INTEGER NOT NULL REFERENCES epochs(epoch),
    home_centre TEXT NOT NULL CHECK (length(home_centre) = 64),
    width       INTEGER NOT NULL CHECK (width >= 1 AND (width & (width - 1)) = 0),
    seqs        BLOB NOT NULL,
    nodes       BLOB NOT NULL,
    PRIMARY KEY (epoch, home_centre)
);
"""
"""Each closed epoch's sum tree per home as usage proofs and claim evidence need it (gateway.books.kept_trees):
every leaf's record seq (8 bytes each, little-endian) and the nodes over blocks of `width` leaves (64 bytes each:
hash, then sum big-endian). Written once the close commits; an epoch closed before (or a close interrupted before
it) has none until its first proof builds it from the records."""

_V12_CREDIT = """
CREATE TABLE credit (
    home   TEXT NOT NULL CHECK (length(home) = 64),
    epoch  INTEGER NOT NULL CHECK (epoch >= 0),
    amount TEXT NOT NULL,
    PRIMARY KEY (home, epoch)
)
"""
"""What each home owes this serving centre (gateway.store.credit): per home (its centre id), what its jobs accepted
and not finished may bill (epoch 0) and the prices of its records per epoch, lapsed ones left out; and per job what
it may bill while it is queued or running. Amounts are decimal text. Jobs stored before count their whole grant."""


def _credit(db: sqlite3.Connection) -> None:
    db.execute(_V12_CREDIT)
    db.execute("ALTER TABLE jobs ADD COLUMN credit TEXT")
    backfill(db)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "epochs, jobs, usage records", _V1_TABLES),
    Migration(2, "the rates version each job was accepted under", _add_rates_version),
    Migration(3, "no forwarded jobs", _V3_NO_FORWARDING),
    Migration(4, "each job's order, grant, result key and receipt", _V4_JOB_PAYMENT),
    Migration(5, "the payer home's holds on its projects' allocations, and its users' complaints", _V5_HOLDS),
    Migration(6, "an epoch closes with a sum tree per home: root, count, total", _claims_per_home),
    Migration(7, "records that lapsed at their epoch's close, unanchored", _V7_LAPSED),
    Migration(
        8, "access decisions, each job's decision, each epoch's decision log root and tree; policy texts", _V8_DECISIONS
    ),
    Migration(9, "anonymous membership and supervision", _V9_GROUPS),
    Migration(10, "idempotency keys scoped per user or per order account", _V10_KEY_SCOPE),
    Migration(11, "closed epochs' sum trees kept for proofs", _V11_KEPT_TREES),
    Migration(12, "what each home owes: what its jobs in flight may bill, its records per epoch", _credit),
)
LATEST = len(MIGRATIONS)
