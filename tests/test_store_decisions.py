"""Gateway store, decision log: every entry stored once, in the epoch open when it is written, each epoch's
log root fixed in its closing transaction; a job's admitting entry stored with the job; policy texts by hash."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from auth.policy import CedarRequest, Decision
from gateway.store import (
    DuplicateDecision,
    IdempotencyConflict,
    NewDecision,
    Payment,
    ReplayedOrder,
    Store,
    StoredDecision,
    StoreError,
)
from gateway.store.schema import LATEST
from ledger.db import schema_version
from ledger.decisions import entry_digest, log_root, new_entry
from tests.test_migrations import _load, _rows, _schema

REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
HOME_A = "6870632d61" + "00" * 27


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def entry(n: int, allowed: bool = True, principal: str = "alice@hpc-a") -> dict:
    """A decision-log entry as a gateway writes it (ledger.decisions.new_entry), distinct for each n."""
    cedar = CedarRequest(
        principal=principal,
        attrs={"principal": principal, "home": "hpc-a", "department": "physics", "n": n},
        groups=("hpc-users",),
        action="submit",
        queue="cpu",
        resource_attrs={"gpu": False},
        context={"walltime": 60, "cores": 1},
    )
    return new_entry(
        centre="hpc-a",
        time=1_764_650_000 + n,
        kind="submit",
        request=hashlib.sha256(b"request %d" % n).digest(),
        cedar=cedar,
        decision=Decision(allowed, [], ["allow-physics" if allowed else "deny-default"]),
        policy_version=1,
        policy_hash=hashlib.sha256(b"policy").digest(),
        entry_id=hashlib.sha256(b"id %d" % n).digest()[:16],
    )


def decision(n: int, allowed: bool = True, principal: str = "alice@hpc-a") -> NewDecision:
    return NewDecision.of(entry(n, allowed, principal))


def count(store: Store, table: str) -> int:
    return store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def payment(n: int) -> Payment:
    return Payment(
        order={"nonce": n, "deadline": 1_800_000_000},
        order_signature=b"\x01" * 65,
        grant={"order": n, "amount": 10},
        grant_signature=b"\x02" * 65,
        order_digest=hashlib.sha256(b"order %d" % n).digest(),
        account="0x" + "aa" * 20,
    )


# ------------------------------------------------------------------ one entry


def test_a_logged_decision_is_stored_in_the_open_epoch_and_found_by_id_and_digest(tmp_path: Path) -> None:
    new = decision(1, allowed=False)
    with Store(tmp_path / "gw.sqlite", clock=lambda: 1_764_650_100) as store:
        stored = store.log_decision(new)
    assert isinstance(stored, StoredDecision)
    assert (stored.id, stored.digest, stored.epoch, stored.allowed) == (new.id.hex(), new.digest.hex(), 1, False)
    assert stored.entry == entry(1, allowed=False) and stored.created_at == 1_764_650_100
    assert entry_digest(stored.entry) == stored.digest_bytes == new.digest
    with Store(tmp_path / "gw.sqlite") as reopened:  # committed before log_decision returned
        for key in (new.id, new.id.hex(), "0x" + new.id.hex(), "0X" + new.id.hex().upper()):
            assert reopened.decision(key) == stored
        assert reopened.decision_by_digest(new.digest) == stored
        assert reopened.decision_by_digest("0x" + new.digest.hex()) == stored
        assert reopened.decision(b"\x00" * 16) is None and reopened.decision_by_digest(b"\x00" * 32) is None
        assert reopened.decisions_for_epoch(1) == [stored]


def test_the_stored_entry_is_the_canonical_text_of_what_was_given(store: Store) -> None:
    given = entry(1)
    new = NewDecision.of(given)
    given["decision"] = "deny"  # the caller's dict changing afterwards changes nothing stored
    store.log_decision(new)
    row = store._db.execute("SELECT entry FROM decisions").fetchone()[0]
    assert json.loads(row) == entry(1) and entry_digest(json.loads(row)) == new.digest
    assert row == json.dumps(entry(1), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def test_an_entry_already_stored_is_refused_and_changes_nothing(store: Store) -> None:
    first = store.log_decision(decision(1))
    same_id = entry(2)
    same_id["id"] = first.entry["id"]  # another entry under the stored one's id
    with pytest.raises(DuplicateDecision, match=r"id 0x" + first.id + r".*already stored"):
        store.log_decision(NewDecision.of(same_id))
    with pytest.raises(DuplicateDecision, match="already stored"):
        store.log_decision(decision(1))  # the very same entry again (same id and digest)
    assert store.decisions_for_epoch(1) == [first] and count(store, "decisions") == 1
    assert issubclass(DuplicateDecision, StoreError)


def test_a_digest_already_stored_is_refused(store: Store) -> None:
    """Two ids cannot share a digest (the id is in the entry), so the digest check guards the table itself."""
    first = store.log_decision(decision(1))
    store._db.execute("UPDATE decisions SET id = ? WHERE seq = ?", ("00" * 16, first.seq))
    with pytest.raises(DuplicateDecision, match=f"digest 0x{first.digest}.*already stored"):
        store.log_decision(decision(1))
    assert count(store, "decisions") == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: {**d, "digest": b"\x00" * 32}, "digest is 0x"),
        (lambda d: {**d, "id": b"\x01" * 16}, "entry's id is 0x"),
        (lambda d: {**d, "allowed": False}, "decision is 'allow', not 'deny'"),
        (lambda d: {**d, "allowed": 1}, "allowed must be a bool"),
        (lambda d: {**d, "id": b"\x01" * 15}, "16 bytes"),
        (lambda d: {**d, "id": "0xnothex"}, "hex"),
        (lambda d: {**d, "digest": b"\x01" * 31}, "digest"),
        (lambda d: {**d, "entry": "not a dict"}, "JSON object"),
        (lambda d: {**d, "entry": {**d["entry"], "decision": "maybe"}}, "not a decision-log entry"),
        (lambda d: {**d, "entry": {k: v for k, v in d["entry"].items() if k != "principal"}}, "decision-log entry"),
    ],
)
def test_a_decision_that_does_not_hold_together_is_refused_before_anything_is_written(
    store: Store, change, message: str
) -> None:
    good = decision(1)
    fields = change({"id": good.id, "digest": good.digest, "allowed": good.allowed, "entry": dict(good.entry)})
    with pytest.raises(StoreError, match=message):
        NewDecision(**fields)
    assert count(store, "decisions") == 0


def test_bad_arguments_get_a_clear_error(store: Store) -> None:
    with pytest.raises(StoreError, match="NewDecision"):
        store.log_decision(entry(1))  # the entry itself, not a NewDecision
    with pytest.raises(StoreError, match="16 bytes"):
        store.decision("0x1234")
    with pytest.raises(StoreError):
        store.decision_by_digest("0x1234")
    with pytest.raises(StoreError, match="epoch"):
        store.decisions_for_epoch(0)
    with pytest.raises(StoreError, match="JSON object"):
        NewDecision.of(["not", "an", "entry"])


# ------------------------------------------------------------------ a job's admitting entry


def test_a_job_is_stored_with_the_decision_that_admitted_it(store: Store) -> None:
    new = decision(1)
    job, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", decision=new)
    assert created and job.decision == new.digest.hex()
    assert store.get_job(job.id).decision == new.digest.hex()
    stored = store.decision_by_digest(job.decision)
    assert stored.epoch == store.open_epoch() == 1 and stored.allowed and stored.entry == new.entry
    plain, _ = store.create_job("bob@hpc-a", "hpc-a", REQ, "hpc-a")
    assert plain.decision is None  # the decision is optional (a job from before the log, a test)


def test_a_job_whose_decision_is_already_stored_is_not_stored_either(store: Store) -> None:
    logged = store.log_decision(decision(1))
    jobs_before = count(store, "jobs")
    with pytest.raises(DuplicateDecision):
        store.create_job(
            "alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", decision=decision(1), payment=payment(1)
        )
    assert count(store, "jobs") == jobs_before and store.decisions_for_epoch(1) == [logged]
    # neither the key nor the order was taken: the same request with a fresh entry is accepted
    job, created = store.create_job(
        "alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", decision=decision(2), payment=payment(1)
    )
    assert created and job.decision == decision(2).digest.hex()


def test_a_deny_admits_no_job(store: Store) -> None:
    with pytest.raises(StoreError, match="admitted by an allow"):
        store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", decision=decision(1, allowed=False))
    assert count(store, "jobs") == 0 and count(store, "decisions") == 0
    with pytest.raises(StoreError, match="NewDecision"):
        store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", decision=entry(1))
    assert count(store, "jobs") == 0 and count(store, "decisions") == 0


def test_a_refused_submission_stores_no_entry_with_it(store: Store) -> None:
    """The store refuses; the caller logs the allow alone (log_decision), as the node does."""
    first, _ = store.create_job(
        "alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", decision=decision(1), payment=payment(1)
    )
    with pytest.raises(IdempotencyConflict):
        store.create_job(
            "alice@hpc-a", "hpc-a", {**REQ, "cores": 2}, "hpc-a", idempotency_key="k", decision=decision(2)
        )
    with pytest.raises(ReplayedOrder):
        store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", decision=decision(3), payment=payment(1))
    assert [d.digest for d in store.decisions_for_epoch(1)] == [first.decision]
    assert store.log_decision(decision(2)).allowed and count(store, "jobs") == 1


def test_a_retry_keeps_its_jobs_decision_and_logs_its_own_evaluation(store: Store) -> None:
    job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", decision=decision(1))
    again, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", decision=decision(2))
    assert not created and again == job and again.decision == decision(1).digest.hex()
    assert [d.digest for d in store.decisions_for_epoch(1)] == [decision(1).digest.hex(), decision(2).digest.hex()]


def test_a_jobs_decision_cannot_dangle(store: Store) -> None:
    job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", decision=decision(1))
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("UPDATE jobs SET decision = ? WHERE id = ?", ("ab" * 32, job.id))


# ------------------------------------------------------------------ epochs


def test_an_epochs_close_commits_its_decision_log(store: Store) -> None:
    empty = store.close_open_epoch(lambda epoch, records: {})
    assert (empty.epoch, empty.decision_root, empty.decision_count) == (1, bytes(32), 0)

    store.log_decision(decision(1, allowed=False))
    store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", decision=decision(2))
    store.log_decision(decision(3))
    closed = store.close_open_epoch(lambda epoch, records: {})
    digests = [decision(n).digest for n in (1, 2, 3)]
    digests[0] = decision(1, allowed=False).digest
    assert closed.epoch == 2 and closed.decision_count == 3
    assert closed.decision_root == log_root(digests) != bytes(32)
    assert [d.digest_bytes for d in store.decisions_for_epoch(2)] == digests  # in the order stored
    assert store.closure(2) == closed and store.closures() == [empty, closed]
    assert store.close_epoch(2, {}) == closed  # a retried close returns what was fixed

    later = store.log_decision(decision(4))
    assert later.epoch == 3 and store.decisions_for_epoch(2)[-1].digest_bytes == digests[-1]
    assert store.closure(2).decision_count == 3  # an entry after the close joined the next epoch


def test_an_entry_written_while_an_epoch_closes_joins_the_next_one(store: Store) -> None:
    """Another thread's entry, written while the close's transaction is open, waits for it and lands after."""
    store.log_decision(decision(1))
    writer_done: list[StoredDecision] = []

    def build(epoch: int, records: list) -> dict:
        writer = threading.Thread(target=lambda: writer_done.append(store.log_decision(decision(2))))
        writer.start()
        writer.join(0.3)  # it cannot write while the close holds the store
        assert writer_done == [], "an entry was written inside another transaction's close"
        build.writer = writer
        return {}

    closed = store.close_open_epoch(build)
    build.writer.join(10)
    assert closed.decision_count == 1 and closed.decision_root == log_root([decision(1).digest])
    assert [d.epoch for d in writer_done] == [2] and store.decisions_for_epoch(2) == writer_done


def test_entries_written_while_epochs_close_are_each_in_exactly_one_epochs_log(store: Store) -> None:
    stop = threading.Event()
    written: list[StoredDecision] = []
    failures: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set() or n < 50:
                n += 1
                new = decision(n) if n % 3 else NewDecision.of(entry(n, allowed=False))
                if new.allowed and n % 5 == 0:  # some allows admit a job
                    job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", decision=new)
                    written.append(store.decision_by_digest(job.decision))
                else:
                    written.append(store.log_decision(new))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    closed = []
    while len(closed) < 20:
        seen = len(written)
        for _ in range(1000):  # let at least one entry in between closes (the writer also runs during them)
            if len(written) > seen or failures:
                break
            stop.wait(0.01)
        closed.append(store.close_open_epoch(lambda epoch, records: {}))
    stop.set()
    thread.join(60)
    closed.append(store.close_open_epoch(lambda epoch, records: {}))
    assert not failures and not thread.is_alive()

    by_epoch: dict[int, list[str]] = {}
    for d in written:
        by_epoch.setdefault(d.epoch, []).append(d.digest)
    for c in closed:
        stored = store.decisions_for_epoch(c.epoch)
        assert [d.digest for d in stored] == by_epoch.get(c.epoch, [])
        assert c.decision_count == len(stored) and store.closure(c.epoch) == c
        assert c.decision_root == log_root(d.digest_bytes for d in stored)
    assert sum(c.decision_count for c in closed) == len(written) == count(store, "decisions")
    assert len({c.epoch for c in closed if c.decision_count}) > 1  # the writer really ran across closes


# ------------------------------------------------------------------ policy texts


POLICY = '@id("allow-physics")\npermit(principal, action, resource) when { principal.department == "physics" };\n'
SCHEMA = '{"": {"entityTypes": {}, "actions": {}}}'


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def test_policy_texts_are_kept_by_hash_once(tmp_path: Path) -> None:
    now = [1_764_650_000]
    with Store(tmp_path / "gw.sqlite", clock=lambda: now[0]) as store:
        assert store.policy_text(sha256(POLICY), sha256(SCHEMA)) is None
        store.add_policy_text(sha256(POLICY), sha256(SCHEMA), POLICY, SCHEMA)
        now[0] += 10
        store.add_policy_text(sha256(POLICY), sha256(SCHEMA), POLICY, SCHEMA)  # idempotent
        other = POLICY.replace("physics", "chemistry")
        store.add_policy_text(sha256(other), bytes(32), other, None)
        store.add_policy_text(
            sha256(POLICY), bytes(32), POLICY, None
        )  # the same policy without its schema: a pair of its own
    with Store(tmp_path / "gw.sqlite") as store:
        assert store.policy_text(sha256(POLICY), sha256(SCHEMA)) == (POLICY, SCHEMA)
        assert store.policy_text(sha256(POLICY), bytes(32)) == (POLICY, None)
        assert store.policy_text("0x" + sha256(other).hex(), bytes(32)) == (other, None)
        assert store.policy_text(sha256(other), sha256(SCHEMA)) is None
        stored_at = store._db.execute(
            "SELECT stored_at FROM policy_texts WHERE hash = ? AND schema_hash = ?",
            (sha256(POLICY).hex(), sha256(SCHEMA).hex()),
        )
        assert stored_at.fetchone()[0] == 1_764_650_000  # the first time
        assert count(store, "policy_texts") == 3


def test_a_policy_text_is_stored_only_under_its_own_hash(store: Store) -> None:
    store.add_policy_text(sha256(POLICY), sha256(SCHEMA), POLICY, SCHEMA)
    bad = [
        ((sha256(POLICY + " "), sha256(SCHEMA), POLICY, SCHEMA), StoreError, "policy text hashes to"),
        ((sha256(POLICY), bytes(32), POLICY, SCHEMA), StoreError, "schema text hashes to"),
        ((sha256(POLICY), sha256(SCHEMA), POLICY, None), StoreError, "absent schema hashes to 0x0000"),
        ((sha256(""), bytes(32), "", None), StoreError, "non-empty"),
        ((sha256(POLICY), sha256(SCHEMA), POLICY.encode(), SCHEMA), StoreError, "non-empty string"),
        ((b"\x01", bytes(32), POLICY, None), StoreError, "policy_hash"),
    ]
    for args, error, message in bad:
        with pytest.raises(error, match=message):
            store.add_policy_text(*args)
    assert store.policy_text(sha256(POLICY), sha256(SCHEMA)) == (POLICY, SCHEMA) and count(store, "policy_texts") == 1


# ------------------------------------------------------------------ migration 8


def test_a_store_written_by_version_7_gains_the_decision_log_with_its_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    _load(path, "gateway_v7.sql")
    jobs, records, epochs, homes = (_rows(path, t) for t in ("jobs", "usage_records", "epochs", "epoch_homes"))
    assert schema_version(sqlite3.connect(path)) == 7 and len(jobs) == 3 and len(epochs) == 2

    with Store(path) as store:
        assert schema_version(store._db) == LATEST >= 8
        later = {"group_signature": None, "group_signature_hash": None}  # migration 9's columns
        scoped = [{"idempotency_scope": j["principal"] if j["idempotency_key"] else None} for j in jobs]  # 10's
        owed = [{"credit": in_flight(j)} for j in jobs]  # 12's
        assert _rows(path, "jobs") == [
            j | {"decision": None} | later | s | o for j, s, o in zip(jobs, scoped, owed, strict=True)
        ]  # accepted before the log
        assert _rows(path, "usage_records") == records and _rows(path, "epoch_homes") == homes
        assert _rows(path, "epochs") == [
            epochs[0] | {"decision_root": "00" * 32, "decision_count": 0},  # closed before the log: an empty one
            epochs[1] | {"decision_root": None, "decision_count": None},
        ]
        old = store.closure(1)
        assert (old.count, old.decision_root, old.decision_count) == (1, bytes(32), 0)
        assert old.homes[HOME_A].total == 12 and store.decisions_for_epoch(1) == []
        assert store.get_job("job-00000000000000b1").decision is None

        # and the store works on it as on any other: a retry of an old job, new entries, a close
        retry, created = store.create_job(
            "alice@hpc-a",
            "hpc-a",
            {"argv": ["echo", "hi"], "cores": 1, "walltime": 60},
            "hpc-a",
            idempotency_key="k-1",
            decision=decision(1),
        )
        assert not created and retry.id == "job-00000000000000b1" and retry.decision is None
        job, _ = store.create_job("carol@hpc-a", "hpc-a", REQ, "hpc-a", decision=decision(2))
        store.log_decision(decision(3, allowed=False))
        assert {d.epoch for d in store.decisions_for_epoch(2)} == {2}
        closed = store.close_open_epoch(lambda epoch, records: {})
        assert closed.epoch == 2 and closed.decision_count == 3
        assert closed.decision_root == log_root(
            [decision(1).digest, decision(2).digest, decision(3, allowed=False).digest]
        )
        assert store.get_job(job.id).decision == decision(2).digest.hex()
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []

    Store(tmp_path / "fresh.db").close()
    assert _schema(path) == _schema(tmp_path / "fresh.db")  # migrated and fresh files end the same


def in_flight(job: dict) -> str | None:
    """What migration 12 counts a job of an older file owed for: its whole grant while it is queued or running."""
    if job["status"] not in ("queued", "running") or job["pay_grant"] is None:
        return None
    return str(json.loads(job["pay_grant"])["amount"])
