"""Job faults on real gateways (anvil, one slapd per centre, HTTP on loopback): a retry after no answer,
jobs a crash left running, a full or read-only data disk.

Each test failed on the code before its fix. A consortium of its own, because it stops and restarts a
centre and breaks its store.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from gateway.client.dispatch import submit_anywhere, with_wallet
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable
from gateway.client.wallet import PaymentKeys, Wallet
from gateway.node.centre import INTERRUPTED
from tests.fixtures.consortium import PASSWORDS, start_consortium
from tests.fixtures.jobs import eventually, final, job, submit


@pytest.fixture(scope="module")
def fresh(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("job-faults"))
    yield running
    running.stop()


class LostAnswer(httpx.HTTPTransport):
    """The network as a killed gateway leaves it: the first job submission reaches the gateway and is
    stored, and its answer never comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs" and not self.lost:
            response.read()
            self.lost.append(request.url.host + ":" + str(request.url.port))
            raise httpx.ReadTimeout("the gateway died before answering", request=request)
        return response


def test_a_retry_after_no_answer_finds_the_job_it_started_whatever_the_new_sign_on(fresh, tmp_path):
    """`centre: auto`, a presented sign-on (a pseudonym per sign-on), the answer lost after the job was stored:
    the retry with the same key goes to the same centre with the same order and gets that job; one job runs."""
    wallet = Wallet.from_issuance(
        fresh.url("hpc-a"), GatewayClient(fresh.url("hpc-a")).credential("alice", PASSWORDS["alice"])
    )
    path = tmp_path / "wallet.payments.json"
    request = {"command": ["python3", "-c", "print('once')"], "walltime": 30}
    before = fresh.job_count()
    lost = LostAnswer()
    with GatewayClient(fresh.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        with pytest.raises(GatewayUnreachable, match="may be running there"):
            submit_anywhere(
                fresh.url("cloud-b"),
                request,
                with_wallet(wallet, home),
                idempotency_key="k-lost",
                keys=PaymentKeys(path),
                transport=lost,
            )
        pending = PaymentKeys(path).pending(idempotency_key="k-lost")  # kept in the wallet before it was sent
        assert pending is not None
        sent_to, facts = pending
        again = submit_anywhere(
            fresh.url("ai-c"), request, with_wallet(wallet, home), idempotency_key="k-lost", keys=PaymentKeys(path)
        )
    again.client.close()
    assert again.centre == facts["centre"]
    after = fresh.job_count()
    assert sum(after.values()) == sum(before.values()) + 1, "the job was stored once, at one centre"
    store = fresh.store(again.centre)
    stored = store.get_job(again.view["id"])
    assert stored is not None and stored.payment.account == sent_to and again.view["id"] == stored.id


def test_jobs_a_crash_left_running_are_billed_when_their_run_finished_and_refunded_otherwise(fresh):
    fresh.stop_centre("ai-c")
    node = fresh.start_centre("ai-c", workers=1)
    first = submit(fresh, "dave", "ai-c", job("ai-c", seconds=3))  # holds the only worker
    finished, interrupted = (submit(fresh, "dave", "ai-c", job("ai-c")) for _ in range(2))
    eventually(lambda: node.parts.store.get_job(first).status == "running")
    fresh.stop_centre("ai-c")  # the backlog stays queued
    store, executor = node.parts.store, node.parts.executor
    # the state a crash leaves: `finished` ran to the end (its launcher's result on disk), the gateway died
    # before storing its completion; `interrupted` was running, and its run left nothing
    request = store.get_job(finished).request
    executor.run(request["command"], request["walltime"], limits=_limits(request), key=finished)
    for job_id in (finished, interrupted):
        store.update_job(job_id, status="running")

    node = fresh.start_centre("ai-c")
    store = node.parts.store
    billed = final(store, finished)
    assert billed.status == "succeeded" and billed.record_id is not None and billed.result is not None
    refunded = final(store, interrupted)
    assert refunded.status == "failed" and refunded.record_id is None
    assert refunded.detail.startswith(INTERRUPTED) and "released now" in refunded.detail
    hold = node.parts.payer.book.hold_for_order(refunded.payment.order_digest)
    assert hold.status == "refunded"  # dave's home is ai-c: the hold is released at once
    with GatewayClient(fresh.url("ai-c"), token=fresh.login("dave", "ai-c")) as client:
        view = client.job(interrupted)
    assert view["status"] == "failed" and view["detail"].startswith(INTERRUPTED)


def _limits(request: dict):
    from gateway.jobs.execution import Limits

    res = request.get("resources", {})
    return Limits(res.get("cores", 1), res.get("memory_mib", 1024), res.get("gpus", 0))


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [("database or disk is full", 507, "disk-full"), ("attempt to write a readonly database", 503, "disk-read-only")],
)
def test_a_full_or_read_only_data_disk_is_answered_as_such_and_stores_nothing(
    fresh, monkeypatch, error, status, reason
):
    node = fresh.centres["hpc-a"].node
    store = node.parts.store
    before = fresh.job_count()["hpc-a"]

    def disk_error(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError(error)

    monkeypatch.setattr(store, "create_job", disk_error)
    with pytest.raises(GatewayRefused) as caught:
        submit(fresh, "alice", "hpc-a", job("hpc-a"))
    monkeypatch.undo()
    refusal = caught.value
    assert refusal.status == status
    if status == 507:  # the centre's own answer: nothing else to try
        assert refusal.reasons == [reason] and refusal.error.startswith("the centre's data disk is full: ")
    else:  # unavailable: the client says so among every centre's reasons, and to try again
        assert any("hpc-a: unavailable (the centre's data disk is read-only" in r for r in refusal.reasons)
    assert fresh.job_count()["hpc-a"] == before


def test_xcentre_submit_run_again_after_no_answer_reuses_its_key_and_runs_the_job_once(fresh, tmp_path, monkeypatch):
    from tests.test_cli import run_cli

    wallet = tmp_path / "wallet.json"
    code, _, err = run_cli(
        ["login", "--gateway", fresh.url("cloud-b"), "--user", "carol", "--password-stdin", "--wallet", wallet],
        stdin=PASSWORDS["carol"] + "\n",
    )
    assert code == 0, err
    argv = ["submit", "--user", "carol", "--password-stdin", "--gateway", fresh.url("cloud-b"), "--centre", "auto"]
    argv += ["--wallet", wallet, "--", "python3", "-c", "print('once')"]
    real = GatewayClient._exchange
    keys: list[str] = []

    def exchange(lose: bool):
        def call(client: GatewayClient, method: str, path: str, max_bytes: int, **kwargs: object):
            answer = real(client, method, path, max_bytes, **kwargs)
            if method == "POST" and path == "/v1/jobs":
                keys.append(kwargs["headers"]["Idempotency-Key"])  # type: ignore[index]
                if lose:  # the centre stored the job; its answer is lost (the gateway was killed)
                    raise httpx.ReadTimeout("the gateway died before answering")
            return answer

        return call

    before = sum(fresh.job_count().values())
    monkeypatch.setattr(GatewayClient, "_exchange", exchange(lose=True))
    code, _, err = run_cli(argv, stdin=PASSWORDS["carol"] + "\n")
    assert code == 1 and "may be running there" in err, err
    monkeypatch.setattr(GatewayClient, "_exchange", exchange(lose=False))
    code, out, err = run_cli(argv, stdin=PASSWORDS["carol"] + "\n")
    assert code == 0, err
    assert "got no answer" in err and keys[0] in err and keys == [keys[0]] * 2
    assert sum(fresh.job_count().values()) == before + 1
    assert json.loads(out)["id"]


def test_a_job_that_ran_while_the_disk_was_full_is_billed_at_the_next_start(fresh, monkeypatch):
    node = fresh.centres["cloud-b"].node
    store = node.parts.store
    real = store.complete_job
    refused: list[str] = []

    def full(job_id: str, *_: object, **__: object) -> None:
        refused.append(job_id)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "complete_job", full)
    job_id = submit(fresh, "carol", "cloud-b", job("cloud-b"))
    eventually(lambda: job_id in refused)  # it ran; storing its completion failed (and no "failed" either)
    assert store.get_job(job_id).status == "running"  # never "failed, unbilled" for work that was done
    monkeypatch.setattr(store, "complete_job", real)
    fresh.stop_centre("cloud-b")
    node = fresh.start_centre("cloud-b")
    billed = final(node.parts.store, job_id)
    assert billed.status == "succeeded" and billed.record_id is not None
