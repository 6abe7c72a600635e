"""Schema versions: files written by earlier versions open with their rows intact, newer ones are refused untouched.

Also the one write-transaction helper every node file uses (ledger.db.transaction).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store.schema import LATEST, MIGRATIONS
from ledger.db import DatabaseTooNew, Migration, MigrationError, migrate, open_durable, schema_version, transaction
from ledger.outbox import Outbox

FIXTURES = Path(__file__).parent / "fixtures" / "databases"
REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
PAYMENT_COLUMNS = (
    "pay_order",
    "pay_order_sig",
    "pay_grant",
    "pay_grant_sig",
    "order_digest",
    "pay_account",
    "result_key",
    "lock_hash",
    "sealed_stdout",
    "sealed_stderr",
    "receipt_sig",
)


def _load(path: Path, fixture: str, edit=lambda sql: sql) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(edit((FIXTURES / fixture).read_text()))
    finally:
        db.close()


def _rows(path: Path, table: str) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT rowid AS _rowid, * FROM {table} ORDER BY rowid")]
    finally:
        db.close()


def _schema(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        return [*rows, ("user_version", schema_version(db))]
    finally:
        db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return schema_version(db)
    finally:
        db.close()


# ------------------------------------------------------------------ the gateway store


def test_a_store_written_by_version_1_opens_with_its_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    _load(path, "gateway_v1.sql")
    jobs, records, epochs = (_rows(path, t) for t in ("jobs", "usage_records", "epochs"))
    assert _version(path) == 1 and len(jobs) == 7 and len(records) == 1 and len(epochs) == 2

    with Store(path) as store:
        assert _version(path) == LATEST
        after = _rows(path, "jobs")
        assert [j["id"] for j in after] == [j["id"] for j in jobs]  # same rows, same order (rowids kept)
        for old, new in zip(jobs, after, strict=True):
            assert new.pop("rates_version") is None  # accepted before rates were versioned
            for column in PAYMENT_COLUMNS:  # accepted before fair payment: no order, grant, key or receipt
                assert new.pop(column) is None
            assert new.pop("decision") is None  # accepted before decisions were logged (migration 8)
            assert new.pop("group_signature") is None and new.pop("group_signature_hash") is None  # signed on (9)
            scope = old["principal"] if old["idempotency_key"] is not None else None
            assert new.pop("idempotency_scope") == scope  # keys stay their principal's (10)
            assert new.pop("credit") is None  # accepted without a grant: it is owed nothing in flight (12)
            url = old.pop("forwarded_url")
            if old["status"] == "forwarded":  # the one job forwarded before gateways stopped forwarding
                assert (new.pop("status"), old.pop("status")) == ("failed", "forwarded")
                detail = new.pop("detail")
                assert url in detail and "hpc-c" in detail and old.pop("detail") is None
            assert new == old
        # records keep their rows; none lapsed (a column of migration 7)
        assert [r | {"lapsed_at": None} for r in records] == _rows(path, "usage_records")
        # epochs keep their rows; a closed epoch's claims move to one row per home, without a root
        claims = [(e["epoch"], json.loads(c)) for e in epochs if (c := e.pop("claims")) and e.pop("root")]
        for e in epochs:
            e.pop("root", None)
            closed = e["status"] == "closed"  # closed before decisions were logged: an empty log (migration 8)
            e.update(decision_root="00" * 32 if closed else None, decision_count=0 if closed else None)
        assert _rows(path, "epochs") == epochs
        assert [(h["epoch"], h["home"], h["root"], h["count"], h["total"]) for h in _rows(path, "epoch_homes")] == [
            (epoch, home, None, None, str(total)) for epoch, c in claims for home, total in c.items()
        ]

        # and the store works on it as on any other
        assert store.open_epoch() == 2
        closed = store.closure(1)
        assert closed is not None and closed.count == 1 and closed.claims == {"6870632d61" + "00" * 27: 12}
        assert [r.job_id for r in store.records_for_epoch(1)] == ["job-00000000000000a1"]
        done = store.get_job("job-00000000000000a1")
        assert done.request["argv"] == ["echo", "café ☕"] and done.stdout_tail == "café ☕\n"
        again, created = store.create_job("alice@hpc-a", "hpc-a", done.request, "hpc-a", idempotency_key="k-1")
        assert not created and again == done  # a retry of a job stored by the old version is still that job
        assert [j.id for j in store.jobs_in_status("queued", "running")] == [
            "job-00000000000000a3",
            "job-00000000000000a4",
        ]
        forwarded = store.get_job("job-00000000000000a5")
        assert forwarded.status == "failed" and forwarded.serving_centre == "hpc-c"
        new, created = store.create_job("carol@hpc-a", "hpc-a", REQ, "hpc-a", rates_version=2)
        assert created and new.rates_version == 2
        store.update_job(new.id, status="running")
        record = {"record_id": "0x" + "44" * 32, "job_id": new.id, "epoch": 2, "price": 3}
        store.complete_job(
            new.id, "succeeded", 0, "", "", record=lambda epoch: (_Usage(epoch, record), b"\x01" * 65, b"\x55" * 32)
        )
        assert [r.epoch for r in store.records_for_epoch(2)] == [2]
        assert store.close_epoch(2, {"01" * 32: (b"\x66" * 32, 1, 3)}).count == 1
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # back on after migrating


class _Usage:
    """The three things NewRecord.of reads from a ledger.records.UsageRecord."""

    def __init__(self, epoch: int, data: dict) -> None:
        self.epoch, self.record_id, self.home_centre, self._data = epoch, bytes.fromhex("44" * 32), b"\x01" * 32, data

    def to_json(self) -> str:
        return json.dumps(self._data)


def _with_rates_column(sql: str) -> str:
    """The file as the last versions before the migration runner wrote it: version 1, with rates_version."""
    marker = "    updated_at      INTEGER NOT NULL,\n    UNIQUE"
    assert marker in sql
    return sql.replace(
        marker,
        "    updated_at      INTEGER NOT NULL,\n    rates_version   INTEGER CHECK (rates_version >= 1),\n    UNIQUE",
    )


def test_fresh_and_migrated_files_end_with_the_same_schema(tmp_path: Path) -> None:
    Store(tmp_path / "fresh.db").close()
    _load(tmp_path / "v1.db", "gateway_v1.sql")
    _load(tmp_path / "v1-rates.db", "gateway_v1.sql", _with_rates_column)
    for name in ("v1.db", "v1-rates.db"):
        Store(tmp_path / name).close()
        assert _schema(tmp_path / name) == _schema(tmp_path / "fresh.db"), name
    assert "forwarded" not in json.dumps(_schema(tmp_path / "fresh.db"))
    assert _schema(tmp_path / "fresh.db")[-1] == ("user_version", len(MIGRATIONS))


def test_a_store_with_rates_versions_before_the_runner_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    _load(path, "gateway_v1.sql", _with_rates_column)
    db = sqlite3.connect(path)
    db.execute("UPDATE jobs SET rates_version = 4 WHERE id = 'job-00000000000000a4'")
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.get_job("job-00000000000000a4").rates_version == 4
        assert store.get_job("job-00000000000000a3").rates_version is None


def test_a_file_from_before_rates_versions_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, idempotency_key TEXT, principal TEXT NOT NULL,"
        " home TEXT NOT NULL, request TEXT NOT NULL, serving_centre TEXT NOT NULL, status TEXT NOT NULL,"
        " forwarded_url TEXT, exit_code INTEGER, record_id TEXT, stdout_tail TEXT, stderr_tail TEXT,"
        " detail TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO jobs VALUES ('job-old', NULL, 'alice@hpc-a', 'hpc-a', '{}', 'hpc-a', 'queued',"
        " NULL, NULL, NULL, NULL, NULL, NULL, 1, 1)"
    )
    db.commit()
    db.close()
    with Store(path) as s:
        assert s.get_job("job-old").rates_version is None  # accepted under no known version
        assert s.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a", rates_version=2)[0].rates_version == 2


def test_a_store_written_by_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with Store(path) as store:
        store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.execute("CREATE TABLE from_the_future (x)")
    db.commit()
    db.close()
    before = (_schema(path), _rows(path, "jobs"), _rows(path, "epochs"))
    with pytest.raises(DatabaseTooNew) as refused:
        Store(path)
    message = str(refused.value)
    assert str(path) in message and f"version {LATEST + 1}" in message and f"up to {LATEST}" in message
    assert (_schema(path), _rows(path, "jobs"), _rows(path, "epochs")) == before


# ------------------------------------------------------------------ the outbox


def test_an_outbox_from_before_versions_opens_with_its_items_intact(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    _load(path, "outbox_v0.sql")
    items = _rows(path, "outbox")
    assert _version(path) == 0 and len(items) == 3
    box = Outbox(path)
    try:
        assert _version(path) == 1
        assert _rows(path, "outbox") == items
        assert [i.key for i in box.pending()] == ["anchor:2"] and [i.key for i in box.failed()] == ["vote:7"]
        sent = []
        box.register("anchor", lambda payload: sent.append(payload) or "0xcd")
        assert [r.status for r in box.drain()] == ["done"] and sent == [{"claims": {}, "epoch": 2, "root": "0xbb"}]
        assert box.enqueue("anchor", "anchor:1", {"claims": {"hpc-b": 12}, "epoch": 1, "root": "0xaa"}) == 1
    finally:
        box.close()
    reopened = Outbox(path)  # an up-to-date file opens as it is
    try:
        assert reopened.item(3).status == "done" and _version(path) == 1
    finally:
        reopened.close()


def test_an_outbox_written_by_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    _load(path, "outbox_v0.sql")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    before = (_schema(path), _rows(path, "outbox"))
    with pytest.raises(DatabaseTooNew, match="outbox"):
        Outbox(path)
    assert (_schema(path), _rows(path, "outbox")) == before


# ------------------------------------------------------------------ the runner itself


STEPS = (
    Migration(1, "parents", "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT ';');"),
    Migration(
        2,
        "children",
        """
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent(id));
        -- a comment; with a semicolon
        INSERT INTO parent (id) VALUES (1);
        INSERT INTO child (id, parent) VALUES (10, 1);
    """,
    ),
)


def test_a_failed_step_rolls_back_whole_and_can_be_retried(tmp_path: Path) -> None:
    db = open_durable(tmp_path / "x.db")

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE parent ADD COLUMN born INTEGER")
        conn.execute("INSERT INTO parent (id) VALUES (2)")
        raise RuntimeError("disk on fire")

    with pytest.raises(MigrationError, match=r"migration 3 \(born\) failed.*stays at version 2.*disk on fire"):
        migrate(db, (*STEPS, Migration(3, "born", half_then_fail)), what="x")
    assert schema_version(db) == 2  # steps 1 and 2 are committed, step 3 left nothing behind
    assert [r[1] for r in db.execute("PRAGMA table_info(parent)")] == ["id", "name"]
    assert db.execute("SELECT id, name FROM parent").fetchall() == [(1, ";")]
    assert migrate(db, (*STEPS, Migration(3, "born", "ALTER TABLE parent ADD COLUMN born INTEGER"))) == 3
    assert migrate(db, (*STEPS, Migration(3, "born", "SELECT 1"))) == 3  # already applied: not run again


def test_a_step_that_leaves_a_dangling_reference_is_rolled_back(tmp_path: Path) -> None:
    db = open_durable(tmp_path / "x.db")
    assert migrate(db, STEPS) == 2
    with pytest.raises(MigrationError, match="dangling"):
        migrate(db, (*STEPS, Migration(3, "drop parents", "DELETE FROM parent")))
    assert schema_version(db) == 2 and db.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 1
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_steps_must_be_numbered_in_order(tmp_path: Path) -> None:
    db = open_durable(tmp_path / "x.db")
    for bad in ((STEPS[1], STEPS[0]), (STEPS[0], Migration(3, "gap", "SELECT 1")), (Migration(0, "zero", ""),)):
        with pytest.raises(ValueError, match="numbered"):
            migrate(db, bad)
    assert schema_version(db) == 0 and db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


def test_an_unterminated_statement_is_refused(tmp_path: Path) -> None:
    db = open_durable(tmp_path / "x.db")
    with pytest.raises(MigrationError, match="unterminated"):
        migrate(db, (Migration(1, "t", "CREATE TABLE t (x); INSERT INTO t VALUES ('oops)"),))
    assert schema_version(db) == 0 and db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    # a last statement needs no semicolon, even before a closing comment
    assert migrate(db, (Migration(1, "t", "CREATE TABLE t (x); INSERT INTO t VALUES (';') -- done; really"),)) == 1
    assert db.execute("SELECT x FROM t").fetchall() == [(";",)]


def test_two_processes_opening_at_once_apply_each_step_once(tmp_path: Path) -> None:
    """The version is read inside the step's write transaction: the second opener waits, then sees it done."""
    path = tmp_path / "x.db"
    inside, release = threading.Event(), threading.Event()
    runs = []

    def slow_first_step(conn: sqlite3.Connection) -> None:
        runs.append(threading.current_thread().name)
        conn.execute("CREATE TABLE t (x)")
        inside.set()
        release.wait(10)

    steps = (Migration(1, "slow", slow_first_step),)
    results: dict[str, object] = {}

    def opener(name: str) -> None:
        conn = open_durable(path, busy_timeout_ms=20_000)
        try:
            results[name] = migrate(conn, steps)
        except Exception as exc:  # noqa: BLE001 - a thread's failure, reported below
            results[name] = exc
        finally:
            conn.close()

    first = threading.Thread(target=opener, args=("first",), name="first")
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=opener, args=("second",), name="second")
    second.start()
    second.join(0.3)  # the second opener is now waiting for the first one's write lock
    release.set()
    first.join(20)
    second.join(20)
    assert results == {"first": 1, "second": 1} and runs == ["first"]


# ------------------------------------------------------------------ the transaction helper


def test_transaction_commits_rolls_back_and_joins(tmp_path: Path) -> None:
    db = open_durable(tmp_path / "x.db")
    db.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError):
        with transaction(db):
            db.execute("INSERT INTO t VALUES (2)")
            db.execute("INSERT INTO t VALUES (1)")
    assert not db.in_transaction
    with pytest.raises(KeyError):
        with transaction(db):
            db.execute("INSERT INTO t VALUES (3)")
            with transaction(db):  # joins: the outer transaction decides for both
                db.execute("INSERT INTO t VALUES (4)")
            raise KeyError("caller's own error")
    assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1]
    other = sqlite3.connect(tmp_path / "x.db")  # committed means visible to another connection
    assert other.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    other.close()


def test_a_transaction_whose_commit_fails_is_rolled_back(tmp_path: Path) -> None:
    """A COMMIT refused (here by a deferred foreign key) must not leave a transaction open for the next caller."""
    db = open_durable(tmp_path / "x.db")
    db.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):
        with transaction(db):
            db.execute("INSERT INTO c VALUES (7)")
    assert not db.in_transaction
    with transaction(db):
        db.execute("INSERT INTO p VALUES (1)")
    assert db.execute("SELECT (SELECT COUNT(*) FROM p), (SELECT COUNT(*) FROM c)").fetchone() == (1, 0)


_KILLED_MID_STEP = """
import os, signal, sys
from ledger import db
applied = db._apply
def apply_then_die(connection, step):
    applied(connection, step)  # the step's work is done, its transaction not yet committed
    if step.version == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
db._apply = apply_then_die
from gateway.store import Store
Store(sys.argv[1])
"""


@pytest.mark.parametrize("step", [2, 3])
def test_a_crash_in_the_middle_of_a_step_leaves_the_previous_version_whole(tmp_path: Path, step: int) -> None:
    """kill -9 while a step runs: the file stays at the version before it, and the next start finishes."""
    import subprocess
    import sys

    path = tmp_path / "gateway.db"
    _load(path, "gateway_v1.sql")
    jobs_before = _rows(path, "jobs")
    died = subprocess.run([sys.executable, "-c", _KILLED_MID_STEP, str(path), str(step)], check=False, timeout=60)
    assert died.returncode == -9
    assert _version(path) == step - 1
    assert len(_rows(path, "jobs")) == len(jobs_before)
    with Store(path) as store:
        assert {job["id"] for job in jobs_before} == {job.id for job in store.list_jobs(limit=10_000)}
    assert _version(path) == LATEST
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        check.close()
