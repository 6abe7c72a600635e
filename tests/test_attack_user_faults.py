"""Attacks on job faults and node faults, by a user or by an outsider: each test failed on the code before its fix.

- a job's full stdout and stderr (up to `max_file_mib` each) stayed on the node's disk for the whole
  retention after its job was final: a cheap job writing gigabytes, repeated, filled the data disk
  (then every submission is 507 and finished jobs cannot be billed); a released run keeps only the
  tails its job stored;
- a run recovered at a restart whose record did not fit on a nearly full disk was stored as failed and
  unbilled; it is left running for the next start to bill, as a live run is;
- a chain node's URL (credentials, API key) was in the public 503 answer while the node was down, and its
  user:password@ in the log lines;
- every public GET /metrics counted all jobs ever held under the store's one lock;
- `consortium up` left each slapd's root DN password readable by every local user (config.ldif, 0644).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def _sandbox() -> str:
    from gateway.jobs.executor import sandbox_problem

    return "bwrap" if sandbox_problem() is None else "none"


def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_released_run_keeps_no_more_of_its_output_than_its_tails(tmp_path):
    from gateway.jobs.executor import Limits, LocalExecutor
    from gateway.jobs.launching import TAIL_BYTES

    executor = LocalExecutor(tmp_path / "jobs", sandbox=_sandbox(), retention=86_400)
    noisy = ["sh", "-c", "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo last"]
    execution = executor.run(noisy, 30, limits=Limits(1, 256, 0), key="job-noisy")
    assert execution.stdout_tail.endswith("last\n")
    folder = tmp_path / "jobs" / "run-job-noisy"
    assert _size(folder) > 6_000_000  # until the job is stored, its run is kept whole
    executor.release("job-noisy")
    assert folder.is_dir(), "kept for the retention"
    assert _size(folder) < 2 * TAIL_BYTES + 64 * 1024, "a released run keeps only its output's tails"
    assert (folder / "stdout").read_bytes().endswith(b"last\n")
    assert executor.sweep() == 0


def test_no_file_a_consortium_directory_keeps_shows_its_root_password_to_other_local_users(slapd_factory, tmp_path):
    """`consortium up` makes a random root DN password for each slapd, and keeps admin.pw 0600; config.ldif,
    the configuration slapadd read, held it in clear for every local user (0644): a local user could bind as
    the root DN on loopback, rewrite the directory (a user's groups, a password) and sign on as anyone there."""
    import stat as stat_

    from tests.fixtures.slapd import start_slapd

    secret = "root-dn-secret-d41d8cd98f"
    server = start_slapd(tmp_path / "slapd", admin_password=secret)
    try:
        shown = [
            f"{path.relative_to(tmp_path)} {stat_.filemode(path.stat().st_mode)}"
            for path in (tmp_path / "slapd").rglob("*")
            if path.is_file() and secret.encode() in path.read_bytes() and path.stat().st_mode & 0o077
        ]
    finally:
        server.stop()
    assert shown == []


def test_an_outsider_asking_while_the_chain_is_down_is_not_told_the_chain_nodes_credentials():
    """A production chain URL often carries credentials (https://user:password@besu…, or an API key in its path).
    ChainUnavailable names the node's URL, and the API's 503 put that text in the answer to anyone: a public
    audit read while the node was down gave an outsider the centre's chain credentials."""
    import socket
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from gateway.api.app import create_app
    from ledger.chain import connect

    with socket.socket() as sock:  # a port nothing listens on: the node is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chain = connect(f"http://rpcuser:rpc-secret-1@127.0.0.1:{port}/v3/api-key-2", require_node=False)
    node = SimpleNamespace(name="hpc-a", epoch_audit=lambda epoch: chain.w3.eth.block_number)
    with TestClient(create_app(node)) as client:  # type: ignore[arg-type]
        answer = client.get("/v1/audit/epochs/1")
    assert answer.status_code == 503 and answer.json()["reasons"] == ["chain-unavailable"]
    assert "hpc-a" in answer.json()["error"]
    assert "rpc-secret-1" not in answer.text and "api-key-2" not in answer.text and "rpcuser" not in answer.text


def test_an_outsider_hammering_metrics_does_not_count_every_job_under_the_store_lock_each_time():
    """GET /metrics is public, and each scrape counted every job the store ever held (an index scan of the
    whole jobs table, ~0.15 s at a million jobs) holding the store's one lock: a few requests a second from
    anyone kept every submission waiting. The count is reused for a second, as /v1/capacity's answer is."""
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from gateway.api.app import create_app

    counted = []

    def jobs_by_status() -> dict[str, int]:
        counted.append(1)
        return {"succeeded": 1_000_000}

    parts = SimpleNamespace(
        store=SimpleNamespace(jobs_by_status=jobs_by_status),
        epochs=SimpleNamespace(
            outbox=SimpleNamespace(depth=dict), state=lambda: SimpleNamespace(open=3, last_anchored=2, last_settled=1)
        ),
        index=SimpleNamespace(last_block=10, lag=0, reachable=True),
    )
    node = SimpleNamespace(name="hpc-a", parts=parts)
    with TestClient(create_app(node)) as client:  # type: ignore[arg-type]
        for _ in range(20):
            answer = client.get("/metrics")
            assert answer.status_code == 200 and 'xcentre_jobs{state="succeeded"} 1e+06' in answer.text
    assert len(counted) <= 2


def test_log_lines_do_not_carry_the_chain_nodes_password():
    """gateway/node/logs.py promises that no secret reaches a log line, yet a gateway whose chain node was down
    logged ChainUnavailable, which names the node's URL with its user:password@, in both formats."""
    import io
    import logging
    import socket

    from gateway.node.logs import configure
    from ledger.chain import ChainUnavailable, connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chain = connect(f"https://rpcuser:rpc-secret-1@127.0.0.1:{port}/", require_node=False)
    with pytest.raises(ChainUnavailable) as raised:
        _ = chain.w3.eth.block_number
    down = raised.value
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    lines = []
    try:
        for form in ("json", "text"):
            stream = io.StringIO()
            configure(form, centre="hpc-a", stream=stream)
            logging.getLogger("gateway.books.epochs").warning("%s: %s; writes wait in the outbox", "hpc-a", down)
            try:
                raise down
            except ChainUnavailable:
                logging.getLogger("gateway.node.centre").exception("housekeeping failed")
            lines.append(stream.getvalue())
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    for text in lines:
        assert "127.0.0.1" in text and "rpc-secret-1" not in text and "rpcuser" not in text


@pytest.fixture(scope="module")
def restartable(slapd_factory, anvil_url, tmp_path_factory):
    from tests.fixtures.consortium import start_consortium

    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("attack-faults"))
    yield running
    running.stop()


def test_a_run_recovered_at_a_restart_on_a_nearly_full_disk_is_not_marked_failed_and_unbilled(restartable, monkeypatch):
    """At a restart, a run that finished while the gateway was down is billed. On a nearly full data disk the
    record's transaction (record, sealed outputs) fails while the one-row "failed" update still fits: recovery
    stored "failed, gateway error at a restart", no record, so work that was done was never billed, and the
    user (who can help fill the disk with output) had run for free. A live run in the same state is left
    running for the next start to bill (`_run`); recovery now does the same."""
    import sqlite3

    from gateway.store import Store
    from tests.test_job_faults_gateway import _limits, final, job, submit

    fresh = restartable
    fresh.stop_centre("ai-c")
    node = fresh.start_centre("ai-c", workers=1)
    blocker = submit(fresh, "dave", "ai-c", job("ai-c", seconds=3))  # holds the only worker
    finished = submit(fresh, "dave", "ai-c", job("ai-c"))
    fresh.stop_centre("ai-c")
    store, executor = node.parts.store, node.parts.executor
    request = store.get_job(finished).request
    executor.run(request["command"], request["walltime"], limits=_limits(request), key=finished)
    store.update_job(finished, status="running")  # what a crash after the run leaves

    real = Store.complete_job
    refused: list[str] = []

    def nearly_full(self, job_id, status, exit_code, stdout_tail, stderr_tail, record=None, **more):
        if job_id == finished and record is not None:  # the big transaction does not fit; a status update does
            refused.append(job_id)
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, job_id, status, exit_code, stdout_tail, stderr_tail, record, **more)

    monkeypatch.setattr(Store, "complete_job", nearly_full)
    node = fresh.start_centre("ai-c")
    final(node.parts.store, blocker)
    deadline = time.monotonic() + 30
    while not refused and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # what recovery does after the refusal
    assert refused and node.parts.store.get_job(finished).status == "running", node.parts.store.get_job(finished)
    monkeypatch.setattr(Store, "complete_job", real)
    fresh.stop_centre("ai-c")
    node = fresh.start_centre("ai-c")
    billed = final(node.parts.store, finished)
    assert billed.status == "succeeded" and billed.record_id is not None
