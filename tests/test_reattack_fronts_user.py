"""Hostile review (outsider / user) of a gateway with fronts: what a client on the public port can do through a front.

Each test failed on the code it reviewed, and holds since.

The set-up is a back served as `xcentre gateway` serves it (gateway.api.fronts.back_config: uvicorn on the unix
socket, the client's address as the front resolved it) and a front served as `python -m
gateway.api.fronts` serves it (front_app over an app whose own route is POST /v1/jobs, uvicorn with
gateway.api.server.serve_options on a socket from listening_socket), both real servers in threads of
this process, spoken to over real TCP. The "one-process gateway" to compare with is the same back app served on
TCP with serve_options, as gateway.api.server.serve serves it. The back app is a FastAPI app with FastAPI's
defaults (as create_app's is): path parameters, redirect_slashes, an echo of what the back saw.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from tests.fixtures.fronts import FrontAndAlone, front_and_alone, http_request, passed_app, raw


def back_app() -> FastAPI:
    app = passed_app()  # its POST /v1/jobs and GET /v1/members, and these

    @app.api_route("/echo/{rest:path}", methods=["GET", "POST"])
    async def echo(rest: str, request: Request) -> Response:
        client = request.client.host if request.client else "-"
        return Response(f"{rest}|{client}".encode(), media_type="text/plain")

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str) -> dict:
        return {"job_id": job_id}

    @app.get("/endless")
    def endless() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            while True:  # until its reader goes: an answer its reader never finishes
                yield b"x" * 65536
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return app


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontAndAlone]:
    with front_and_alone(tmp_path_factory.mktemp("rx"), back_app) as running:
        yield running


def test_a_local_client_cannot_choose_the_address_the_back_limits_it_by(gateway: FrontAndAlone) -> None:
    """fronts.py: "a client's X-Forwarded-* or Forwarded is dropped, never believed". But the front is served with
    serve_options, i.e. uvicorn's proxy_headers on and forwarded_allow_ips defaulting to 127.0.0.1: a client that
    connects from the machine itself (another user on an HPC login node) has its X-Forwarded-For believed by the
    front, which then passes the invented address to the back as the client's. Every per-address bound the back
    keeps (the pseudonymous sessions' client_limit at quotes, group-signature verifications per network address)
    is then a bound per invented address: one client takes any number of buckets. (A one-process gateway, served
    with the same serve_options, believes it too: the fronts change claims to fix it and does not.)"""
    status, _, body = raw(gateway.front_port, http_request("/echo/who", "X-Forwarded-For: 198.51.100.9"))
    assert status == 200
    assert body.decode().split("|")[1] == "127.0.0.1", f"the back limits this client as {body.decode()!r}"


def test_a_percent_encoded_path_reaches_the_back_decoded_once(gateway: FrontAndAlone) -> None:
    """BackProxy passes request.url.path (already percent-decoded once by the front's server) as the path of a new
    URL, which the back decodes again: `%252F` reaches the back as `/`, so the front routes a request elsewhere
    than a one-process gateway does (a job id `a%2Fb` becomes the path /v1/jobs/a/b, a 404 of another shape).
    The front should pass the raw path (scope["raw_path"]) as it came."""
    target = "/v1/jobs/a%252Fb"
    alone = raw(gateway.alone_port, http_request(target))
    front = raw(gateway.front_port, http_request(target))
    assert alone[0] == 200 and alone[2] == b'{"job_id":"a%2Fb"}'
    assert (front[0], front[2]) == (alone[0], alone[2])


def test_a_redirect_through_a_front_points_at_the_gateway_the_client_called(gateway: FrontAndAlone) -> None:
    """A front drops the client's Host (it is in HOP_BY_HOP) and the back sees `Host: back`: FastAPI's slash
    redirect (POST /v1/jobs/ -> 307, GET /v1/members/ -> 307) then sends the client to http://back/..., a host that
    does not exist, where a one-process gateway redirects to the host the client called."""
    for method, target in (("POST", "/v1/jobs/"), ("GET", "/v1/members/")):
        alone = raw(gateway.alone_port, http_request(target, method=method))
        front = raw(gateway.front_port, http_request(target, method=method))
        assert alone[0] == 307 and alone[1]["location"].startswith("http://gw.example.org/")
        assert front[0] == alone[0]
        assert front[1]["location"] == alone[1]["location"], f"{method} {target}"


def test_a_method_no_route_has_is_answered_as_a_one_process_gateway_answers_it(gateway: FrontAndAlone) -> None:
    """front_app's catch-all route lists seven methods: any other (TRACE, PROPFIND, ...) is a 405 from the front for
    every path, where a one-process gateway answers 404 for a path it does not have (and 405 only for its routes)."""
    for target in ("/no/such/path", "/v1/members"):
        alone = raw(gateway.alone_port, http_request(target, method="PROPFIND"))
        front = raw(gateway.front_port, http_request(target, method="PROPFIND"))
        assert (front[0], front[2]) == (alone[0], alone[2]), target


def test_slow_readers_do_not_stop_a_front_passing_requests_to_its_back(gateway: FrontAndAlone) -> None:
    """BackProxy's httpx client kept httpx's default pool (100 connections) and waited for a free one for ever
    (pool=None). A streamed answer holds its connection until the client has read it: 100 clients that ask for an
    answer and read nothing held the whole pool, and every other request this front passes on (GET
    /v1/health, GET /v1/jobs/{id}, quotes: everything but POST /v1/jobs) waits with no end. A one-process gateway
    has no such pool; the back answers other clients while those wait."""
    holders: list[socket.socket] = []
    try:
        for _ in range(110):
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.connect(("127.0.0.1", gateway.front_port))
            conn.sendall(http_request("/endless"))
            holders.append(conn)
        time.sleep(2)  # the front has asked the back for each; the answers fill the buffers and stall
        started = time.monotonic()
        try:
            status, _, body = raw(gateway.front_port, http_request("/echo/still-there"), timeout=10)
        except TimeoutError:
            status, body = 0, b""
        assert (status, body.split(b"|")[0]) == (200, b"still-there"), (
            f"no answer after {time.monotonic() - started:.1f} s while 110 slow readers hold the front's pool"
        )
    finally:
        for conn in holders:
            conn.close()
