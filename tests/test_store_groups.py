"""Gateway store, anonymous membership (migration 9): tracing keys registered once, openings identified once,
an anonymous job's group signature kept and found by its hash; a version-8 file gains it all intact."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from eth_utils import keccak

from gateway.store import ReplayedOrder, Store, StoreError
from gateway.store.groups import GroupBook, IdentificationConflict, Member, TracingKeyTaken
from gateway.store.holds import HoldBook, NewHold
from gateway.store.schema import LATEST
from ledger.db import schema_version
from tests.test_migrations import _load, _rows, _schema
from tests.test_store_decisions import decision, in_flight

REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
T1, T2 = b"\x81" + b"\x01" * 47, b"\x82" + b"\x02" * 47
ALICE, BOB = hashlib.sha256(b"alice").digest(), hashlib.sha256(b"bob").digest()
SIGNATURE = b"\x01" + bytes(range(256)) * 2


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gateway.db", clock=lambda: 1_900_000_000)
    yield s
    s.close()


@pytest.fixture
def book(store: Store) -> GroupBook:
    return GroupBook(store)


def count(store: Store, table: str) -> int:
    return store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# ------------------------------------------------------------------ members


def test_a_tracing_key_is_registered_once_and_found_again(book: GroupBook, store: Store) -> None:
    member, created = book.add_member("alice", ALICE, "physics", T1, 1_900_600_000)
    assert created and member == Member("alice", ALICE, "physics", T1, 1_900_000_000, 1_900_600_000)
    assert book.member(T1) == member and book.member(T2) is None and book.members_of("alice") == [member]
    with Store(store.path) as reopened:  # committed
        assert GroupBook(reopened).member(T1) == member


def test_the_same_member_and_key_again_renews_and_anyone_else_is_refused(book: GroupBook, store: Store) -> None:
    book.add_member("alice", ALICE, "physics", T1, 1_900_600_000)
    renewed, created = book.add_member("alice", ALICE, "physics", T1, 1_901_000_000)
    assert not created and renewed.expires_at == 1_901_000_000 and renewed.joined_at == 1_900_000_000
    assert book.add_member("alice", ALICE, "physics", T1, 1_900_000_001)[0].expires_at == 1_901_000_000  # never back
    for uid, enrolment, project in (("bob", BOB, "physics"), ("alice", ALICE, "ml-project")):
        with pytest.raises(TracingKeyTaken, match="this tracing key is already registered"):
            book.add_member(uid, enrolment, project, T1, 1_901_000_000)
    assert count(store, "group_members") == 1 and book.member(T1).uid == "alice"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("", ALICE, "physics", T1, 1), "uid must be a non-empty string"),
        (("alice", b"\x01", "physics", T1, 1), "enrolment"),
        (("alice", ALICE, None, T1, 1), "project must be a non-empty string"),
        (("alice", ALICE, "physics", T1[:47], 1), "a tracing key is 48 bytes"),
        (("alice", ALICE, "physics", T1.hex(), 1), "a tracing key is 48 bytes"),
        (("alice", ALICE, "physics", T1, -1), "expires_at must be a non-negative int"),
    ],
)
def test_a_malformed_member_is_refused_and_nothing_is_written(book: GroupBook, store: Store, args, words) -> None:
    with pytest.raises(StoreError, match=words):
        book.add_member(*args)
    assert count(store, "group_members") == 0


# ------------------------------------------------------------------ identifications


def test_an_opening_is_identified_once_to_its_member(book: GroupBook, store: Store) -> None:
    alice, _ = book.add_member("alice", ALICE, "physics", T1, 1_900_600_000)
    bob, _ = book.add_member("bob", BOB, "physics", T2, 1_900_600_000)
    kept, created = book.identify(7, alice)
    assert created and (kept.opening, kept.uid, kept.enrolment, kept.project, kept.tracing_key) == (
        7,
        "alice",
        ALICE,
        "physics",
        T1,
    )
    assert book.identify(7, alice) == (kept, False) and book.identification(7) == kept
    with pytest.raises(IdentificationConflict, match="opening 7 was identified before"):
        book.identify(7, bob)
    assert book.identification(8) is None and count(store, "identifications") == 1


def test_an_identification_names_a_registered_key_only(book: GroupBook, store: Store) -> None:
    stranger = Member("eve", BOB, "physics", T2, 0, 0)
    with pytest.raises(sqlite3.IntegrityError):
        book.identify(1, stranger)
    with pytest.raises(StoreError, match="opening must be an int >= 1"):
        book.identify(0, stranger)
    assert count(store, "identifications") == 0


# ------------------------------------------------------------------ anonymous jobs


def test_an_anonymous_jobs_group_signature_is_kept_and_found_by_its_hash(store: Store) -> None:
    job, _ = store.create_job("0123456789abcdef@hpc-a", "hpc-a", REQ, "cloud-b", group_signature=SIGNATURE)
    assert job.group_signature == SIGNATURE and store.get_job(job.id).group_signature == SIGNATURE
    assert store.job_by_group_signature(keccak(SIGNATURE)) == store.get_job(job.id)
    assert store.job_by_group_signature("0x" + keccak(SIGNATURE).hex()).id == job.id
    assert store.job_by_group_signature(keccak(b"other")) is None
    signed_on, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "cloud-b")
    assert signed_on.group_signature is None
    with pytest.raises(StoreError, match="signature hash"):
        store.job_by_group_signature(b"short")


def test_a_group_signature_is_accepted_for_one_job_and_a_retry_keeps_the_first(store: Store) -> None:
    job, _ = store.create_job("p@hpc-a", "hpc-a", REQ, "cloud-b", idempotency_key="k", group_signature=SIGNATURE)
    again, created = store.create_job("p@hpc-a", "hpc-a", REQ, "cloud-b", idempotency_key="k", group_signature=b"\x01x")
    assert not created and again.group_signature == SIGNATURE
    with pytest.raises(ReplayedOrder, match="this group signature was already accepted for job"):
        store.create_job("q@hpc-a", "hpc-a", REQ, "cloud-b", group_signature=SIGNATURE)
    for bad in (b"", b"\x01" * 4097, SIGNATURE.hex()):
        with pytest.raises(StoreError, match="group_signature must be 1 to 4096 bytes"):
            store.create_job("r@hpc-a", "hpc-a", REQ, "cloud-b", group_signature=bad)
    assert [j.id for j in store.list_jobs()] == [job.id]


# ------------------------------------------------------------------ anonymous grants


def anonymous_hold(n: int, group_signature: bytes | None = None) -> NewHold:
    return NewHold(
        bytes([n]) * 32,
        bytes([n + 100]) * 32,
        f"0x{n:040x}",
        "anonymous:physics",
        "physics",
        "cloud-b",
        10,
        1_900_000_600,
        {},
        {},
        b"s",
        group_signature,
    )


def test_an_anonymous_holds_group_signature_is_kept_and_found_by_its_hash(store: Store) -> None:
    """The home keeps the signature that authorised each anonymous hold: the supervisors can ask for it."""
    holds = HoldBook(store)
    hold, created = holds.reserve(anonymous_hold(1, SIGNATURE), 10**6, 10**6)
    assert created and hold.group_signature == SIGNATURE
    assert holds.hold_by_group_signature(keccak(SIGNATURE)) == hold == holds.hold_for_order(bytes([1]) * 32)
    assert holds.hold_by_group_signature("0x" + keccak(SIGNATURE).hex()) == hold
    assert holds.hold_by_group_signature(keccak(b"other")) is None
    signed_on, _ = holds.reserve(anonymous_hold(2), 10**6, 10**6)
    assert signed_on.group_signature is None and holds.hold_by_group_signature(keccak(b"")) is None
    with pytest.raises(StoreError, match="signature hash"):
        holds.hold_by_group_signature(b"short")


def test_a_group_signature_holds_for_one_order_and_a_malformed_one_is_refused(store: Store) -> None:
    holds = HoldBook(store)
    holds.reserve(anonymous_hold(1, SIGNATURE), 10**6, 10**6)
    with pytest.raises(StoreError, match="this group signature was already accepted for order"):
        holds.reserve(anonymous_hold(3, SIGNATURE), 10**6, 10**6)
    for bad in (b"", b"\x01" * 4097, SIGNATURE.hex()):
        with pytest.raises(StoreError, match="group_signature must be 1 to 4096 bytes"):
            holds.reserve(anonymous_hold(4, bad), 10**6, 10**6)
    assert count(store, "holds") == 1


# ------------------------------------------------------------------ migration 9


def test_a_store_written_by_version_8_gains_membership_with_its_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    _load(path, "gateway_v8.sql")
    tables = ("jobs", "usage_records", "epochs", "epoch_homes", "decisions", "holds", "decision_trees")
    before = {t: _rows(path, t) for t in tables}
    assert schema_version(sqlite3.connect(path)) == 8 and len(before["jobs"]) == 3 and len(before["decisions"]) == 2

    with Store(path) as store:
        assert schema_version(store._db) == LATEST >= 9
        after = {t: _rows(path, t) for t in tables}
        unsigned = {"group_signature": None, "group_signature_hash": None}  # signed on: no group signature
        scoped = [{"idempotency_scope": j["principal"] if j["idempotency_key"] else None} for j in before["jobs"]]
        owed = [{"credit": in_flight(j)} for j in before["jobs"]]  # (12)
        assert after["jobs"] == [
            j | unsigned | s | o for j, s, o in zip(before["jobs"], scoped, owed, strict=True)
        ]  # (10)
        assert after["holds"] == [h | unsigned for h in before["holds"]]
        assert {t: rows for t, rows in after.items() if t not in ("jobs", "holds")} == {
            t: rows for t, rows in before.items() if t not in ("jobs", "holds")
        }
        assert store.get_job("job-00000000000000b3").group_signature is None
        assert store.get_job("job-00000000000000b3").decision == decision(41).digest.hex()

        # and the store works on it as on any other
        book = GroupBook(store)
        member, _ = book.add_member("alice", ALICE, "physics", T1, 1_900_600_000)
        assert book.identify(1, member)[1]
        job, _ = store.create_job("p@hpc-a", "hpc-a", REQ, "cloud-b", group_signature=SIGNATURE, decision=decision(43))
        assert store.job_by_group_signature(keccak(SIGNATURE)).id == job.id
        HoldBook(store).reserve(anonymous_hold(1, SIGNATURE), 10**6, 10**6)
        assert HoldBook(store).hold_by_group_signature(keccak(SIGNATURE)).group_signature == SIGNATURE
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []

    Store(tmp_path / "fresh.db").close()
    assert _schema(path) == _schema(tmp_path / "fresh.db")  # migrated and fresh files end the same
