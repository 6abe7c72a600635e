"""Access decisions on the record: re-evaluating a decision log, beside deciding it one request at a time.

An auditor decides every logged decision again with the published policy
(`PolicyEngine.reevaluate`: cedarpy's batch call, the policies parsed once, the log
packed into calls whose entities agree). The peer, measured in the same run, is the
obvious way: `decide_request` on each entry, one Cedar call each, on a sample of the
same log, extrapolated. The whole audit of the same logs (`audit_decisions`: shape,
digests, root, versions, re-evaluation) is reported beside them.

    .venv/bin/python scripts/bench/bench_decisions.py [--quick]
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DECISIONS_COMMIT,
    DECISIONS_REEVALUATE,
    DECISIONS_SUBMIT_WITH,
    DECISIONS_SUBMIT_WITHOUT,
    Result,
    Timing,
    rate,
    run_alone,
)
from eth_account import Account
from eth_utils import keccak

from auth.directory import Directory
from auth.ldap_embedded import EmbeddedLdap
from auth.ldif import centre_ldif, service_dn
from auth.policy import PolicyEngine, Subject
from gateway.api.app import create_app
from gateway.api.schemas import JobRequest, JobSubmission
from gateway.api.server import BackgroundServer
from gateway.client.http import GatewayClient
from gateway.client.paying import Quote, pay, signing_domain
from gateway.demo.local import LocalConsortium, demo_spec
from gateway.jobs.execution import Capacity, Execution, ExecutorError, Limits
from gateway.node.centre import CentreNode
from gateway.node.policies import DecisionDesk, Evaluated
from gateway.node.ratelimit import RateLimit
from ledger.chain import connect
from ledger.decision_audit import audit_decisions
from ledger.decisions import cedar_request, entry_digest, log_root, log_tree, new_entry
from ledger.policies import PolicyVersion

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "gateway" / "demo" / "data"
CENTRES = ("ai-c", "cloud-b")  # the demo's two policies with forbids and group permits
TITLE = "Access decisions on the record: re-evaluating a decision log"
ABOUT = (
    "100,000 logged decisions, half at AI Centre C and half at Cloud Centre B, each under the "
    "demo's policy (`gateway/demo/data/ai-c.cedar`, `cloud-b.cedar`): 400 principals from three "
    "homes, a third of them seen with two or three attribute sets over the log (employee type, "
    "department, clearance, groups such as `gpu-users` and their home's, as `ml-project@hpc-a`), queues "
    "`cpu`, `gpu` and `bigmem` whose data class and GPU type vary by job, walltimes from 5 minutes to "
    "a day, 0–16 GPUs, a decision every 3 s at each centre, so every hour of the day (the context's hour "
    "is the entry's, as the audit checks); about 42 % allowed. Every entry is a distinct "
    "request (no quote and submission pairs, which reevaluate would decide once). "
    "`PolicyEngine.reevaluate` decides each centre's log from its entries' Cedar requests; "
    "the peer, same run, is `decide_request` one entry at a time on a 5,000-entry sample, "
    "extrapolated to 100,000 (both agree on every sampled entry, checked). The audit row is "
    "`audit_decisions` on both logs: entry shape, digests, Merkle root, policy versions and "
    "re-evaluation.\n\n"
    "The submission half: alice@hpc-a's job at hpc-a's node, in process (no HTTP), as a client submits "
    "it: `CentreNode.quote` then `CentreNode.submit` (session, Cedar decision, order and grant checked, the "
    "job stored durably; with the log, the quote's entry in a transaction of its own and the submission's "
    "in the job's). The peer is the same node, same store, same run, whose decision desk decides the same "
    "way and logs nothing (a benchmark-local subclass), measured in alternating blocks. Jobs are held, not "
    "run, so no worker writes meanwhile. Committing is the close's share per job: the root of the epoch's "
    "log over every entry (quotes' and submissions'), read from the store. Target: logging and committing "
    "≤ 10 % of a submission."
)

NAIVE_ID = "decisions.decide_one_by_one"
REEVALUATE_RATE = "decisions.reevaluate.rate"
NAIVE_RATE = "decisions.decide_one_by_one.rate"
AUDIT_ID = "decisions.audit"
HOMES = ("hpc-a", "ai-c", "cloud-b")
GROUPS = ("gpu-users", "ml-project@hpc-a", "physics@hpc-a", "chemistry@cloud-b", "staff@ai-c")
WALLTIMES = (300, 900, 1800, 3600, 5400, 7200, 14400, 43200, 86400)
PUBLISHED_AT = 1_764_000_000


@dataclass(frozen=True)
class Log:
    """One centre's logged decisions, with what an auditor reads from the chain."""

    centre: str
    engine: PolicyEngine
    entries: list[dict]

    @property
    def version(self) -> PolicyVersion:
        return PolicyVersion(self.centre, 1, self.engine.policy_hash, self.engine.schema_hash, PUBLISHED_AT)


def people(rng: random.Random, count: int = 400) -> list[list[Subject]]:
    """Each principal as the centres saw it over the log: one to three attribute sets."""
    out = []
    for n in range(count):
        home = rng.choice(HOMES)
        principal = f"{rng.getrandbits(64):016x}@{home}"
        variants = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            attrs: dict[str, object] = {
                "employee_type": rng.choice(("staff", "staff", "student", "faculty")),
                "departmentNumber": rng.choice(("physics", "chemistry", "cs", "biology")),
            }
            if n % 4 == 0:
                attrs["clearance"] = str(rng.randint(0, 5))
            own = [g for g in GROUPS if "@" not in g or g.endswith(f"@{home}")]  # a home vouches for its own groups
            groups = rng.sample(own, rng.randint(0, min(3, len(own))))
            variants.append(Subject(principal, home, attrs, groups))
        out.append(variants)
    return out


def job(rng: random.Random, centre: str, at: int) -> tuple[dict, dict]:
    """A resource and context as a gateway builds them for Cedar at time `at` (`CentreNode._authorise`)."""
    queue = rng.choice(("cpu", "cpu", "gpu", "bigmem"))
    resource = {
        "queue": queue,
        "centre": centre,
        "gpu_type": rng.choice(("a100", "h100")) if queue == "gpu" else None,
        "data_class": rng.choice(("public", "public", "internal", "restricted")),
    }
    context = {
        "walltime": rng.choice(WALLTIMES),
        "cores": rng.choice((1, 2, 4, 8, 16, 32, 64)),
        "memory_mib": rng.choice((1024, 4096, 16384, 65536)),
        "gpus": rng.choice((1, 2, 4, 8, 16)) if queue == "gpu" else 0,
        "hour": time.gmtime(at).tm_hour,
    }
    return resource, context


def logged_at(n: int) -> int:
    """When a centre logged its n-th decision: one every 3 s, so 50,000 span every hour of the day."""
    return PUBLISHED_AT + 60 + 3 * n


def logged_decisions(count: int, seed: int = 9) -> list[Log]:
    """`count` decisions split between the centres, logged as their gateways would log them."""
    rng = random.Random(seed)
    everyone = people(rng)
    logs = []
    for i, centre in enumerate(CENTRES):
        engine = PolicyEngine((DATA / f"{centre}.cedar").read_text())
        reqs = []
        for n in range(count // len(CENTRES) + (i < count % len(CENTRES))):
            resource, context = job(rng, centre, logged_at(n))
            reqs.append(engine.request(rng.choice(rng.choice(everyone)), "submit", resource, context))
        decisions = engine.reevaluate(reqs)  # what the gateway decided (checked against the peer below)
        entries = [
            new_entry(
                centre=centre,
                time=logged_at(n),
                kind="submit" if n % 3 else "quote",
                request=keccak(n.to_bytes(8, "big") + centre.encode()),
                cedar=req,
                decision=decision,
                policy_version=1,
                policy_hash=engine.policy_hash,
                entry_id=keccak(b"%d" % n)[:16],
            )
            for n, (req, decision) in enumerate(zip(reqs, decisions, strict=True))
        ]
        logs.append(Log(centre, engine, entries))
    return logs


def sample(logs: Sequence[Log], size: int, seed: int = 3) -> list[tuple[Log, dict]]:
    rng = random.Random(seed)
    pool = [(log, e) for log in logs for e in log.entries]
    return rng.sample(pool, min(size, len(pool)))


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector paused while timing, as common.measure does: with 100,000 entries in memory,
    each full collection walks them all, and when one falls is not the code's doing."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure_reevaluation(logs: Sequence[Log], sample_size: int) -> list[Result]:
    """reevaluate over each centre's whole log, and decide_request one by one on a sample, same run."""
    total = sum(len(log.entries) for log in logs)
    requests = [(log, [cedar_request(e) for e in log.entries]) for log in logs]
    warm = requests[0][0].engine
    warm.reevaluate(requests[0][1][:2000])
    with gc_paused():
        start = time.perf_counter()
        decided = {log.centre: log.engine.reevaluate(reqs) for log, reqs in requests}
        batch_s = time.perf_counter() - start
    for log in logs:
        logged = [(e["decision"] == "allow", e["policies"]) for e in log.entries]
        if [(d.allowed, d.policies) for d in decided[log.centre]] != logged:
            raise AssertionError(f"reevaluate disagrees with the log of {log.centre}")

    picked = sample(logs, sample_size)
    reqs = [(log.engine, cedar_request(e)) for log, e in picked]
    for engine, req in reqs[:200]:
        engine.decide_request(req)
    with gc_paused():
        start = time.perf_counter()
        one_by_one = [engine.decide_request(req) for engine, req in reqs]
        naive_s = time.perf_counter() - start
    for (_, e), d in zip(picked, one_by_one, strict=True):
        if (d.allowed, d.policies) != (e["decision"] == "allow", e["policies"]):
            raise AssertionError(f"decide_request disagrees with reevaluate on entry {e['id']}")

    allowed = sum(1 for log in logs for e in log.entries if e["decision"] == "allow")
    case = f"{total:,} logged decisions"
    scale = total / len(reqs)
    return [
        Result(
            NAIVE_ID,
            case,
            "decide_request one by one (extrapolated)",
            naive_s * scale * 1000,
            runs=len(reqs),
            note=f"{len(reqs):,} decided in {naive_s:.2f} s, ×{scale:.0f}",
        ),
        Result(
            DECISIONS_REEVALUATE,
            case,
            "PolicyEngine.reevaluate (all)",
            batch_s * 1000,
            runs=total,
            peer=NAIVE_ID,
            note=f"{batch_s:.2f} s; {allowed:,} allowed; both agree on the sample",
        ),
        rate(NAIVE_RATE, case, "decide_request one by one", len(reqs), naive_s),
        rate(REEVALUATE_RATE, case, "PolicyEngine.reevaluate", total, batch_s, peer=NAIVE_RATE),
    ]


def measure_audit(logs: Sequence[Log]) -> list[Result]:
    """audit_decisions on each centre's log, as `xcentre audit decisions` runs it once fetched."""
    anchored = [log_root(entry_digest(e) for e in log.entries) for log in logs]  # what each centre anchored
    findings = 0
    with gc_paused():
        start = time.perf_counter()
        for log, root in zip(logs, anchored, strict=True):
            audit = audit_decisions(
                log.entries, root, len(log.entries), [log.version], {1: (log.engine.text, log.engine.schema_text)}
            )
            findings += len(audit.findings)
        seconds = time.perf_counter() - start
    if findings:
        raise AssertionError(f"the audit of honest logs has {findings} findings")
    total = sum(len(log.entries) for log in logs)
    return [
        Result(
            AUDIT_ID,
            f"{total:,} logged decisions",
            "audit_decisions (shape, root, versions, re-evaluation)",
            seconds * 1000,
            runs=total,
            peer=DECISIONS_REEVALUATE,
            note=f"{seconds:.2f} s, no findings",
        )
    ]


# -- the submission half: a submission at a node with its decision log, and at the same node without it ---------

SUBMIT_WITH_ID = DECISIONS_SUBMIT_WITH
SUBMIT_WITHOUT_ID = DECISIONS_SUBMIT_WITHOUT
SUBMIT_NODE_WITH_ID = "decisions.submit.node.with_log"
SUBMIT_NODE_WITHOUT_ID = "decisions.submit.node.without_log"
COMMIT_ID = DECISIONS_COMMIT
SUBMIT_JOB = {"command": ["true"], "walltime": 60, "resources": {"cores": 1, "memory_mib": 256}, "centre": "hpc-a"}


class HeldExecutor:
    """Runs no job: each waits here until the measurement ends, so no worker writes to the store meanwhile."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def run(
        self, argv: list[str], walltime: int, env: dict[str, str] | None = None, *, limits: Limits | None = None
    ) -> Execution:
        self.released.wait()
        raise ExecutorError("not run: a benchmark's submission")

    def capacity(self) -> Capacity:
        return Capacity(total_cpus=1024, free_cpus=1024)


@dataclass(frozen=True)
class Unlogged(Evaluated):
    """An evaluation without a log entry: the peer's."""

    @property
    def id(self) -> str:
        return "0x" + "00" * 16


class UnloggedDesk(DecisionDesk):
    """The peer: decides every request as the gateway does (the same Cedar request and call) and logs nothing."""

    def evaluate(
        self,
        *,
        kind: str,
        request: bytes,
        subject: Subject,
        resource: Mapping[str, Any],
        context: Mapping[str, Any],
        now: int,
        client: str | None = None,
    ) -> Evaluated:
        engine = self.keeper.current().engine
        return Unlogged(engine.decide_request(engine.request(subject, "submit", resource, context)), None)  # type: ignore[arg-type]

    def keep(self, evaluated: Evaluated) -> None:
        pass


@dataclass
class HeldConsortium(LocalConsortium):
    """The demo's consortium whose jobs are held (HeldExecutor), with allocations no benchmark exhausts."""

    executor: HeldExecutor = field(default_factory=HeldExecutor)

    def build_centre(self, name: str, **overrides: Any) -> CentreNode:
        return super().build_centre(name, **({"executor": self.executor} | overrides))


@contextmanager
def held_consortium() -> Iterator[HeldConsortium]:
    """Three gateways on the embedded chain and embedded directories, as `xcentre demo` starts them."""
    spec = demo_spec()
    spec = dataclasses.replace(  # credit and allocations for as many held orders as the run makes
        spec,
        initial_credit=10**15,
        centres=[dataclasses.replace(c, allocations={p: 10**15 for p in c.allocations}) for c in spec.centres],
    )
    password = secrets.token_urlsafe(16)
    ldaps = [EmbeddedLdap(centre_ldif(c.base_dn, c.users, c.groups, service_password=password)) for c in spec.centres]
    try:
        with tempfile.TemporaryDirectory(prefix="xcentre-bench-") as tmp:
            directories = {
                c.name: Directory(ldap.start(), c.base_dn, service_dn(c.base_dn), password, centre=c.name)
                for c, ldap in zip(spec.centres, ldaps, strict=True)
            }
            consortium = HeldConsortium(connect("embedded"), spec, directories, Path(tmp))
            try:
                yield consortium.start()
            finally:
                consortium.executor.released.set()
                consortium.stop()
    finally:
        for ldap in ldaps:
            ldap.stop()


def measure_submission(quick: bool = False) -> list[Result]:
    """A job's submission at hpc-a with its decision log and at the same node without it, two ways, same run:
    at the node in process (quote + submission) and as a client makes it over HTTP (quote, order, the home's
    grant, submission); then the close's share per job of committing the log."""
    pairs, warm = (100, 10) if quick else (400, 20)
    logging.getLogger("gateway").setLevel(logging.ERROR)  # the held jobs, failed at the end, need no word each
    with held_consortium() as consortium:
        node = consortium.centres["hpc-a"].node
        assert node is not None
        parts = node.parts
        parts.decisions.limit = RateLimit(1e9, 10**9)  # the run asks faster than any person: counted, never refused
        unlogged = UnloggedDesk(node.name, parts.policy, parts.store, parts.account, parts.domain)
        peer = CentreNode(dataclasses.replace(parts, decisions=unlogged))
        peer_server = BackgroundServer(create_app(peer)).start()
        user = next(u for u in consortium.spec.centre("hpc-a").users if u["uid"] == "alice")
        store = parts.store
        epoch = store.open_epoch()
        before = len(store.decision_digests(epoch))
        try:
            with GatewayClient(consortium.url("hpc-a")) as home:
                home.login("alice", user["password"])
                at_node = _pairs(_in_process(node, peer, home), pairs, warm)
                urls = {"with": consortium.url("hpc-a"), "without": peer_server.url}
                clients = {which: GatewayClient(url, token=home.token) for which, url in urls.items()}
                with clients["with"], clients["without"]:
                    by_client = _pairs(_over_http(clients, home), pairs, warm)
        finally:
            peer_server.stop()
            peer._pool.shutdown(wait=False, cancel_futures=True)
        logged = store.decision_digests(epoch)
        if len(logged) - before != 2 * 2 * (pairs + warm):
            raise AssertionError(f"{len(logged) - before} entries logged for {2 * (pairs + warm)} jobs with the log")
        roots = []
        for _ in range(5):
            start = time.perf_counter()
            _ = log_tree(store.decision_digests(epoch)).nodes  # what the close computes and keeps
            roots.append(time.perf_counter() - start)
    jobs = len(logged) // 2
    commit = statistics.median(roots) / jobs
    results = [
        Result(
            COMMIT_ID,
            f"{len(logged):,} entries of {jobs:,} jobs",
            "commit at close: log root and tree, per job",
            commit * 1000,
            runs=5,
            note=f"the epoch's log tree in {statistics.median(roots) * 1000:.1f} ms",
        )
    ]
    for ids, case, times in (
        ((SUBMIT_NODE_WITHOUT_ID, SUBMIT_NODE_WITH_ID), "at the serving node (quote + submit)", at_node),
        ((SUBMIT_WITHOUT_ID, SUBMIT_WITH_ID), "a client's submission (HTTP)", by_client),
    ):
        with_log, without = _timing(times["with"]), _timing(times["without"])
        overhead = (with_log.median + commit - without.median) / without.median
        results += [
            Result.from_timing(ids[0], case, "without the decision log (peer)", without),
            Result.from_timing(
                ids[1], case, "with it", with_log, peer=ids[0], note=f"logging and committing: {overhead:+.1%}"
            ),
        ]
    return results


def _in_process(node: CentreNode, peer: CentreNode, home: GatewayClient) -> Callable[[str], float]:
    """One submission at the node or its peer, in process: the quote, then the job with its order and grant."""
    claims = node.authenticate(home.token)
    request = JobRequest.model_validate(SUBMIT_JOB)
    quoted = peer.quote(claims, request)  # the peer's logs nothing
    quote = Quote(node.name, quoted.rates_version, quoted.max_price)
    domain = signing_domain(home.consortium())
    job = {k: v for k, v in SUBMIT_JOB.items() if k != "centre"}

    def submit(which: str) -> float:
        at = node if which == "with" else peer
        paid = pay(job, quote, Account.create(), home.grant, domain)  # made by the client and its home: not timed
        submission = JobSubmission.model_validate(SUBMIT_JOB | paid.fields())
        start = time.perf_counter()
        at.quote(claims, request)
        at.submit(claims, submission, None)
        return time.perf_counter() - start

    return submit


def _over_http(clients: Mapping[str, GatewayClient], home: GatewayClient) -> Callable[[str], float]:
    """One submission as `submit_anywhere` makes it at a named centre: quote, order, the home's grant, the job."""
    domain = signing_domain(home.consortium())
    job = {k: v for k, v in SUBMIT_JOB.items() if k != "centre"}

    def submit(which: str) -> float:
        client, account = clients[which], Account.create()  # a wallet's fresh key: made before, not timed
        start = time.perf_counter()
        quoted = client.quote(SUBMIT_JOB)
        paid = pay(job, Quote("hpc-a", quoted["rates_version"], quoted["max_price"]), account, home.grant, domain)
        client.submit(SUBMIT_JOB | paid.fields())
        return time.perf_counter() - start

    return submit


def _pairs(submit: Callable[[str], float], pairs: int, warm: int) -> dict[str, list[float]]:
    """Seconds of `pairs` submissions with the log and as many without, one of each in turn, first one then the
    other, so that drift in the machine's load falls on both alike."""
    for _ in range(warm):
        submit("with"), submit("without")
    times: dict[str, list[float]] = {"with": [], "without": []}
    gc.collect()
    gc.disable()
    try:
        for i in range(pairs):
            for which in ("with", "without") if i % 2 == 0 else ("without", "with"):
                times[which].append(submit(which))
    finally:
        gc.enable()
    return times


def _timing(samples: list[float]) -> Timing:
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return Timing(median=statistics.median(samples), p25=q[0], p75=q[2], runs=len(samples))


def run(quick: bool = False) -> list[Result]:
    logs = logged_decisions(10_000 if quick else 100_000)
    results = measure_reevaluation(logs, 1_000 if quick else 5_000)
    return results + measure_audit(logs) + measure_submission(quick)


if __name__ == "__main__":
    run_alone(run, __doc__)
