"""What each home owes this centre, as the store keeps it: grants of jobs in flight, records per epoch.

The line is checked in the transaction that stores the job, so no two writers (threads,
or a gateway's fronts: processes on one file) together take a home past it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.store import Payment, Store, StoreError
from gateway.store.credit import CreditExceeded, CreditLine, Owed, home_key
from tests.test_store import REQ, _h, signer

HOME = home_key("hpc-a")


def pay(n: int, amount: int) -> Payment:
    return Payment(
        order={"nonce": n, "deadline": 1_800_000_000},
        order_signature=_h("osig", n) + b"\x1b",
        grant={"order": n, "amount": amount},
        grant_signature=_h("gsig", n) + b"\x1c",
        order_digest=_h("order", n),
        account="0x" + f"{n:040x}",
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def job(
    store: Store,
    n: int,
    amount: int,
    *,
    line: CreditLine | None = None,
    key: str | None = None,
    most: int | None = None,
) -> str:
    made, _ = store.create_job(
        "alice@hpc-a",
        "hpc-a",
        REQ | {"n": n},
        "cloud-b",
        payment=pay(n, amount),
        credit_line=line,
        idempotency_key=key,
        bills_at_most=most,
    )
    return made.id


def line(limit: int, unpaid_from: int = 1) -> CreditLine:
    return CreditLine("hpc-a", limit, unpaid_from)


def test_a_jobs_grant_is_owed_until_it_finishes_then_its_records_price(store: Store) -> None:
    first, second, third = job(store, 1, 700), job(store, 2, 500), job(store, 3, 300)
    assert store.owed(HOME, 1) == Owed(1500, 0)
    store.update_job(first, status="running")
    store.complete_job(first, "succeeded", 0, "", "", record=signer(first, price=42))
    assert store.owed(HOME, 1) == Owed(800, 42)
    store.complete_job(second, "failed", None, "", "", detail="could not start")  # nothing billed
    assert store.owed(HOME, 1) == Owed(300, 42)
    store.update_job(third, status="failed")  # however a job leaves queued/running
    assert store.owed(HOME, 1) == Owed(0, 42)
    assert store.owed(home_key("ai-c"), 1) == Owed(0, 0)


def test_a_job_is_owed_for_no_more_than_its_record_may_bill(store: Store) -> None:
    """A record is priced at most at the job's price at its limits and at most at its grant: the lesser is owed."""
    small, large = job(store, 1, 10**30, most=300), job(store, 2, 200, most=10**30)
    assert store.owed(HOME, 1) == Owed(500, 0)
    job(store, 3, 10**30, line=line(1000), most=500)  # 500 + 500: within the line whatever the grant
    with pytest.raises(CreditExceeded):
        job(store, 4, 10, line=line(1000), most=10)
    store.complete_job(small, "failed", None, "", "")
    store.update_job(large, status="failed")
    assert store.owed(HOME, 1) == Owed(500, 0)
    with pytest.raises(StoreError, match="bills_at_most must be a non-negative int"):
        job(store, 5, 10, most=-1)


def test_epochs_before_the_first_unpaid_one_are_not_owed(store: Store) -> None:
    first = job(store, 1, 100)
    store.complete_job(first, "succeeded", 0, "", "", record=signer(first, price=30))
    store.close_open_epoch(lambda epoch, rows: {rows[0].home_centre: (_h("root"), 1, 30)})
    second = job(store, 2, 100)
    store.complete_job(second, "succeeded", 0, "", "", record=signer(second, price=20))
    assert store.owed(HOME, 1) == Owed(0, 50)
    assert store.owed(HOME, 2) == Owed(0, 20)  # epoch 1 is paid
    assert store.owed(HOME, 3) == Owed(0, 0)


def test_a_record_that_lapses_at_the_close_is_owed_by_nobody(store: Store) -> None:
    late = job(store, 1, 100)  # its order's deadline is 1_800_000_000
    store.complete_job(late, "succeeded", 0, "", "", record=signer(late, price=30))
    store.close_open_epoch(lambda epoch, rows: {}, lapse_before=1_800_000_001)
    assert store.owed(HOME, 1) == Owed(0, 0)


def test_a_grant_past_the_line_is_refused_with_nothing_written(store: Store) -> None:
    job(store, 1, 600, line=line(1000))
    jobs = len(store.list_jobs())
    with pytest.raises(CreditExceeded) as refused:
        job(store, 2, 401, line=line(1000))
    assert (refused.value.owed, refused.value.amount, refused.value.line.limit) == (Owed(600, 0), 401, 1000)
    assert "hpc-a may owe this centre 1000 now, and owes 600" in str(refused.value)
    assert len(store.list_jobs()) == jobs and store.owed(HOME, 1) == Owed(600, 0)
    job(store, 3, 400, line=line(1000))  # up to the line exactly
    assert store.owed(HOME, 1) == Owed(1000, 0)


def test_a_retry_is_never_refused_for_credit(store: Store) -> None:
    first = job(store, 1, 900, line=line(1000), key="k")
    assert job(store, 1, 900, line=line(0), key="k") == first  # the same job back, owed once
    assert store.owed(HOME, 1) == Owed(900, 0)


def test_writers_on_one_file_never_take_a_home_past_its_line(tmp_path: Path) -> None:
    """Four stores on one file (a back and its fronts) take 40 grants of 100 at once under a line of 1,000."""
    path = tmp_path / "gw.sqlite"
    stores = [Store(path) for _ in range(4)]
    taken, refused, lock = [], [], threading.Lock()

    def submit(store: Store, n: int) -> None:
        try:
            made = job(store, n, 100, line=line(1000))
        except CreditExceeded:
            with lock:
                refused.append(n)
        else:
            with lock:
                taken.append(made)

    threads = [threading.Thread(target=submit, args=(stores[n % 4], n)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert (len(taken), len(refused)) == (10, 30)
        assert stores[0].owed(HOME, 1) == Owed(1000, 0)
    finally:
        for s in stores:
            s.close()


def test_a_file_from_before_the_credit_table_gains_it_from_its_jobs_and_records(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    with Store(path) as store:
        done, running, _queued, failed = (job(store, n, 100 * n) for n in (1, 2, 3, 4))
        store.complete_job(done, "succeeded", 0, "", "", record=signer(done, price=7))
        store.update_job(running, status="running")
        store.complete_job(failed, "failed", None, "", "")
        other = job(store, 5, 50)
        store.complete_job(other, "succeeded", 0, "", "", record=signer(other, home=b"ai-c".ljust(32, b"\0"), price=3))
        before = store._db.execute("SELECT * FROM credit ORDER BY home, epoch").fetchall()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE credit")
    db.execute("ALTER TABLE jobs DROP COLUMN credit")
    db.execute("PRAGMA user_version = 11")
    db.commit()
    db.close()
    with Store(path) as store:
        assert store._db.execute("SELECT * FROM credit ORDER BY home, epoch").fetchall() == before
        assert store.owed(HOME, 1) == Owed(500, 7) and store.owed(home_key("ai-c"), 1) == Owed(0, 3)
        store.complete_job(running, "failed", None, "", "")  # a job in flight then is owed its whole grant
        assert store.owed(HOME, 1) == Owed(300, 7)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("hpc-a", -1, 1), "limit must be a non-negative int"),
        (("hpc-a", True, 1), "limit must be a non-negative int"),
        (("hpc-a", 10, 0), "unpaid_from must be an int >= 1"),
        (("", 10, 1), "home must be a non-empty string"),
    ],
)
def test_a_malformed_line_is_refused(args: tuple, words: str) -> None:
    with pytest.raises(StoreError, match=words):
        CreditLine(*args)


def test_a_line_for_another_home_or_of_another_type_is_refused_with_nothing_written(store: Store) -> None:
    with pytest.raises(StoreError, match="the credit line is ai-c's, not the job's home hpc-a's"):
        job(store, 1, 10, line=CreditLine("ai-c", 1000, 1))
    with pytest.raises(StoreError, match="credit_line must be a CreditLine"):
        store.create_job("alice@hpc-a", "hpc-a", REQ, "cloud-b", payment=pay(2, 10), credit_line=1000)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.owed("hpc-a", 1)  # a home's id, not its name
    assert store.list_jobs() == [] and store.owed(HOME, 1) == Owed(0, 0)
