"""Gateway store: idempotent jobs, atomic completion, epochs that records cannot slip into once closed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.store import (
    DuplicateRecord,
    EpochClosed,
    EpochError,
    EpochMismatch,
    HomeClosure,
    IdempotencyConflict,
    JobNotFound,
    JobStateError,
    NewRecord,
    Payment,
    ReplayedOrder,
    SealedResult,
    Store,
    StoredRecord,
    StoreError,
)

HOME_A = b"hpc-a".ljust(32, b"\0")
HOME_B = b"hpc-b".ljust(32, b"\0")
REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def new_record(job_id: str, epoch: int, home: bytes = HOME_A, price: int = 10) -> NewRecord:
    rid = _h("rid", job_id)
    return NewRecord(
        epoch=epoch,
        record_id=rid,
        home_centre=home,
        record={"record_id": "0x" + rid.hex(), "job_id": job_id, "epoch": epoch, "price": price},
        signature=_h("sig", job_id) + b"\x1b",
        leaf=_h("leaf", job_id),
    )


def signer(job_id: str, home: bytes = HOME_A, price: int = 10):
    return lambda epoch: new_record(job_id, epoch, home, price)


def running_job(store: Store, principal: str = "alice@hpc-a", **kw) -> str:
    job, created = store.create_job(principal, "hpc-a", dict(REQ), "hpc-b", **kw)
    assert created
    return store.update_job(job.id, status="running").id


# ------------------------------------------------------------------ jobs


def test_a_queued_job_is_started_once(store: Store) -> None:
    """Of two takers of a queued job (a back's pool and its look at the store), one starts it."""
    first, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    second, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    assert store.queued_job_ids() == [first.id, second.id]
    started = store.start_job(first.id)
    assert started is not None and started.status == "running"
    assert store.start_job(first.id) is None
    assert store.queued_job_ids() == [second.id]
    store.complete_job(first.id, "failed", None, "", "", detail="x")
    assert store.start_job(first.id) is None and store.get_job(first.id).status == "failed"
    assert store.start_job("job-0000000000000000") is None
    with ThreadPoolExecutor(8) as pool:
        assert sum(j is not None for j in pool.map(lambda _: store.start_job(second.id), range(16))) == 1
    with pytest.raises(ValueError):
        store.queued_job_ids(0)


def test_create_and_get_job(store: Store) -> None:
    job, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    assert created
    assert job.id.startswith("job-") and len(job.id) == 4 + 16
    int(job.id[4:], 16)
    assert job.status == "queued" and job.request == REQ and job.record_id is None
    assert job.created_at == job.updated_at > 0
    assert store.get_job(job.id) == job
    assert store.get_job("job-0000000000000000") is None


def test_idempotency_same_key_same_request_returns_existing(store: Store) -> None:
    first, created1 = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="k1")
    # key order in the body does not matter; the placement may differ on a retry
    again, created2 = store.create_job(
        "alice@hpc-a", "hpc-a", dict(reversed(list(REQ.items()))), "hpc-c", idempotency_key="k1"
    )
    assert created1 and not created2
    assert again == first
    # the key is per principal
    other, created3 = store.create_job("bob@hpc-b", "hpc-b", REQ, "hpc-b", idempotency_key="k1")
    assert created3 and other.id != first.id
    # no key: always a new job
    a, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    b, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    assert a.id != b.id


def test_idempotency_conflict(store: Store) -> None:
    store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="k1")
    with pytest.raises(IdempotencyConflict):
        store.create_job("alice@hpc-a", "hpc-a", {**REQ, "walltime": 61}, "hpc-b", idempotency_key="k1")
    assert len(store.list_jobs()) == 1


def test_idempotency_compares_requests_by_value_not_spelling(store: Store) -> None:
    """A row written under another JSON spelling (an earlier version's) is still the same request on a retry."""
    request = {"argv": ["echo", "café ☕"], "walltime": 60, "cores": 1}
    first, _ = store.create_job("alice@hpc-a", "hpc-a", request, "hpc-b", idempotency_key="k1")
    for spelling in (json.dumps(request), json.dumps(request, ensure_ascii=False, indent=1)):
        store._db.execute("UPDATE jobs SET request = ? WHERE id = ?", (spelling, first.id))
        again, created = store.create_job("alice@hpc-a", "hpc-a", request, "hpc-b", idempotency_key="k1")
        assert not created and again.id == first.id and again.request == request
        with pytest.raises(IdempotencyConflict):
            store.create_job("alice@hpc-a", "hpc-a", {**request, "cores": 2}, "hpc-b", idempotency_key="k1")


def test_idempotency_under_concurrent_retries(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda _: store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="same"), range(32)
            )
        )
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_update_job_and_status_queries(store: Store) -> None:
    q, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    r, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    f, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-c")
    store.update_job(r.id, status="running")
    d = store.update_job(q.id, status="denied", detail="no policy permits submit")
    assert d.status == "denied" and d.detail == "no policy permits submit"
    assert [j.id for j in store.jobs_in_status("running")] == [r.id]
    assert {j.id for j in store.jobs_in_status("queued", "running")} == {r.id, f.id}
    assert store.get_job(f.id).serving_centre == "hpc-c"
    assert store.list_jobs(principal="alice@hpc-a", limit=2)[0].id == f.id


def test_jobs_are_never_forwarded(store: Store) -> None:
    """Gateways no longer forward: neither the status nor the URL can be stored any more."""
    with pytest.raises(StoreError):
        store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-c", status="forwarded")
    job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-c")
    with pytest.raises(StoreError):
        store.update_job(job.id, status="forwarded")
    with pytest.raises(StoreError):
        store.update_job(job.id, forwarded_url="http://hpc-c/jobs/job-1")
    with pytest.raises(StoreError):
        store.jobs_in_status("forwarded")
    assert not hasattr(job, "forwarded_url")
    assert "forwarded_url" not in {row[1] for row in store._db.execute("PRAGMA table_info(jobs)")}
    assert store.get_job(job.id) == job


def test_update_job_bad_input(store: Store) -> None:
    job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")
    with pytest.raises(StoreError):
        store.update_job(job.id, status="exploded")
    with pytest.raises(StoreError):
        store.update_job(job.id, principal="mallory@hpc-a")
    with pytest.raises(StoreError):
        store.update_job(job.id, record_id="0x" + "00" * 32)
    with pytest.raises(StoreError):
        store.update_job(job.id, exit_code="0")
    with pytest.raises(JobNotFound):
        store.update_job("job-ffffffffffffffff", status="running")
    assert store.get_job(job.id) == job


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("", "hpc-a", REQ, "hpc-b"), {}),
        ((None, "hpc-a", REQ, "hpc-b"), {}),
        (("alice@hpc-a", "hpc-a", ["not", "a", "dict"], "hpc-b"), {}),
        (("alice@hpc-a", "hpc-a", {"x": object()}, "hpc-b"), {}),
        (("alice@hpc-a", "hpc-a", {"x": float("nan")}, "hpc-b"), {}),
        (("alice@hpc-a", "hpc-a", REQ, ""), {}),
        (("alice@hpc-a", "hpc-a", REQ, "hpc-b"), {"status": "done"}),
        (("alice@hpc-a", "hpc-a", REQ, "hpc-b"), {"idempotency_key": ""}),
        (("alice@hpc-a", "hpc-a", REQ, "hpc-b"), {"idempotency_key": "k" * 256}),
    ],
)
def test_create_job_bad_input(store: Store, args, kwargs) -> None:
    with pytest.raises(StoreError):
        store.create_job(*args, **kwargs)
    assert store.list_jobs() == []


# ------------------------------------------------------------------ completion


def test_complete_job_with_record(store: Store) -> None:
    job_id = running_job(store)
    job = store.complete_job(job_id, "succeeded", 0, "hi\n", "", record=signer(job_id))
    assert job.status == "succeeded" and job.exit_code == 0 and job.stdout_tail == "hi\n"
    assert job.record_id == _h("rid", job_id).hex()
    rec = store.record(job.record_id)
    assert isinstance(rec, StoredRecord)
    assert rec.job_id == job_id and rec.epoch == 1 and rec.home_centre == HOME_A.hex()
    assert rec.signature_bytes == _h("sig", job_id) + b"\x1b" and rec.leaf_bytes == _h("leaf", job_id)
    assert rec.signature == (_h("sig", job_id) + b"\x1b").hex() and rec.leaf == _h("leaf", job_id).hex()
    assert rec.data["price"] == 10 and json.loads(rec.record) == rec.data
    assert store.record(_h("rid", job_id)) == rec  # bytes, hex or 0x-hex
    assert store.record("0x" + job.record_id.upper()) == rec
    assert store.records_for_epoch(1) == [rec]
    assert store.jobs_in_status("queued", "running") == []


def test_complete_job_without_record_and_state_rules(store: Store) -> None:
    job_id = running_job(store)
    job = store.complete_job(job_id, "failed", 127, "", "command not found", detail="no such command")
    assert job.status == "failed" and job.record_id is None and job.detail == "no such command"
    with pytest.raises(JobStateError):
        store.complete_job(job_id, "succeeded", 0, "", "")
    with pytest.raises(StoreError):
        store.complete_job(running_job(store), "forwarded", 0, "", "")
    with pytest.raises(JobNotFound):
        store.complete_job("job-ffffffffffffffff", "succeeded", 0, "", "")


def test_failure_inside_completion_writes_nothing(store: Store) -> None:
    job_id = running_job(store)
    before = store.get_job(job_id)

    def exploding_signer(epoch: int) -> NewRecord:
        raise RuntimeError("HSM unavailable")

    with pytest.raises(RuntimeError):
        store.complete_job(job_id, "succeeded", 0, "out", "err", record=exploding_signer)
    assert store.get_job(job_id) == before
    assert store.records_for_epoch(1) == []

    # a signer returning garbage is rejected the same way
    with pytest.raises(StoreError):
        store.complete_job(job_id, "succeeded", 0, "out", "err", record=lambda epoch: {"not": "a record"})
    assert store.get_job(job_id) == before

    # a duplicate record (same leaf as another job's) fails at the INSERT, after the job UPDATE: rolled back too
    other = running_job(store)
    store.complete_job(other, "succeeded", 0, "", "", record=signer(other))
    clash = NewRecord(
        epoch=1,
        record_id=_h("fresh"),
        home_centre=HOME_A,
        record={"epoch": 1},
        signature=b"\x01" * 65,
        leaf=_h("leaf", other),
    )
    with pytest.raises(DuplicateRecord):
        store.complete_job(job_id, "succeeded", 0, "out", "err", record=clash)
    assert store.get_job(job_id) == before
    assert [r.job_id for r in store.records_for_epoch(1)] == [other]

    # and the job can still complete afterwards
    assert store.complete_job(job_id, "succeeded", 0, "", "", record=signer(job_id)).status == "succeeded"


def test_add_record_links_job(store: Store) -> None:
    job_id = running_job(store)
    nr = new_record(job_id, 1)
    stored = store.add_record(1, nr.record, nr.signature, nr.leaf, job_id, HOME_A.hex(), nr.record_id)
    assert store.get_job(job_id).record_id == stored.record_id
    with pytest.raises(DuplicateRecord):
        store.add_record(1, nr.record, nr.signature, nr.leaf, job_id, HOME_A, nr.record_id)
    with pytest.raises(JobNotFound):
        store.add_record(1, nr.record, nr.signature, _h("x"), "job-ffffffffffffffff", HOME_A, _h("y"))


@pytest.mark.parametrize(
    "field, value",
    [
        ("epoch", 0),
        ("epoch", "1"),
        ("record_id", b"short"),
        ("record_id", "0xzz"),
        ("home_centre", 5),
        ("record", {}),
        ("record", "not json"),
        ("record", "[1, 2]"),
        ("record", 42),
        ("record", {"epoch": 2}),  # disagrees with the epoch it is stored in
        ("signature", b""),
        ("signature", "0xnothex"),
        ("leaf", b"\x00" * 31),
    ],
)
def test_new_record_bad_input(field: str, value: object) -> None:
    good = dict(epoch=1, record_id=_h(1), home_centre=HOME_A, record={"epoch": 1}, signature=b"s", leaf=_h(2))
    good[field] = value
    with pytest.raises(StoreError):
        NewRecord(**good)


# ------------------------------------------------------------------ epochs


def test_epochs_open_close_and_idempotent_retry(store: Store) -> None:
    assert store.open_epoch() == 1
    assert store.closure(1) is None
    j1, j2 = running_job(store), running_job(store)
    store.complete_job(j1, "succeeded", 0, "", "", record=signer(j1, HOME_A, 5))
    store.complete_job(j2, "succeeded", 0, "", "", record=signer(j2, HOME_B, 7))
    homes = {HOME_A.hex(): (_h("root a"), 1, 5), HOME_B.hex(): (_h("root b"), 1, 7)}
    closure = store.close_epoch(1, homes)
    assert (closure.epoch, closure.count, closure.claims) == (1, 2, {HOME_A.hex(): 5, HOME_B.hex(): 7})
    assert closure.homes[HOME_A.hex()] == HomeClosure(_h("root a").hex(), 1, 5)
    assert store.open_epoch() == 2
    assert store.closure(1) == closure
    # retry with the same values: same closure, no new epoch
    assert store.close_epoch(1, homes) == closure
    spelt = {"0x" + h: ("0x" + r.hex(), c, t) for h, (r, c, t) in homes.items()}  # hex spelling of the same
    assert store.close_epoch(1, spelt) == closure
    assert store.open_epoch() == 2
    # retry with different values: refused
    with pytest.raises(EpochError):
        store.close_epoch(1, {**homes, HOME_A.hex(): (_h("other root"), 1, 5)})
    # an epoch that is not open yet
    with pytest.raises(EpochError):
        store.close_epoch(3, {})
    # an empty epoch closes with count 0
    empty = store.close_epoch(2, {})
    assert empty.count == 0 and store.open_epoch() == 3
    assert [c.epoch for c in store.closures()] == [1, 2]
    assert [c.epoch for c in store.closures(since=2)] == [2]


def test_close_epoch_refuses_a_stale_count(store: Store) -> None:
    j1, j2 = running_job(store), running_job(store)
    store.complete_job(j1, "succeeded", 0, "", "", record=signer(j1))
    seen = store.records_for_epoch(1)  # the closer computes its root from these...
    store.complete_job(j2, "succeeded", 0, "", "", record=signer(j2))  # ...and a record arrives meanwhile
    with pytest.raises(EpochMismatch):
        store.close_epoch(1, {seen[0].home_centre: (_h("root"), len(seen), 10)})
    assert store.open_epoch() == 1 and store.closure(1) is None


def test_record_signed_for_a_closed_epoch_is_refused(store: Store) -> None:
    job_id = running_job(store)
    signed = new_record(job_id, store.open_epoch())  # signed for epoch 1...
    store.close_epoch(1, {})  # ...which closes before it is stored
    before = store.get_job(job_id)
    with pytest.raises(EpochClosed):
        store.complete_job(job_id, "succeeded", 0, "", "", record=signed)
    assert store.get_job(job_id) == before and store.records_for_epoch(1) == []
    with pytest.raises(EpochError):  # not open yet either
        store.complete_job(job_id, "succeeded", 0, "", "", record=new_record(job_id, 5))
    job = store.complete_job(job_id, "succeeded", 0, "", "", record=signer(job_id))
    assert store.record(job.record_id).epoch == 2


@pytest.mark.parametrize(
    "args",
    [
        (0, {}),
        (1, {HOME_A.hex(): (b"\0" * 31, 1, 1)}),
        (1, {HOME_A.hex(): ("zz" * 32, 1, 1)}),
        (1, {HOME_A.hex(): (None, 1, 1)}),
        (1, {HOME_A.hex(): (b"\0" * 32, 0, 1)}),
        (1, {HOME_A.hex(): (b"\0" * 32, 1, -1)}),
        (1, {HOME_A.hex(): (b"\0" * 32, 1, 1.5)}),
        (1, {"a": (b"\0" * 32, 1, 1)}),
        (1, {HOME_A.hex(): 1}),
        (1, [(HOME_A.hex(), (b"\0" * 32, 1, 1))]),
    ],
)
def test_close_epoch_bad_input(store: Store, args) -> None:
    with pytest.raises(StoreError):
        store.close_epoch(*args)
    assert store.open_epoch() == 1


def _root(records: list[StoredRecord], home: str) -> bytes:
    """A stand-in for a home's tree root: a hash over its records' leaves in store order."""
    return hashlib.sha256(b"".join(r.leaf_bytes for r in records if r.home_centre == home)).digest()


def test_closing_and_completing_do_not_race(store: Store) -> None:
    """Jobs complete from many threads while epochs close: every record is in exactly one closure's root."""
    jobs = [running_job(store) for _ in range(120)]

    def build(epoch: int, records: list[StoredRecord]) -> dict[str, tuple[bytes, int, int]]:
        assert all(r.epoch == epoch for r in records)
        homes: dict[str, tuple[bytes, int, int]] = {}
        for r in records:
            _, count, total = homes.get(r.home_centre, (b"", 0, 0))
            homes[r.home_centre] = (b"", count + 1, total + r.data["price"])
        return {h: (_root(records, h), c, t) for h, (_, c, t) in homes.items()}

    stop = threading.Event()
    closures = []

    def closer() -> None:
        while not stop.is_set():
            closures.append(store.close_open_epoch(build))

    t = threading.Thread(target=closer)
    t.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda j: store.complete_job(j, "succeeded", 0, "", "", record=signer(j)), jobs))
    finally:
        stop.set()
        t.join()
    closures.append(store.close_open_epoch(build))

    assert [c.epoch for c in closures] == list(range(1, len(closures) + 1))
    covered = []
    for c in closures:
        records = store.records_for_epoch(c.epoch)
        assert c.count == len(records)
        assert {h: k.root_bytes for h, k in c.homes.items()} == {h: _root(records, h) for h in c.homes}
        assert sum(c.claims.values()) == 10 * len(records)
        covered += [r.job_id for r in records]
    assert sorted(covered) == sorted(jobs)


# ------------------------------------------------------------------ durability


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    s = Store(path)
    job, _ = s.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="k")
    s.update_job(job.id, status="running")
    queued, _ = s.create_job("bob@hpc-b", "hpc-b", REQ, "hpc-b")
    s.complete_job(job.id, "succeeded", 0, "hi", "", record=signer(job.id))
    closure = s.close_epoch(1, {s.records_for_epoch(1)[0].home_centre: (_h("r"), 1, 10)})
    s.close()

    s2 = Store(path)
    try:
        assert s2.open_epoch() == 2
        assert s2.closure(1) == closure
        again, created = s2.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="k")
        assert not created and again.status == "succeeded" and again.record_id is not None
        assert s2.record(again.record_id).job_id == job.id
        assert [j.id for j in s2.jobs_in_status("queued", "running")] == [queued.id]
        assert len(s2.records_for_epoch(1)) == 1
    finally:
        s2.close()


def test_database_settings(store: Store) -> None:
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    # foreign keys are enforced on the store's own connection
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute(
            "INSERT INTO usage_records (record_id, job_id, epoch, home_centre, record, signature, leaf, created_at)"
            " VALUES ('0x01', 'job-nope', 1, '0x', '{}', '00', '00', 0)"
        )


def test_get_job_and_record_bad_input(store: Store) -> None:
    with pytest.raises(StoreError):
        store.get_job(123)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.record("0x1234")
    with pytest.raises(StoreError):
        store.records_for_epoch(0)
    with pytest.raises(StoreError):
        store.closure(-1)
    with pytest.raises(StoreError):
        store.jobs_in_status("bogus")


def test_usage_record_tuple_round_trips(store: Store) -> None:
    """The form the node uses: (ledger.records.UsageRecord, signature, leaf), read back with from_json."""
    from eth_account import Account

    from ledger.records import Domain, UsageRecord, record_leaf, recover_signer, sign_record

    account = Account.from_key(b"\x11" * 32)
    domain = Domain(chain_id=1337, verifying_contract="0x" + "ab" * 20)
    job_id = running_job(store)

    def sign(epoch: int):
        rec = UsageRecord(
            record_id=_h("r", job_id),
            job_id=_h("j", job_id),
            serving_centre=HOME_B,
            home_centre=HOME_A,
            user=_h("alice@hpc-a"),
            epoch=epoch,
            started_at=100,
            ended_at=101,
            cpu_millis=5,
            wall_millis=900,
            max_rss_kib=1024,
            gpu_millis=0,
            rates_version=1,
            price=3,
            order=_h("order"),
            grant=_h("grant"),
            lock_hash=_h("lock"),
            decision=_h("decision", job_id),
        )
        return rec, sign_record(rec, domain, account.key), record_leaf(rec, domain)

    job = store.complete_job(job_id, "succeeded", 0, "", "", record=sign)
    stored = store.record(job.record_id)
    back = UsageRecord.from_json(stored.record)
    assert back.epoch == 1 and back.price == 3 and back.record_id == _h("r", job_id)
    assert recover_signer(back, domain, stored.signature_bytes) == account.address
    assert stored.leaf_bytes == record_leaf(back, domain)

    # the same tuple form, signed ahead of time for an epoch that has since closed, is refused
    other = running_job(store)
    rec, _, _ = sign(1)
    rec = UsageRecord(**{**rec.__dict__, "record_id": _h("r2"), "job_id": _h("j2")})
    store.close_epoch(1, {HOME_A.hex(): (b"\0" * 32, 1, 3)})
    with pytest.raises(EpochClosed):
        store.complete_job(
            other, "succeeded", 0, "", "", record=(rec, sign_record(rec, domain, account.key), record_leaf(rec, domain))
        )
    with pytest.raises(StoreError):
        store.complete_job(other, "succeeded", 0, "", "", record=("not a record", b"s", b"l"))
    assert store.get_job(other).status == "running"


def test_a_job_keeps_the_rates_version_it_was_accepted_under(store: Store) -> None:
    job, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", rates_version=3)
    assert job.rates_version == 3 and store.get_job(job.id).rates_version == 3
    # a retry answers the job as accepted, not at whatever version is in force by then
    again, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", idempotency_key="k", rates_version=4)
    assert not created and again.rates_version == 3
    for bad in (0, -1, True, "3", 1.5):
        with pytest.raises(StoreError):
            store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", rates_version=bad)
    assert store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b")[0].rates_version is None


# ------------------------------------------------------------------ payment


def payment(n: int = 1) -> Payment:
    return Payment(
        order={"request": "0x" + _h("req", n).hex(), "nonce": n},
        order_signature=_h("osig", n) + b"\x1b",
        grant={"order": "0x" + _h("order", n).hex(), "amount": 100},
        grant_signature=_h("gsig", n) + b"\x1c",
        order_digest=_h("order", n),
        account="0x" + "ab" * 20,
    )


def test_a_job_keeps_the_order_and_grant_it_was_accepted_under(store: Store) -> None:
    job, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="k", payment=payment())
    assert created and job.payment == payment() and store.get_job(job.id).payment == payment()
    # a retry with the same key answers the same job; the order is not taken as replayed
    again, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", idempotency_key="k", payment=payment())
    assert not created and again.id == job.id


def test_an_order_pays_for_one_job_only(store: Store) -> None:
    first, _ = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", payment=payment())
    for kw in ({}, {"idempotency_key": "other"}):
        with pytest.raises(ReplayedOrder, match=first.id):
            store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", payment=payment(), **kw)
    assert [j.id for j in store.list_jobs()] == [first.id]
    assert store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-b", payment=payment(2))[1]


def test_the_sealed_result_and_receipt_are_stored_with_the_job(store: Store) -> None:
    job_id = running_job(store, payment=payment())
    with pytest.raises(JobStateError):  # nothing to give a receipt for yet
        store.add_receipt(job_id, b"\x01" * 65)
    sealed = SealedResult(key=b"k" * 32, lock_hash=_h("lock"), stdout=b"\x00sealed-out", stderr=b"\x00sealed-err")
    job = store.complete_job(job_id, "succeeded", 0, None, None, record=signer(job_id), result=sealed)
    assert job.result == sealed and job.stdout_tail is None and job.receipt_signature is None
    assert store.add_receipt(job_id, b"\x01" * 65).receipt_signature == b"\x01" * 65
    assert store.add_receipt(job_id, b"\x02" * 65).receipt_signature == b"\x01" * 65  # never replaced
    with pytest.raises(JobNotFound):
        store.add_receipt("job-ffffffffffffffff", b"\x01" * 65)


def test_a_failed_completion_keeps_no_key(store: Store) -> None:
    job_id = running_job(store, payment=payment())
    sealed = SealedResult(key=b"k" * 32, lock_hash=_h("lock"), stdout=b"o", stderr=b"e")

    def exploding(epoch: int) -> NewRecord:
        raise RuntimeError("signer down")

    with pytest.raises(RuntimeError):
        store.complete_job(job_id, "succeeded", 0, None, None, record=exploding, result=sealed)
    assert store.get_job(job_id).result is None and store.get_job(job_id).status == "running"


@pytest.mark.parametrize(
    "change",
    [
        {"order_digest": b"short"},
        {"order_signature": b""},
        {"order": "not a dict"},
        {"account": ""},
        {"grant": {"order": "0x00"}},
        {"grant": {"amount": -1}},
        {"grant": {"amount": "100"}},
    ],
)
def test_bad_payment_terms_are_refused(change: dict) -> None:
    with pytest.raises(StoreError):
        Payment(**{**payment().__dict__, **change})


def test_an_epochs_records_are_listed_whole_and_in_order_though_read_a_page_at_a_time(store: Store, monkeypatch):
    """Long listings are read a page per query (so no reader holds a snapshot long enough to keep the write-ahead
    log from being restarted): the pages join into the listing one query would give, each home's too."""
    import gateway.store.base

    monkeypatch.setattr(gateway.store.base, "PAGE", 4)
    stored = []
    for n in range(11):
        job_id = running_job(store, f"u{n}@hpc-a")
        store.complete_job(job_id, "succeeded", 0, "", "", record=signer(job_id, HOME_A if n % 3 else HOME_B))
        stored.append(job_id)
    listed = [r.job_id for r in store.records_for_epoch(1)]
    assert listed == stored
    for home in (HOME_A, HOME_B):
        assert [r.home_centre for r in store.records_for_home(1, home)] == [home.hex()] * len(
            [j for n, j in enumerate(stored) if (home == HOME_A) == bool(n % 3)]
        )
    assert [p.record.job_id for p in store.paid_records(1, HOME_B)] == [j for n, j in enumerate(stored) if n % 3 == 0]
