"""Faults under load on a consortium of real processes: kill -9 of a gateway, then the chain node stopped.

`xcentre consortium up` of a copy of examples/ (three gateways, one slapd each, one anvil),
driven through gateway.consortium.running.RunningConsortium. Two phases, one consortium:

1. Kill -9 under load. Client threads submit N tiny jobs (`echo`) at hpc-a as alice, each
   retried with its Idempotency-Key (the wallet resends a submission a centre took without
   answering) until a job id comes back. hpc-a's gateway is killed with SIGKILL K times at
   seeded random moments of the load (a random point in the job count, then a random delay)
   and started again at once. The jobs the store shows queued or running right after a kill
   are the interrupted ones. When every job is final, each centre's own store is read:
   acknowledged jobs lost (the job id a client was given is in no store), duplicated (two job
   rows for one key at any centre, two job ids answered for one key, two usage records for one
   job), how each interrupted job ended (completed and billed / resumed / refunded / failed),
   and the time of a submission as its client saw it (first try to job id, retries included).
2. The chain node stopped. While a few clients keep submitting, the chain node is stopped
   (`hang`, the default: SIGSTOP, connections are taken and nothing is answered; `down`: anvil
   stopped, its port refuses) for `--outage` seconds, and an epoch close is asked at each
   centre: its answer time and status; GET /v1/capacity at every centre every half second
   (the node's responsiveness) against the same request before the stop; then, from the
   chain's return, the time until every centre's anchor of that epoch is on chain and until
   the epoch is settled (which includes the consortium's dispute window and answer window).

What it sees is classified as it is; nothing is asserted (the fault tests in tests/ assert).

    .venv/bin/python scripts/bench/bench_faults.py [--jobs 10000] [--kills 10] [--clients 8]
        [--seed S] [--outage 60] [--chain hang|down] [--json]

Slow (a 10,000-job run takes tens of minutes): run_all.py runs it only when named
(`run_all.py --only faults`); `--quick` there is 300 jobs, 2 kills, a 20 s outage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import random
import re
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from common import Result, markdown_table  # noqa: E402

from gateway.client.dispatch import submit_anywhere, with_home_session  # noqa: E402
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable  # noqa: E402
from gateway.client.wallet import PaymentKeys  # noqa: E402
from gateway.consortium.running import RunningConsortium  # noqa: E402

TITLE = "Faults: kill -9 of a gateway under load; the chain node stopped"
ABOUT = (
    "A consortium of real processes (`xcentre consortium up` of examples/: three gateways, a slapd each, "
    "anvil). Phase 1: client threads submit `echo` jobs at hpc-a, each retried with its Idempotency-Key "
    "until answered, while hpc-a's gateway is killed with SIGKILL at seeded random moments and restarted; "
    "each centre's store is then read for lost and duplicated jobs and for how the jobs a kill interrupted "
    "ended. Phase 2: the chain node is stopped while jobs keep coming and each centre is asked to close "
    "the epoch; the close's answer, GET latency meanwhile, and the time for anchors to drain and the epoch "
    "to settle once the chain is back. Counts are whole jobs; times in ms or s."
)
EXAMPLES = ROOT / "examples"
CENTRE = "hpc-a"
USERS = (("alice", "alice-pw"), ("bob", "bob-pw"))
JOB = {"command": ["echo", "fault"], "walltime": 10}
ACTIVE = ("queued", "running")
RETRYABLE = (401, 429, 500, 502, 503, 504)
#: Credit for hpc-a's physics project, and each member's collateral, in the bench's copy of examples/: every
#: job's hold stays outstanding until the epoch closes (the load is one epoch), so 10,000 holds must fit in both.
ALLOCATION = 10**15


@dataclasses.dataclass(frozen=True)
class Config:
    jobs: int = 10_000
    kills: int = 10
    clients: int = 8
    seed: int = 0
    outage: float = 60.0
    chain: str = "hang"  # "hang" (SIGSTOP) or "down" (anvil stopped)
    settle_timeout: float = 300.0


# -- the load -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What the clients saw, per idempotency key; shared by the client threads under `lock`."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    acknowledged: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> the first job id answered
    answers: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # key -> every job id answered
    seconds: list[float] = dataclasses.field(default_factory=list)  # first try -> job id, retries included
    retries: int = 0
    retried_keys: int = 0
    why_retried: Counter[str] = dataclasses.field(default_factory=Counter)
    given_up: list[str] = dataclasses.field(default_factory=list)  # key: status and error of a final refusal
    in_flight: set[str] = dataclasses.field(default_factory=set)  # keys being submitted (not answered yet)

    def done(self) -> int:
        with self.lock:
            return len(self.acknowledged) + len(self.given_up)


class Client:
    """One user's client thread state: a password session at home and an in-memory wallet."""

    def __init__(self, url: str, user: tuple[str, str]) -> None:
        self.url, self.user = url, user
        self.keys = PaymentKeys()
        self.home: GatewayClient | None = None

    def session(self) -> GatewayClient:
        if self.home is None or not self.home.token:
            self.close()
            home = GatewayClient(self.url, timeout=30)
            try:
                home.login(*self.user)
            except BaseException:
                home.close()
                raise
            self.home = home
        return self.home

    def close(self) -> None:
        if self.home is not None:
            self.home.close()
            self.home = None

    def submit_until_answered(self, key: str, tally: Tally, stop: threading.Event) -> None:
        """Submit one job with idempotency key `key` until a job id comes back (the wallet resends a submission
        left unanswered to the centre it went to, with its order); a refusal that is not unavailability ends it."""
        with tally.lock:
            tally.in_flight.add(key)
        try:
            self._until_answered(key, tally, stop)
        finally:
            with tally.lock:
                tally.in_flight.discard(key)

    def _until_answered(self, key: str, tally: Tally, stop: threading.Event) -> None:
        started, tries = time.monotonic(), 0
        while not stop.is_set():
            tries += 1
            try:
                submission = submit_anywhere(
                    self.url, JOB, with_home_session(self.session()), centre=CENTRE, idempotency_key=key, keys=self.keys
                )
                submission.client.close()
            except GatewayRefused as exc:
                if exc.status == 401:
                    self.close()  # the session ended (a token lives token_ttl, 15 minutes here): sign on again
                if exc.status not in RETRYABLE:
                    with tally.lock:
                        tally.given_up.append(f"{key}: {exc.status} {exc.error}")
                    return
                self._retry(tally, tries, str(exc.status))
                continue
            except (GatewayUnreachable, httpx.HTTPError, OSError) as exc:
                self._retry(tally, tries, type(exc).__name__)
                continue
            job_id = submission.view["id"]
            with tally.lock:
                tally.acknowledged.setdefault(key, job_id)
                tally.answers.setdefault(key, set()).add(job_id)
                tally.seconds.append(time.monotonic() - started)
            return

    def _retry(self, tally: Tally, tries: int, why: str) -> None:
        with tally.lock:
            tally.retries += 1
            tally.retried_keys += tries == 1
            tally.why_retried[why] += 1
        time.sleep(0.2)


@contextlib.contextmanager
def load(url: str, keys: Iterator[str], clients: int, tally: Tally) -> Iterator[threading.Event]:
    """`clients` threads submitting a job per key of `keys` until it runs out or the yielded event is set."""
    stop, lock = threading.Event(), threading.Lock()

    def worker(n: int) -> None:
        client = Client(url, USERS[n % len(USERS)])
        try:
            while not stop.is_set():
                with lock:
                    key = next(keys, None)
                if key is None:
                    return
                client.submit_until_answered(key, tally, stop)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,), name=f"faults-client-{n}") for n in range(clients)]
    for t in threads:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)


def fresh_keys(prefix: str, count: int | None = None) -> Iterator[str]:
    numbers = range(count) if count is not None else itertools.count()
    return (f"{prefix}-{n}-{uuid.uuid4().hex[:12]}" for n in numbers)


# -- the stores ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def store(consortium: RunningConsortium, name: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a centre's own SQLite store."""
    db = sqlite3.connect(f"file:{consortium.data_dir(name) / 'gateway.db'}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def jobs_of(consortium: RunningConsortium, keys: set[str]) -> dict[str, list[dict]]:
    """Every job row per idempotency key of `keys`, at every centre, with its usage records and its hold."""
    found: dict[str, list[dict]] = {}
    for name in consortium.names:
        with store(consortium, name) as db:
            records = Counter(job_id for (job_id,) in db.execute("SELECT job_id FROM usage_records"))
            holds = {d: s for d, s in db.execute("SELECT order_digest, status FROM holds")}
            rows = db.execute(
                "SELECT id, idempotency_key, status, record_id, detail, order_digest FROM jobs"
                " WHERE idempotency_key IS NOT NULL"
            ).fetchall()
        for row in rows:
            if row["idempotency_key"] in keys:
                found.setdefault(row["idempotency_key"], []).append(
                    dict(row)
                    | {"centre": name, "records": records.get(row["id"], 0), "hold": holds.get(row["order_digest"])}
                )
    return found


def jobs_with_keys(consortium: RunningConsortium, name: str, keys: set[str]) -> dict[str, str]:
    """Idempotency key -> job id of the jobs a centre's store holds for `keys`."""
    with store(consortium, name) as db:
        rows = db.execute("SELECT idempotency_key, id FROM jobs WHERE idempotency_key IS NOT NULL").fetchall()
    return {key: job_id for key, job_id in rows if key in keys}


def active_jobs(consortium: RunningConsortium, name: str) -> dict[str, str]:
    """Job id -> status of every job queued or running in a centre's store (read with its gateway dead)."""
    with store(consortium, name) as db:
        rows = db.execute("SELECT id, status FROM jobs WHERE status IN ('queued', 'running')").fetchall()
    return {job_id: status for job_id, status in rows}


def hold_of_home(consortium: RunningConsortium, digests: set[str]) -> dict[str, str]:
    """The home's hold status per order digest (alice and bob's home is hpc-a)."""
    with store(consortium, CENTRE) as db:
        return {d: s for d, s in db.execute("SELECT order_digest, status FROM holds") if d in digests}


def ending(at_kill: str, job: dict) -> str:
    """How a job a kill interrupted (queued or running in the store at the kill) ended, in the issue's words."""
    status, billed = job["status"], job["records"] > 0
    if status in ACTIVE:
        return "still queued or running"
    if status == "succeeded" and billed:
        return "resumed after the restart, billed" if at_kill == "queued" else "completed and billed"
    if status == "succeeded":
        return "succeeded, NOT billed"
    if billed:
        return f"{status}, billed"
    if "refund" in (job["detail"] or "").lower():
        return "refunded explicitly"
    return f"{status}, unbilled, not refunded explicitly"


# -- phase 1: kill -9 under load -------------------------------------------------------------------------


Labels = dict[str, dict[str, str]]  # "all" / "interrupted" -> order digest -> how the job ended


def kill_phase(consortium: RunningConsortium, cfg: Config, say: Callable[[str], None]) -> tuple[dict[str, Any], Labels]:
    """The load with its kills, and each job's order digest labelled with its end (for its hold, read once the
    epoch is settled)."""
    chance = random.Random(cfg.seed)
    # a random point of the load for each kill (the count of jobs answered), then a random delay after it
    points = sorted(chance.sample(range(max(1, cfg.jobs // 20), max(2, cfg.jobs * 19 // 20)), cfg.kills))
    delays = [chance.uniform(0.0, 1.5) for _ in points]
    url, tally = consortium.url(CENTRE), Tally()
    keys = list(fresh_keys("fault", cfg.jobs))
    interrupted: dict[str, tuple[str, int]] = {}  # job id -> (status at the first kill that found it, kill number)
    in_flight: dict[str, str | None] = {}  # key of a submission unanswered at a kill -> its job id then, if any
    downtime: list[float] = []
    started = time.monotonic()
    with load(url, iter(keys), cfg.clients, tally):
        for n, (point, delay) in enumerate(zip(points, delays, strict=True), 1):
            while tally.done() < point and tally.done() < cfg.jobs:
                time.sleep(0.05)
            time.sleep(delay)
            with tally.lock:
                flying = set(tally.in_flight)
            killed = time.monotonic()
            consortium.kill_gateway(CENTRE, signal.SIGKILL)
            for job_id, status in active_jobs(consortium, CENTRE).items():
                interrupted.setdefault(job_id, (status, n))
            taken = jobs_with_keys(consortium, CENTRE, flying)
            for key in flying:
                in_flight.setdefault(key, taken.get(key))
            consortium.start_gateway(CENTRE)
            downtime.append(time.monotonic() - killed)
            say(f"kill {n}/{cfg.kills} at {tally.done()} jobs answered; back after {downtime[-1]:.1f} s")
        while tally.done() < cfg.jobs:
            time.sleep(0.2)
    load_seconds = time.monotonic() - started
    say(f"{len(tally.acknowledged)} jobs acknowledged in {load_seconds:.0f} s; waiting for every job to end")

    wanted = set(keys)
    deadline = time.monotonic() + max(300.0, cfg.jobs / 10)
    while True:
        stored = jobs_of(consortium, wanted)
        active = sum(j["status"] in ACTIVE for rows in stored.values() for j in rows)
        if not active or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    ended_seconds = time.monotonic() - started

    stored_ids = {j["id"] for rows in stored.values() for j in rows}
    lost = sorted(k for k, job_id in tally.acknowledged.items() if job_id not in stored_ids)
    two_rows = sorted(k for k, rows in stored.items() if len(rows) > 1)
    two_answers = sorted(k for k, ids in tally.answers.items() if len(ids) > 1)
    two_records = sorted(j["id"] for rows in stored.values() for j in rows if j["records"] > 1)
    by_id = {j["id"]: j for rows in stored.values() for j in rows}
    endings = Counter(ending(status, by_id[job_id]) for job_id, (status, _) in interrupted.items() if job_id in by_id)
    labels: Labels = {
        "all": {j["order_digest"]: _final(j) for j in by_id.values() if j["order_digest"]},
        "interrupted": {
            by_id[i]["order_digest"]: ending(status, by_id[i])
            for i, (status, _) in interrupted.items()
            if i in by_id and by_id[i]["order_digest"]
        },
    }
    holds_now = hold_of_home(consortium, set(labels["interrupted"]))
    submissions = Counter(
        _submission_ending(taken, tally.acknowledged.get(key), len(stored.get(key, [])))
        for key, taken in in_flight.items()
    )
    finals = Counter(_final(j) for rows in stored.values() for j in rows)
    report = {
        "seed": cfg.seed,
        "jobs": cfg.jobs,
        "kills": len(downtime),
        "clients": cfg.clients,
        "acknowledged": len(tally.acknowledged),
        "given_up": len(tally.given_up),
        "given_up_examples": tally.given_up[:5],
        "lost": len(lost),
        "lost_keys": lost[:10],
        "duplicated_rows": len(two_rows),
        "duplicated_answers": len(two_answers),
        "duplicated_records": len(two_records),
        "duplicated_examples": (two_rows + two_answers + two_records)[:10],
        "submissions_at_kill": len(in_flight),
        "submissions_at_kill_endings": dict(submissions),
        "interrupted": len(interrupted),
        "interrupted_at_kill": dict(Counter(status for status, _ in interrupted.values())),
        "interrupted_endings": dict(endings),
        "interrupted_holds": dict(Counter(holds_now.values())),
        "final_statuses": dict(finals),
        "not_in_any_store": len(wanted - set(stored)),
        "retries": tally.retries,
        "retried_submissions": tally.retried_keys,
        "why_retried": dict(tally.why_retried),
        "submit_p50_ms": percentile(tally.seconds, 50) * 1000,
        "submit_p99_ms": percentile(tally.seconds, 99) * 1000,
        "submit_max_ms": max(tally.seconds, default=0.0) * 1000,
        "accepted_per_s": len(tally.acknowledged) / load_seconds if load_seconds else 0.0,
        "restart_s_median": statistics.median(downtime) if downtime else 0.0,
        "load_s": load_seconds,
        "all_final_s": ended_seconds,
    }
    return report, labels


def _final(job: dict) -> str:
    return f"{job['status']}{', billed' if job['records'] else ''}"


def holds_by_end(consortium: RunningConsortium, labels: dict[str, str]) -> dict[str, int]:
    """How many jobs of each end have their hold at home paid, refunded or still held."""
    holds = hold_of_home(consortium, set(labels))
    return dict(Counter(f"{end} -> hold {holds.get(digest, 'missing')}" for digest, end in labels.items()))


def _submission_ending(taken: str | None, answered: str | None, rows: int) -> str:
    """How a submission unanswered at a kill ended: `taken` is its job at the kill (None: not stored yet)."""
    if answered is None:
        return "never answered"
    if rows > 1:
        return "answered, but stored twice"
    if taken is None:
        return "not stored before the kill; stored once after it"
    if taken == answered:
        return "stored before the kill; the retry answered that job"
    return "stored before the kill; the retry answered ANOTHER job"


# -- phase 2: the chain node stopped ---------------------------------------------------------------------


@dataclasses.dataclass
class Probe:
    seconds: list[float] = dataclasses.field(default_factory=list)
    failures: Counter[str] = dataclasses.field(default_factory=Counter)


def get_once(url: str, probe: Probe, timeout: float = 30.0) -> None:
    started = time.monotonic()
    try:
        answer = httpx.get(url + "/v1/capacity", timeout=timeout)
    except httpx.HTTPError as exc:
        probe.failures[type(exc).__name__] += 1
        probe.seconds.append(time.monotonic() - started)
        return
    probe.seconds.append(time.monotonic() - started)
    if answer.status_code != 200:
        probe.failures[str(answer.status_code)] += 1


def close_at(url: str, operator_key: str, out: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        answer = httpx.post(url + "/v1/epochs/close", headers={"X-Operator-Key": operator_key}, timeout=180)
        out["status"] = answer.status_code
        with contextlib.suppress(ValueError):
            body = answer.json()
            out["epoch"] = body.get("epoch") if isinstance(body, dict) else None
            out["anchored"] = body.get("anchored") if isinstance(body, dict) else None
    except httpx.HTTPError as exc:
        out["status"] = type(exc).__name__
    out["seconds"] = time.monotonic() - started


def chain_phase(consortium: RunningConsortium, cfg: Config, say: Callable[[str], None]) -> dict[str, Any]:
    names = consortium.names
    before = Probe()
    for _ in range(10):
        for name in names:
            get_once(consortium.url(name), before)
    tally, during = Tally(), Probe()
    closes: dict[str, dict[str, Any]] = {name: {} for name in names}
    with load(consortium.url(CENTRE), fresh_keys("outage"), max(2, cfg.clients // 4), tally):
        time.sleep(2.0)  # the load is under way before the node goes
        stopped = time.monotonic()
        if cfg.chain == "hang":
            consortium.pause_chain()
        else:
            consortium.stop_chain()
        say(f"chain node stopped ({cfg.chain}) for {cfg.outage:.0f} s; closing the epoch at every centre")
        closers = [
            threading.Thread(target=close_at, args=(consortium.url(n), consortium.operator_key(n), closes[n]))
            for n in names
        ]
        for t in closers:
            t.start()
        probing = threading.Event()

        def prober() -> None:
            while not probing.is_set():
                for name in names:
                    get_once(consortium.url(name), during)
                probing.wait(0.5)

        probe_thread = threading.Thread(target=prober, name="faults-probe")
        probe_thread.start()
        submitted_before = len(tally.acknowledged)
        time.sleep(max(0.0, stopped + cfg.outage - time.monotonic()))
        accepted_during = len(tally.acknowledged) - submitted_before
        probing.set()
        probe_thread.join()
        back = time.monotonic()
        if cfg.chain == "hang":
            consortium.resume_chain()
        else:
            consortium.start_chain()
        say(f"chain node back after {back - stopped:.0f} s; waiting for the anchors and the settlement")
    for t in closers:
        t.join(timeout=180)
    epochs = {e for c in closes.values() if isinstance(e := c.get("epoch"), int)}
    epoch = min(epochs) if epochs else None
    anchored_s = settled_s = None
    if epoch is not None:
        deadline = back + cfg.settle_timeout
        while time.monotonic() < deadline and settled_s is None:
            try:
                view = httpx.get(consortium.url(CENTRE) + f"/v1/audit/epochs/{epoch}", timeout=30).json()
            except (httpx.HTTPError, ValueError):
                view = {}
            if anchored_s is None and set(names) <= set(view.get("anchors") or {}):
                anchored_s = time.monotonic() - back
            if view.get("settled"):
                settled_s = time.monotonic() - back
            time.sleep(0.5)
    return {
        "chain": cfg.chain,
        "outage_s": cfg.outage,
        "epoch": epoch,
        "epochs_answered": sorted(epochs),
        "close": {
            n: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in c.items()} for n, c in closes.items()
        },
        "close_max_ms": max((c.get("seconds", 0.0) for c in closes.values()), default=0.0) * 1000,
        "get_before_p50_ms": percentile(before.seconds, 50) * 1000,
        "get_before_p99_ms": percentile(before.seconds, 99) * 1000,
        "get_during_p50_ms": percentile(during.seconds, 50) * 1000,
        "get_during_p99_ms": percentile(during.seconds, 99) * 1000,
        "get_during_max_ms": max(during.seconds, default=0.0) * 1000,
        "get_during_count": len(during.seconds),
        "get_during_failures": dict(during.failures),
        "jobs_accepted_during_outage": accepted_during,
        "submit_during_p50_ms": percentile(tally.seconds, 50) * 1000,
        "submit_during_p99_ms": percentile(tally.seconds, 99) * 1000,
        "jobs_given_up_during_outage": len(tally.given_up),
        "anchors_drained_s": anchored_s,
        "settled_s": settled_s,
    }


# -- the run ---------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def examples_copy(folder: Path) -> Path:
    """examples/ with hpc-a's project credit and the members' collateral raised so that every job's hold fits;
    returns its consortium file."""
    copy = folder / "examples"
    shutil.copytree(EXAMPLES, copy)
    _raise(copy / CENTRE / "gateway.toml", "physics")
    _raise(copy / "consortium.toml", "initial_credit")
    return copy / "consortium.toml"


def _raise(path: Path, setting: str) -> None:
    text, n = re.subn(rf"(?m)^{setting} = [0-9_]+", f"{setting} = {ALLOCATION}", path.read_text())
    if n != 1:
        raise RuntimeError(f"{path}: no `{setting} = ...` to raise")
    path.write_text(text)


def measure(cfg: Config, say: Callable[[str], None] = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xcentre-faults-") as tmp:
        started = time.monotonic()
        consortium = RunningConsortium.up(examples_copy(Path(tmp)), Path(tmp) / "run")
        say(f"consortium up in {time.monotonic() - started:.0f} s (seed {cfg.seed})")
        try:
            kills, labels = kill_phase(consortium, cfg, say)
            chain = chain_phase(consortium, cfg, say)
            # epoch 1 (every job of the load) is settled now, if it could be: the home marks the holds of its
            # settled claims paid in its next rounds of housekeeping
            deadline = time.monotonic() + 60
            while "held" in hold_of_home(consortium, set(labels["all"])).values() and time.monotonic() < deadline:
                time.sleep(1.0)
            kills["holds_after_phase_2"] = holds_by_end(consortium, labels["all"])
            kills["interrupted_holds_after_phase_2"] = holds_by_end(consortium, labels["interrupted"])
        finally:
            with contextlib.suppress(Exception):
                consortium.resume_chain()
            consortium.down()
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "config": dataclasses.asdict(cfg),
        "kill": kills,
        "chain": chain,
    }


def results(report: dict[str, Any]) -> list[Result]:
    k, c = report["kill"], report["chain"]
    case = f"{k['jobs']} jobs, {k['kills']} kills, {k['clients']} clients"
    outage = f"chain {c['chain']} {c['outage_s']:.0f} s"

    def count(id: str, what: str, value: float, note: str = "") -> Result:
        return Result(id=f"faults.{id}", case=case, operation=what, value=value, unit="jobs", runs=k["jobs"], note=note)

    out = [
        count("kill.lost", "acknowledged jobs lost", k["lost"]),
        count(
            "kill.duplicated",
            "jobs duplicated",
            k["duplicated_rows"] + k["duplicated_answers"] + k["duplicated_records"],
            "two jobs for a key, two ids answered for a key, or two usage records for a job",
        ),
        count(
            "kill.in_flight",
            "submissions unanswered at a kill",
            k["submissions_at_kill"],
            json.dumps(k["submissions_at_kill_endings"]),
        ),
        count("kill.interrupted", "jobs interrupted by a kill", k["interrupted"], json.dumps(k["interrupted_endings"])),
        Result(
            id="faults.kill.submit_p50",
            case=case,
            operation="submission p50 (retries included)",
            value=k["submit_p50_ms"],
            runs=k["acknowledged"],
        ),
        Result(
            id="faults.kill.submit_p99",
            case=case,
            operation="submission p99 (retries included)",
            value=k["submit_p99_ms"],
            runs=k["acknowledged"],
        ),
        Result(
            id="faults.chain.close",
            case=outage,
            operation="slowest epoch close answer",
            value=c["close_max_ms"],
            note=", ".join(f"{n}: {v.get('status')}" for n, v in c["close"].items()),
        ),
        Result(
            id="faults.chain.get_p99",
            case=outage,
            operation="GET /v1/capacity p99 during",
            value=c["get_during_p99_ms"],
        ),
    ]
    for id, what, seconds in (
        ("chain.drained", "anchors on chain after return", c["anchors_drained_s"]),
        ("chain.settled", "epoch settled after return", c["settled_s"]),
    ):
        if seconds is not None:
            out.append(Result(id=f"faults.{id}", case=outage, operation=what, value=seconds, unit="s"))
    return out


def run(quick: bool = False) -> list[Result]:
    seed = random.randrange(2**32)
    cfg = Config(jobs=300, kills=2, outage=20.0, seed=seed) if quick else Config(seed=seed)
    return results(measure(cfg))


def table(report: dict[str, Any]) -> str:
    k, c = report["kill"], report["chain"]
    rows = [
        ["kill -9", "jobs / kills / client threads", f"{k['jobs']} / {k['kills']} / {k['clients']}"],
        ["kill -9", "seed", str(k["seed"])],
        ["kill -9", "acknowledged (given up)", f"{k['acknowledged']} ({k['given_up']})"],
        ["kill -9", "acknowledged jobs lost", str(k["lost"])],
        [
            "kill -9",
            "two jobs for one key / two ids answered / two usage records",
            f"{k['duplicated_rows']} / {k['duplicated_answers']} / {k['duplicated_records']}",
        ],
        ["kill -9", "submissions unanswered at a kill", str(k["submissions_at_kill"])],
        ["kill -9", "how they ended", _counts(k["submissions_at_kill_endings"])],
        [
            "kill -9",
            "interrupted (queued or running at a kill)",
            f"{k['interrupted']} {json.dumps(k['interrupted_at_kill'])}",
        ],
        ["kill -9", "how the interrupted ended", _counts(k["interrupted_endings"])],
        ["kill -9", "their holds at home right after the load", _counts(k["interrupted_holds"])],
        [
            "kill -9",
            "their holds once phase 2 is over (epoch settled?)",
            _counts(k["interrupted_holds_after_phase_2"]),
        ],
        ["kill -9", "every job's hold once phase 2 is over", _counts(k["holds_after_phase_2"])],
        ["kill -9", "every job's final state", _counts(k["final_statuses"])],
        ["kill -9", "retries (submissions retried)", f"{k['retries']} ({k['retried_submissions']})"],
        ["kill -9", "why retried", _counts(k["why_retried"])],
        [
            "kill -9",
            "submission p50 / p99 / max (first try to job id)",
            f"{k['submit_p50_ms']:.0f} / {k['submit_p99_ms']:.0f} / {k['submit_max_ms']:.0f} ms",
        ],
        ["kill -9", "jobs acknowledged per second (kills included)", f"{k['accepted_per_s']:.1f}"],
        ["kill -9", "gateway back after a kill (median)", f"{k['restart_s_median']:.1f} s"],
        ["chain", "outage", f"{c['chain']}, {c['outage_s']:.0f} s"],
        [
            "chain",
            "epoch close: status, answer time",
            ", ".join(f"{n}: {v.get('status')} in {v.get('seconds', 0):.2f} s" for n, v in c["close"].items()),
        ],
        [
            "chain",
            "GET /v1/capacity p50 / p99 before",
            f"{c['get_before_p50_ms']:.0f} / {c['get_before_p99_ms']:.0f} ms",
        ],
        [
            "chain",
            "GET /v1/capacity p50 / p99 / max during",
            (
                f"{c['get_during_p50_ms']:.0f} / {c['get_during_p99_ms']:.0f} / {c['get_during_max_ms']:.0f} ms "
                f"({c['get_during_count']} requests, failures {_counts(c['get_during_failures'])})"
            ),
        ],
        [
            "chain",
            "jobs accepted during the outage (given up)",
            (
                f"{c['jobs_accepted_during_outage']} ({c['jobs_given_up_during_outage']}), submission p50 / p99 "
                f"{c['submit_during_p50_ms']:.0f} / {c['submit_during_p99_ms']:.0f} ms"
            ),
        ],
        ["chain", f"epoch {c['epoch']}: every anchor on chain after the return", _seconds(c["anchors_drained_s"])],
        ["chain", f"epoch {c['epoch']}: settled after the return", _seconds(c["settled_s"])],
    ]
    return markdown_table(["phase", "what", "measured"], rows)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def _seconds(value: float | None) -> str:
    return "not within the wait" if value is None else f"{value:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs submitted in phase 1 (default 10,000)")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 of hpc-a's gateway during phase 1")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--seed", type=int, help="seed of the kills' moments (default: random, printed)")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the chain node is stopped")
    parser.add_argument("--chain", choices=("hang", "down"), default="hang", help="SIGSTOP anvil, or stop it")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON too")
    args = parser.parse_args()
    if args.jobs < 40 or args.kills < 0 or args.kills > args.jobs // 2:
        parser.error("at least 40 jobs, and at most one kill per two jobs")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    cfg = Config(
        jobs=args.jobs, kills=args.kills, clients=args.clients, seed=seed, outage=args.outage, chain=args.chain
    )
    report = measure(cfg, say=lambda line: print(line, flush=True))
    print(f"\n{args.jobs} jobs, {report['when']}\n")
    print(table(report))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
