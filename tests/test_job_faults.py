"""Job faults found by killing and starving real gateways: each test failed on the code before its fix.

- a submission a centre took without answering is sent there again, never placed afresh elsewhere;
- an unreachable centre is unavailability (503, retry later), never a refusal;
- `xcentre submit` keeps the key of an unanswered submission and reuses it.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.client.dispatch import NoCentreAccepts
from gateway.client.http import GatewayUnreachable
from gateway.client.idempotency import choose_key, submission_label
from gateway.client.wallet import PaymentKeys
from tests.test_dispatch import Consortium, submit


def _timeout(centre: str) -> httpx.ReadTimeout:
    return httpx.ReadTimeout("killed", request=httpx.Request("POST", f"http://{centre}.example/v1/jobs"))


def test_a_retry_of_an_unanswered_submission_goes_to_the_same_centre_with_the_same_order(tmp_path):
    keys = PaymentKeys(tmp_path / "wallet.payments.json")
    consortium = Consortium(**{"cloud-b": _timeout("cloud-b")})
    with pytest.raises(GatewayUnreachable, match="may be running there"):
        submit(consortium, idempotency_key="k1", keys=keys)
    first = consortium.submitted[-1][2]
    # the retry, in a new process (the wallet read again): cloud-b is back, but now ai-c ranks first
    consortium.answers = {}
    consortium.ranking = ["ai-c", "hpc-a", "cloud-b"]
    again = submit(consortium, idempotency_key="k1", keys=PaymentKeys(tmp_path / "wallet.payments.json"))
    assert again.centre == "cloud-b" and again.view["id"] == "job-at-cloud-b"
    assert [c for c, _, _ in consortium.submitted] == ["cloud-b", "cloud-b"]
    second = consortium.submitted[-1][2]
    assert second["order"] == first["order"] and second["order_signature"] == first["order_signature"]
    assert len(consortium.quoted) == 1, "nothing is quoted or granted again"


def test_a_pending_submission_the_centre_now_refuses_is_dropped_and_placed_afresh_next_time(tmp_path):
    from gateway.client.http import GatewayRefused

    keys = PaymentKeys(tmp_path / "wallet.payments.json")
    consortium = Consortium(**{"cloud-b": _timeout("cloud-b")})
    with pytest.raises(GatewayUnreachable):
        submit(consortium, idempotency_key="k1", keys=keys)
    consortium.answers = {"cloud-b": 400}  # say its order expired meanwhile: it did not take the job
    with pytest.raises(GatewayRefused, match="dropped from the wallet"):
        submit(consortium, idempotency_key="k1", keys=keys)
    assert keys.pending(idempotency_key="k1") is None
    consortium.answers = {"cloud-b": 503}
    assert submit(consortium, idempotency_key="k1", keys=keys).centre == "hpc-a"


def test_the_wallet_records_where_a_submission_goes_before_it_is_sent(tmp_path):
    path = tmp_path / "wallet.payments.json"
    seen: list[dict] = []

    class Recording(Consortium):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/jobs":
                seen.extend(PaymentKeys(path).open().values())  # what a crash right now would leave
            return super().__call__(request)

    submit(Recording(), idempotency_key="k9", keys=PaymentKeys(path))
    assert seen and seen[0]["centre"] == "cloud-b" and seen[0]["idempotency_key"] == "k9" and "paid" in seen[0]


def test_an_unreachable_centre_among_refusals_is_unavailability_with_every_reason():
    request = httpx.Request("POST", "http://hpc-a.example/v1/jobs/quote")
    consortium = Consortium()
    consortium.quotes = {"cloud-b": 403, "ai-c": 403}
    consortium.answers = {}

    class Unreachable(Consortium):
        def __call__(self, req: httpx.Request) -> httpx.Response:
            if req.url.host.startswith("hpc-a") and req.url.path == "/v1/jobs/quote":
                raise httpx.ConnectError("connection refused", request=request)
            return consortium(req)

    with pytest.raises(NoCentreAccepts) as caught:
        submit(Unreachable())
    refusal = caught.value
    assert refusal.status == 503 and refusal.retry_after
    assert "try again" in refusal.error
    assert "cloud-b: no" in refusal.reasons and "ai-c: no" in refusal.reasons
    assert any(r.startswith("hpc-a: unreachable") and "ConnectError" in r for r in refusal.reasons)


def test_submit_reuses_the_key_of_the_same_submission_that_got_no_answer(tmp_path):
    keys = PaymentKeys(tmp_path / "wallet.payments.json")
    job = {"command": ["true"], "walltime": 30}
    label = submission_label(job, centre="auto", anonymous=False, project=None, user="alice")
    first = choose_key(keys, label)
    assert first.note is None
    consortium = Consortium(**{"cloud-b": _timeout("cloud-b")})
    with pytest.raises(GatewayUnreachable):
        submit(consortium, idempotency_key=first.key, keys=keys, label=label)
    again = choose_key(PaymentKeys(tmp_path / "wallet.payments.json"), label)
    assert again.key == first.key and "cloud-b" in again.note and "same" in again.note
    other = submission_label(job | {"walltime": 60}, centre="auto", anonymous=False, project=None, user="alice")
    assert choose_key(keys, other).key != first.key
    with pytest.raises(ValueError, match="another submission"):
        choose_key(keys, other, first.key)
    assert choose_key(keys, other, "mine").key == "mine"


# -- idempotency keys are the user's, not the session's ----------------------------------------------------------


def _payment(n: int, account: str):
    import hashlib

    from gateway.store import Payment

    return Payment(
        order={"nonce": n},
        order_signature=b"\x01" * 65,
        grant={"order": n, "amount": 10},
        grant_signature=b"\x02" * 65,
        order_digest=hashlib.sha256(b"order %d" % n).digest(),
        account=account,
    )


REQ = {"command": ["true"], "walltime": 30}


def test_a_key_is_scoped_to_the_order_account_whatever_the_session_pseudonym(tmp_path):
    from gateway.store import IdempotencyConflict, Store

    account = "0x" + "aa" * 20
    with Store(tmp_path / "gateway.db") as store:
        job, created = store.create_job(
            "1111111111111111@hpc-a",
            "hpc-a",
            REQ,
            "ai-c",
            "k",
            payment=_payment(1, account),
            idempotency_scope=f"account:{account}",
        )
        assert created
        # a new sign-on is a new pseudonym; the same order's account and key find the job
        again, created = store.create_job(
            "2222222222222222@hpc-a",
            "hpc-a",
            REQ,
            "ai-c",
            "k",
            payment=_payment(1, account),
            idempotency_scope=f"account:{account}",
        )
        assert not created and again.id == job.id
        assert store.job_by_key(f"account:{account}", "k").id == job.id
        # another user's account with the same key is another job
        other, created = store.create_job(
            "3333333333333333@hpc-a",
            "hpc-a",
            REQ,
            "ai-c",
            "k",
            payment=_payment(2, "0x" + "bb" * 20),
            idempotency_scope="account:0x" + "bb" * 20,
        )
        assert created and other.id != job.id
        # the same session reusing its key with another account's order is a conflict, never a second job
        with pytest.raises(IdempotencyConflict):
            store.create_job(
                "1111111111111111@hpc-a",
                "hpc-a",
                REQ,
                "ai-c",
                "k",
                payment=_payment(3, "0x" + "cc" * 20),
                idempotency_scope="account:0x" + "cc" * 20,
            )


def test_a_version_9_store_gains_key_scopes_and_keeps_its_keys(tmp_path):
    import sqlite3

    from gateway.store import Store
    from gateway.store.schema import MIGRATIONS
    from ledger.db import migrate

    path = tmp_path / "gateway.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:9])
    db.execute(
        "INSERT INTO jobs (id, idempotency_key, principal, home, request, serving_centre, status, created_at,"
        " updated_at) VALUES ('job-1', 'k', 'alice@hpc-a', 'hpc-a', ?, 'hpc-a', 'succeeded', 1, 1)",
        ('{"command":["true"],"walltime":30}',),
    )
    db.close()
    with Store(path) as store:
        assert store.job_by_key("alice@hpc-a", "k").id == "job-1"
        again, created = store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "k")
        assert not created and again.id == "job-1"


# -- a full or read-only data disk ---------------------------------------------------------------------------------


def test_a_full_disk_is_disk_full_and_leaves_the_store_whole(tiny_disk):
    import sqlite3

    from gateway.node.errors import DiskFull, disk_refusal
    from gateway.store import Store

    store = Store(tiny_disk / "gateway.db")
    stored = 0
    with pytest.raises(sqlite3.OperationalError) as caught:
        while True:
            store.create_job("alice@hpc-a", "hpc-a", {"command": ["x" * 2000], "n": stored}, "hpc-a", f"k{stored}")
            stored += 1
    refusal = disk_refusal(caught.value)
    assert isinstance(refusal, DiskFull) and refusal.reasons == ["disk-full"]
    assert refusal.message.startswith("the centre's data disk is full: ")
    assert len(store.list_jobs(limit=10_000)) == stored  # the failed write left nothing
    store.close()
    with Store(tiny_disk / "gateway.db") as again:  # and the file opens whole
        assert again._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(again.list_jobs(limit=10_000)) == stored


def test_a_read_only_store_is_unavailability_and_keeps_what_it_had(tmp_path):
    """SQLite's own read-only refusal (a disk remounted read-only under a running gateway gives the same)."""
    import sqlite3

    from gateway.api.errors import status_of
    from gateway.node.errors import DiskReadOnly, disk_refusal
    from gateway.store import Store

    with Store(tmp_path / "gateway.db") as store:
        store.create_job("alice@hpc-a", "hpc-a", REQ, "hpc-a", "k")
        store._db.execute("PRAGMA query_only = 1")
        with pytest.raises(sqlite3.OperationalError) as caught:
            store.create_job("alice@hpc-a", "hpc-a", REQ | {"n": 2}, "hpc-a", "k2")
        refusal = disk_refusal(caught.value)
        assert isinstance(refusal, DiskReadOnly) and refusal.reasons == ["disk-read-only"]
        assert status_of(refusal) == 503
        store._db.execute("PRAGMA query_only = 0")
        assert [j.idempotency_key for j in store.list_jobs()] == ["k"]


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (OSError(28, "No space left on device"), 507, "disk-full"),
        (OSError(122, "Disk quota exceeded"), 507, "disk-full"),
        (OSError(30, "Read-only file system"), 503, "disk-read-only"),
        ("database or disk is full", 507, "disk-full"),
        ("attempt to write a readonly database", 503, "disk-read-only"),
        (OSError(5, "Input/output error"), 503, "disk-error"),
        ("disk I/O error", 503, "disk-error"),  # SQLite's SQLITE_IOERR: a disk a file system error made read-only
    ],
)
def test_disk_errors_are_named_with_their_status(error, status, reason):
    import sqlite3

    from gateway.api.errors import status_of
    from gateway.node.errors import disk_refusal

    exc = sqlite3.OperationalError(error) if isinstance(error, str) else error
    refusal = disk_refusal(exc)
    assert refusal is not None and status_of(refusal) == status and refusal.reasons == [reason]
    assert disk_refusal(OSError(2, "No such file or directory")) is None
    assert disk_refusal(sqlite3.OperationalError("no such table: jobs")) is None


# -- a gateway killed while its jobs run ---------------------------------------------------------------------------

_RUNNER = """
import sys
from gateway.jobs.executor import LocalExecutor, Limits
executor = LocalExecutor(sys.argv[1], sandbox=sys.argv[2])
executor.run(["sh", "-c", "sleep 1.5; echo done"], 30, limits=Limits(1, 256, 0), key="job-killed")
"""


def _sandbox() -> str:
    from gateway.jobs.executor import sandbox_problem

    return "bwrap" if sandbox_problem() is None else "none"


def _kill_gateway_while_running(jobs_dir):
    """A process running a named job through the launcher, killed with SIGKILL once the launcher runs."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    process = subprocess.Popen([sys.executable, "-c", _RUNNER, str(jobs_dir), _sandbox()], cwd=Path.cwd())
    pid_file = jobs_dir / "run-job-killed" / "launcher.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the launcher did not start"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return int(pid_file.read_text())


def test_a_job_that_finishes_after_its_gateway_was_killed_is_recovered_with_its_meters(tmp_path):
    from gateway.jobs.executor import LocalExecutor

    jobs = tmp_path / "jobs"
    _kill_gateway_while_running(jobs)
    restarted = LocalExecutor(jobs, sandbox=_sandbox(), retention=0)
    execution = restarted.recover("job-killed")  # waits for the launcher, which outlived the gateway
    assert execution is not None and execution.exit_code == 0 and execution.stdout_tail == "done\n"
    assert execution.wall_millis >= 1000 and execution.ended_at >= execution.started_at
    restarted.release("job-killed")
    assert not (jobs / "run-job-killed").exists()


def test_a_job_whose_launcher_died_too_is_not_recovered(tmp_path):
    import os
    import signal

    from gateway.jobs.executor import LocalExecutor

    jobs = tmp_path / "jobs"
    launcher = _kill_gateway_while_running(jobs)
    os.killpg(launcher, signal.SIGKILL)  # the whole machine's view of a crash: the launcher is gone too
    restarted = LocalExecutor(jobs, sandbox=_sandbox())
    assert restarted.recover("job-killed") is None
    assert restarted.recover("job-never-ran") is None


def test_a_finished_runs_folder_is_kept_for_the_retention_then_swept(tmp_path):
    import os
    import time

    from gateway.jobs.executor import Limits, LocalExecutor

    executor = LocalExecutor(tmp_path / "jobs", sandbox=_sandbox(), retention=3600)
    first = executor.run(["echo", "one"], 10, limits=Limits(1, 256, 0), key="job-1")
    executor.run(["echo", "two"], 10, limits=Limits(1, 256, 0), key="job-2")
    assert first.stdout_tail == "one\n"
    folders = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    assert folders == ["run-job-1", "run-job-2"]  # until their jobs are stored, a crash must not lose them
    assert executor.sweep() == 0  # nothing released yet
    executor.release("job-1")
    executor.release("job-2")
    assert executor.sweep() == 0  # released, within the retention
    long_ago = time.time() - 3601
    os.utime(tmp_path / "jobs" / "run-job-1" / "released", (long_ago, long_ago))
    assert executor.sweep() == 1
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["run-job-2"]
    assert executor.sweep(now=time.time() + 3600) == 1 and not list((tmp_path / "jobs").iterdir())
