"""A third attack on the fronts' pass-through (BackProxy just moved to httpcore): each test failed then, and holds
since a front sends the Host its own URLs are built from, both kinds of process refuse a head over 64 KiB (431,
gateway.api.limits) as create_app's apps do here, and a front gives a connection up before the back closes it.

The point of comparison is always a one-process gateway: whatever a client sends, a front
(gateway.api.fronts.front_app + BackProxy) and its back should answer as the same app served alone would, and a
front should never answer that its back failed (502, 503 "try again shortly") while the back is well.

Set-up, as tests/test_reattack2_fronts_proxy.py: a back served as `xcentre gateway` serves it (back_config: uvicorn
on the unix socket), a front served as `python -m gateway.api.fronts` serves it (front_app + BackProxy, uvicorn with
serve_options on a socket from listening_socket), and a one-process gateway of the same back app served with the
same serve_options on TCP. Real servers in threads of this process, spoken to over real TCP with hand-written
requests. The back app has FastAPI's defaults, as create_app's has (redirect_slashes: the app builds a URL from the
request there).

Tried and found to hold (front answers as alone): header values with \\x0b \\x0c \\x01 \\x7f \\x80 and tabs, obs-fold,
bare LF, odd header names, UTF-8 and control bytes in the target (httptools refuses them on both sides, as h11 would),
CL+TE and duplicate Content-Length (refused by the front's own parser), chunked bodies with trailers, GET with a
body, Expect: 100-continue, HTTP/1.0, HEAD (also on Starlette routes with a body length), 204 and 304 answers,
absolute-form targets (with userinfo, without a path), `OPTIONS *`, CONNECT, websocket and h2c Upgrade, methods
such as PURGE and QUERY, pipelined requests (a submission among them stays on the front; a request smuggled in a
body stays a body), X-Forwarded-For/Proto from a trusted proxy (several, empty, `unknown`, ::1, an unknown scheme),
Connection naming x-forwarded-for or host, headers of 3 MB, and clients that disconnect before or in the middle of
a streamed answer (no connection to the back is left behind).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from gateway.api.fronts import BackProxy, back_config, back_socket, front_app, listening_socket
from gateway.api.limits import MAX_HEAD_BYTES
from gateway.api.server import serve_options
from tests.fixtures.fronts import FrontAndAlone, front_and_alone, http_request, passed_app, raw, serving

TRUSTED = ("127.0.0.0/8",)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontAndAlone]:
    folder = tmp_path_factory.mktemp("rq")
    with front_and_alone(folder, passed_app, limits=True, trusted_proxies=TRUSTED) as running:
        yield running


@pytest.mark.parametrize("host", ["user@gw.example.org", "gw.example.org:99999", "gw example.org", ""])
def test_a_host_the_back_finds_invalid_does_not_reveal_the_back_socket(gateway: FrontAndAlone, host: str) -> None:
    """Starlette builds a request's URL from its Host only when the Host parses (host, port in range, no space or
    '@'); otherwise from the address the server listens on (scope["server"]). A one-process gateway then redirects
    to its own TCP address (http://127.0.0.1:port/...). A front passes such a Host on as it came (only a missing
    Host is replaced by its own address), so the back falls back to *its* listening address, the unix socket: any
    client gets, in the Location of the slash redirect, `http:///<data_dir>/back.sock:None/v1/members`, the
    gateway's data folder (the path of the gateway user's private 0700 folder) and a redirect that leads nowhere.
    Internals in an answer, and an answer a one-process gateway would not give."""
    alone = raw(gateway.alone_port, http_request("/v1/members/", host=host))
    front = raw(gateway.front_port, http_request("/v1/members/", host=host))
    assert alone[0] == 307 and alone[1]["location"] == f"http://127.0.0.1:{gateway.alone_port}/v1/members"
    assert str(gateway.socket_path) not in front[1].get("location", ""), front[1].get("location")
    assert front[0] == 307 and front[1]["location"] == f"http://127.0.0.1:{gateway.front_port}/v1/members"


def test_a_very_long_host_does_not_make_a_front_blame_its_back(gateway: FrontAndAlone) -> None:
    """The front's server (httptools) takes a Host of any length, and so did the back: the back answered the slash
    redirect with a Location of that length, httpcore (h11) refused an answer head it had not found the end of in
    100 kB, and the front answered 502 "could not read its back process's answer; try again shortly": any client,
    at will, made a front report its back broken where a one-process gateway answered 307. A head is now bounded
    (64 KiB) before any route: over it, a front and a one-process gateway both answer 431; under it, both 307."""
    for length, status in ((200_000, 431), (MAX_HEAD_BYTES - 200, 307)):
        long_host = http_request("/v1/members/", host="h" * length)
        alone = raw(gateway.alone_port, long_host)
        front = raw(gateway.front_port, long_host)
        assert alone[0] == status
        assert (front[0], front[1].get("location")) == (alone[0], alone[1].get("location")), front[2][:300]


def test_a_head_at_the_limit_is_served_through_a_front_as_alone(gateway: FrontAndAlone) -> None:
    """A front adds X-Forwarded-For and -Proto to what it passes on: its back (create_app's, behind fronts) takes
    that much more, so a head a one-process gateway serves at the very limit is served through a front too."""
    fixed = len("/v1/members/") + len("host") + 4 + len("connection") + len("close") + 4  # what uvicorn hands on
    for length, status in ((MAX_HEAD_BYTES - fixed, 307), (MAX_HEAD_BYTES - fixed + 1, 431)):
        at_limit = http_request("/v1/members/", host="h" * length)
        alone = raw(gateway.alone_port, at_limit)
        front = raw(gateway.front_port, at_limit)
        assert (alone[0], front[0]) == (status, status), front[2][:300]


class ClosingBack:
    """A stand-in for the back on a unix socket that answers GETs with keep-alive, and closes a connection it kept
    idle for its server's keep-alive timeout (uvicorn's timeout_keep_alive, as back_config sets it) at the moment the
    next request arrives, unanswered: what the real back does when its keep-alive timer fires as a request crosses it.
    """

    def __init__(self, path: Path, idle_limit: float) -> None:
        self.idle_limit = idle_limit
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.closed_idle = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        answered_at: float | None = None
        data = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
                while b"\r\n\r\n" in data:
                    _, _, data = data.partition(b"\r\n\r\n")
                    if answered_at is not None and time.monotonic() - answered_at >= self.idle_limit:
                        self.closed_idle += 1
                        return  # the keep-alive timer fired: closed, nothing answered
                    body = b'{"members":[]}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(body), body)
                    )
                    answered_at = time.monotonic()

    def close(self) -> None:
        self.listener.close()


def test_a_connection_the_back_closed_for_idling_is_not_reported_as_the_back_down(tmp_path: Path) -> None:
    """BackProxy keeps its connections to the back open for reuse with no expiry (httpcore's keepalive_expiry
    defaults to None), while the back's uvicorn closes a connection idle for timeout_keep_alive (5 s). A request the
    front sends on a pooled connection just as the back's timer fires meets a closed connection: httpcore raises
    RemoteProtocolError ("Server disconnected without sending a response") or a NetworkError, and the front answers
    502 or 503 "its back process is not answering; try again shortly", though the back is well and never saw the
    request. Measured with the real back: a client polling about every timeout_keep_alive (a health probe, a scrape
    every 5 s) meets it again and again; with the timeout shortened to 20-50 ms, about 2 % of such requests failed.
    A one-process gateway has no such connection and answers 200. Here the back's side of the race is made certain
    (ClosingBack closes a connection idle for the real back's timeout as the next request reaches it): a front
    should not reuse a connection the back may be closing (expire it sooner), or send an idempotent request again on
    a new connection when the old one closed without an answer."""
    path = back_socket(tmp_path)
    idle_limit = float(back_config(FastAPI(), tmp_path / "unused.sock", access_log=False).timeout_keep_alive)
    back = ClosingBack(path, idle_limit)
    own = FastAPI()
    sock = listening_socket("127.0.0.1", 0)
    front = uvicorn.Server(uvicorn.Config(front_app(own, BackProxy(path, "hpc-a")), **serve_options(access_log=False)))
    thread = serving(front, sockets=[sock])
    port = sock.getsockname()[1]
    try:
        first = raw(port, http_request("/v1/members"))
        assert first[0] == 200
        time.sleep(idle_limit + 0.1)
        second = raw(port, http_request("/v1/members"))
        assert second[0] == 200, (second[0], second[2][:300], back.closed_idle)
    finally:
        front.should_exit = True
        thread.join(timeout=10)
        sock.close()
        back.close()
