"""An epoch's usage records in pages (GET /v1/audit/epochs/{e}/records), followed by the auditor's client with a
bound, and usage proofs from kept trees (GET /v1/audit/usage/{id}) instead of a home's tree rebuilt per request.

A real store (SQLite file) and the real EpochCloser; the chain index and the outbox are stand-ins (no chain is
needed to close, list or prove), the app is the real one around a stand-in node."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.api.schemas import RECORDS_PAGE
from gateway.books.epochs import EpochCloser
from gateway.books.kept_trees import KeptTree, KeptTrees, TreeMismatch, keep
from gateway.client import auditing
from gateway.client.auditing import AuditUnusable
from gateway.client.http import GatewayClient
from gateway.node.errors import Invalid, Unavailable
from gateway.store import NewRecord, Payment, Store
from ledger.ids import centre_id
from ledger.records import UsageRecord, record_digest
from ledger.sumtree import SumProof, SumTree, SumTreeError, verify
from tests.fixtures.closing import DOMAIN, StandInIndex, StandInOutbox, digest_of, made_up_record, rows_read

SERVING = centre_id("hpc-a")
HOME, OTHER = centre_id("hpc-a"), centre_id("cloud-b")
REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
NOW = 10_000
DELAY = 1_000  # the booking delay: a record whose order's deadline is before NOW + 60 - DELAY lapses at a close
DEADLINE = 2_000_000_000


_h = digest_of


def usage(n: int, epoch: int, home: bytes) -> UsageRecord:
    return made_up_record(n, SERVING, home, epoch)


def run(store: Store, n: int, home: bytes = HOME, deadline: int = DEADLINE) -> str:
    """A job served here, done, with its signed record in the open epoch; returns the record id (hex)."""
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

    def signed(epoch: int) -> NewRecord:
        return NewRecord.of(usage(n, epoch, home), _h("sig", n) + b"\x1b", _h("leaf", n))

    store.complete_job(job.id, "succeeded", 0, "", "", record=signed)
    return _h("rid", n).hex()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "gateway.db")
    yield s
    s.close()


def closer(store: Store, **kw: Any) -> EpochCloser:
    index: Any = StandInIndex(NOW)
    return EpochCloser(
        "hpc-a", store, StandInOutbox(), index, DOMAIN, settleable=lambda _: False, booking_delay=DELAY, **kw
    )  # type: ignore[arg-type]


def anchored_as_closed(epochs: EpochCloser, epoch: int) -> None:
    """The index shows the epoch anchored with the claims its close fixed."""
    closure = epochs.store.closure(epoch)
    assert closure is not None
    homes = {
        bytes.fromhex(h): SimpleNamespace(root=c.root_bytes, count=c.count, total=c.total)
        for h, c in closure.homes.items()
    }
    epochs.index.anchors[epoch] = SimpleNamespace(homes=homes)  # type: ignore[attr-defined]


def checked(proof: dict, epochs: EpochCloser) -> bool:
    """Whether the proof shows its record in the claim its epoch's close fixed for its home."""
    record = UsageRecord.from_json(proof["record"])
    closure = epochs.store.closure(proof["epoch"])
    assert closure is not None
    claim = closure.homes[record.home_centre.hex()]
    assert claim.root_bytes is not None and claim.count is not None
    sums = SumProof.from_dict(proof["proof"])
    digest = record_digest(record, DOMAIN)
    return verify(claim.root_bytes, claim.total, claim.count, proof["index"], digest, record.price, sums)


# -- the kept tree -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 64, 100])
@pytest.mark.parametrize("block", [1, 2, 4, 8])
def test_a_kept_tree_gives_the_sum_trees_root_and_every_proof(count, block):
    pairs = [(_h("digest", i), 7 * i + 1) for i in range(count)]
    full = SumTree(pairs)
    kept = keep(((100 + 3 * i, d, a) for i, (d, a) in enumerate(pairs)), block)
    assert (kept.root, kept.count, kept.total) == (full.root, full.count, full.total)
    for i in range(count):
        assert kept.index(100 + 3 * i) == i and kept.index(101 + 3 * i) is None
        _, size = kept.block(i)
        start = i - i % kept.width
        assert kept.proof(i, pairs[start : start + size]) == full.proof(i)
    stored = KeptTree.from_blobs(kept.width, *kept.to_blobs())  # as the close stores it and a proof reads it back
    assert stored == kept and len(stored.to_blobs()[1]) == 64 * -(-count // kept.width)


def test_stored_tree_blobs_that_cannot_be_a_tree_are_refused():
    kept = keep(((i + 1, _h("digest", i), 5) for i in range(9)), 4)
    seqs, nodes = kept.to_blobs()
    for width, s, n in [
        (3, seqs, nodes),
        (4, seqs[:-1], nodes),
        (4, b"", nodes),
        (4, seqs, nodes[:-64]),
        (4, seqs, nodes[:-1]),
    ]:
        with pytest.raises(SumTreeError, match="kept tree"):
            KeptTree.from_blobs(width, s, n)


def test_a_kept_tree_refuses_a_block_that_is_not_its_own():
    pairs = [(_h("digest", i), i + 1) for i in range(20)]
    kept = keep(((i + 1, d, a) for i, (d, a) in enumerate(pairs)), 4)
    with pytest.raises(TreeMismatch, match="do not hash to the node kept"):
        kept.proof(5, [pairs[4], (pairs[5][0], 999), pairs[6], pairs[7]])  # leaf 5 with another amount
    with pytest.raises(TreeMismatch, match="block has 4 leaves"):
        kept.proof(5, pairs[4:7])


def test_kept_trees_drop_the_least_recently_used_past_their_bounds():
    built: list[tuple[int, str]] = []

    def build(epoch: int, home: str):
        built.append((epoch, home))
        return keep(((i + 1, _h(epoch, home, i), 1) for i in range(10 * epoch)), 4)

    trees = KeptTrees(lambda *_: None, build, trees=2, leaves=45)
    trees.get(1, "a"), trees.get(2, "a"), trees.get(1, "a")  # 10 + 20 leaves: both kept; (1, a) used last
    assert trees.builds == 2
    trees.get(3, "a")  # a third tree (30 leaves): (2, a) goes, least recently used; 40 <= 45 leaves are kept
    trees.get(1, "a")
    assert built == [(1, "a"), (2, "a"), (3, "a")]
    trees.get(4, "a")  # 40 leaves: (3, a) goes past 2 trees, (1, a) past 45 leaves; the newest always stays
    trees.get(3, "a")
    assert built == [(1, "a"), (2, "a"), (3, "a"), (4, "a"), (3, "a")] and trees.builds == 5


# -- proofs at the gateway ---------------------------------------------------------------------------------------


def test_a_second_proof_of_a_closed_epoch_reads_one_block_not_the_whole_homes_records(store):
    """GET /v1/audit/usage/{id} is public; each request read every record of the home in the epoch, parsed and
    hashed them all and built the whole tree: seconds of CPU a request at a large epoch. Now the first proof of an
    epoch's home builds the tree once and keeps it; later ones read and hash one block of records."""
    epochs = closer(store)
    ids = [run(store, n) for n in range(300)]
    epochs.close()
    anchored_as_closed(epochs, 1)
    first = epochs.proof(ids[0])
    assert first is not None and first["anchored"] and checked(first, epochs)
    total = rows_read(store)
    second = epochs.proof(ids[299])
    assert second is not None and second["anchored"] and checked(second, epochs)
    assert total[0] <= 128 + 2, f"a second proof of the epoch read {total[0]} rows of the store"
    for record_id in ids[1:299:37]:
        proof = epochs.proof(record_id)
        assert proof is not None and proof["anchored"] and checked(proof, epochs)
    assert epochs.trees.builds == 0  # the close kept the tree it anchored


def test_proofs_from_kept_trees_are_the_whole_trees_and_leave_lapsed_records_out(store):
    """Two homes, some records lapsed at the close: each tree kept is the one the close anchored (the lapsed
    records in none), every proof is the whole tree's, and each home's tree is built once."""
    epochs = closer(store, proof_block=4)
    ids = {n: run(store, n, home=(HOME, OTHER)[n % 2], deadline=100 if n % 5 == 0 else DEADLINE) for n in range(23)}
    epochs.close()
    anchored_as_closed(epochs, 1)
    lapsed = {n for n in ids if n % 5 == 0}
    assert {r.record_id for r in store.lapsed_records(1)} == {ids[n] for n in lapsed}
    for home in (HOME, OTHER):
        rows = store.records_for_home(1, home)
        full = SumTree(epochs._leaf(r) for r in rows)
        for index, row in enumerate(rows):
            proof = epochs.proof(row.record_id)
            assert proof is not None and proof["index"] == index and proof["anchored"]
            assert SumProof.from_dict(proof["proof"]) == full.proof(index) and checked(proof, epochs)
        kept = epochs.trees.get(1, home.hex())
        assert (kept.root, kept.count, kept.total) == (full.root, full.count, full.total)
    for n in lapsed:
        proof = epochs.proof(ids[n])
        assert proof is not None and proof["lapsed"] and not proof["anchored"] and "proof" not in proof
    assert epochs.trees.builds == 0


def test_a_record_of_the_open_epoch_gets_no_proof_and_builds_no_tree(store):
    """Its home's tree is not fixed until the close (records join, some may lapse): nothing is built or kept."""
    epochs = closer(store)
    record_id = run(store, 1)
    total = rows_read(store)
    proof = epochs.proof(record_id)
    assert proof is not None and not proof["anchored"] and not proof["lapsed"]
    assert "still open" in proof["detail"] and "proof" not in proof and "index" not in proof
    assert proof["digest"] == "0x" + record_digest(usage(1, 1, HOME), DOMAIN).hex()
    assert total[0] <= 2 and epochs.trees.builds == 0


def test_a_closed_epochs_records_changed_under_a_kept_tree_are_refused_and_the_tree_dropped(store, tmp_path):
    epochs = closer(store, proof_block=4)
    ids = [run(store, n) for n in range(10)]
    epochs.close()
    assert epochs.proof(ids[5]) is not None and epochs.trees.builds == 0
    record = usage(5, 1, HOME)
    with sqlite3.connect(tmp_path / "gateway.db") as db:  # the store damaged: another price under the same id
        db.execute(
            "UPDATE usage_records SET record = ? WHERE record_id = ?",
            (UsageRecord(**{**record.__dict__, "price": 1}).to_json(), ids[5]),
        )
    with pytest.raises(TreeMismatch):
        epochs.proof(ids[4])  # the same block
    assert epochs.proof(ids[0]) is not None and epochs.trees.builds == 1  # loaded again as the close stored it
    with pytest.raises(TreeMismatch):
        epochs.proof(ids[5])  # the damaged record is still no leaf of the anchored tree


def test_a_gateway_started_again_loads_the_trees_its_closes_stored_never_the_records(store, tmp_path):
    """An outsider asking proofs of more closed (epoch, home) trees than are kept in memory (record ids are public)
    made every request read, parse and hash a home's whole epoch: now each tree is read back as its close stored it
    (a few bytes a leaf, n / BLOCK hashes) and a proof reads one block of records."""
    epochs = closer(store)
    big = [run(store, n) for n in range(300)]
    epochs.close()
    ids = [big[0]]
    for n in range(6):  # six more closed epochs of one record each
        ids.append(run(store, 1000 + n))
        epochs.close()
    again = closer(Store(tmp_path / "gateway.db"))  # another process on the same file
    again.trees.trees = 2  # fewer kept in memory than are asked for, in turn: every request misses
    for _ in range(2):
        for record_id in ids:
            total = rows_read(again.store)
            assert again.proof(record_id) is not None
            assert total[0] <= 128 + 3, f"a proof read {total[0]} rows of the store"
    assert again.trees.builds == 2 * len(ids)  # every one read back, none built from its records
    anchored_as_closed(again, 1)
    proof = again.proof(big[150])
    assert proof is not None and proof["anchored"] and checked(proof, again)


def test_an_epoch_closed_before_trees_were_stored_builds_its_tree_once_and_stores_it(store, tmp_path):
    epochs = closer(store, proof_block=4)
    ids = [run(store, n) for n in range(10)]
    epochs.close()
    with sqlite3.connect(tmp_path / "gateway.db") as db:  # as a file closed before version 11 has it
        db.execute("DELETE FROM kept_trees")
    again = closer(Store(tmp_path / "gateway.db"), proof_block=4)
    anchored_as_closed(again, 1)
    proof = again.proof(ids[7])
    assert proof is not None and proof["anchored"] and checked(proof, again) and again.trees.builds == 1
    assert store.kept_tree(1, HOME) is not None  # stored: the next process reads it back
    third = closer(Store(tmp_path / "gateway.db"), proof_block=4)
    total = rows_read(third.store)
    assert third.proof(ids[2]) is not None and total[0] <= 4 + 3


def test_a_proof_that_would_wait_for_another_askers_build_is_told_to_ask_again(store):
    """A build from the records (an epoch closed before trees were stored) takes a minute at a million records; the
    askers hold the server's bounded pool while they wait, so they are refused (503) instead after a moment."""
    epochs = closer(store)
    first = run(store, 1)
    epochs.close()
    epochs.trees.forget(1, HOME.hex())
    with sqlite3.connect(store.path) as db:  # as an epoch closed before trees were stored: it must be built
        db.execute("DELETE FROM kept_trees")
    epochs.trees.wait = 0.05
    with epochs.trees._building:  # another asker's build under way
        with pytest.raises(Unavailable, match=r"being prepared: ask again shortly"):
            epochs.proof(first)
    assert epochs.proof(first) is not None  # and once it is done, answered


# -- pages at the gateway ----------------------------------------------------------------------------------------


def test_the_pages_of_an_epoch_are_its_records_in_store_order_without_the_lapsed(store):
    epochs = closer(store)
    ids = [run(store, n, home=(HOME, OTHER)[n % 3 == 0], deadline=100 if n in (4, 9) else DEADLINE) for n in range(11)]
    epochs.close()
    run(store, 99)  # epoch 2's
    served, after, pages = [], 0, 0
    while True:
        page = epochs.records(1, after, 3)
        pages += 1
        assert len(page["records"]) <= 3
        served += page["records"]
        if page["next"] is None:
            break
        assert page["next"] > after
        after = page["next"]
    expected = [r.record_id for r in store.records_for_epoch(1)]
    assert [UsageRecord.from_dict(r["record"]).record_id.hex() for r in served] == expected
    assert expected == [i for n, i in enumerate(ids) if n not in (4, 9)] and pages == 3
    assert all(
        r["signature"] == "0x" + (_h("sig", n) + b"\x1b").hex()
        for r, n in zip(served, [0, 1, 2, 3, 5, 6, 7, 8, 10], strict=True)
    )
    assert epochs.records(1) == {"records": served, "next": None}  # the default page holds them all
    assert epochs.records(1, 10**12) == {"records": [], "next": None}
    assert epochs.records(3) == {"records": [], "next": None}


@pytest.mark.parametrize(
    ("after", "limit", "words"),
    [
        (-1, 5, "after must be 0"),
        (2**53, 5, "after must be 0"),
        (0, 0, "limit must be from 1 to 2000"),
        (0, RECORDS_PAGE + 1, "limit must be"),
        (True, 5, "after"),
        (0, 2.5, "limit"),
    ],
)
def test_a_bad_page_is_refused(store, after, limit, words):
    with pytest.raises(Invalid, match=words):
        closer(store).records(1, after, limit)


def app_client(store: Store) -> TestClient:
    node = SimpleNamespace(name="hpc-a", parts=SimpleNamespace(epochs=closer(store), operator_key="k"))
    return TestClient(create_app(node))  # type: ignore[arg-type]


def test_the_route_serves_pages_and_refuses_bad_queries_with_422(store):
    ids = [run(store, n) for n in range(5)]
    with app_client(store) as client:
        first = client.get("/v1/audit/epochs/1/records", params={"limit": 2})
        assert first.status_code == 200, first.text
        body = first.json()
        assert set(body) == {"records", "next"} and len(body["records"]) == 2 and isinstance(body["next"], int)
        rest = client.get("/v1/audit/epochs/1/records", params={"after": body["next"]}).json()
        served = [r["record"]["record_id"] for r in body["records"] + rest["records"]]
        assert served == ["0x" + i for i in ids] and rest["next"] is None
        for query, words in [
            ({"limit": 0}, ["limit", "greater than or equal to 1"]),
            ({"limit": RECORDS_PAGE + 1}, ["limit", f"less than or equal to {RECORDS_PAGE}"]),
            ({"after": -1}, ["after", "greater than or equal to 0"]),
            ({"after": "x"}, ["after", "integer"]),
            ({"after": 2**53}, ["after", "less than or equal"]),
        ]:
            answer = client.get("/v1/audit/epochs/1/records", params=query)
            assert answer.status_code == 422, (query, answer.text)
            assert all(w in answer.json()["error"] for w in words), (query, answer.json())


def test_the_client_asks_for_a_page_with_after_and_limit():
    asked: list[httpx.URL] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return httpx.Response(200, json={"records": [], "next": None})

    with GatewayClient("http://gw", transport=httpx.MockTransport(answer)) as client:
        assert client.epoch_records_page(7, 41, 3) == {"records": [], "next": None}
        client.epoch_records_page(7)
    assert [(u.path, dict(u.params)) for u in asked] == [
        ("/v1/audit/epochs/7/records", {"after": "41", "limit": "3"}),
        ("/v1/audit/epochs/7/records", {"after": "0"}),
    ]


# -- the auditor's client --------------------------------------------------------------------------------------


class Gateway:
    """A gateway's pages as the test scripts them: `pages[after]` is the answer to a page asked after `after`."""

    url = "http://hostile"

    def __init__(self, pages: dict[int, Any]) -> None:
        self.pages = pages
        self.asked: list[tuple[int, int, int | None]] = []

    def epoch_records_page(self, epoch: int, after: int = 0, limit: int | None = None) -> Any:
        self.asked.append((epoch, after, limit))
        return self.pages[after]


def rows(first: int, count: int) -> list[dict]:
    return [{"record": usage(n, 1, HOME).to_dict(), "signature": "0x" + "11" * 65} for n in range(first, first + count)]


def test_the_audit_follows_next_until_it_is_null():
    gateway = Gateway(
        {
            0: {"records": rows(0, 2), "next": 7},
            7: {"records": rows(2, 2), "next": 9},
            9: {"records": rows(4, 1), "next": None},
        }
    )
    served, problems = auditing._records(gateway, "hpc-a", 1, gateway.url, anchored=5, limit=2)  # type: ignore[arg-type]
    assert [r.record_id for r, _ in served] == [_h("rid", n) for n in range(5)] and problems == []
    assert gateway.asked == [(1, 0, 2), (1, 7, 2), (1, 9, 2)]


@pytest.mark.parametrize(
    ("pages", "words"),
    [
        (
            {0: {"records": rows(0, 2), "next": 0}},
            "named a next page (0) of hpc-a's usage records of epoch 1 after page 1",
        ),
        ({0: {"records": rows(0, 2), "next": 5}, 5: {"records": rows(2, 2), "next": 5}}, "(5)"),
        ({0: {"records": rows(0, 2), "next": 5}, 5: {"records": rows(2, 2), "next": 3}}, "does not move on"),
        ({0: {"records": [], "next": 8}}, "followed only when full"),  # an empty page naming another
        ({0: {"records": rows(0, 2), "next": "9"}}, "does not move on"),
        ({0: {"records": rows(0, 3), "next": None}}, "answered 3 usage records in page 1"),
        ({0: [r for r in rows(0, 2)]}, "no page of usage records"),
        ({0: {"records": [{"record": {"price": 1}}], "next": None}}, "not one"),
    ],
)
def test_a_gateway_whose_pages_do_not_move_on_or_overflow_makes_the_audit_unusable(pages, words):
    gateway = Gateway(pages)
    with pytest.raises(AuditUnusable) as refused:
        auditing._records(gateway, "hpc-a", 1, gateway.url, anchored=10, limit=2)  # type: ignore[arg-type]
    assert words in str(refused.value)


def test_a_gateway_that_pages_on_past_the_anchored_count_is_read_no_further():
    """Every `next` moves on and every page is within the limit: without a bound the client would read for ever."""

    class Endless(Gateway):
        def epoch_records_page(self, epoch: int, after: int = 0, limit: int | None = None) -> Any:
            self.asked.append((epoch, after, limit))
            return {"records": rows(after, 2), "next": after + 2}

    gateway = Endless({})
    served, problems = auditing._records(gateway, "hpc-a", 1, gateway.url, anchored=5, limit=2)  # type: ignore[arg-type]
    assert len(gateway.asked) == 3 and len(served) == 6
    assert [p.kind for p in problems] == ["record"]
    assert "more usage records of epoch 1 than the 5 hpc-a anchored" in problems[0].message


def test_a_short_page_naming_another_is_refused_and_an_epoch_beyond_what_an_audit_reads_is_not_read():
    """A hostile gateway serving one record a page with a `next` that always moves on would keep the auditor
    reading up to the centre's own anchored count, which it chooses (a claim on its own users costs nothing)."""

    class OneAPage(Gateway):
        def epoch_records_page(self, epoch: int, after: int = 0, limit: int | None = None) -> Any:
            self.asked.append((epoch, after, limit))
            return {"records": rows(after, 1), "next": after + 1}

    gateway = OneAPage({})
    with pytest.raises(AuditUnusable, match=r"held 1 records of the 2 asked for: a page is followed only when full"):
        auditing._records(gateway, "hpc-a", 1, gateway.url, anchored=10**6, limit=2)  # type: ignore[arg-type]
    assert len(gateway.asked) == 1
    gateway = OneAPage({})
    with pytest.raises(AuditUnusable, match=r"anchored 1000000000000 usage records .* more than the 4000000"):
        auditing._records(gateway, "hpc-a", 1, gateway.url, anchored=10**12)  # type: ignore[arg-type]
    assert gateway.asked == []
