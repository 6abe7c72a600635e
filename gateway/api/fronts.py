"""A gateway as several processes: fronts that accept job submissions, one back that runs jobs and serves the rest.

One process's Python runs on one core, and a submission costs it about 4 ms of CPU. With `[server] fronts = N`,
`xcentre gateway` is the back: it builds the node that keeps the books (index, outbox, epochs) and runs the
jobs, and serves the whole API on a unix socket in its data folder (`back.sock`: the folder is the gateway's
user's alone). It binds the public host and port once and hands the socket to N front processes, which all
accept on it: no other process binds the port beside them, and a port already taken stops the back at its
start. A front answers `POST /v1/jobs` itself (session, directory, policy, payment, then the job and its
decision committed to the shared `gateway.db`) and passes every other request to the back as it came, with
the client's address and scheme as its own server resolved them (`FromFront`; a client's copies are dropped).
The back takes the jobs fronts stored, queued, and runs them (`CentreNode.start(take_queued=...)`).

What the processes share is on disk: the store (SQLite in WAL mode: one writer at a time across processes; the
idempotency and order-digest unique indexes are checked inside the writing transaction, so a key or an order
is taken once whichever front it reaches), the index (written by the back only), the policy's rate limits
(`limits/`, gateway.node.ratelimit.SharedRateLimit) and the fronts' submission timings (`fronts/`, counted in
the back's GET /metrics). The back restarts a front that exits; a front exits when the back does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpcore
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.server import run_until_stopped, serve_options

log = logging.getLogger(__name__)

#: The back's socket and the fronts' timings, in the gateway's data folder.
BACK_SOCKET = "back.sock"
FRONT_TIMINGS = "fronts"
#: The environment variable that tells a front its back's pid.
BACK_PID = "XCENTRE_BACK_PID"
#: Seconds between the back's looks for jobs the fronts stored.
TAKE_QUEUED_EVERY = 0.1
#: Seconds the back waits before starting again a front that exited; doubled, up to MAX_RESTART_WAIT, for one
#: that exited within STAYED_UP seconds of its start (a front that cannot start is not started in a loop).
RESTART_AFTER = 1.0
MAX_RESTART_WAIT = 60.0
STAYED_UP = 10.0
#: The routes a front answers itself: the rest go to the back.
FRONT_ROUTES = frozenset({("POST", "/v1/jobs")})
#: Headers that belong to one connection, not to the request or answer passed on (RFC 9110, 7.6.1). A client's
#: Forwarded or X-Forwarded-* is dropped, never believed; the front's own server writes the answer's Date and Server.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: How a front tells its back what its own server resolved (from the connection, or a trusted proxy's
#: X-Forwarded-*): the client's port and address, and the scheme, taken by the back as they are (`FromFront`).
CLIENT_HEADER = b"xcentre-front-client"
SCHEME_HEADER = b"xcentre-front-scheme"
REQUEST_DROPPED = HOP_BY_HOP | {
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    CLIENT_HEADER,
    SCHEME_HEADER,
}
ANSWER_DROPPED = HOP_BY_HOP | {b"date", b"server"}
#: A unix socket's path is at most this many bytes (sun_path, less its terminating NUL).
MAX_SOCKET_PATH = 107
#: Seconds a front waits for its back: to connect, and for a write to its socket to go through (reads have no
#: limit: a job's long answer or a slow route is the back's to bound, as in one process).
BACK_TIMEOUTS = {"connect": 5.0, "read": None, "write": 60.0, "pool": None}
#: Seconds the back keeps an idle connection from a front open (uvicorn's default, set here: a front gives its
#: connections up sooner).
BACK_KEEP_ALIVE = 5


def back_socket(data_dir: Path) -> Path:
    """The back's socket in `data_dir`; ValueError if the path is too long for a unix socket."""
    path = data_dir / BACK_SOCKET
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the gateway's data folder {data_dir} is too deep for its back process's socket {path} "
            f"(at most {MAX_SOCKET_PATH} bytes); use a shorter data_dir or [server] fronts = 0"
        )
    return path


def fresh_timings(data_dir: Path) -> Path:
    """The fronts' timings folder, emptied: a back that starts counts from zero, its fronts' counts too."""
    folder = data_dir / FRONT_TIMINGS
    folder.mkdir(mode=0o700, exist_ok=True)
    for stale in folder.glob("front-*.json"):
        stale.unlink(missing_ok=True)
    return folder


class BackProxy:
    """An ASGI app passing each request to the back over its socket and its answer back, streamed.

    The request goes as it came: method, target as the client spelt it (httpcore sends it byte for byte: no
    dot segment resolved, nothing encoded again, so the back routes the path the front did), Host, headers and
    body; the answer's status and headers as the back gave them. What the front's server took from a trusted
    proxy or the connection goes along as X-Forwarded-For and X-Forwarded-Proto, and a request whose Host is
    missing or does not parse names the front's own address, so the back builds the URLs a gateway in one
    process would. Connections to
    the back are not capped: a slow reader holds one, as it would hold one of a gateway in one process."""

    def __init__(self, socket_path: Path, centre: str) -> None:
        self.centre = centre
        self._pool = httpcore.AsyncConnectionPool(
            uds=str(socket_path),
            max_connections=None,
            max_keepalive_connections=100,
            keepalive_expiry=BACK_KEEP_ALIVE - 2,  # given up before the back closes it, never while a request crosses
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (await self.forward(Request(scope, receive)))(scope, receive, send)

    async def aclose(self) -> None:
        """Close the connections to the back (the front's server is stopping)."""
        await self._pool.aclose()

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        target = request.scope.get("raw_path") or request.url.path.encode()
        if request.scope.get("query_string"):
            target += b"?" + request.scope["query_string"]
        outgoing = httpcore.Request(
            request.method,
            httpcore.URL(scheme=b"http", host=b"back", port=None, target=target),
            headers=_passed_headers(request, len(body)),
            content=body,
            extensions={"timeout": BACK_TIMEOUTS},
        )
        try:
            answer = await self._pool.handle_async_request(outgoing)
        except httpcore.LocalProtocolError as exc:
            log.info("a request not passed on to the back: %s", exc)
            return _error(400, "the request cannot be passed on as it stands: it is not valid HTTP/1.1")
        except httpcore.RemoteProtocolError as exc:
            log.warning("the back's answer could not be read: %s", exc)
            return _error(502, f"{self.centre}'s gateway could not read its back process's answer; try again shortly")
        except (httpcore.TimeoutException, httpcore.NetworkError) as exc:
            log.warning("the back is not answering: %s", exc)
            return _error(
                503,
                f"{self.centre}'s gateway cannot answer this now (its back process is not answering); "
                "try again shortly",
            )
        passed = StreamingResponse(
            answer.aiter_stream(), status_code=answer.status, background=BackgroundTask(answer.aclose)
        )
        passed.raw_headers = [(k.lower(), v) for k, v in answer.headers if k.lower() not in ANSWER_DROPPED]
        return passed


def _passed_headers(request: Request, length: int) -> list[tuple[bytes, bytes]]:
    """The client's headers less what is its connection's or a forwarding claim, the Host the front's own URLs
    are built from (the client's first, if it parses; else the front's address: the back, on its socket, would
    fall back to that socket's path) and the length of the body, read whole by now (so an Expect: 100-continue
    was answered already)."""
    own = (b"host", b"content-length", b"expect")
    headers = [(k, v) for k, v in request.headers.raw if k not in REQUEST_DROPPED and k not in own]
    headers.insert(0, (b"host", request.url.netloc.encode()))
    if request.client is not None:
        host, port = request.client
        headers.append((CLIENT_HEADER, f"{port} {host}".encode("latin-1")))  # as uvicorn decoded it
    headers.append((SCHEME_HEADER, request.url.scheme.encode("latin-1")))
    if length or request.method not in ("GET", "HEAD"):
        headers.append((b"content-length", str(length).encode()))
    return headers


class FromFront:
    """ASGI middleware of the back: the client and scheme its front resolved, taken as they are.

    Only the gateway's own processes reach the back's socket (in its 0700 data folder), and a front drops any
    copy a client sent. uvicorn's own proxy headers would parse the address a second time (`[a:1]:2` would lose
    a part, a byte over 0x7f its meaning), and the per-address limits of the back would count the client under
    another address than its front did."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == CLIENT_HEADER:
                    port, _, host = value.decode("latin-1").partition(" ")
                    scope["client"] = (host, int(port) if port.isdigit() else 0)
                elif name == SCHEME_HEADER:
                    scope["scheme"] = value.decode("latin-1")
        await self.app(scope, receive, send)


def _error(status: int, error: str) -> JSONResponse:
    retry = {"Retry-After": "1"} if status >= 500 else {}
    return JSONResponse({"error": error, "reasons": []}, status_code=status, headers=retry)


def front_app(app: FastAPI, proxy: BackProxy) -> FastAPI:
    """`app` (the node's, create_app) answering only FRONT_ROUTES itself and passing the rest to `proxy`.

    Its middleware (request limits, the submission timer) stays: a front refuses an oversized head or body as
    the back would, and times the submissions it answers."""
    app.router.routes = [
        r
        for r in app.router.routes
        if isinstance(r, APIRoute) and any((m, r.path) in FRONT_ROUTES for m in r.methods or ())
    ]
    app.openapi_url = app.docs_url = app.redoc_url = None  # served by the back, through the proxy
    app.router.routes.append(Route("/{path:path}", proxy))  # an ASGI endpoint: every method, as the back has them
    running = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(served: Any) -> AsyncIterator[Any]:
        async with running(served) as state:
            try:
                yield state
            finally:
                await proxy.aclose()

    app.router.lifespan_context = lifespan
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """The public port, bound once by the back and handed to its fronts, which all accept on it: no other process
    binds it beside them (no SO_REUSEPORT), and a port already taken stops the back at its start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def back_config(app: FastAPI, socket_path: Path, *, access_log: bool) -> uvicorn.Config:
    """How the back serves: on its socket, the client's address and scheme as its fronts resolved them
    (`FromFront`)."""
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # left by a back that was killed
    options = serve_options(access_log=access_log) | {"timeout_keep_alive": BACK_KEEP_ALIVE}
    return uvicorn.Config(FromFront(app), uds=str(socket_path), **options)


def serve_back(app: FastAPI, socket_path: Path, *, access_log: bool) -> None:
    """Serve `app` on the back's socket until SIGINT or SIGTERM."""
    run_until_stopped(back_config(app, socket_path, access_log=access_log))


class Fronts:
    """The back's front processes: started, started again when one exits, stopped with the back."""

    def __init__(self, config: Path, count: int, listening: socket.socket, *, log_format: str | None = None) -> None:
        self.listening = listening
        self.command = [sys.executable, "-m", "gateway.api.fronts", str(config), "--socket-fd", str(listening.fileno())]
        if log_format:
            self.command += ["--log-format", log_format]
        self.count = count
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="fronts", daemon=True)

    def __enter__(self) -> Fronts:
        self._processes = [self._start() for _ in range(self.count)]
        self._watcher.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._watcher.join(timeout=5)
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _start(self) -> subprocess.Popen[bytes]:
        environment = os.environ | {BACK_PID: str(os.getpid())}
        return subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, env=environment, pass_fds=(self.listening.fileno(),)
        )

    def _watch(self) -> None:
        """Start a front again once it exits; one that exits soon after its start waits longer each time."""
        started = [time.monotonic()] * self.count
        waits = [RESTART_AFTER] * self.count
        while not self._stopping.wait(RESTART_AFTER):
            for i, process in enumerate(self._processes):
                if process.poll() is None or self._stopping.is_set():
                    continue
                now = time.monotonic()
                waits[i] = min(2 * waits[i], MAX_RESTART_WAIT) if now - started[i] < STAYED_UP else RESTART_AFTER
                log.warning(
                    "front process %d exited (%s); starting another in %.0f s",
                    process.pid,
                    process.returncode,
                    waits[i],
                )
                if self._stopping.wait(waits[i]):
                    return
                try:
                    self._processes[i], started[i] = self._start(), time.monotonic()
                except OSError as exc:  # no process could be made now (a limit, the interpreter being replaced)
                    log.warning("front process not started: %s; trying again", exc)


def raise_open_files() -> None:
    """A front holds two descriptors for each request it passes on (its client's connection and one to its back)
    where a gateway in one process holds one: its soft limit on open files goes up to the hard one, so that it
    does not run out first (the back and a gateway alone keep theirs)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit is more than the kernel takes
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))


def _die_with_parent() -> None:
    """Linux: SIGTERM this front when the back that started it dies (even by kill -9), so no front outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    back = os.environ.get(BACK_PID)
    if back is not None and os.getppid() != int(back):  # it died before prctl took effect
        raise SystemExit(f"the gateway's back process {back} is gone")


def main(argv: Sequence[str] | None = None) -> int:
    """One front process: the node's submission path on the shared port; the rest through the back."""
    from gateway.api.app import create_app
    from gateway.node.assemble import node_from_config
    from gateway.node.config import load_config
    from gateway.node.logs import configure as configure_logs

    parser = argparse.ArgumentParser(prog="python -m gateway.api.fronts", description=main.__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--socket-fd", type=int, required=True, help="the public port's socket, from the back")
    parser.add_argument("--log-format", choices=("text", "json"))
    args = parser.parse_args(argv)
    _die_with_parent()
    raise_open_files()
    config = load_config(args.config)
    configure_logs(args.log_format or config.log_format, centre=config.centre)
    node = node_from_config(config, process="front")
    node.start_front()
    try:
        app = create_app(node, threads=config.server_threads, front_timings=config.data_dir / FRONT_TIMINGS, front=True)
        front_app(app, BackProxy(back_socket(config.data_dir), config.centre))
        run_until_stopped(
            uvicorn.Config(app, **serve_options(access_log=config.access_log, trusted_proxies=config.trusted_proxies)),
            sockets=[socket.socket(fileno=args.socket_fd)],
        )
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
