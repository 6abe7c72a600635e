"""A front's pass-through to its back (gateway.api.fronts.BackProxy), against a real back on a unix socket.

The back here is a small app served as the back is served (`back_config`: uvicorn on the socket,
the client's address as the front resolved it: FromFront); the front is `front_app` over an app whose
only own route is POST /v1/jobs, called in-process with a client address of its own.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from gateway.api.fronts import BackProxy, back_config, back_socket, front_app
from tests.fixtures.fronts import serving

CLIENT = "203.0.113.7"


def back_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/echo/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def echo(rest: str, request: Request) -> Response:
        body = await request.body()
        return Response(
            content=b"|".join(
                [
                    request.method.encode(),
                    rest.encode(),
                    request.url.query.encode(),
                    (request.client.host if request.client else "-").encode(),
                    request.headers.get("x-test", "-").encode(),
                    body,
                ]
            ),
            status_code=207,
            headers={"x-back": "yes", "content-type": "text/plain"},
        )

    @app.get("/big")
    def big() -> Response:
        return Response(b"x" * 3_000_000, media_type="application/octet-stream")

    return app


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    path = back_socket(tmp_path)
    server = uvicorn.Server(back_config(back_app(), path, access_log=False))
    thread = serving(server)
    yield path
    server.should_exit = True
    thread.join(timeout=10)


def front(socket_path: Path) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/jobs")
    def submit() -> dict:
        return {"answered": "front"}

    @app.get("/v1/jobs")  # not the front's: only POST /v1/jobs is
    def listed() -> dict:
        return {"answered": "front"}

    return front_app(app, BackProxy(socket_path, "hpc-a"))


def call(app: FastAPI, method: str, url: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(CLIENT, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            return await client.request(method, url, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_only_submissions_are_answered_by_the_front(socket_path: Path) -> None:
    app = front(socket_path)
    assert call(app, "POST", "/v1/jobs").json() == {"answered": "front"}
    # GET /v1/jobs is a route of the app, but not a front's: it goes to the back, which has none (404)
    assert call(app, "GET", "/v1/jobs").status_code == 404


def test_a_request_reaches_the_back_as_it_came_with_the_client_address(socket_path: Path) -> None:
    answer = call(
        front(socket_path),
        "POST",
        "/echo/a/b?x=1&y=%20z",
        content=b"the body",
        headers={"x-test": "kept", "x-forwarded-for": "10.9.9.9", "forwarded": "for=10.9.9.9"},
    )
    assert answer.status_code == 207
    assert answer.headers["x-back"] == "yes"
    assert answer.content == f"POST|a/b|x=1&y=%20z|{CLIENT}|kept|the body".encode()
    # the front's server writes its own Date and Server; the back's are not passed on as second copies
    assert "date" not in answer.headers and "server" not in answer.headers


def test_a_large_answer_is_passed_whole(socket_path: Path) -> None:
    answer = call(front(socket_path), "GET", "/big")
    assert answer.status_code == 200 and answer.content == b"x" * 3_000_000


def test_no_back_is_a_503_saying_so(tmp_path: Path) -> None:
    answer = call(front(tmp_path / "absent.sock"), "GET", "/echo/x")
    assert answer.status_code == 503
    assert "back process" in answer.json()["error"]
    assert answer.headers["retry-after"] == "1"


def test_a_data_folder_too_deep_for_a_socket_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    with pytest.raises(ValueError, match="too deep"):
        back_socket(deep)


def asgi_call(app: FastAPI, raw_path: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Call `app` with a request no HTTP client library would send as it is; its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (CLIENT, 4321),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_request_that_cannot_be_passed_on_is_the_clients_400_not_the_back_down(socket_path: Path) -> None:
    status, body = asgi_call(front(socket_path), b"/echo/\xff", [(b"host", b"gw.example.org")])
    assert status == 400
    assert b"cannot be passed on" in body and b"Error" not in body  # says what, shows no internals


def test_an_answer_the_front_cannot_read_is_a_502(tmp_path: Path) -> None:
    path = back_socket(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 two hundred\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        answer = call(front(path), "GET", "/echo/x")
    finally:
        thread.join(timeout=10)
        listener.close()
    assert answer.status_code == 502
    assert "could not read its back process's answer" in answer.json()["error"]


def test_a_front_that_stops_closes_its_connections_to_the_back(socket_path: Path) -> None:
    proxy = BackProxy(socket_path, "hpc-a")
    with TestClient(front_app(FastAPI(), proxy)) as client:  # its lifespan: started, then stopped
        assert client.get("/echo/x").status_code == 207
        assert len(proxy._pool.connections) == 1  # kept for the next request
    assert proxy._pool.connections == []
