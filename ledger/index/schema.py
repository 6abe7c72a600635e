"""The index file: its tables and its bookkeeping (the `meta` table).

The tables are projections of chain events (see projections.py); `events` keeps every
event applied, so a re-sync never applies one twice. `meta` holds the deployment the
file belongs to and the last indexed block with its hash and timestamp, written in the
same transaction as the rows of that block's window.

The layout is versioned (`PRAGMA user_version`, ledger.db.migrate): a file missing
steps gets them when it is opened. Never edit a step that has shipped; add one. Files
written before versions (version 0) have exactly step 1's tables, which adopts them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger.db import Migration, migrate, open_durable

_V1_TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    block      INTEGER NOT NULL,
    log_index  INTEGER NOT NULL,
    tx_hash    TEXT    NOT NULL,
    contract   TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    args       TEXT    NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE TABLE IF NOT EXISTS members (
    id            BLOB PRIMARY KEY,
    name          TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    gateway_url   TEXT    NOT NULL,
    token_key     BLOB    NOT NULL,
    active        INTEGER NOT NULL,
    admitted_block INTEGER NOT NULL,
    admitted_log   INTEGER NOT NULL,
    updated_block  INTEGER NOT NULL,
    removed_block  INTEGER
);
CREATE TABLE IF NOT EXISTS rates (
    centre         BLOB    NOT NULL,
    version        INTEGER NOT NULL,
    effective_from INTEGER NOT NULL,
    per_cpu_second TEXT    NOT NULL,
    per_gpu_second TEXT    NOT NULL,
    per_gib_hour   TEXT    NOT NULL,
    block          INTEGER NOT NULL,
    PRIMARY KEY (centre, version)
);
CREATE TABLE IF NOT EXISTS proposals (
    id         INTEGER PRIMARY KEY,
    action     INTEGER NOT NULL,
    member_id  BLOB    NOT NULL,
    proposer   BLOB    NOT NULL,
    executed   INTEGER NOT NULL DEFAULT 0,
    block      INTEGER NOT NULL,
    tx_hash    TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    proposal_id INTEGER NOT NULL,
    voter       BLOB    NOT NULL,
    block       INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, voter)
);
CREATE TABLE IF NOT EXISTS anchors (
    centre       BLOB    NOT NULL,
    epoch        INTEGER NOT NULL,
    root         BLOB    NOT NULL,
    record_count INTEGER NOT NULL,
    tx_hash      TEXT    NOT NULL,
    block        INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    PRIMARY KEY (centre, epoch)
);
CREATE TABLE IF NOT EXISTS claims (
    epoch    INTEGER NOT NULL,
    creditor BLOB    NOT NULL,
    debtor   BLOB    NOT NULL,
    position INTEGER NOT NULL,
    amount   TEXT    NOT NULL,
    PRIMARY KEY (epoch, creditor, debtor)
);
CREATE TABLE IF NOT EXISTS settlements (
    epoch    INTEGER PRIMARY KEY,
    tx_hash  TEXT    NOT NULL,
    block    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS net_positions (
    epoch    INTEGER NOT NULL,
    centre   BLOB    NOT NULL,
    position INTEGER NOT NULL,
    net      TEXT    NOT NULL,
    PRIMARY KEY (epoch, centre)
);
CREATE TABLE IF NOT EXISTS transfers (
    epoch     INTEGER NOT NULL,
    block     INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    debtor    BLOB    NOT NULL,
    creditor  BLOB    NOT NULL,
    amount    TEXT    NOT NULL,
    tx_hash   TEXT    NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE TABLE IF NOT EXISTS issuer_keys (
    centre      BLOB    NOT NULL,
    key_id      BLOB    NOT NULL,
    pk          BLOB    NOT NULL,
    valid_from  INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,  -- 0: current, open-ended
    block       INTEGER NOT NULL,
    log_index   INTEGER NOT NULL,
    PRIMARY KEY (centre, key_id)
);
CREATE TABLE IF NOT EXISTS key_proposals (
    id                   INTEGER PRIMARY KEY,
    centre               BLOB    NOT NULL,
    key_id               BLOB,             -- NULL: revoke the centre's keys
    previous_valid_until INTEGER NOT NULL,
    proposer             BLOB    NOT NULL,
    executed             INTEGER NOT NULL DEFAULT 0,
    block                INTEGER NOT NULL,
    tx_hash              TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS key_votes (
    proposal_id INTEGER NOT NULL,
    voter       BLOB    NOT NULL,
    block       INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, voter)
);
CREATE TABLE IF NOT EXISTS enrolments (
    id               BLOB    NOT NULL,
    home             BLOB    NOT NULL,
    enrolled_at      INTEGER NOT NULL,
    revoked          INTEGER NOT NULL DEFAULT 0,
    revocation_epoch INTEGER,
    block            INTEGER NOT NULL,
    revoked_block    INTEGER,
    PRIMARY KEY (home, id)  -- an id means something only at its home
);
CREATE TABLE IF NOT EXISTS revocation_epochs (
    centre BLOB PRIMARY KEY,
    epoch  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_epoch ON transfers (epoch, block, log_index);
CREATE INDEX IF NOT EXISTS anchors_epoch ON anchors (epoch, block, log_index);
"""

_V2_FAIR_PAYMENT = """
CREATE TABLE anchors_v2 (
    centre       BLOB    NOT NULL,
    epoch        INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    anchored_at  INTEGER NOT NULL,
    tx_hash      TEXT    NOT NULL,
    block        INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    PRIMARY KEY (centre, epoch)
);
INSERT INTO anchors_v2 (centre, epoch, record_count, anchored_at, tx_hash, block, log_index)
SELECT centre, epoch, record_count, 0, tx_hash, block, log_index FROM anchors;
DROP TABLE anchors;
ALTER TABLE anchors_v2 RENAME TO anchors;
CREATE INDEX anchors_epoch ON anchors (epoch, block, log_index);
ALTER TABLE claims ADD COLUMN root BLOB;
ALTER TABLE claims ADD COLUMN count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE claims ADD COLUMN voided INTEGER NOT NULL DEFAULT 0;
CREATE INDEX claims_debtor ON claims (debtor, epoch);
CREATE TABLE disputes (
    id          INTEGER PRIMARY KEY,
    centre      BLOB    NOT NULL,
    epoch       INTEGER NOT NULL,
    home        BLOB    NOT NULL,
    leaf        INTEGER NOT NULL,
    need_key    INTEGER NOT NULL,
    challenger  TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('open', 'answered', 'voided')),
    record      BLOB,
    block       INTEGER NOT NULL,
    tx_hash     TEXT    NOT NULL
);
CREATE INDEX disputes_epoch ON disputes (epoch, centre, home);
CREATE TABLE revealed_keys (
    lock_hash  BLOB PRIMARY KEY,
    key        BLOB    NOT NULL,
    record     BLOB    NOT NULL,
    dispute_id INTEGER NOT NULL,
    block      INTEGER NOT NULL
);
CREATE TABLE collateral (
    account       TEXT PRIMARY KEY,
    balance       TEXT    NOT NULL DEFAULT '0',
    locked        TEXT    NOT NULL DEFAULT '0',
    pending       TEXT    NOT NULL DEFAULT '0',
    unlock_epoch  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE shortfalls (
    epoch   INTEGER NOT NULL,
    debtor  BLOB    NOT NULL,
    unpaid  TEXT    NOT NULL,
    PRIMARY KEY (epoch, debtor)
);
"""
"""Fair payment: an anchor claims per home (root, count, total of a sum tree), and a claim can be voided;
disputes, keys revealed on chain, members' collateral and settlement shortfalls. The single root goes."""

_V3_DECISIONS = """
CREATE TABLE policies (
    centre       BLOB    NOT NULL,
    version      INTEGER NOT NULL,
    policy_hash  BLOB    NOT NULL,
    schema_hash  BLOB    NOT NULL,
    published_at INTEGER NOT NULL,
    block        INTEGER NOT NULL,
    PRIMARY KEY (centre, version)
);
ALTER TABLE anchors ADD COLUMN decision_root BLOB;
ALTER TABLE anchors ADD COLUMN decision_count INTEGER NOT NULL DEFAULT 0;
"""
"""Access decisions on the record: every member's published policy versions (hashes), and each anchor's
decision-log root and count. Anchors indexed before the step committed no decision log: no root, count 0."""

_V4_REVOCATIONS = """
CREATE TABLE revocations (
    centre BLOB    NOT NULL,
    epoch  INTEGER NOT NULL,
    at     INTEGER,          -- the block's time; NULL until a sync reads it (revocations indexed before this step)
    block  INTEGER NOT NULL,
    PRIMARY KEY (centre, epoch)
);
INSERT INTO revocations (centre, epoch, at, block)
SELECT home, revocation_epoch, NULL, revoked_block FROM enrolments
WHERE revoked = 1 AND revocation_epoch IS NOT NULL AND revoked_block IS NOT NULL;
"""
"""Each revocation epoch of each home with the time it began (the Revoked event's block time), so the epoch in
force at a week's start can be read (group credentials carry it). Revocations indexed before the step get their
block's time from the chain at the next sync (sync.ChainSync)."""

_V5_LATE_CLAIMS = """
CREATE TABLE IF NOT EXISTS late_anchors (
    centre    BLOB    NOT NULL,
    epoch     INTEGER NOT NULL,
    block     INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_hash   TEXT    NOT NULL,
    PRIMARY KEY (centre, epoch)
);
INSERT OR IGNORE INTO late_anchors (centre, epoch, block, log_index, tx_hash)
SELECT a.centre, a.epoch, a.block, a.log_index, a.tx_hash FROM anchors AS a WHERE EXISTS (
    SELECT 1 FROM events AS e
    WHERE e.contract = 'UsageLedger' AND e.event = 'AnchoredLate' AND e.tx_hash = a.tx_hash
);
CREATE TABLE IF NOT EXISTS late_transfers (
    epoch     INTEGER NOT NULL,
    block     INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    debtor    BLOB    NOT NULL,
    creditor  BLOB    NOT NULL,  -- the late anchor's centre: settleLate pays no one else
    amount    TEXT    NOT NULL,
    tx_hash   TEXT    NOT NULL,
    PRIMARY KEY (block, log_index)
);
INSERT OR IGNORE INTO late_transfers (epoch, block, log_index, debtor, creditor, amount, tx_hash)
SELECT t.epoch, t.block, t.log_index, t.debtor, t.creditor, t.amount, t.tx_hash FROM transfers AS t
WHERE t.tx_hash != (SELECT s.tx_hash FROM settlements AS s WHERE s.epoch = t.epoch);
DELETE FROM transfers WHERE tx_hash != (SELECT s.tx_hash FROM settlements AS s WHERE s.epoch = transfers.epoch);
CREATE TABLE IF NOT EXISTS late_settlements (
    epoch     INTEGER NOT NULL,
    centre    BLOB    NOT NULL,  -- the late anchor's centre, its only creditor
    tx_hash   TEXT    NOT NULL,
    block     INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    PRIMARY KEY (epoch, centre)
);
CREATE TABLE IF NOT EXISTS late_net_positions (
    epoch    INTEGER NOT NULL,
    creditor BLOB    NOT NULL,  -- the late anchor's centre
    centre   BLOB    NOT NULL,
    position INTEGER NOT NULL,
    net      TEXT    NOT NULL,
    PRIMARY KEY (epoch, creditor, centre)
);
CREATE TABLE IF NOT EXISTS late_shortfalls (
    block     INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    creditor  BLOB,              -- NULL until the LateClaimsSettled after it in its transaction names it
    debtor    BLOB    NOT NULL,
    unpaid    TEXT    NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE INDEX IF NOT EXISTS late_shortfalls_epoch ON late_shortfalls (epoch, creditor);
"""
"""Late anchors (`AnchoredLate`: after the epoch's anchor deadline or settlement) and their own settlements
(`Settlement.settleLate`): what moved, the transfers and the shortfalls, in tables of their own so that the
epoch's settlement keeps only its own and neither overwrites the other. Late anchors and transfers indexed
before the step are moved from the events kept; a late settlement indexed before it is not projected (no
release indexed one). Every statement may run again."""


def _v6_proposal_times(db: sqlite3.Connection) -> None:
    """When each proposal was made (its ProposalCreated or IssuerKeyProposed event's block time; NULL until a
    sync reads it), from which it expires (Governed.PROPOSAL_LIFETIME). Proposals indexed before the step get
    their block's time from the chain at the next sync (sync.ChainSync). May run again (a column it finds is
    kept)."""
    for table in ("proposals", "key_proposals"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "created_at" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN created_at INTEGER")


MIGRATIONS = [
    Migration(1, "members, rates, governance, anchors, settlements, identity registry", _V1_TABLES),
    Migration(2, "claims per home with sum-tree roots, disputes, revealed keys, collateral", _V2_FAIR_PAYMENT),
    Migration(3, "policy versions, decision-log roots of anchors", _V3_DECISIONS),
    Migration(4, "each revocation epoch with its block time", _V4_REVOCATIONS),
    Migration(5, "late anchors and their settlements, apart from the epoch's", _V5_LATE_CLAIMS),
    Migration(6, "the time each proposal was made (it expires from it)", _v6_proposal_times),
]

# meta keys
DEPLOYMENT = "deployment"  # JSON of the chain id and contract addresses the file indexes
LAST_BLOCK = "last_block"
LAST_BLOCK_HASH = "last_block_hash"  # 0x-hex; a different hash at that height: another chain
LAST_BLOCK_TIME = "last_block_time"  # UTC seconds


def open_index(path: str | Path) -> sqlite3.Connection:
    """The index file, created or brought up to date; rows come back as sqlite3.Row, read by column name."""
    db = open_durable(path)
    try:
        migrate(db, MIGRATIONS, what=f"the event index {path}")
    except BaseException:
        db.close()
        raise
    db.row_factory = sqlite3.Row
    return db


def read_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = :key", {"key": key}).fetchone()
    return None if row is None else str(row["value"])


def write_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (:key, :value)", {"key": key, "value": value})
