"""SQLite as every durable file of a node opens it: WAL, synchronous writes, one shared write connection.

`open_reader()` opens a read-only connection beside it (the gateway's store
keeps one per thread: `ledger.read_connections`). Also the two things every
such file shares: `transaction()`, the one way a write transaction is opened
(BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error; the gateway's store
groups its writes through `ledger.group_commit` instead), and `migrate()`,
which brings a file's schema up to date from `PRAGMA user_version`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DatabaseTooNew",
    "Migration",
    "MigrationError",
    "migrate",
    "open_durable",
    "open_reader",
    "schema_version",
    "transaction",
]


def open_durable(path: str | Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection in autocommit mode (callers open their own transactions) that survives power loss.

    WAL lets readers run beside the one writer; `synchronous=FULL` makes a
    committed transaction durable before the caller acknowledges anything.
    The connection may be shared between threads: callers guard it with a lock.
    Its tables come from `migrate()`, never from the caller's own CREATE statements.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return db


def open_reader(path: str | Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A read-only connection (autocommit) to a file `open_durable` opened: for one thread's reads beside the writer.

    In WAL mode it never waits for the writer and sees committed transactions only;
    `query_only` refuses any write through it. It may be closed from another thread.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA query_only=1")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: BEGIN IMMEDIATE, COMMIT at the end, ROLLBACK if anything raises.

    IMMEDIATE takes the write lock at the start, so two writers (threads or
    processes) queue instead of failing half-way with SQLITE_BUSY. Used while
    a transaction is already open on this connection (a callback inside an
    outer write), it joins that transaction: the outer one commits or rolls
    back the whole. The caller holds the lock that guards the connection.
    """
    if db.in_transaction:
        yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # also when COMMIT itself failed: never leave one open for the next caller to join
            db.execute("ROLLBACK")
        raise


# ---------------------------------------------------------------- migrations


class MigrationError(ValueError):
    """A file this code cannot bring up to date; it is left as it was before the step that failed.

    A ValueError like every other refusal of bad input, so `xcentre` reports it as an error, not a traceback.
    """


class DatabaseTooNew(MigrationError):
    """The file was written by a newer version of the code: it is not touched."""


@dataclass(frozen=True)
class Migration:
    """One step of a file's schema: version N takes a file from N-1 to N.

    `apply` is an SQL script (statements separated by `;`) or a function of
    the connection. It runs inside the migration's transaction with foreign
    keys off, so a step may rebuild a table (SQLite cannot drop a CHECK).
    """

    version: int
    why: str
    apply: str | Callable[[sqlite3.Connection], None]


def schema_version(db: sqlite3.Connection) -> int:
    """The file's `PRAGMA user_version`: the last migration applied to it (0 for a new file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration], *, what: str = "database") -> int:
    """Apply the migrations the file has not had yet, in order, one transaction each; returns the version.

    The version is read again inside each migration's write transaction, so
    two processes opening the same file at once apply every step once. A file
    whose version is above the last migration was written by newer code and
    is refused with DatabaseTooNew, its rows unchanged (open_durable has
    already set its journal mode to WAL). A step that fails rolls back
    whole (its version with it) and raises MigrationError. Foreign keys are
    off while migrating (SQLite's table-rebuild procedure) and checked with
    `PRAGMA foreign_key_check` before each step commits.
    """
    _check_sequence(migrations)
    latest = len(migrations)
    if db.in_transaction:
        raise MigrationError(f"{what}: migrate() must run outside a transaction (foreign keys are switched off)")
    foreign_keys = db.execute("PRAGMA foreign_keys").fetchone()[0]
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        while True:
            with transaction(db):
                current = schema_version(db)
                if current > latest:
                    raise DatabaseTooNew(
                        f"{what} has schema version {current}, but this version of xcentre knows versions up to "
                        f"{latest}: it was written by a newer xcentre. Run that version (or newer) on it, or "
                        f"restore a backup made for this one; its contents were not changed"
                    )
                if current == latest:
                    return current
                step = migrations[current]
                try:
                    _apply(db, step)
                    broken = db.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise MigrationError(f"leaves {len(broken)} dangling reference(s), first: {tuple(broken[0])}")
                except Exception as exc:
                    raise MigrationError(
                        f"{what}: migration {step.version} ({step.why}) failed and was rolled back, "
                        f"the file stays at version {current}: {exc}"
                    ) from exc
                db.execute(f"PRAGMA user_version = {int(step.version)}")
    finally:
        db.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3 ... in order; got {versions}")


def _apply(db: sqlite3.Connection, step: Migration) -> None:
    if callable(step.apply):
        step.apply(db)
        return
    for statement in _statements(step.apply):
        db.execute(statement)


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one by one (executescript() would commit the open transaction)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"  # the script's end ends its last statement too
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        if sqlite3.complete_statement(pending + "\n;"):  # the script ends in a comment
            yield pending + "\n;"
            return
        raise ValueError(f"unterminated SQL statement (an open quote or comment): {pending.strip()[:80]!r}")
