"""A claim's evidence in pages (GET /v1/epochs/{e}/evidence?home=&after=&limit=), read by the payer home's watcher
page after page within a budget set by the count anchored on chain, with proofs from the kept trees.

The evidence came in one answer of every record of the claim, each with a sum proof from a SumTree rebuilt per
request, and the watcher read at most MAX_EVIDENCE_BYTES (64 MiB, ~16,000 records) of it: an honest centre with a
busier epoch could not deliver its evidence, so its claim's leaves were disputed; and every outsider's request cost
the claimant a whole-epoch read and tree.

A real store (SQLite file), the real EpochCloser and app served over HTTP by uvicorn; the chain index and the
outbox are stand-ins."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from eth_account import Account
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.schemas import EVIDENCE_PAGE
from gateway.books import watcher as watching
from gateway.books.epochs import EpochCloser
from gateway.books.watcher import EvidenceUnavailable, Watcher, fetch_evidence
from gateway.node.errors import Conflict, Invalid
from gateway.store import NewRecord, Payment, Store
from ledger.evidence import RecordEvidence
from ledger.ids import centre_id
from ledger.index import ClaimInfo
from ledger.payment import Grant, Order, grant_digest, order_digest, sign_typed
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import SumTree, verify
from tests.fixtures.closing import StandInIndex, StandInOutbox, digest_of, made_up_record, rows_read

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "5a" * 20)
SERVING, HOME, OTHER = centre_id("cloud-b"), centre_id("hpc-a"), centre_id("ai-c")
HOME_KEY = Account.from_key(b"\x01" * 32)
PAYER = Account.from_key(b"\x02" * 32)
REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
NOW = 10_000
DELAY = 1_000
DEADLINE = 2_000_000_000


_h = digest_of


def paid_job(n: int, home: bytes, epoch: int = 1, deadline: int = DEADLINE) -> tuple[Payment, UsageRecord]:
    """Job n's order (signed by the payer's account), its home's grant (signed by the home) and its usage record."""
    order = Order(request=_h("req", n), centre=SERVING, rates_version=1, max_price=10**6, deadline=deadline, nonce=n)
    od = order_digest(order, DOMAIN)
    grant = Grant(order=od, account=PAYER.address, home=home, centre=SERVING, amount=10**6, deadline=deadline)
    record = made_up_record(n, SERVING, home, epoch, order=od, grant=grant_digest(grant, DOMAIN))
    payment = Payment(
        order=order.to_dict(),
        order_signature=sign_typed(order, DOMAIN, PAYER),
        grant=grant.to_dict(),
        grant_signature=sign_typed(grant, DOMAIN, HOME_KEY),
        order_digest=od,
        account=PAYER.address,
    )
    return payment, record


def run(store: Store, n: int, home: bytes = HOME, deadline: int = DEADLINE) -> str:
    """A paid job served here, done, with its signed record in the open epoch; returns the record id (hex)."""
    payment, record = paid_job(n, home, store.open_epoch(), deadline)
    job, _ = store.create_job("alice@hpc-a", "hpc-a", dict(REQ), "cloud-b", payment=payment)
    store.update_job(job.id, status="running")
    signed = NewRecord.of(record, _h("sig", n) * 2 + b"\x1b", _h("leaf", n))
    store.complete_job(job.id, "succeeded", 0, "", "", record=signed)
    return record.record_id.hex()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gateway.db")
    yield s
    s.close()


def closer(store: Store, **kw: Any) -> EpochCloser:
    return EpochCloser(
        "cloud-b",
        store,
        StandInOutbox(),
        StandInIndex(NOW),
        DOMAIN,
        settleable=lambda _: False,
        booking_delay=DELAY,
        **kw,
    )  # type: ignore[arg-type]


def node_of(epochs: EpochCloser) -> Any:
    return SimpleNamespace(name="cloud-b", parts=SimpleNamespace(epochs=epochs, operator_key="k"))


@contextmanager
def serving(served: EpochCloser | Any) -> Iterator[str]:
    """The real app around a closer (or an app), over HTTP on a free local port (what the watcher's fetch reads)."""
    app = create_app(node_of(served)) if isinstance(served, EpochCloser) else served
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the test gateway did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def claim_of(store: Store, epoch: int = 1, home: bytes = HOME) -> ClaimInfo:
    """The claim the epoch's close fixed for `home`, as the chain would show it anchored."""
    closure = store.closure(epoch)
    assert closure is not None
    fixed = closure.homes[home.hex()]
    assert fixed.root_bytes is not None and fixed.count is not None
    return ClaimInfo(SERVING, epoch, home, fixed.root_bytes, fixed.count, fixed.total, False, NOW)


def watcher(url: str, fetch: Any) -> Watcher:
    return Watcher(
        name="hpc-a",
        index=StandInIndex(NOW, url),  # type: ignore[arg-type]
        outbox=StandInOutbox(),  # type: ignore[arg-type]
        payer=SimpleNamespace(book=None),  # type: ignore[arg-type]
        domain=DOMAIN,
        dispute_window=1_000,
        booking_delay=DELAY,
        fetch=fetch,
    )


# -- the finding ---------------------------------------------------------------------------------------------------


def test_an_honest_claim_whose_evidence_is_larger_than_one_answer_is_delivered(store, monkeypatch):
    """An honest centre's claim on one home with more records than one answer holds (64 MiB, ~16,000 records; here
    a cap of 100 kB and 120 records of ~2.6 kB each): the home read it whole, refused it as too large, asked twice
    more, then disputed its leaves. Now it comes in pages, each within the cap, and rebuilds the anchored claim."""
    epochs = closer(store)
    ids = [run(store, n) for n in range(120)]
    epochs.close()
    claim = claim_of(store)
    cap = 100_000
    monkeypatch.setattr(watching, "EVIDENCE_PAGE", 30, raising=False)  # pages of 30 records (~80 kB) fit the cap
    with serving(epochs) as url:

        def fetch(url: str, epoch: int, home: str, *count: int) -> Any:
            return fetch_evidence(url, epoch, home, *count, max_bytes=cap)

        bundles = watcher(url, fetch)._evidence(claim)
    assert bundles is not None, "the home found the honest claim's evidence unavailable"
    assert [b.record.record_id.hex() for b in bundles] == ids and [b.index for b in bundles] == list(range(120))


# -- pages at the gateway ----------------------------------------------------------------------------------------


def pages(epochs: EpochCloser, home: str, limit: int) -> tuple[list[dict], int]:
    """Every page of the evidence of the claim on `home` asked `limit` at a time, and how many pages."""
    served: list[dict] = []
    after, number = 0, 0
    while True:
        page = epochs.evidence(1, home, after, limit)
        number += 1
        assert set(page) == {"records", "next"} and len(page["records"]) <= limit
        served += page["records"]
        if page["next"] is None:
            return served, number
        assert page["next"] > after
        after = page["next"]


@pytest.mark.parametrize(("limit", "block"), [(3, 4), (4, 4), (5, 2), (7, 8), (EVIDENCE_PAGE, 128), (1, 1)])
def test_the_pages_of_a_claims_evidence_are_its_leaves_with_the_whole_trees_proofs(store, monkeypatch, limit, block):
    """Two homes, some records lapsed at the close: the pages of the claim on each home are its leaves in order,
    each with its index and the proof of the whole tree the close anchored (pages that begin or end inside a block
    of the kept tree too), and no page builds a sum tree."""
    epochs = closer(store, proof_block=block)
    homes = {n: (HOME, OTHER)[n % 3 == 0] for n in range(23)}
    lapsed = {4, 9}
    ids = {n: run(store, n, homes[n], deadline=100 if n in lapsed else DEADLINE) for n in range(23)}
    epochs.close()
    run(store, 99)  # epoch 2's
    assert {r.record_id for r in store.lapsed_records(1)} == {ids[n] for n in lapsed}
    monkeypatch.setattr("gateway.books.epochs.keep", None)  # a page that built a whole tree would fail
    for home, name in ((HOME, "hpc-a"), (OTHER, "ai-c")):
        served, number = pages(epochs, name, limit)
        claim = claim_of(store, home=home)
        expected = [ids[n] for n in range(23) if homes[n] == home and n not in lapsed]
        assert [s["record"]["record_id"] for s in served] == ["0x" + i for i in expected]
        assert [s["index"] for s in served] == list(range(claim.count)) and claim.count == len(expected)
        assert number == -(-claim.count // limit)
        full = SumTree(epochs._leaf(r) for r in store.records_for_home(1, home))
        for item in served:
            ev = RecordEvidence.from_dict(item)
            assert ev.proof == full.proof(ev.index)
            digest = record_digest(ev.record, DOMAIN)
            assert verify(claim.root, claim.total, claim.count, ev.index, digest, ev.record.price, ev.proof)
            assert "key" not in item and "result_key" not in item
    assert epochs.trees.builds <= 2  # once per home at most, for every page


def test_a_page_reads_its_own_records_not_the_homes_whole_epoch(store):
    """Each request read every record of the home in the epoch and built its whole sum tree for the proofs (public:
    an outsider's request cost the claimant that). Now a page reads its records (and at most two blocks of the kept
    tree at its edges), and the tree is built once per epoch and home."""
    epochs = closer(store)
    [run(store, n) for n in range(600)]
    epochs.close()
    epochs.evidence(1, "hpc-a", 0, 1)  # the home's tree kept (built now if the close did not keep it)
    builds = epochs.trees.builds
    total = rows_read(store)
    page = epochs.evidence(1, "hpc-a", 0, 10)
    assert len(page["records"]) == 10 and total[0] <= 2 + 11 + 128, f"a page of 10 read {total[0]} rows"
    total[0] = 0
    middle = epochs.evidence(1, "hpc-a", page["next"] + 200, 50)  # begins and ends inside blocks
    assert [r["index"] for r in middle["records"]] == list(range(210, 260))
    assert total[0] <= 2 + 51 + 2 * 128, f"a page of 50 read {total[0]} rows"
    total[0] = 0
    epochs.evidence(1, "hpc-a", 0, 256)  # two whole blocks: nothing read besides the page
    assert total[0] <= 2 + 257
    assert epochs.trees.builds == builds


def test_evidence_of_an_open_epoch_or_a_bad_page_is_refused_and_a_home_without_records_gets_none(store):
    epochs = closer(store)
    run(store, 1)
    with pytest.raises(Conflict, match="not closed"):
        epochs.evidence(1, "hpc-a")
    epochs.close()
    assert epochs.evidence(1, "ai-c") == {"records": [], "next": None}
    assert epochs.evidence(1, "hpc-a", 10**12) == {"records": [], "next": None}
    for after, limit, words in [
        (-1, 5, "after must be 0"),
        (2**53, 5, "after must be 0"),
        (True, 5, "after"),
        (0, 0, f"limit must be from 1 to {EVIDENCE_PAGE}"),
        (0, EVIDENCE_PAGE + 1, "limit must be"),
        (0, 2.5, "limit"),
    ]:
        with pytest.raises(Invalid, match=words):
            epochs.evidence(1, "hpc-a", after, limit)  # type: ignore[arg-type]


def test_the_route_serves_pages_and_refuses_bad_queries_with_422(store):
    epochs = closer(store)
    ids = [run(store, n) for n in range(5)]
    epochs.close()
    with TestClient(create_app(node_of(epochs))) as client:
        first = client.get("/v1/epochs/1/evidence", params={"home": "hpc-a", "limit": 2})
        assert first.status_code == 200, first.text
        body = first.json()
        assert set(body) == {"records", "next"} and len(body["records"]) == 2 and isinstance(body["next"], int)
        rest = client.get("/v1/epochs/1/evidence", params={"home": "hpc-a", "after": body["next"]}).json()
        served = [r["record"]["record_id"] for r in body["records"] + rest["records"]]
        assert served == ["0x" + i for i in ids] and rest["next"] is None
        assert [r["index"] for r in body["records"] + rest["records"]] == list(range(5))
        for query, words in [
            ({"limit": 0}, ["limit", "greater than or equal to 1"]),
            ({"limit": EVIDENCE_PAGE + 1}, ["limit", f"less than or equal to {EVIDENCE_PAGE}"]),
            ({"after": -1}, ["after", "greater than or equal to 0"]),
            ({"after": "x"}, ["after", "integer"]),
            ({"after": 2**53}, ["after", "less than or equal"]),
        ]:
            answer = client.get("/v1/epochs/1/evidence", params={"home": "hpc-a"} | query)
            assert answer.status_code == 422, (query, answer.text)
            assert all(w in answer.json()["error"] for w in words), (query, answer.json())


# -- the home's reading: bounded by the anchored count -------------------------------------------------------------


@contextmanager
def scripted(answer: Any) -> Iterator[tuple[str, list[dict]]]:
    """A claimant's gateway whose evidence endpoint answers `answer(after, limit)` (a JSON value); the queries
    asked are listed."""
    from fastapi import FastAPI

    app = FastAPI()
    asked: list[dict] = []

    @app.get("/v1/epochs/{epoch}/evidence")
    def evidence(epoch: int, home: str, after: int, limit: int) -> Any:
        asked.append({"epoch": epoch, "home": home, "after": after, "limit": limit})
        return answer(after, limit)

    with serving(app) as url:
        yield url, asked


def items(first: int, count: int, pad: int = 0) -> list[dict]:
    return [{"index": i, "record": {"n": i}, "pad": "x" * pad} for i in range(first, first + count)]


def test_the_home_reads_every_page_and_asks_each_after_the_last(monkeypatch):
    script = {0: {"records": items(0, 2), "next": 7}, 7: {"records": items(2, 2), "next": 9}}
    script[9] = {"records": items(4, 1), "next": None}
    with scripted(lambda after, limit: script[after]) as (url, asked):
        rows = fetch_evidence(url, 3, "hpc-a", 5, limit=2)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [(a["after"], a["limit"], a["home"], a["epoch"]) for a in asked] == [
        (0, 2, "hpc-a", 3),
        (7, 2, "hpc-a", 3),
        (9, 2, "hpc-a", 3),
    ]


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ({0: {"records": items(0, 2), "next": 0}}, "named a next page (0) after page 1"),
        ({0: {"records": items(0, 2), "next": 5}, 5: {"records": items(2, 1), "next": 3}}, "does not move on"),
        ({0: {"records": [], "next": 8}}, "does not move on"),
        ({0: {"records": items(0, 2), "next": "9"}}, "does not move on"),
        ({0: {"records": items(0, 2), "next": True}}, "does not move on"),
        ({0: {"records": items(0, 3), "next": None}}, "answered 3 records in page 1 of its evidence"),
        ({0: {"records": items(0, 2), "next": 2}, 2: {"records": items(2, 2), "next": 4}}, "more than the 3 records"),
        ({0: {"records": items(0, 2), "next": 2}, 2: {"records": items(2, 1), "next": 3}}, "past its claim's records"),
        ({0: items(0, 2)}, "no page of evidence"),
        ({0: {"records": items(0, 2, pad=8_000), "next": None}}, "larger than the 15296 bytes"),  # 3 records' budget
    ],
)
def test_pages_that_are_not_the_claims_are_unavailable_evidence(script, words):
    """A claim of 3 records read 2 at a time: a next page that does not move on, a page over its limit, records
    past the anchored count, or more bytes than that count's budget (each page under the per-page cap) end it."""
    with scripted(lambda after, limit: script[after]) as (url, _):
        with pytest.raises(EvidenceUnavailable) as refused:
            fetch_evidence(url, 1, "hpc-a", 3, limit=2)
    assert words in str(refused.value)


def test_endless_pages_that_move_on_are_read_no_further_than_the_anchored_count():
    with scripted(lambda after, limit: {"records": items(after, limit), "next": after + limit}) as (url, asked):
        with pytest.raises(EvidenceUnavailable, match="past its claim's records"):
            fetch_evidence(url, 1, "hpc-a", 10, limit=2)
    assert len(asked) == 5


@pytest.mark.parametrize("count", [0, -1, watching.MAX_EVIDENCE_RECORDS + 1, 2**64 - 1, True])
def test_a_claim_whose_count_is_past_what_is_read_is_not_asked_for(count):
    with pytest.raises(EvidenceUnavailable, match="is not read"):
        fetch_evidence("http://127.0.0.1:9", 1, "hpc-a", count)


def test_the_time_and_bytes_a_claims_evidence_may_take_grow_with_its_count():
    small, large = watching.evidence_budget(1_000, EVIDENCE_PAGE), watching.evidence_budget(100_000, EVIDENCE_PAGE)
    assert small[0] < large[0] and 100 * small[1] < large[1]
    # an honest record's evidence (~2.5 kB besides its 17-level proof of ~1.4 kB) fits the bytes allowed it
    assert large[1] >= 100_000 * 4_000
    assert watching.evidence_budget(1, 1) == (
        watching.EVIDENCE_DEADLINE + watching.EVIDENCE_SECONDS_PER_RECORD,
        watching.RECORD_BYTES + 2 * watching.PAGE_BYTES,
    )
