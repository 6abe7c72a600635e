"""Public proofs at a large epoch: a usage proof and a page of claim evidence from kept sum trees, beside the
per-request rebuild they replace.

`GET /v1/audit/usage/{id}` and `GET /v1/epochs/{e}/evidence` are public. Before, each request read
every record of the home in the epoch, parsed and hashed them all and built the whole sum tree
(the evidence answered every record of the claim in one answer). Now the close keeps each home's
tree (its leaves' seqs and the nodes over blocks of 128, in the store), a proof reads and hashes
its own block, and evidence comes a page (1,024 records) at a time. The store is the gateway's
own (SQLite, synchronous=FULL) filled with N signed-shape records of one home; the closer is the
gateway's `EpochCloser`, with the chain index and outbox left out (nothing here touches the chain).

    .venv/bin/python scripts/bench/bench_proofs.py [--quick]
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, measure, run_alone

from gateway.books.epochs import EVIDENCE_PAGE, EpochCloser
from gateway.store import NewRecord, Payment, Store
from ledger.ids import centre_id
from ledger.records import Domain, UsageRecord
from ledger.sumtree import SumTree

TITLE = "Public proofs at a large epoch: kept sum trees against a rebuild per request"
ABOUT = (
    "One home's N usage records (100,000; 10,000 with --quick) in the gateway's store, closed by its "
    "`EpochCloser` (which keeps each home's tree: seqs and block nodes, in the store). A usage proof "
    "(`GET /v1/audit/usage/{id}`) from the tree kept in memory, and read back from the store (a gateway "
    "started again, or the tree dropped from memory), against the code before, which rebuilt the "
    "home's whole tree per request; a page of claim evidence (1,024 records with their proofs) against "
    "the whole claim's evidence in one answer as it was served before. Times are medians of several "
    "requests; the rebuilds are timed once each (seconds apiece)."
)
DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "cd" * 20)
SERVING, HOME = centre_id("hpc-a"), centre_id("cloud-b")
REQUEST = {"command": ["true"], "walltime": 60, "resources": {"cores": 1, "memory_mib": 1024, "gpus": 0}}


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _record(n: int) -> UsageRecord:
    return UsageRecord(
        record_id=_h("rid", n), job_id=_h("job", n), serving_centre=SERVING, home_centre=HOME, user=_h("user", n),
        epoch=1, started_at=1, ended_at=2, cpu_millis=3, wall_millis=4, max_rss_kib=5, gpu_millis=0,
        rates_version=1, price=10 + n, order=_h("order", n), grant=_h("grant", n), lock_hash=_h("lock", n),
        decision=_h("decision", n),
    )  # fmt: skip


def _serve(store: Store, n: int) -> str:
    """A job served and completed with its record, as the gateway stores one; its record id."""
    payment = Payment(
        order={"deadline": 2_000_000_000, "n": n}, order_signature=_h("osig", n) + b"\x1b", grant={"n": n},
        grant_signature=_h("gsig", n) + b"\x1c", order_digest=_h("order", n), account="0x" + f"{n:040x}",
    )  # fmt: skip
    job, _ = store.create_job("alice@cloud-b", "cloud-b", dict(REQUEST), "hpc-a", payment=payment)
    store.update_job(job.id, status="running")
    record = NewRecord.of(_record(n), _h("sig", n) + b"\x1b", _h("leaf", n))
    store.complete_job(job.id, "succeeded", 0, "", "", record=lambda _epoch: record)
    return _h("rid", n).hex()


class _NoChain:
    """The closer's chain side, which nothing here needs: no anchor, no settlement, the clock fixed."""

    reachable = True

    def now(self) -> int:
        return 10_000

    def anchor(self, centre: bytes, epoch: int) -> None:
        return None

    def settlement(self, epoch: int) -> None:
        return None

    def sync(self, **_: object) -> int:
        return 0

    def enqueue(self, *_: object) -> None:
        pass

    def drain(self) -> None:
        pass


def _closer(store: Store) -> EpochCloser:
    chain: Any = _NoChain()
    return EpochCloser("hpc-a", store, chain, chain, DOMAIN, settleable=lambda _: False, booking_delay=86_400)


def _rebuilt_proof(epochs: EpochCloser, record_id: str) -> dict:
    """The code before: the home's records read, parsed and hashed, the whole tree built, for one proof."""
    rows = epochs.store.records_for_home(1, HOME)
    index = next(i for i, r in enumerate(rows) if r.record_id == record_id)
    return SumTree(epochs._leaf(r) for r in rows).proof(index).to_dict()


def _whole_evidence(epochs: EpochCloser) -> int:
    """The code before: every record of the claim with its proof from a tree rebuilt for the request; its size."""
    rows = epochs.store.paid_records(1, HOME)
    tree = SumTree(epochs._leaf(r.record) for r in rows)
    answer = [{"index": i, "record": r.record.data, "proof": tree.proof(i).to_dict()} for i, r in enumerate(rows)]
    return len(json.dumps(answer))


def run(quick: bool = False) -> list[Result]:
    count = 10_000 if quick else 100_000
    case = f"{count:,} records of one home"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gateway.db"
        store = Store(path)
        started = time.perf_counter()
        ids = [_serve(store, n) for n in range(count)]
        stored = time.perf_counter() - started
        epochs = _closer(store)
        started = time.perf_counter()
        epochs.close()
        closed = time.perf_counter() - started
        kept_bytes = sum(len(b) for b in store.kept_tree(1, HOME)[1:])  # type: ignore[index]
        picks = ids[:: max(1, count // 25)]
        assert epochs.proof(picks[0])["proof"] == _rebuilt_proof(epochs, picks[0])  # type: ignore[index]
        warm = measure(lambda: [epochs.proof(i) for i in picks], runs=5, warmup=1)
        again: list[float] = []
        for record_id in picks[:10]:  # another process on the same file each time: the tree read back
            fresh = _closer(Store(path))
            started = time.perf_counter()
            fresh.proof(record_id)
            again.append(time.perf_counter() - started)
            fresh.store.close()
        started = time.perf_counter()
        _rebuilt_proof(epochs, ids[count // 2])
        rebuilt = time.perf_counter() - started
        page = measure(lambda: epochs.evidence(1, "cloud-b", 0, EVIDENCE_PAGE), runs=5, warmup=1)
        started = time.perf_counter()
        whole_bytes = _whole_evidence(epochs)
        whole = time.perf_counter() - started
        store.close()
    per_proof = warm.median / len(picks)
    again.sort()
    return [
        Result("proofs.usage.kept", case, "usage proof, tree kept in memory", per_proof * 1000, runs=5 * len(picks),
               peer="proofs.usage.rebuilt",
               note=f"the close kept the tree: {closed:.1f} s for the close, {kept_bytes / 1e6:.2f} MB stored "
               f"({kept_bytes / count:.1f} bytes a record); the store filled in {stored:.0f} s (not timed)"),
        Result("proofs.usage.read_back", case, "usage proof, tree read back from the store", again[len(again) // 2]
               * 1000, runs=len(again), peer="proofs.usage.rebuilt",
               note="a gateway started again (a new Store and closer per request): the tree is one row, no record "
               "of the epoch but the proof's block is read"),
        Result("proofs.usage.rebuilt", case, "usage proof, whole tree rebuilt (before)", rebuilt * 1000,
               note="every record of the home read, parsed and hashed for one proof"),
        Result("proofs.evidence.page", case, f"evidence page of {EVIDENCE_PAGE:,} records", page.median * 1000,
               runs=page.runs, peer="proofs.evidence.whole",
               note=f"{-(-count // EVIDENCE_PAGE)} pages make the claim"),
        Result("proofs.evidence.whole", case, "the whole claim's evidence in one answer (before)", whole * 1000,
               note=f"{whole_bytes / 1e6:.0f} MB of JSON (records and proofs only)"),
    ]  # fmt: skip


if __name__ == "__main__":
    run_alone(run, __doc__)
