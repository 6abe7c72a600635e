"""Serving a gateway app with uvicorn, in the foreground or on a background thread.

uvicorn runs on uvloop with httptools' HTTP parser (both come with `uvicorn[standard]`; its
"auto" choice picks them) and writes an access log line per request only when asked (`serve_options`).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.main import STARTUP_FAILURE


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (loopback only)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """A uvicorn server on its own thread: the demo and the tests run whole centres this way."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"gateway:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"gateway on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class _Stopped(Exception):
    """Raised by our stop-signal handler to leave uvicorn.run() like a normal return."""


def _stop(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def serve_options(*, access_log: bool = True, trusted_proxies: Sequence[str] = ()) -> dict[str, Any]:
    """How `serve` runs uvicorn: its "auto" loop and parser (uvloop and httptools when installed, as they are with
    uvicorn[standard]), its lines through the handler gateway.node.logs installed (log_config=None), and one
    access log line per request only with `access_log` (formatting and writing it costs the event loop's
    thread CPU on every request).

    A client's X-Forwarded-For is believed only from `trusted_proxies` (addresses or networks: the centre's
    reverse proxies), never by default: uvicorn's own default believes any client on 127.0.0.1, which on a
    login node is every local user, each then choosing the address the per-address limits count it by."""
    options = {"log_level": "info", "log_config": None, "access_log": access_log, "loop": "auto", "http": "auto"}
    return options | {"proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies) or None}


def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    log_format: str = "text",
    access_log: bool = True,
    trusted_proxies: Sequence[str] = (),
) -> None:
    """Run in the foreground until SIGINT or SIGTERM, then return so the caller can stop its node.

    In either `log_format` uvicorn's lines go through the handler gateway.node.logs installed (its own config is
    off), so they too leave out a URL's credentials. `access_log` False leaves out the line per request.
    """
    del log_format  # the caller's gateway.node.logs.configure chose it
    options = serve_options(access_log=access_log, trusted_proxies=trusted_proxies)
    run_until_stopped(uvicorn.Config(app, host=host, port=port, **options))


def run_until_stopped(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then return.

    uvicorn shuts down gracefully on these signals and then re-raises the signal
    at the handler that was installed before it started; with the default
    SIGTERM handler that kills the process on the spot, so the caller's cleanup
    (finishing jobs, stopping the chain follower) would never run.
    """
    server = uvicorn.Server(config)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=sockets)
    except _Stopped:
        return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:  # it could not bind (uvicorn logged why): exit as uvicorn.run would
        raise SystemExit(STARTUP_FAILURE)
