"""Audit at scale: a centre's 1,000,000-record epoch checked against its anchored claims, beside the naive path.

The audit (`ledger.audit.verify_records`, what `xcentre audit decisions` and the epoch audit
rest on) takes every record the centre serves with its signature and checks it against the
chain: ids distinct, the serving centre and epoch, and each home's records rebuild the sum
tree whose root, count and total the centre anchored. The fast path hashes each record's
EIP-712 digest by hand (type hash and domain separator computed once), folds the sum trees
in power-of-two blocks on both cores, and recovers signatures only of records no matching
anchored root binds (`signatures="unbound"`); it is also timed recovering every signature
(`signatures="all"`, what the audit does by default). The peer, in the same run, is the
per-record path the audit had before: each record's digest from eth-account's EIP-712 encoder,
its signature recovered by eth-account, the sum tree built with eth_utils.keccak — on a
sample, extrapolated to the full epoch.

    .venv/bin/python scripts/bench/bench_audit.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import coincurve
from common import AUDIT_FAST, AUDIT_NAIVE, Result, run_alone
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils import keccak, to_checksum_address
from run_all import CpuMonitor

from ledger.audit import verify_records
from ledger.audit_scale import cores, run_blocks
from ledger.chain import Chain, connect
from ledger.deploy import Deployment, MemberSpec, Prices, deploy_consortium
from ledger.ids import centre_id
from ledger.primitives.keccak import BACKEND
from ledger.records import Domain, UsageRecord, record_digest, typed_data
from ledger.sumtree import root_of

TITLE = "Audit at scale: a 1,000,000-record epoch against its anchored claims"
CENTRES = ["hpc-a", "cloud-b", "ai-c", "edge-d"]
SERVING = "hpc-a"
HOMES = ["cloud-b", "ai-c", "edge-d", "hpc-a"]  # a quarter each; its own users' records too (anchored, not claimed)
ABOUT = (
    "hpc-a's epoch of N usage records (1,000,000; 100,000 with --quick) over four homes, interleaved, "
    "each signed by hpc-a's chain key, anchored on the embedded chain as four sum-tree claims; the "
    "records are in memory, as `GET /v1/audit/epochs/{e}/records` would have delivered them "
    "(building and signing them is not timed). Fast path: `verify_records` on both cores, record "
    "digests hashed by hand with the keccak backend named in the case column, signatures recovered "
    'only where no matching anchored root binds a record (`signatures="unbound"`: the anchor '
    "transaction, sent by the centre's own account, already signs every leaf under its root). On a "
    "sample epoch of 20,000 records (5,000 with --quick), extrapolated to N and stated as such: the "
    'fast path recovering every signature (`"all"`, the audit\'s default), the fast path in one '
    "process, and the naive path, the audit's former per-record code (eth-account's EIP-712 encoder "
    "per record, eth-account's recovery, the sum tree hashed through eth_utils.keccak). CPU-s is the "
    "CPU time of the audit and its workers: on a busy machine the wall time grows, the CPU time "
    "much less. Both paths agree on the sample (same roots, no finding); the fast audit of the whole "
    "epoch finds nothing."
)

Record = tuple[UsageRecord, bytes]


def _deploy() -> tuple[Chain, Deployment, dict[str, object]]:
    chain = connect("embedded")
    accounts = {name: Account.create() for name in CENTRES}
    for account in accounts.values():
        chain.fund(account.address, 10**20)
    specs = [
        MemberSpec(name, accounts[name].address, f"http://{name}.invalid", os.urandom(32), Prices(1, 10, 3))
        for name in CENTRES
    ]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 2, 10**15, dispute_window=0)
    return chain, deployment, accounts  # type: ignore[return-value]


def _record(n: int, epoch: int) -> UsageRecord:
    """A record built without UsageRecord's per-field checks (its values are in range by construction)."""
    word = n.to_bytes(32, "big")
    rec = object.__new__(UsageRecord)
    rec.__dict__.update(
        record_id=(epoch << 64 | n).to_bytes(32, "big"),
        job_id=word,
        serving_centre=centre_id(SERVING),
        home_centre=centre_id(HOMES[n % len(HOMES)]),
        user=keccak(word),
        epoch=epoch,
        started_at=1_900_000_000 + n,
        ended_at=1_900_000_060 + n,
        cpu_millis=60_000 + n % 1000,
        wall_millis=60_000,
        max_rss_kib=1024,
        gpu_millis=0,
        rates_version=1,
        price=1_000 + n % 977,
        order=keccak(b"o" + word),
        grant=keccak(b"g" + word),
        lock_hash=keccak(b"k" + word),
        decision=keccak(b"d" + word),
        group_signature=bytes(32),
    )
    return rec


def build_epoch(count: int, epoch: int, key: bytes, domain: Domain) -> list[Record]:
    """`count` signed records: built here, signed on every core (the workers inherit the records)."""
    secret = coincurve.PrivateKey(key)
    records = [_record(n, epoch) for n in range(count)]
    spans = [(i, min(i + 50_000, count)) for i in range(0, count, 50_000)]

    def block(span: tuple[int, int]) -> list[bytes]:
        out = []
        for n in range(*span):
            sig = secret.sign_recoverable(record_digest(records[n], domain), hasher=None)
            out.append(sig[:64] + bytes((sig[64] + 27,)))
        return out

    signatures = [s for part in run_blocks(block, spans, cores()) for s in part]
    return list(zip(records, signatures, strict=True))


def _cpu() -> float:
    """CPU seconds of this process and of the workers it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def anchor(chain: Chain, deployment: Deployment, account: object, epoch: int, served: list[Record], domain) -> None:
    from ledger.deploy import bind

    homes = [centre_id(h) for h in HOMES]
    claims = []
    for home in homes:
        mine = [r for r, _ in served if r.home_centre == home]
        claims.append((*root_of([record_digest(r, domain) for r in mine], [r.price for r in mine]), len(mine)))
    ledger = bind(chain, deployment).usage_ledger.functions
    fn = ledger.anchor(
        epoch, homes, [c[0] for c in claims], [c[2] for c in claims], [c[1] for c in claims], bytes(32), 0
    )
    chain.transact(fn, account)


# --- the naive per-record path (the audit's code before) ----------------------------------------------


def _naive_leaf(digest: bytes, amount: int) -> tuple[bytes, int]:
    return keccak(digest + amount.to_bytes(32, "big")), amount


def _naive_node(left: tuple[bytes, int], right: tuple[bytes, int]) -> tuple[bytes, int]:
    if left == (bytes(32), 0) and right == (bytes(32), 0):
        return left
    h = keccak(left[0] + left[1].to_bytes(32, "big") + right[0] + right[1].to_bytes(32, "big"))
    return h, left[1] + right[1]


def naive_verify(
    served: list[Record], domain: Domain, account: str
) -> tuple[list[str], dict[bytes, tuple[bytes, int]]]:
    """Per record: eth-account's EIP-712 digest and recovery; per home: the padded sum tree, level by level."""
    findings: list[str] = []
    seen: set[bytes] = set()
    leaves: dict[bytes, list[tuple[bytes, int]]] = {}
    for rec, sig in served:
        if rec.record_id in seen:
            findings.append("repeated")
        seen.add(rec.record_id)
        if rec.serving_centre != centre_id(SERVING) or rec.epoch != served[0][0].epoch:
            findings.append("misfiled")
        d = _hash_eip191_message(encode_typed_data(full_message=typed_data(rec, domain)))
        if to_checksum_address(Account._recover_hash(d, signature=sig)) != account:
            findings.append("signature")
        leaves.setdefault(rec.home_centre, []).append(_naive_leaf(d, rec.price))
    roots = {}
    for home, first in leaves.items():
        level = first + [(bytes(32), 0)] * ((1 << (len(first) - 1).bit_length()) - len(first))
        while len(level) > 1:
            level = [_naive_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        roots[home] = level[0]
    return findings, roots


def run(quick: bool = False) -> list[Result]:
    count, sample = (100_000, 5_000) if quick else (1_000_000, 20_000)
    chain, deployment, accounts = _deploy()
    account = accounts[SERVING]
    domain = Domain.for_deployment(deployment)
    key = bytes(account.key)  # type: ignore[attr-defined]
    t = time.perf_counter()
    served = build_epoch(count, 1, key, domain)
    small = build_epoch(sample, 2, key, domain)
    anchor(chain, deployment, account, 1, served, domain)
    anchor(chain, deployment, account, 2, small, domain)
    built = time.perf_counter() - t
    n_cores = cores()
    backend = f"keccak: {BACKEND}"

    cpu: dict[str, float] = {}

    def timed(name: str, records: list[Record], **kw: object) -> float:
        start, used = time.perf_counter(), _cpu()
        findings = verify_records(SERVING, records[0][0].epoch, records, chain, deployment, domain, **kw)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        cpu[name] = _cpu() - used
        if findings:
            raise AssertionError(f"the audit of an honest epoch found {findings[:3]}")
        return seconds

    monitor = CpuMonitor()
    fast = timed("fast", served, signatures="unbound")
    busy = monitor.others_share()
    every = timed("all", small, signatures="all")
    fast_one = timed("one", small, signatures="unbound", workers=1)
    t, used = time.perf_counter(), _cpu()
    naive_findings, naive_roots = naive_verify(small, domain, account.address)  # type: ignore[attr-defined]
    naive = time.perf_counter() - t
    cpu["naive"] = _cpu() - used
    assert not naive_findings, naive_findings[:3]
    ours = {home: root_of([record_digest(r, domain) for r, _ in small if r.home_centre == home],
                          [r.price for r, _ in small if r.home_centre == home]) for home in naive_roots}  # fmt: skip
    assert ours == naive_roots, "the naive and the fast path disagree on a root"
    per = count / sample
    epoch = f"{count:,} records"
    load = "unknown" if busy is None else f"{busy:.0%}"
    return [
        Result(
            AUDIT_FAST, epoch, f'fast, {n_cores} cores, "unbound" ({backend})', fast * 1000, runs=count,
            peer=AUDIT_NAIVE,
            note=f"{count / fast:,.0f} records/s; {cpu['fast']:.1f} CPU-s; other processes used {load} of the "
            f"CPUs meanwhile; epoch built and signed in {built:.0f} s (not timed)",
        ),
        Result(
            "audit.records.fast_all", epoch, f'fast, {n_cores} cores, "all" signatures', every * per * 1000,
            runs=sample, peer=AUDIT_NAIVE,
            note=f"every signature recovered; measured on {sample:,} records ({cpu['all']:.1f} CPU-s), "
            f"extrapolated to {count:,}",
        ),
        Result(
            "audit.records.fast_one_core", epoch, 'fast, 1 process, "unbound"', fast_one * per * 1000, runs=sample,
            peer=AUDIT_NAIVE,
            note=f"measured on {sample:,} records ({cpu['one']:.1f} CPU-s), extrapolated to {count:,}",
        ),
        Result(
            AUDIT_NAIVE, epoch, "naive per-record path", naive * per * 1000, runs=sample,
            note=f"measured on {sample:,} records ({sample / naive:,.0f} records/s, {cpu['naive']:.1f} CPU-s), "
            f"extrapolated to {count:,}",
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    run_alone(run, __doc__)
