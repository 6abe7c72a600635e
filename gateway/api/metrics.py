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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.api.errors import responses
from gateway.node.centre import CentreNode

#: Every state a job can be in (gateway/store/schema.py), each shown even at 0.
JOB_STATES = ("queued", "running", "succeeded", "failed", "timed_out", "denied")
#: The routes whose time is the submission latency.
SUBMISSIONS = frozenset({"/v1/jobs", "/v1/anonymous/jobs"})
#: Seconds; from a group-committed submission (ms) to one held up by a slow peer or disk.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

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


def health(node: CentreNode) -> dict[str, Any]:
    """The node's own view of itself: always answered (200), from local state only."""
    parts = node.parts
    index = parts.index
    return {
        "centre": node.name,
        "status": "ok" if index.reachable is not False else "degraded",
        "chain": {
            "reachable": index.reachable,
            "indexed_block": index.last_block,
            "head_seen": index.head_seen,
            "lag_blocks": index.lag,
        },
        "open_epoch": parts.store.open_epoch(),
        "outbox_pending": sum(parts.epochs.outbox.depth().values()),
    }


def install_metrics(app: FastAPI, node: CentreNode) -> CollectorRegistry:
    """GET /metrics and GET /v1/health on `app`, and the submission timer; one registry per app."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    histogram = Histogram(
        "xcentre_submission_seconds",
        "Time to answer a job submission (POST /v1/jobs, /v1/anonymous/jobs), by HTTP status.",
        labelnames=["status"],
        buckets=BUCKETS,
        registry=registry,
    )
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
