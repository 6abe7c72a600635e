"""Where a submission's time goes inside one gateway process: stage timers and a cProfile of every thread.

Used by `submit_server.py` only, switched on and off while the gateway serves
(`POST /_bench/stages/on`, `.../off`, `GET /_bench/stages`), so the throughput
runs of `bench_submit.py` measure the gateway without them. Nothing here changes
what the gateway does: each stage is the same call, wrapped in a wall-clock
timer on the node's own instances (the store's connection and lock, the
executor pool, the directory, the decision desk) or on the module attributes
the node calls through (`verify_token`, `orders.check_payment`,
`decisions.new_entry`, `PolicyEngine.request` / `decide_request`). Stages nest
(a stage's time includes the stages listed under it); the whole request is
timed by a pass-through ASGI wrapper, from the first byte handed to the app to
the last byte of the answer.

The cProfile part profiles the event loop's thread (HTTP parsing, routing,
validation and serialisation of bodies) with one profiler, and the work FastAPI
hands to its thread pool (the session dependency and the route: the node) with
one profiler per worker thread (cProfile follows one thread only); both are
merged into one `pstats` file. Both count each thread's CPU time
(`time.thread_time`), not wall time: with 32 requests in flight a wall-clock
profile bills every wait for the GIL to whatever function was waiting.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread

import auth.policy
import gateway.node.centre as centre_module
import ledger.decisions
from gateway.node import orders


class Stages:
    """Wall time and calls per stage, from every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[str, list[float]] = {}
        self.on = False

    def add(self, name: str, seconds: float, cpu: float = 0.0) -> None:
        """Count one call of a stage: its wall time and the CPU time of the calling thread."""
        if not self.on:
            return
        with self._lock:
            entry = self.totals.setdefault(name, [0.0, 0.0, 0])
            entry[0] += seconds
            entry[1] += cpu
            entry[2] += 1

    def snapshot(self, reset: bool = False) -> dict[str, dict[str, float]]:
        with self._lock:
            out = {name: {"seconds": s, "cpu": c, "calls": int(n)} for name, (s, c, n) in self.totals.items()}
            if reset:
                self.totals.clear()
        return out

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start, time.thread_time() - cpu)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start, time.thread_time() - cpu)

        return timed


class TimedLock:
    """The store's write lock (`ledger.group_commit.WriteLock`), with the time spent waiting for it counted
    (outermost acquire only)."""

    def __init__(self, lock: Any, stages: Stages, name: str) -> None:
        self._inner, self._stages, self._name = lock, stages, name

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        held = self._inner.held()
        start = time.perf_counter()
        got = bool(self._inner.acquire(*args, **kwargs))
        if not held:
            self._stages.add(self._name, time.perf_counter() - start)
        return got

    def release(self) -> None:
        self._inner.release()

    def held(self) -> bool:
        return bool(self._inner.held())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class TimedConnection:
    """The store's SQLite connection, with COMMIT (the write and its fsyncs) and BEGIN IMMEDIATE counted."""

    def __init__(self, db: Any, stages: Stages, prefix: str) -> None:
        self._db, self._stages, self._prefix = db, stages, prefix

    def execute(self, sql: str, *args: Any) -> Any:
        word = sql.lstrip()[:6].upper()
        if word in ("COMMIT", "BEGIN "):
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return self._db.execute(sql, *args)
            finally:
                self._stages.add(
                    f"{self._prefix} {word.strip()}", time.perf_counter() - start, time.thread_time() - cpu
                )
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class TimedPool:
    """The node's job pool: the hand-off of an accepted job to the executor's queue."""

    def __init__(self, pool: Any, stages: Stages) -> None:
        self._pool, self._stages = pool, stages

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        with self._stages.timing("executor queue hand-off (pool.submit)"):
            return self._pool.submit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class RequestTimer:
    """A pass-through ASGI app timing each POST /v1/jobs as the server sees it (first call to last byte sent)."""

    def __init__(self, app: Any, stages: Stages) -> None:
        self.app, self.stages = app, stages

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not (self.stages.on and scope.get("type") == "http" and scope.get("path") == "/v1/jobs"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:  # its CPU time is on several threads: only the wall time is counted
            self.stages.add("whole request in the server (ASGI app)", time.perf_counter() - start)


class Instrumented:
    """Install and remove the stage timers on one running node (instance attributes and module attributes)."""

    def __init__(self, node: Any, stages: Stages) -> None:
        self.node, self.stages = node, stages
        self._undo: list[Callable[[], None]] = []

    def _set(self, owner: Any, attr: str, value: Any) -> None:
        had = attr in vars(owner) if not isinstance(owner, type) else attr in owner.__dict__
        old = getattr(owner, attr) if had else None
        setattr(owner, attr, value)
        self._undo.append(lambda: setattr(owner, attr, old) if had else delattr(owner, attr))

    def _wrap(self, owner: Any, attr: str, name: str) -> None:
        self._set(owner, attr, self.stages.wrap(name, getattr(owner, attr)))

    def install(self) -> None:
        if self._undo:
            return
        node, parts, s = self.node, self.node.parts, self.stages
        store = parts.store
        self._wrap(node, "authenticate", "session token check (node.authenticate)")
        self._wrap(centre_module, "verify_token", "  token signature and claims (verify_token)")
        self._wrap(parts.signon, "is_revoked", "  home's revocation check (signon.is_revoked)")
        self._wrap(node, "submit", "node.submit (everything after the session)")
        self._wrap(store, "job_by_key", "  idempotency lookup (store.job_by_key)")
        self._wrap(parts.directory, "groups_of", "  LDAP groups of the user (directory.groups_of)")
        self._wrap(parts.decisions, "evaluate", "  policy decision (DecisionDesk.evaluate)")
        self._wrap(auth.policy.PolicyEngine, "request", "    Cedar request built (PolicyEngine.request)")
        self._wrap(auth.policy.PolicyEngine, "decide_request", "    Cedar evaluation (cedarpy)")
        self._wrap(ledger.decisions, "new_entry", "    decision-log entry made (digest, no signature)")
        self._wrap(node, "_rates_in_force", "  rates in force (index)")
        self._wrap(orders, "check_payment", "  order and grant checked (orders.check_payment)")
        self._wrap(store, "create_job", "  job + decision stored (store.create_job: its savepoint, its group's COMMIT)")
        writer = store._writer  # group commit: its lock and connection are every write's
        self._set(writer, "lock", TimedLock(writer.lock, s, "    waiting for the store's write lock"))
        self._set(writer, "db", TimedConnection(writer.db, s, "    SQLite"))
        self._set(node, "_pool", TimedPool(node._pool, s))
        self._wrap(node, "_view", "  answer built (node._view, reads the decision id back)")
        s.on = True

    def remove(self) -> None:
        self.stages.on = False
        while self._undo:
            self._undo.pop()()


class ThreadProfiles:
    """cProfile of the event loop's thread and of every worker thread FastAPI runs sync code on."""

    def __init__(self) -> None:
        self.loop = cProfile.Profile(time.thread_time)
        self._local = threading.local()
        self._workers: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._original = anyio.to_thread.run_sync
        self.on = False

    def _worker_profile(self) -> cProfile.Profile:
        profile = getattr(self._local, "profile", None)
        if profile is None:
            profile = self._local.profile = cProfile.Profile(time.thread_time)
            with self._lock:
                self._workers.append(profile)
        return profile

    def start(self) -> None:
        """Call from the event loop's thread (an async route)."""
        if self.on:
            return
        original, outer = self._original, self

        async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            def profiled(*a: Any) -> Any:
                profile = outer._worker_profile()
                profile.enable()
                try:
                    return func(*a)
                finally:
                    profile.disable()

            return await original(profiled, *args, **kwargs)

        anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]
        self.on = True
        self.loop.enable()

    def stop(self, path: Path) -> None:
        """Call from the event loop's thread; writes the merged statistics to `path`."""
        if not self.on:
            return
        self.loop.disable()
        anyio.to_thread.run_sync = self._original  # type: ignore[assignment]
        self.on = False
        stats = pstats.Stats(self.loop)
        with self._lock:
            for profile in self._workers:
                try:
                    stats.add(profile)
                except TypeError:  # a profile that never ran anything
                    pass
        stats.dump_stats(str(path))
