"""A front's pass-through to its back (gateway.api.fronts.BackProxy), against a real back on a unix socket.

The back here is a small app served as the back is served (`back_config`: uvicorn on the socket,
the client's address from the front's X-Forwarded-For); the front is `front_app` over an app whose
only own route is POST /v1/jobs, called in-process with a client address of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

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
