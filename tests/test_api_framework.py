"""The framework around the node (gateway.api.app, gateway.api.server): which work runs where, and the server's
settings. The node is a stand-in here: what is checked is FastAPI's and uvicorn's side of a request."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio.to_thread
import httpx
import pytest
import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.api.app import DEFAULT_THREADS, MAX_THREADS, create_app
from gateway.api.schemas import JobView
from gateway.api.server import BackgroundServer, free_port, serve, serve_options
from gateway.node.config import ConfigError, load_config
from gateway.node.errors import Unauthenticated

TOKEN = "good-token"
VIEW = JobView(
    id="job-1", status="queued", principal="alice@hpc-a", serving_centre="hpc-a", submitted_at="2026-12-02T00:00:00Z"
)
BODY = {
    "walltime": 60,
    "command": ["/bin/true"],
    "order": {"maximum_price": 1},
    "order_signature": "0x" + "ab" * 65,
    "grant": {"amount": 1},
    "grant_signature": "0x" + "cd" * 65,
}


class StandIn:
    """What the routes of a submission call on a node, recording each call and the thread it ran on."""

    name = "hpc-a"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.parts = SimpleNamespace(operator_key="op-key")

    def _called(self, what: str) -> None:
        self.calls.append((what, threading.current_thread().name))

    def authenticate(self, token: str | None) -> Any:
        self._called("authenticate")
        if not token:
            raise Unauthenticated("a session token is required: sign on at this centre first")
        if token != TOKEN:
            raise Unauthenticated("session token refused: bad signature")
        return SimpleNamespace(sub="alice@hpc-a")

    def submit(self, claims: Any, body: Any, key: str | None, client: str | None = None) -> JobView:
        self._called("submit")
        return VIEW.model_copy(update={"id": key or VIEW.id})

    def job(self, caller: Any, job_id: str) -> JobView:
        self._called("job")
        return VIEW.model_copy(update={"id": job_id})

    def fresh_capacity(self) -> dict | None:
        return None  # never fresh: every request asks capacity()

    def capacity(self) -> dict:
        self._called("capacity")
        return {"centre": self.name, "total_cpus": 4, "free_cpus": 2}

    def check_operator(self, key: str | None) -> None:
        if key != self.parts.operator_key:
            raise Unauthenticated("this operation needs the centre's operator key (X-Operator-Key)")


@pytest.fixture
def node() -> StandIn:
    return StandIn()


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """The name of each function FastAPI and the routes hand to the thread pool, in order."""
    handed: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        inner = getattr(func, "func", func)  # run_in_threadpool wraps the call in a functools.partial
        handed.append(getattr(inner, "__name__", repr(inner)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return handed


def _submit(client: TestClient, token: str | None = TOKEN, body: Any = BODY, key: str | None = "k-1") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/jobs", json=body, headers=headers)


def test_a_submission_makes_two_thread_hops_its_session_and_its_route(node, hops):
    with TestClient(create_app(node)) as client:
        answer = _submit(client)
    assert answer.status_code == 202 and answer.json()["id"] == "k-1"
    # bearer and retry_key parse on the loop; the answer is checked against JobView on the loop too
    assert hops == ["session", "submit"]
    assert [what for what, _ in node.calls] == ["authenticate", "submit"]
    assert all(thread != threading.main_thread().name for _, thread in node.calls)


def test_a_job_status_makes_two_thread_hops(node, hops):
    with TestClient(create_app(node)) as client:
        answer = client.get("/v1/jobs/job-9", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json()["id"] == "job-9"
    assert hops == ["job_caller", "job"]


@pytest.mark.parametrize(
    ("token", "body", "key", "status", "words"),
    [
        (None, BODY, "k-1", 401, "a session token is required"),
        ("forged", BODY, "k-1", 401, "session token refused: bad signature"),
        # the session's refusal still comes before the body's and the header's
        ("forged", {"walltime": "soon"}, "k-1", 401, "session token refused"),
        ("forged", BODY, "no spaces allowed", 401, "session token refused"),
        (TOKEN, {"walltime": "soon"}, "k-1", 422, "invalid request"),
        (TOKEN, BODY, "no spaces allowed", 400, "the Idempotency-Key header must be 1 to 128 visible ASCII"),
    ],
)
def test_refusals_keep_their_order_and_words(node, token, body, key, status, words):
    with TestClient(create_app(node)) as client:
        answer = _submit(client, token, body, key)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"] and "reasons" in answer.json()
    assert "submit" not in [what for what, _ in node.calls]  # nothing refused reaches the node


def test_the_operator_key_is_checked_on_the_loop(node, hops):
    with TestClient(create_app(node)) as client:
        answer = client.post("/v1/enrolments/revoke", json={"username": "alice"})
    assert answer.status_code == 401 and "operator key" in answer.json()["error"]
    assert hops == []


def test_a_stale_capacity_is_refreshed_off_the_loop_every_time_the_app_starts(node):
    app = create_app(node)
    for _ in range(2):  # an app started, stopped and started again (a test module's app, a server restarted)
        with TestClient(app) as client:
            answer = client.get("/v1/capacity")
        assert answer.status_code == 200 and answer.json() == {"centre": "hpc-a", "total_cpus": 4, "free_cpus": 2}
    threads = [thread for what, thread in node.calls if what == "capacity"]
    assert len(threads) == 2 and all("capacity" in thread for thread in threads)
    # called without being started (no lifespan, so no thread of its own): still answered, off the loop
    assert TestClient(app).get("/v1/capacity").status_code == 200
    assert node.calls[-1][0] == "capacity" and node.calls[-1][1] != threading.main_thread().name


def _limiter_route(app: Any) -> None:
    @app.get("/_threads")
    async def threads() -> dict:
        return {"threads": anyio.to_thread.current_default_thread_limiter().total_tokens}


def test_the_thread_pool_is_bounded_when_the_app_starts(node):
    app = create_app(node, threads=3)
    _limiter_route(app)
    with TestClient(app) as client:
        assert client.get("/_threads").json() == {"threads": 3}
    app = create_app(node)
    _limiter_route(app)
    with TestClient(app) as client:
        assert client.get("/_threads").json() == {"threads": DEFAULT_THREADS}


def test_the_thread_pool_is_bounded_under_uvicorn(node):
    app = create_app(node, threads=5)
    _limiter_route(app)
    server = BackgroundServer(app).start()
    try:
        assert httpx.get(f"{server.url}/_threads").json() == {"threads": 5}
    finally:
        server.stop()


@pytest.mark.parametrize("threads", [0, -1, MAX_THREADS + 1, True, 2.5, "8"])
def test_a_bad_thread_count_is_refused(node, threads):
    with pytest.raises(ValueError, match=f"threads must be an integer from 1 to {MAX_THREADS}"):
        create_app(node, threads=threads)


def test_uvicorn_runs_on_uvloop_and_httptools():
    config = uvicorn.Config(lambda *_: None, **serve_options())
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    loop_factory = config.get_loop_factory()
    assert loop_factory is not None
    loop = loop_factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


@pytest.mark.parametrize(("trusted", "seen"), [((), "127.0.0.1"), (("127.0.0.1",), "198.51.100.9")])
def test_a_forwarded_address_is_believed_only_from_a_trusted_proxy(trusted, seen):
    """uvicorn's own default believes X-Forwarded-For from any client on 127.0.0.1 (every user of a login node),
    which would let one choose the address the per-address limits count it by."""
    app = FastAPI()

    @app.get("/who")
    def who(request: Request) -> str:
        return request.client.host if request.client else "-"

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, **serve_options(access_log=False, trusted_proxies=trusted)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            threading.Event().wait(0.01)
        answer = httpx.get(f"http://127.0.0.1:{port}/who", headers={"X-Forwarded-For": "198.51.100.9"}, timeout=10)
        assert answer.json() == seen
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("access_log", [True, False])
def test_the_access_log_is_written_only_when_asked(node, caplog, access_log):
    app = create_app(node)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **serve_options(access_log=access_log)))
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        thread.start()
        try:
            while not server.started:
                assert thread.is_alive()
                threading.Event().wait(0.01)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/jobs", json=BODY, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert answer.status_code == 202
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert (len([line for line in lines if "POST /v1/jobs" in line]) == 1) is access_log, lines


REQUIRED = """
centre = "hpc-a"
data_dir = "var"
chain_url = "http://127.0.0.1:8545"
deployment = "deployment.json"
chain_key_file = "chain.key"
token_key_file = "token.pem"
issuer_key_file = "issuer.key"
credential_schema = "credential_schema.toml"
operator_key = "op-secret"
policy_file = "policy.cedar"
ldap_url = "ldap://127.0.0.1:389"
ldap_base_dn = "dc=hpc-a,dc=example"
"""


def _config(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "gateway.toml"
    path.write_text(extra + REQUIRED)
    return load_config(path)


def test_server_settings_default_to_a_small_pool_and_an_access_log(tmp_path):
    config = _config(tmp_path)
    assert (config.server_threads, config.access_log, config.server_fronts) == (DEFAULT_THREADS, True, 0)
    config = _config(tmp_path, "server_threads = 16\naccess_log = false\nserver_fronts = 3\n")
    assert (config.server_threads, config.access_log, config.server_fronts) == (16, False, 3)
    assert config.trusted_proxies == ()
    config = _config(tmp_path, 'trusted_proxies = ["127.0.0.1", "10.1.0.0/16", "::1"]\n')
    assert config.trusted_proxies == ("127.0.0.1", "10.1.0.0/16", "::1")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("server_threads = 0", "server_threads must be an integer from 1 to 256, got 0"),
        ("server_threads = 257", "server_threads must be an integer from 1 to 256"),
        ('server_threads = "8"', "server_threads must be an integer from 1 to 256"),
        ('access_log = "off"', "access_log must be true or false, got 'off'"),
        ("access_log = 0", "access_log must be true or false"),
        ("server_fronts = -1", "server_fronts must be an integer from 0 to 64, got -1"),
        ("server_fronts = 65", "server_fronts must be an integer from 0 to 64"),
        ("server_fronts = true", "server_fronts must be an integer from 0 to 64"),
        ('trusted_proxies = ["proxy.example.org"]', "trusted_proxies must be a list of IP addresses or networks"),
        ('trusted_proxies = "127.0.0.1"', "trusted_proxies must be a list of IP addresses or networks"),
    ],
)
def test_bad_server_settings_are_refused_by_name(tmp_path, line, words):
    with pytest.raises(ConfigError, match=words):
        _config(tmp_path, line + "\n")


def test_serve_exits_when_it_cannot_listen():
    """A port already taken is an exit (uvicorn's startup failure, 3), not a gateway that returns as if stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as stopped:
            serve(FastAPI(), "127.0.0.1", taken.getsockname()[1], access_log=False)
    assert stopped.value.code == 3
