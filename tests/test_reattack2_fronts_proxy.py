"""A second attack on the fronts' pass-through (main at 2b5d55b, when BackProxy was built on httpx): each test
failed then, and holds since BackProxy sends the target with httpcore, byte for byte, with the scheme and Host
the front's server saw, and answers a client's unsendable request 400, an unreadable answer 502.

The point of comparison is always a one-process gateway: whatever a client sends, a front
(gateway.api.fronts.front_app + BackProxy) and its back should answer as the same app served alone would.

Set-up, as tests/test_reattack_fronts_user.py: a back served as `xcentre gateway` serves it (back_config: uvicorn
on the unix socket, the client's address from the front's X-Forwarded-For); a front served as `python -m
gateway.api.fronts` serves it (front_app over an app whose own route is POST /v1/jobs, uvicorn with serve_options
on a socket from listening_socket, handed over as the back hands it); and a one-process gateway of the same back
app served with the same serve_options on TCP, as gateway.api.server.serve serves it. All are real servers in
threads of this process, spoken to over real TCP with hand-written requests. Both public servers trust
127.0.0.0/8 as their reverse proxy (`[server] trusted_proxies = ["127.0.0.0/8"]`), a centre with a TLS-terminating
proxy on the login node; no test but the X-Forwarded-Proto one depends on it. The back app has FastAPI's
defaults, as create_app's has (redirect_slashes: the only place the app builds a URL from the request).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.fronts import FrontAndAlone, front_and_alone, http_request, passed_app, raw

TRUSTED = ("127.0.0.0/8",)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontAndAlone]:
    folder = tmp_path_factory.mktemp("rq")
    with front_and_alone(folder, passed_app, trusted_proxies=TRUSTED) as running:
        yield running


def test_dot_segments_reach_the_back_as_the_front_routed_them(gateway: FrontAndAlone) -> None:
    """BackProxy builds the back's URL with httpx's URL.copy_with(raw_path=...), and httpx resolves dot segments
    (RFC 3986 remove_dot_segments) in an absolute URL: the front routes `/nowhere/../v1/members` as that path (not
    its own route: passed on) and the back receives `/v1/members`. A one-process gateway (uvicorn resolves nothing)
    answers 404; through a front the same request reads /v1/members. The front and its back disagree about which
    path a request has: the classic proxy/origin parsing split, and any check on the path made at the front (its
    routes, its middleware) is made on another path than the one the back serves."""
    alone = raw(gateway.alone_port, http_request("/nowhere/../v1/members"))
    front = raw(gateway.front_port, http_request("/nowhere/../v1/members"))
    assert alone[0] == 404
    assert (front[0], front[2]) == (alone[0], alone[2])


def test_a_submission_spelt_with_dot_segments_is_not_answered_by_the_back(gateway: FrontAndAlone) -> None:
    """The same resolution moves submissions off the fronts: `POST /v1/x/../jobs` is not the front's route, so it is
    passed on, and reaches the back as POST /v1/jobs, which the back answers itself (a one-process gateway: 404).
    Any client can thus put every submission on the back's one core, the one the fronts exist to relieve, and
    those submissions are not in the fronts' timings."""
    alone = raw(gateway.alone_port, http_request("/v1/x/../jobs", method="POST"))
    front = raw(gateway.front_port, http_request("/v1/x/../jobs", method="POST"))
    assert front[2] != b'{"answered":"back"}', "a submission reached the back's POST /v1/jobs through a front"
    assert (front[0], front[2]) == (alone[0], alone[2])


def test_https_behind_a_trusted_proxy_stays_https_through_a_front(gateway: FrontAndAlone) -> None:
    """With trusted_proxies, uvicorn takes the scheme from the proxy's X-Forwarded-Proto (the centre's TLS proxy
    says https). A one-process gateway then redirects (FastAPI's slash redirect) to https://; a front takes the
    scheme too, but drops X-Forwarded-Proto (REQUEST_DROPPED) and tells the back only the client's address, so the
    back, on its socket, builds http:// URLs: the redirect sends the client from TLS to plain http."""
    forwarded = ("X-Forwarded-Proto: https", "X-Forwarded-For: 198.51.100.9")
    alone = raw(gateway.alone_port, http_request("/v1/members/", *forwarded))
    front = raw(gateway.front_port, http_request("/v1/members/", *forwarded))
    assert alone[0] == 307 and alone[1]["location"] == "https://gw.example.org/v1/members"
    assert (front[0], front[1].get("location")) == (alone[0], alone[1]["location"])


def test_a_request_without_host_is_not_sent_to_a_host_named_back(gateway: FrontAndAlone) -> None:
    """A request without Host (HTTP/1.0 allows it) is passed on with the Host httpx writes for the URL it was given,
    `back` (BackProxy's base_url): the back's redirect then points at http://back/..., an internal name, where a
    one-process gateway points at the address the client connected to (its own host and port)."""
    alone = raw(gateway.alone_port, b"GET /v1/members/ HTTP/1.0\r\n\r\n")
    front = raw(gateway.front_port, b"GET /v1/members/ HTTP/1.0\r\n\r\n")
    assert alone[1]["location"] == f"http://127.0.0.1:{gateway.alone_port}/v1/members"
    assert front[1]["location"] == f"http://127.0.0.1:{gateway.front_port}/v1/members"


def test_two_host_headers_are_answered_as_a_one_process_gateway_answers_them(gateway: FrontAndAlone) -> None:
    """A request with two Host headers is served by a one-process gateway (200). A front passes both to httpx, whose
    h11 refuses to send them (LocalProtocolError), and BackProxy answers any TransportError with 503 "its back
    process ... try again shortly" and the exception's repr: a client-made error reported as the back being down
    (monitoring, retries), with the front's internals in the body."""
    twice = b"GET /v1/members HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"
    alone = raw(gateway.alone_port, twice)
    front = raw(gateway.front_port, twice)
    assert front[0] != 503, front[2]
    assert (front[0], front[2]) == (alone[0], alone[2])


def test_a_long_host_does_not_make_a_front_say_its_back_is_down(gateway: FrontAndAlone) -> None:
    """A 110 kB Host is accepted by the front's server; the back answers the slash redirect with a Location of that
    length, as a one-process gateway does (307), but httpx refuses to read such a Location (RemoteProtocolError:
    "Invalid URL in location header: URL too long") and the front answers 503 "cannot answer this now (its back
    process ...)". Any client can make a front report its back down, at will."""
    long_host = http_request("/v1/members/", host="h" * 110_000)
    alone = raw(gateway.alone_port, long_host)
    front = raw(gateway.front_port, long_host)
    assert alone[0] == 307
    assert front[0] == alone[0], front[2][:300]


def test_a_target_reaches_the_back_as_the_client_spelt_it(gateway: FrontAndAlone) -> None:
    """BackProxy's docstring: "path as the client spelt it (never decoded and encoded again)". httpx percent-encodes
    what it does not like in the path and query (`"` -> %22, `{` -> %7B, ...), so the back sees another target than
    a one-process gateway does; and as each such byte becomes three, a query a one-process gateway serves (30,000
    quotes) becomes one the back's parser refuses: 400 "Invalid HTTP request received." through a front, 200 alone."""
    target = '/raw/a"b{c}?q="x"|{y}'
    alone = raw(gateway.alone_port, http_request(target))
    front = raw(gateway.front_port, http_request(target))
    assert alone == (200, alone[1], target.encode())
    assert front[2] == alone[2]

    quoted = "/raw/x?q=" + '"' * 30_000
    alone = raw(gateway.alone_port, http_request(quoted))
    front = raw(gateway.front_port, http_request(quoted))
    assert alone[0] == 200
    assert front[0] == alone[0], front[2][:200]
