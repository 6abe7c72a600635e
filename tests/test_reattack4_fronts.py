"""A fourth attack on the fronts' pass-through (gateway.api.fronts: BackProxy, _passed_headers) and the head limit
(gateway.api.limits, 431): each test failed then, and holds since a front tells its back the client and scheme as
its own server resolved them (FromFront, never parsed again) and raises its open-files limit to the hard one.

The point of comparison is a one-process gateway of the same app: whatever a client sends, a front and its back
should answer as that app served alone would, and a front should never answer that its back failed (502/503) for
something a client did. Set-up as tests/test_reattack3_fronts_proxy.py: the back served as back_config serves it
(uvicorn on the unix socket, FromFront), a front as front_app + BackProxy with serve_options
and a trusted proxy network (127.0.0.0/8: these test clients are the centre's reverse proxy), and the same back app
served alone with the same options; real servers, spoken to over TCP with hand-written requests.

Tried (or, marked *, checked in the code) and found to hold: heads at the limit* through a front vs alone with
headers the front drops (Connection, Keep-Alive, TE, Transfer-Encoding, Expect, X-Forwarded-*) or replaces (an invalid
or empty Host by the front's address, a chunked body by Content-Length), duplicate and empty headers, obs-fold (400 on
both), a non-ASCII Host (does not parse: the front's address, as alone), HTTP/1.0 with keep-alive and without Host,
HEAD and OPTIONS, the pool's* 3 s expiry against the back's 5 s keep-alive (httpcore also drops an idle connection
the back closed).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from gateway.api.fronts import back_config, back_socket
from tests.fixtures.fronts import FrontAndAlone, front_and_alone, passed_app, serving

TRUSTED = ("127.0.0.0/8",)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontAndAlone]:
    folder = tmp_path_factory.mktemp("rq4")
    with front_and_alone(folder, passed_app, limits=True, trusted_proxies=TRUSTED) as running:
        yield running


def answer(conn: socket.socket) -> tuple[int, bytes]:
    """The status and body of the answer on `conn`, read to its close; (0, b"") for none (closed or reset)."""
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except OSError:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split(b" ", 2)[1]) if head else 0), body


def raw(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        return answer(conn)


def request(target: str, *extra: bytes, host: bytes = b"gw.example.org") -> bytes:
    lines = [b"GET " + target.encode() + b" HTTP/1.1", b"Host: " + host, b"Connection: close", *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_forwarded_address_outside_ascii_does_not_double_the_head_the_back_counts(gateway: FrontAndAlone) -> None:
    """uvicorn decodes X-Forwarded-For as latin-1 and a front passes `request.client.host.encode()` (UTF-8) on: each
    byte 0x80-0xFF of the address its trusted proxy forwarded becomes two. A head of 40 kB, well under 64 KiB, that a
    one-process gateway serves (200) reaches the back as 80 kB, over the back's 64 KiB + 1 KiB (PASSED_ON_SLACK), and
    the front hands on the back's 431 "at most 66560 bytes", a limit no one-process gateway states: a request
    alone serves is refused behind fronts, whatever the slack."""
    forwarded = request("/v1/members", b"X-Forwarded-For: " + b"\xff" * 40_000)
    alone = raw(gateway.alone_port, forwarded)
    front = raw(gateway.front_port, forwarded)
    assert alone[0] == 200
    assert front == alone, front[1][:300]


@pytest.mark.parametrize("forwarded", [b"\xe9t\xe9", b"[1.2.3.4:5]", b"[a:1]:2"])
def test_the_back_takes_the_client_address_a_one_process_gateway_takes(
    gateway: FrontAndAlone, forwarded: bytes
) -> None:
    """The client's address a front passes to its back is not the one the front (and a one-process gateway) took
    from its trusted proxy's X-Forwarded-For: non-ASCII bytes are re-encoded (latin-1 read, UTF-8 written: "été"
    becomes "Ã©tÃ©"), and the back, believing any X-Forwarded-For, parses the front's value as host:port once
    more ("[1.2.3.4:5]" is "1.2.3.4:5" to the front and alone, "1.2.3.4" to the back; "[a:1]:2" is "a:1", then
    "a"). The address is what the per-address limits count a client's pseudonymous decisions by
    (gateway.api.app._address, policies' client_limit shared by all processes): the front's submissions and the
    back's quotes and grants of one client are then counted under two addresses, not one as in one process."""
    ask = request("/client", b"X-Forwarded-For: " + forwarded)
    alone = raw(gateway.alone_port, ask)
    front = raw(gateway.front_port, ask)
    assert alone[0] == 200
    assert front == alone


#: A front or a one-process gateway in a process of its own, with a soft limit on open files (the hard one unchanged).
SERVER = r"""
import asyncio, resource, sys
from pathlib import Path
import uvicorn
from fastapi import FastAPI
from gateway.api.fronts import BackProxy, front_app, listening_socket, raise_open_files
from gateway.api.server import serve_options
sys.path.insert(0, sys.argv[5])
from tests.test_reattack4_fronts import slow_app

mode, soft, flag, back = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
if mode == "front":
    raise_open_files()  # as a front's main() does
app = front_app(FastAPI(), BackProxy(back, "hpc-a")) if mode == "front" else slow_app(flag)
sock = listening_socket("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, **serve_options(access_log=False))).run(sockets=[sock])
"""


def slow_app(flag: Path, waiting: list[int] | None = None) -> FastAPI:
    """An app whose GET /slow answers once `flag` exists (a slow route, or a slow reader of a long answer)."""
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict:
        if waiting is not None:
            waiting.append(1)
        while not flag.exists():  # noqa: ASYNC110, ASYNC240 - a file: the flag is seen by other processes too
            await asyncio.sleep(0.02)
        return {"slow": True}

    @app.get("/v1/members")
    async def members() -> dict:
        return {"members": []}

    return app


def test_concurrent_slow_requests_do_not_make_a_front_report_its_back_down(tmp_path: Path) -> None:
    """Each request a front passes on holds two descriptors (the client's connection and one to the back: the pool
    is not capped) where a one-process gateway holds one, and a front keeps the soft RLIMIT_NOFILE it inherited
    (often 1024). With the same limit (here 100) and 50 slow requests pending, the gateway alone (64 open files)
    serves another request and all 50; the front runs out of descriptors: connecting to its back fails with EMFILE
    and it answers 503 "its back process is not answering; try again shortly" for a back that is well, and drops
    other clients' connections unanswered. Any client holding a few hundred slow requests (a slow route, or reading
    a long answer slowly) thus takes a front down at half the load a one-process gateway bears, and has it blame
    the back. A front should not run out first (e.g. raise its soft limit towards the hard one when it is made)."""
    flag = tmp_path / "release"
    path = back_socket(tmp_path)
    waiting: list[int] = []
    back = uvicorn.Server(back_config(slow_app(flag, waiting), path, access_log=False))
    thread = serving(back)
    root = str(Path(__file__).resolve().parents[1])
    processes: dict[str, subprocess.Popen[bytes]] = {}
    conns: dict[str, list[socket.socket]] = {"front": [], "alone": []}
    try:
        ports = {}
        for mode in conns:
            processes[mode] = subprocess.Popen(
                [sys.executable, "-c", SERVER, mode, "100", str(flag), str(path), root],
                stdout=subprocess.PIPE,
                cwd=root,
            )
            assert processes[mode].stdout is not None
            ports[mode] = int(processes[mode].stdout.readline())
        for mode, port in ports.items():
            for _ in range(50):
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                conn.sendall(request("/slow"))
                conns[mode].append(conn)
        deadline = time.monotonic() + 4
        while len(waiting) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the alone server's 50 are in by now too
        extra = {mode: raw(port, request("/v1/members"))[0] for mode, port in ports.items()}
        flag.touch()
        slow = {mode: sorted(answer(conn)[0] for conn in cs) for mode, cs in conns.items()}
        assert (extra["alone"], slow["alone"]) == (200, [200] * 50)
        assert (extra["front"], slow["front"]) == (extra["alone"], slow["alone"])
    finally:
        for cs in conns.values():
            for conn in cs:
                conn.close()
        for process in processes.values():
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        back.should_exit = True
        thread.join(timeout=10)
