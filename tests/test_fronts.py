"""A gateway as several processes (`[server] fronts = 2`), on a consortium of real processes.

hpc-a runs a back process and two fronts sharing its port; the other centres run one process each.
Jobs accepted by the fronts run at the back; an idempotency key and the policy's rate limit hold
across fronts; the fronts' submissions are counted in the back's /metrics; a front killed is
replaced, and the fronts go with a back killed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.api.limits import MAX_HEAD_BYTES
from gateway.client.dispatch import submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.consortium import slapd as slapd_node
from gateway.consortium.anvil import anvil_binary
from gateway.consortium.processes import alive, wait_until
from gateway.consortium.running import RunningConsortium
from gateway.node.policies import DECISION_BURST, DECISIONS_PER_SECOND
from gateway.store import Store
from tests.fixtures.fronts import consortium_with_fronts, fronts_of
from tests.fixtures.jobs import FINAL, eventually

FRONTS = 2

pytestmark = [
    pytest.mark.skipif(anvil_binary() is None, reason="anvil is not installed: run `npm ci` in contracts/"),
    pytest.mark.skipif(not slapd_node.installed(), reason=slapd_node.INSTALL_HINT),
]


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[RunningConsortium]:
    with consortium_with_fronts(tmp_path_factory.mktemp("fronts"), FRONTS) as consortium:
        yield consortium


def _fronts(consortium: RunningConsortium) -> list[int]:
    return fronts_of(consortium)


def _submit(url: str, user: str = "alice", *, key: str | None = None, sent: dict | None = None) -> str:
    """One short job of `user` at hpc-a (home and centre), through the public port; its id."""

    def submitting(client: GatewayClient, job: dict, idempotency_key: str | None) -> dict:
        if sent is not None:
            sent.update(token=client.token, body=job)
        return client.submit(job, idempotency_key)

    with GatewayClient(url) as home:
        home.login(user, f"{user}-pw")
        sign_on = dataclasses.replace(with_home_session(home), submit=submitting)
        submission = submit_anywhere(
            url, {"command": ["true"], "walltime": 10}, sign_on, centre="hpc-a", idempotency_key=key
        )
        submission.client.close()
    return submission.view["id"]


def _final(consortium: RunningConsortium, job_id: str) -> str:
    store = Store(consortium.data_dir("hpc-a") / "gateway.db")
    eventually(lambda: store.get_job(job_id).status in FINAL, within=60)
    return store.get_job(job_id).status


def test_fronts_accept_and_the_back_runs(running) -> None:
    assert len(_fronts(running)) == FRONTS
    url = running.url("hpc-a")
    ids = [_submit(url) for _ in range(4)]
    assert len(set(ids)) == 4
    assert [_final(running, i) for i in ids] == ["succeeded"] * 4

    # the back's /metrics counts the submissions the fronts answered (written within a second)
    def counted() -> bool:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        found = re.search(r'^xcentre_submission_seconds_count\{status="202"\} (\S+)$', text, re.M)
        return found is not None and float(found.group(1)) >= 4

    eventually(counted, within=10)


def test_an_idempotency_key_holds_across_fronts(running) -> None:
    url = running.url("hpc-a")
    sent: dict = {}
    key = f"fronts-{uuid.uuid4()}"
    first = _submit(url, "alice", key=key, sent=sent)

    def again(_: int) -> str:
        with httpx.Client(base_url=url, timeout=30) as client:  # a connection of its own: any front may take it
            answer = client.post(
                "/v1/jobs",
                json=sent["body"],
                headers={"Authorization": f"Bearer {sent['token']}", "Idempotency-Key": key},
            )
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(again, range(16))) == {first}
    store = Store(running.data_dir("hpc-a") / "gateway.db")
    assert [j.id for j in store.list_jobs(limit=1000) if j.idempotency_key == key] == [first]


def test_the_policy_rate_limit_is_one_across_fronts(running) -> None:
    """A replayed order is refused after the policy decided it, so each replay takes one decision: sent over
    many connections (spread over both fronts), the principal gets DECISION_BURST and the refill, not a burst
    per front."""
    url = running.url("hpc-a")
    sent: dict = {}
    _submit(url, "bob", sent=sent)
    replays = 2 * DECISION_BURST + 40
    statuses: list[int] = []

    def replay(_: int) -> int:
        with httpx.Client(base_url=url, timeout=30) as client:
            return client.post(
                "/v1/jobs", json=sent["body"], headers={"Authorization": f"Bearer {sent['token']}"}
            ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(replay, range(replays)))
    elapsed = time.monotonic() - started
    assert set(statuses) <= {409, 429}, statuses
    allowed = DECISION_BURST + DECISIONS_PER_SECOND * elapsed  # the quote and the first submission took two more
    assert statuses.count(409) <= allowed, (statuses.count(409), elapsed)


def test_a_head_at_the_limit_is_served_through_a_front(running) -> None:
    """The fronts add their forwarding headers to what they pass on; the back takes that much more, so a head a
    gateway in one process serves at the very limit (64 KiB) is served with fronts too, and one byte more is 431."""
    url = httpx.URL(running.url("hpc-a"))
    head = ["GET /v1/members HTTP/1.1", f"Host: {url.host}:{url.port}", "Connection: close"]
    fixed = len("/v1/members") + sum(len(line) + 2 for line in head[1:])  # as RequestLimits counts: name, value, 4
    for padding, status in ((MAX_HEAD_BYTES - fixed - len("x-padding") - 4, 200), (MAX_HEAD_BYTES - fixed, 431)):
        lines = [*head, f"X-Padding: {'x' * padding}"]
        with socket.create_connection((url.host, url.port), timeout=30) as conn:
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.split(b" ", 2)[1] == str(status).encode(), answer[:300]


def test_a_front_killed_is_replaced_and_the_fronts_go_with_the_back(running) -> None:
    url = running.url("hpc-a")
    victim = _fronts(running)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(_fronts(running)) == FRONTS and victim not in _fronts(running), 20, "a new front")
    assert _final(running, _submit(url)) == "succeeded"

    fronts = _fronts(running)
    running.kill_gateway("hpc-a")  # kill -9 of the back
    wait_until(lambda: not any(alive(p) for p in fronts), 20, "the fronts to exit with their back")
    running.start_gateway("hpc-a")
    assert len(_fronts(running)) == FRONTS or wait_until(lambda: len(_fronts(running)) == FRONTS, 20, "fronts") is None
    assert _final(running, _submit(url)) == "succeeded"
