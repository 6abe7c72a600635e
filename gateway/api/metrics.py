"""What an operator's monitoring reads: Prometheus metrics (GET /metrics) and a health answer (GET /v1/health).

Both are read from what the node keeps locally (its store, outbox and event index), never
from the chain or the directory, so they answer while either is down, and say so. The one
figure measured on the request path is the time of each job submission, taken by a plain
ASGI wrapper around the two submission routes (nothing else is timed).

Metrics, all prefixed `xcentre_`:
    jobs{state}                      jobs in the store, by state (counted at most once a second)
    submission_seconds{status}       histogram of job submissions, by HTTP status answered
    outbox_pending{kind}             chain writes waiting in the outbox, by kind
    index_block                      the last block in the event index
    index_lag_blocks                 blocks behind the chain's head when last reached
    chain_reachable                  1 when the last sync reached the chain node, else 0
    epoch_open, epoch_last_anchored, epoch_last_settled   where the books stand (0: none yet)

In a multi-process gateway the submissions reach "front" processes while GET /metrics is answered by
the "back". Each front installs its timer with `install_front_timer` and dumps its cumulative histogram
about once a second (and at exit) to `front-<pid>.json` in a directory of the gateway's own, replaced
atomically; the back, given that directory (`install_metrics(..., front_timings=...)`), exports
submission_seconds as its own histogram plus every front's last dump, bucket by bucket: the same single
family a one-process gateway shows. A dump that cannot be read is skipped with a warning, never failing
the scrape; dumps of fronts that exited stay counted, so the sums never go back while the gateway runs.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.api.errors import responses
from gateway.node.centre import CentreNode
from ledger.chain import ChainUnavailable, NoGasMoney
from ledger.index.sync import IndexMismatch

#: Every state a job can be in (gateway/store/schema.py), each shown even at 0.
JOB_STATES = ("queued", "running", "succeeded", "failed", "timed_out", "denied")
#: The routes whose time is the submission latency.
SUBMISSIONS = frozenset({"/v1/jobs", "/v1/anonymous/jobs"})
#: Seconds; from a group-committed submission (ms) to one held up by a slow peer or disk.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The histogram's `le` labels, as prometheus_client writes them: BUCKETS, then +Inf.
LE = (*(floatToGoString(bound) for bound in BUCKETS), "+Inf")
SUBMISSION_SECONDS = "xcentre_submission_seconds"
SUBMISSION_HELP = "Time to answer a job submission (POST /v1/jobs, /v1/anonymous/jobs), by HTTP status."
#: The version of a front's dump; a file of another version is skipped, not guessed at.
FRONT_DUMP_VERSION = 1

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: Seconds a count of the jobs by state is reused for: it scans every job under the store's lock, and
#: GET /metrics is public (as CAPACITY_FRESH_FOR is for GET /v1/capacity).
JOB_COUNTS_FRESH_FOR = 1.0


class NodeCollector(Collector):
    """Reads the node's local state at each scrape (a few indexed COUNTs, no chain read); the job counts, which
    grow with every job ever run, at most once per JOB_COUNTS_FRESH_FOR seconds."""

    def __init__(self, node: CentreNode) -> None:
        self.node = node
        self._counted: tuple[float, dict[str, int]] | None = None
        self._counting = threading.Lock()

    def _job_counts(self) -> dict[str, int]:
        with self._counting:  # one count at a time: scrapes that wait for it reuse it
            if self._counted is None or time.monotonic() - self._counted[0] >= JOB_COUNTS_FRESH_FOR:
                counts = self.node.parts.store.jobs_by_status()
                self._counted = (time.monotonic(), counts)  # fresh from when it ends: a slow count is reused too
            return self._counted[1]

    def collect(self) -> Iterator[Metric]:
        parts = self.node.parts
        jobs = GaugeMetricFamily("xcentre_jobs", "Jobs in this centre's store, by state.", labels=["state"])
        counts = self._job_counts()
        for state in (*JOB_STATES, *sorted(set(counts) - set(JOB_STATES))):
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs

        outbox = GaugeMetricFamily(
            "xcentre_outbox_pending", "Chain writes waiting in the outbox, by kind.", labels=["kind"]
        )
        for kind, count in sorted(parts.epochs.outbox.depth().items()):
            outbox.add_metric([kind], count)
        yield outbox

        index = parts.index
        yield GaugeMetricFamily("xcentre_index_block", "The last block in the event index.", value=index.last_block)
        lag = index.lag
        yield GaugeMetricFamily(
            "xcentre_index_lag_blocks",
            "Blocks the event index is behind the chain's head as last seen (0 before the node was reached).",
            value=0 if lag is None else lag,
        )
        yield GaugeMetricFamily(
            "xcentre_chain_reachable",
            "1 when the last sync reached the chain node, else 0.",
            value=int(bool(index.reachable)),
        )

        books = parts.epochs.state()
        yield GaugeMetricFamily("xcentre_epoch_open", "The epoch open at this centre.", value=books.open)
        yield GaugeMetricFamily(
            "xcentre_epoch_last_anchored",
            "The last epoch this centre's anchor is on chain for (0: none).",
            value=books.last_anchored,
        )
        yield GaugeMetricFamily(
            "xcentre_epoch_last_settled",
            "The last epoch settled on chain that this centre closed (0: none).",
            value=books.last_settled,
        )


class SubmissionTimer:
    """ASGI wrapper timing the submission routes from request to the response's start."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in SUBMISSIONS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.histogram.labels(str(status)).observe(time.perf_counter() - started)


def _submission_histogram(registry: CollectorRegistry | None) -> Histogram:
    """xcentre_submission_seconds{status}, in `registry` (None: in none, for a front or the merging collector)."""
    return Histogram(SUBMISSION_SECONDS, SUBMISSION_HELP, labelnames=["status"], buckets=BUCKETS, registry=registry)


def _require_directory(directory: Path) -> None:
    """The fronts' directory is the launcher's to make: a missing one is a configuration error, said at start."""
    if not directory.is_dir():
        raise ValueError(f"front timings directory {directory} is not an existing directory")


@dataclass(frozen=True)
class Series:
    """One status's histogram: cumulative counts per `le` of LE (the last is the count), and the seconds summed."""

    counts: tuple[float, ...]
    sum: float

    def __add__(self, other: Series) -> Series:
        return Series(tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)), self.sum + other.sum)


def _added(one: Mapping[str, Series], other: Mapping[str, Series]) -> dict[str, Series]:
    """Two histograms' series summed status by status (a status in one only is kept as it is)."""
    total = dict(one)
    for status, series in other.items():
        total[status] = total[status] + series if status in total else series
    return total


def histogram_series(histogram: Histogram) -> dict[str, Series]:
    """What `histogram` holds now, by status; read through collect(), so safe while requests observe it."""
    counts: dict[str, list[float]] = {}
    sums: dict[str, float] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            status = sample.labels["status"]
            if sample.name.endswith("_bucket"):
                counts.setdefault(status, []).append(sample.value)
            elif sample.name.endswith("_sum"):
                sums[status] = sample.value
    return {status: Series(tuple(values), sums[status]) for status, values in counts.items()}


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} is {value!r}, not a finite number >= 0")
    return float(value)


def _series(status: object, entry: object) -> Series:
    """One status of a dump, checked whole: cumulative counts that never fall, their last equal to the count."""
    if not isinstance(status, str) or not isinstance(entry, dict):
        raise ValueError(f"status {status!r} is not a label with an object")
    raw = entry.get("buckets")
    if not isinstance(raw, list) or len(raw) != len(LE):
        raise ValueError(f"status {status}: buckets is not a list of {len(LE)} counts")
    counts = tuple(_number(value, f"status {status} bucket") for value in raw)
    if any(later < earlier for earlier, later in itertools.pairwise(counts)):
        raise ValueError(f"status {status}: bucket counts are not cumulative")
    if _number(entry.get("count"), f"status {status} count") != counts[-1]:
        raise ValueError(f"status {status}: count is not the +Inf bucket")
    return Series(counts, _number(entry.get("sum"), f"status {status} sum"))


def read_front_dump(path: Path) -> dict[str, Series]:
    """A front's dump, by status; ValueError naming the file for anything but a whole dump with these BUCKETS."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable front timings ({error})") from error
    if not isinstance(data, dict) or data.get("version") != FRONT_DUMP_VERSION:
        raise ValueError(f"{path}: not a version {FRONT_DUMP_VERSION} front timings dump")
    if data.get("buckets") != list(BUCKETS):
        raise ValueError(f"{path}: buckets {data.get('buckets')!r} are not this gateway's {list(BUCKETS)}")
    series = data.get("series")
    if not isinstance(series, dict):
        raise ValueError(f"{path}: series is not an object")
    try:
        return {status: _series(status, entry) for status, entry in series.items()}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


class FrontTimings:
    """A front process's submission histogram and its dump, `front-<pid>.json`, which the back adds to its own.

    Make it in the front process itself (the pid names the file). If that file is already there, left by an
    exited front whose pid this one reuses, its counts are carried on, so the back's sums never go back.
    """

    def __init__(self, directory: Path) -> None:
        _require_directory(directory)
        self.directory = directory
        self.path = directory / f"front-{os.getpid()}.json"
        self.histogram = _submission_histogram(None)
        self._carried: dict[str, Series] = {}
        if self.path.exists():
            try:
                self._carried = read_front_dump(self.path)
            except ValueError as error:
                log.warning("front timings not carried on: %s", error)
        self._dumping = threading.Lock()
        self._stop = threading.Event()
        self._dumper: threading.Thread | None = None

    def dump(self) -> Path:
        """Write the cumulative histogram to `path` whole: a temp file (0600, not front-*.json), then os.replace."""
        with self._dumping:  # one at a time: an older snapshot never replaces a newer one
            total = _added(self._carried, histogram_series(self.histogram))
            data = {
                "version": FRONT_DUMP_VERSION,
                "pid": os.getpid(),
                "buckets": list(BUCKETS),
                "series": {
                    status: {"buckets": list(series.counts), "sum": series.sum, "count": series.counts[-1]}
                    for status, series in sorted(total.items())
                },
            }
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(data, out)
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        return self.path

    def start(self, interval: float = 1.0) -> None:
        """Dump every `interval` seconds from a daemon thread until close(): the back's view lags by that much."""
        if not 0 < interval < math.inf:
            raise ValueError(f"dump interval must be a number of seconds > 0, not {interval!r}")
        if self._dumper is not None or self._stop.is_set():
            raise RuntimeError("front timings already started or closed")
        self._dumper = threading.Thread(target=self._dump_every, args=(interval,), name="front-timings", daemon=True)
        self._dumper.start()

    def _dump_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.dump()
            except OSError:  # a full or read-only disk: the next dump may succeed, the front keeps serving
                log.warning("front timings not dumped to %s", self.path, exc_info=True)

    def close(self) -> None:
        """Stop the dumps and write the last one, so what this front timed stays counted after it exits."""
        self._stop.set()
        if self._dumper is not None:
            self._dumper.join()
        self.dump()


def install_front_timer(app: FastAPI, directory: Path) -> FrontTimings:
    """Time `app`'s submissions into a FrontTimings dumping to `directory`; the front calls start() and close()."""
    timings = FrontTimings(directory)
    app.add_middleware(SubmissionTimer, histogram=timings.histogram)
    return timings


class SubmissionsWithFronts(Collector):
    """xcentre_submission_seconds as the back's own histogram plus every front's last dump, as one family."""

    def __init__(self, histogram: Histogram, directory: Path) -> None:
        self.histogram = histogram
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        total = histogram_series(self.histogram)
        for path in sorted(self.directory.glob("front-*.json")):
            try:
                total = _added(total, read_front_dump(path))
            except ValueError as error:  # a stray or damaged file costs its counts, never the scrape
                log.warning("front timings skipped: %s", error)
        family = HistogramMetricFamily(SUBMISSION_SECONDS, SUBMISSION_HELP, labels=["status"])
        for status, series in sorted(total.items()):
            family.add_metric([status], list(zip(LE, series.counts, strict=True)), series.sum)
        yield family


def health(node: CentreNode) -> dict[str, Any]:
    """The node's own view of itself: always answered (200), from local state only.

    Degraded while its books cannot reach the chain, `error` saying why in a fixed word (the details, which
    may name the node's URL, are in the gateway's log only): the node does not answer (`unreachable`), it
    answers with a history that lacks blocks the index holds (`history-mismatch`), the index failed otherwise
    (`sync-failed`), or the centre's account cannot pay for the gas of a write it must send (`no-gas-money`)."""
    parts = node.parts
    index = parts.index
    outbox = parts.epochs.outbox
    error = _sync_problem(index.last_error, index.reachable)
    if error is None and outbox.pending_failing_with(NoGasMoney):
        error = "no-gas-money"
    return {
        "centre": node.name,
        "status": "ok" if error is None else "degraded",
        "chain": {
            "reachable": index.reachable,
            "indexed_block": index.last_block,
            "head_seen": index.head_seen,
            "lag_blocks": index.lag,
            "error": error,
        },
        "open_epoch": parts.store.open_epoch(),
        "outbox_pending": sum(outbox.depth().values()),
    }


def _sync_problem(error: BaseException | None, reachable: bool | None) -> str | None:
    if isinstance(error, IndexMismatch):
        return "history-mismatch"
    if isinstance(error, ChainUnavailable) or reachable is False:
        return "unreachable"
    return None if error is None else "sync-failed"


def install_metrics(app: FastAPI, node: CentreNode, front_timings: Path | None = None) -> CollectorRegistry:
    """GET /metrics and GET /v1/health on `app`, and the submission timer; one registry per app.

    With `front_timings` (the directory the fronts dump to), submission_seconds adds in the fronts' timings.
    """
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    if front_timings is None:
        histogram = _submission_histogram(registry)
    else:
        _require_directory(front_timings)
        histogram = _submission_histogram(None)
        registry.register(SubmissionsWithFronts(histogram, front_timings))
    app.add_middleware(SubmissionTimer, histogram=histogram)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,  # error bodies stay JSON in the OpenAPI; the 200 is Prometheus's text
        responses=responses() | {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics() -> PlainTextResponse:
        """Prometheus text format: jobs by state, submission latency, outbox depth, index lag, epoch state."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/health", tags=["operations"], responses=responses())
    def health_route() -> dict[str, Any]:
        """Whether this node serves, and how its chain looks from here (needs neither chain nor directory)."""
        return health(node)

    return registry
