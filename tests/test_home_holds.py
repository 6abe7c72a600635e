"""A home's own users' jobs run at the home: their holds are paid when the epoch that anchors their records closes.

A centre never claims on itself on chain, so no settled claim ever pays these holds (the watcher pays holds
only from other centres' claims on the home). Their records are anchored all the same, as the home's claim
on its own users (kept for the audit, never netted), and the epoch's close is where that claim is fixed:
the holds of the records it takes are paid at the records' prices in the closing transaction, the rest of
each hold released. A record that lapses at the close is in no claim and its hold is not paid (it is
refunded once its deadline has passed); a job that left no record (refused, interrupted) is never paid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from gateway.store import NewRecord, Payment, Store, StoredRecord
from gateway.store.holds import HoldBook, NewHold
from ledger.primitives.hex import to_hex
from ledger.records import UsageRecord
from tests.fixtures.consortium import PASSWORDS, start_consortium

HOME = b"hpc-a".ljust(32, b"\0")
OTHER = b"cloud-b".ljust(32, b"\0")
REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
ALLOCATION = 10_000
DEADLINE = 2_000_000_000


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


# -- the book, at the close ------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def hold(book: HoldBook, n: int, amount: int = 1_000, principal: str = "alice@hpc-a", **kw: object) -> bytes:
    """A hold of `amount` on project physics for an order of this home's own centre; returns its grant digest."""
    grant = _h("grant", n)
    book.reserve(
        NewHold(
            order_digest=_h("order", n),
            grant_digest=grant,
            account="0x" + f"{n:040x}",
            principal=principal,
            project="physics",
            centre="hpc-a",
            amount=amount,
            deadline=DEADLINE,
            order={"deadline": DEADLINE, "n": n},
            grant={"n": n, "amount": 10},
            grant_signature=b"\x01" * 65,
            **kw,  # type: ignore[arg-type]
        ),
        ALLOCATION,
        10**12,
    )
    return grant


def run(store: Store, n: int, grant: bytes | None, price: int, home: bytes = HOME, deadline: int = DEADLINE) -> str:
    """A job served here whose record names `grant` at `price` (a record as the centre signs it: a JSON object with
    the grant digest in 0x-hex and the price)."""
    payment = Payment(
        order={"deadline": deadline, "n": n},
        order_signature=_h("osig", n) + b"\x1b",
        grant={"n": n, "amount": 10},
        grant_signature=_h("gsig", n) + b"\x1c",
        order_digest=_h("order", n),
        account="0x" + f"{n:040x}",
    )
    job, _ = store.create_job("alice@hpc-a", "hpc-a", dict(REQ), "hpc-a", payment=payment)
    store.update_job(job.id, status="running")
    rid = _h("rid", n)
    data = {"record_id": "0x" + rid.hex(), "price": price}
    if grant is not None:
        data["grant"] = to_hex(grant)

    def signed(epoch: int) -> NewRecord:
        return NewRecord(
            epoch=epoch,
            record_id=rid,
            home_centre=home,
            record=data | {"epoch": epoch},
            signature=_h("sig", n) + b"\x1b",
            leaf=_h("leaf", n),
        )

    store.complete_job(job.id, "succeeded", 0, "", "", record=signed)
    return job.id


def build(epoch: int, records: list[StoredRecord]) -> dict[str, tuple[bytes, int, int]]:
    homes: dict[str, tuple[int, int]] = {}
    for r in records:
        count, total = homes.get(r.home_centre, (0, 0))
        homes[r.home_centre] = (count + 1, total + r.data["price"])
    return {h: (_h("root", h), c, t) for h, (c, t) in homes.items()}


def status(book: HoldBook, grant: bytes) -> tuple[str, int | None]:
    found = book.hold(grant)
    assert found is not None
    return found.status, found.price


def test_a_home_users_job_at_home_is_paid_at_the_close_at_its_records_price(store: Store) -> None:
    book = HoldBook(store)
    grant = hold(book, 1, amount=1_000)
    run(store, 1, grant, 420)
    assert status(book, grant) == ("held", None)  # no claim fixed yet: the whole hold stays held
    assert book.project_figures("physics") == (1_000, 0)
    closure = store.close_open_epoch(build)
    assert closure.claims == {HOME.hex(): 420}  # the home's claim on its own users, anchored for the audit
    assert status(book, grant) == ("paid", 420)
    assert book.project_figures("physics") == (0, 420)  # spent; the other 580 released
    assert book.user_figures("alice@hpc-a") == (0, 420)
    assert book.expire(DEADLINE + 10**6, 0) == []  # never refunded once paid
    assert status(book, grant) == ("paid", 420)


def test_an_anonymous_job_at_home_is_paid_the_same_way(store: Store) -> None:
    book = HoldBook(store)
    grant = hold(book, 2, amount=900, principal="anonymous:physics", group_signature=b"\x07" * 200)
    run(store, 2, grant, 300)
    store.close_open_epoch(build)
    assert status(book, grant) == ("paid", 300)
    assert book.project_figures("physics") == (0, 300)


def test_a_record_that_lapses_at_the_close_pays_nothing_and_its_hold_is_refunded_later(store: Store) -> None:
    book = HoldBook(store)
    grant = hold(book, 3)
    run(store, 3, grant, 200, deadline=100)  # its order's deadline is long gone at the close
    closure = store.close_open_epoch(build, lapse_before=1_000)
    assert closure.count == 0 and store.lapsed_records(closure.epoch)
    assert status(book, grant) == ("held", None)
    assert [h.grant_digest for h in book.expire(DEADLINE + 10**6, 0)] == [grant.hex()]
    assert status(book, grant) == ("refunded", None) and book.project_figures("physics") == (0, 0)


def test_jobs_without_a_record_are_never_paid(store: Store) -> None:
    """An interrupted job's hold, refunded at the restart, and a refused job's, still held: the close leaves both."""
    book = HoldBook(store)
    interrupted, refused = hold(book, 4), hold(book, 5)
    book.refund(interrupted)
    other = run(store, 6, None, 50, home=OTHER)  # another home's job served here: no hold of ours
    store.close_open_epoch(build)
    assert status(book, interrupted) == ("refunded", None)
    assert status(book, refused) == ("held", None)
    assert store.get_job(other).record_id is not None and book.project_figures("physics") == (1_000, 0)


def test_other_homes_records_leave_the_book_alone_and_a_price_above_the_hold_is_not_paid(store: Store) -> None:
    book = HoldBook(store)
    grant = hold(book, 7, amount=100)
    run(store, 7, grant, 101)  # a record above its grant (the centre caps it: never signed so)
    closure = store.close_open_epoch(build)
    assert closure.count == 1 and status(book, grant) == ("held", None)


def test_closing_again_pays_nothing_twice(store: Store) -> None:
    book = HoldBook(store)
    grant = hold(book, 8)
    run(store, 8, grant, 250)
    closure = store.close_open_epoch(build)
    again = store.close_epoch(closure.epoch, {h: (c.root, c.count, c.total) for h, c in closure.homes.items()})
    assert again == closure and status(book, grant) == ("paid", 250)
    assert book.project_figures("physics") == (0, 250)


# -- over HTTP, on real parts ----------------------------------------------------------------------------------------

JOB = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


@pytest.fixture(scope="module")
def consortium(slapd_factory, anvil_url, tmp_path_factory):
    """A consortium of this module's own: project physics at hpc-a is spent by nothing else, so figures are exact."""
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("home-holds"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alice(consortium):
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    yield home
    home.close()


@pytest.fixture(scope="module")
def at_home(consortium, alice):
    """alice's job at hpc-a, her home, paid and receipted; the balance before and after the epoch's close."""
    keys = PaymentKeys()
    submission = submit_anywhere(consortium.url("hpc-a"), JOB, with_home_session(alice), centre="hpc-a", keys=keys)
    result = finish(submission, keys)
    submission.client.close()
    before = alice.balance()
    closures = consortium.close_epoch_everywhere()
    after = alice.balance()
    return submission, result, before, after, closures


def test_the_hold_of_a_job_at_home_is_paid_at_its_records_price(at_home):
    submission, result, before, after, _ = at_home
    order = to_hex(submission.paid.digest)
    record = UsageRecord.from_dict(result.view["record"]["data"])
    assert submission.centre == "hpc-a" and result.view["status"] == "succeeded" and record.price > 0
    amount = submission.paid.order.max_price
    held = {h["order"]: h for h in before["holds"]}[order]
    assert (held["status"], held["amount"], held["price"]) == ("held", amount, None)
    paid = {h["order"]: h for h in after["holds"]}[order]
    assert (paid["status"], paid["price"]) == ("paid", record.price)
    project = after["project"]
    assert (project["held"], project["spent"]) == (0, record.price)  # the rest of the hold (amount - price) released
    assert project["available"] == project["allocation"] - record.price
    assert after["user"] == {"principal": "alice@hpc-a", "held": 0, "spent": record.price}


def test_the_home_anchors_its_own_users_claim_and_the_book_agrees(at_home):
    _, result, _, after, closures = at_home
    record = UsageRecord.from_dict(result.view["record"]["data"])
    closure = next(c for c in closures if c["centre"] == "hpc-a")
    assert closure["homes"]["hpc-a"]["total"] == record.price == after["project"]["spent"]
    assert "hpc-a" not in closure["claims"]  # never claimed on chain


def test_a_paid_hold_is_never_refunded(consortium, at_home):
    submission, *_ = at_home
    payer = consortium.centres["hpc-a"].node.parts.payer
    assert payer.expire(submission.paid.order.deadline + 10**6, 0) == []
    found = payer.book.hold_for_order(submission.paid.digest)
    assert found is not None and found.status == "paid"


def test_xcentre_balance_shows_it(consortium, at_home, tmp_path):
    from tests.test_cli import run_cli

    submission, result, *_ = at_home
    record = UsageRecord.from_dict(result.view["record"]["data"])
    wallet = tmp_path / "wallet.json"
    password = PASSWORDS["alice"] + "\n"
    login = ["login", "--gateway", consortium.url("hpc-a"), "--user", "alice", "--password-stdin", "--wallet", wallet]
    code, _, err = run_cli(login, stdin=password)
    assert code == 0, err
    code, out, err = run_cli(["balance", "--user", "alice", "--password-stdin", "--wallet", wallet, "--json"], password)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["project"]["spent"] == record.price and answer["project"]["held"] == 0
    mine = {h["order"]: h for h in answer["holds"]}[to_hex(submission.paid.digest)]
    assert (mine["status"], mine["price"]) == ("paid", record.price)
    code, out, err = run_cli(["balance", "--user", "alice", "--password-stdin", "--wallet", wallet], password)
    assert code == 0, err
    assert "paid" in out and f"{record.price:,}" in out
