"""Faults on a consortium of real processes (`xcentre consortium up` of examples/consortium.toml).

- kill -9 of a gateway at random moments under a load of submissions, each retried with its
  idempotency key until answered: no acknowledged job is lost, none is run twice;
- the chain node stopped (anvil, its chain saved) while jobs keep being accepted and the epoch
  is closed: once it is started again, the outbox drains, every centre anchors and the epoch settles;
- a centre's directory (slapd) stopped: sign-on at that home answers 503 saying so, and
  succeeds again once the directory is back.

One consortium serves the three tests; each brings back whatever the previous one left down.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.client.dispatch import submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable
from gateway.client.wallet import PaymentKeys
from gateway.consortium import slapd as slapd_node
from gateway.consortium.anvil import anvil_binary
from gateway.consortium.processes import alive, wait_until
from gateway.consortium.running import RunningConsortium

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ACTIVE = ("queued", "running")

pytestmark = [
    pytest.mark.skipif(anvil_binary() is None, reason="anvil is not installed: run `npm ci` in contracts/"),
    pytest.mark.skipif(not slapd_node.installed(), reason=slapd_node.INSTALL_HINT),
]


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[RunningConsortium]:
    folder = tmp_path_factory.mktemp("faults") / "run"
    consortium = RunningConsortium.up(EXAMPLES / "consortium.toml", folder)
    pids = consortium.pids()
    try:
        yield consortium
    finally:
        consortium.down()
        assert not [pid for pid in consortium.pids() + pids if alive(pid)]


@pytest.fixture
def consortium(running) -> RunningConsortium:
    """The consortium with every process running and answering (what a previous test stopped, started again)."""
    anvil = running.state.anvil
    if anvil is not None and anvil.running():
        running.resume_chain()  # a stalled node (SIGSTOP) answers again
    RunningConsortium.up(running.file, running.folder)
    wait_until(running.healthy, 60, "every gateway keeping its books again")  # its next sync clears the last error
    return running


# -- (a) kill -9 under load ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    acknowledged: dict[str, str] = dataclasses.field(default_factory=dict)  # idempotency key -> job id
    answers: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # every job id answered per key
    retries: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


def _submit_until_answered(url: str, key: str, outcome: Outcome, lock: threading.Lock, stop_at: float) -> None:
    """One job at hpc-a by alice (her home): quote, order, grant and submit; on any failure try again with the
    same idempotency key (the same body, once it was sent) until a job id comes back."""
    sent: dict[str, tuple[str | None, dict]] = {}

    def submitting(client: GatewayClient, job: dict, idempotency_key: str | None) -> dict:
        sent["body"] = (client.token, job)  # from here on the job may exist at the gateway: resend this body
        return client.submit(job, idempotency_key)

    job = {"command": ["true"], "walltime": 10}
    while time.monotonic() < stop_at:
        try:
            if "body" in sent:
                token, body = sent["body"]
                with GatewayClient(url) as client:
                    client.token = token
                    try:
                        view = client.submit(body, key)
                    except GatewayRefused as exc:
                        if exc.status != 401:
                            raise
                        client.login("alice", "alice-pw")  # the session did not survive: sign on again
                        view = client.submit(body, key)
            else:
                with GatewayClient(url) as home:
                    home.login("alice", "alice-pw")
                    sign_on = dataclasses.replace(with_home_session(home), submit=submitting)
                    submission = submit_anywhere(
                        url, job, sign_on, centre="hpc-a", idempotency_key=key, keys=PaymentKeys()
                    )
                    submission.client.close()
                    view = submission.view
        except (GatewayUnreachable, GatewayRefused, httpx.HTTPError, OSError) as exc:
            status = getattr(exc, "status", None)
            if status is not None and status not in (401, 502, 503, 504):
                with lock:
                    outcome.errors.append(f"{key}: {status} {exc}")
                return
            with lock:
                outcome.retries += 1
            time.sleep(0.2)
            continue
        with lock:
            outcome.acknowledged.setdefault(key, view["id"])
            outcome.answers.setdefault(key, set()).add(view["id"])
        return
    with lock:
        outcome.errors.append(f"{key}: never answered")


def _jobs_by_key(data_dir: Path, keys: set[str]) -> dict[str, list[tuple[str, str]]]:
    """(job id, status) of every job row per idempotency key, read from the gateway's own store."""
    with sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT idempotency_key, id, status FROM jobs WHERE idempotency_key IS NOT NULL").fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for key, job_id, status in rows:
        if key in keys:
            found.setdefault(key, []).append((job_id, status))
    return found


def test_kill_9_of_a_gateway_under_load_loses_and_duplicates_no_acknowledged_job(consortium):
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    url = consortium.url("hpc-a")
    outcome, lock = Outcome(), threading.Lock()
    keys = [f"fault-{uuid.uuid4()}" for _ in range(48)]
    stop_at = time.monotonic() + 180
    queue = list(keys)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                key = queue.pop()
            _submit_until_answered(url, key, outcome, lock, stop_at)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    kills = 0
    while kills < 4 and any(w.is_alive() for w in workers):
        time.sleep(chance.uniform(0.3, 2.5))  # a random moment of the load: quote, grant, submit, run, answer
        consortium.kill_gateway("hpc-a")
        kills += 1
        consortium.start_gateway("hpc-a")
    for w in workers:
        w.join(timeout=200)
    assert not outcome.errors, f"seed {seed}: {outcome.errors}"
    assert set(outcome.acknowledged) == set(keys), f"seed {seed}: unanswered {set(keys) - set(outcome.acknowledged)}"

    stored = _jobs_by_key(consortium.data_dir("hpc-a"), set(keys))
    lost = [k for k, job_id in outcome.acknowledged.items() if job_id not in {j for j, _ in stored.get(k, [])}]
    duplicated = {k: rows for k, rows in stored.items() if len(rows) > 1}
    answered_twice = {k: ids for k, ids in outcome.answers.items() if len(ids) > 1}
    print(f"seed {seed}: {kills} kills, {len(keys)} jobs, {outcome.retries} retries")
    assert (lost, duplicated, answered_twice) == ([], {}, {}), f"seed {seed}: lost, duplicated, answered twice"

    # every acknowledged job ends (none stays queued or running for ever after the crashes)
    def all_final() -> bool:
        rows = _jobs_by_key(consortium.data_dir("hpc-a"), set(keys))
        return all(status not in ACTIVE for found in rows.values() for _, status in found)

    _eventually(all_final, within=120, what=f"seed {seed}: every job final")


# -- (b) the chain node stalled -----------------------------------------------------------------------


def test_the_chain_node_stopped_while_jobs_are_accepted_then_the_outbox_drains_and_the_epoch_settles(consortium):
    url = consortium.url("hpc-a")
    consortium.stop_chain()  # anvil stops (its chain saved); its port refuses connections
    try:
        accepted = []
        with GatewayClient(url) as home:
            home.login("alice", "alice-pw")
            for _ in range(3):  # jobs keep being accepted: nothing of a submission needs the chain
                submission = submit_anywhere(
                    url, {"command": ["true"], "walltime": 10}, with_home_session(home), centre="hpc-a"
                )
                submission.client.close()
                accepted.append(submission.view["id"])
            for job_id in accepted:
                assert home.wait(job_id, timeout=60)["status"] == "succeeded"
        epochs = {}
        for name in consortium.names:  # the close answers at once; its anchor waits in the outbox
            answer = httpx.post(
                consortium.url(name) + "/v1/epochs/close",
                headers={"X-Operator-Key": consortium.operator_key(name)},
                timeout=15,
            )
            assert answer.status_code in (200, 202), f"{name}: {answer.status_code} {answer.text[:300]}"
            epochs[name] = answer.json()["epoch"]
        assert len(set(epochs.values())) == 1, epochs
        epoch = epochs["hpc-a"]
        time.sleep(5)  # the chain stays away a while; the gateways keep answering
        for name in consortium.names:
            assert httpx.get(consortium.url(name) + "/v1/capacity", timeout=5).status_code == 200
    finally:
        consortium.start_chain()

    def settled() -> bool:
        try:
            with GatewayClient(url) as client:
                view = client.audit_epoch(epoch)
        except (GatewayUnreachable, GatewayRefused):
            return False
        return bool(view.get("settled"))

    _eventually(settled, within=150, what=f"epoch {epoch} settled after the chain came back")


# -- (c) a centre's directory stopped -----------------------------------------------------------------


def test_a_stopped_directory_answers_503_at_its_home_then_recovers(consortium):
    url = consortium.url("hpc-a")
    consortium.stop_directory("hpc-a")
    try:
        for path in ("/v1/login", "/v1/credentials"):
            answer = httpx.post(url + path, json={"username": "alice", "password": "alice-pw"}, timeout=30)
            assert answer.status_code == 503, f"{path}: {answer.status_code} {answer.text[:300]}"
            body = answer.json()
            assert "directory" in body["error"].lower() and "hpc-a" in body["error"], body
        # the other centres' homes are not affected
        other = httpx.post(
            consortium.url("cloud-b") + "/v1/login", json={"username": "carol", "password": "carol-pw"}, timeout=30
        )
        assert other.status_code == 200, other.text[:300]
    finally:
        consortium.start_directory("hpc-a")

    def signs_on() -> bool:
        answer = httpx.post(url + "/v1/login", json={"username": "alice", "password": "alice-pw"}, timeout=30)
        return answer.status_code == 200

    _eventually(signs_on, within=90, what="sign-on at hpc-a once its directory is back")


def _eventually(check, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not true after {within:.0f} s"
        time.sleep(0.5)
