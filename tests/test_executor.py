"""LocalExecutor: runs without a shell, meters from the kernel, enforces walltime on every process of the job.

The attacks on the sandbox itself are in test_sandbox.py; here is what any job sees."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.jobs.executor import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    TAIL_BYTES,
    Execution,
    ExecutorError,
    ExecutorFailure,
    Limits,
    LocalExecutor,
    PreparedJob,
    Sandbox,
    finish_job,
    prepare_job,
    validate_command,
)

PY = "/usr/bin/python3"  # jobs run as an unprivileged uid, which cannot reach an interpreter under /root

SANDBOXED = os.geteuid() == 0 and shutil.which("bwrap") is not None


@pytest.fixture
def executor(tmp_path: Path) -> LocalExecutor:
    """Sandboxed where it can be (root and bubblewrap), as a centre runs it; else explicitly unsandboxed."""
    return LocalExecutor(tmp_path / "jobs", grace=0.5, sandbox="bwrap" if SANDBOXED else "none")


def _running(marker: str) -> bool:
    """Whether a live process on this machine has marker in its command line."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            return True
    return False


def _sleeper(marker: str) -> str:
    """Python that starts `sleep 300` named marker, as a child of the job."""
    return f"subprocess.Popen([{PY!r}, '-c', \"import os; os.execv('/bin/sleep', [{marker!r}, '300'])\"])"


def test_cpu_burn_is_metered(executor: LocalExecutor) -> None:
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\n"
    ex = executor.run([PY, "-c", burn], walltime=30)
    assert ex.exit_code == 0 and not ex.timed_out and ex.succeeded
    # At least the 0.3 s the loop burned; not more than the wall time plus slack.
    assert ex.cpu_millis >= 300
    assert ex.cpu_millis <= ex.wall_millis + 100
    assert ex.gpu_millis == 0
    assert ex.started_at <= ex.ended_at


def test_memory_allocation_shows_in_max_rss(executor: LocalExecutor) -> None:
    small = executor.run([PY, "-c", "pass"], walltime=30)
    big = executor.run([PY, "-c", "b = bytearray(100 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"], walltime=30)
    assert big.exit_code == 0
    assert big.max_rss_kib >= 100 * 1024
    assert small.max_rss_kib > 0
    assert big.max_rss_kib - small.max_rss_kib >= 75 * 1024


def test_gateway_memory_is_not_billed_to_the_job(executor: LocalExecutor) -> None:
    # The gateway (here: the test process) holds 300 MiB; a job that uses ~nothing must not report it.
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])
    ex = executor.run(["true"], walltime=10)
    del ballast
    assert ex.exit_code == 0
    assert 0 < ex.max_rss_kib < 64 * 1024


def test_a_broken_launcher_is_an_executor_failure(tmp_path: Path) -> None:
    broken = LocalExecutor(tmp_path / "jobs", python="false")
    with pytest.raises(ExecutorFailure):
        broken.run(["true"], walltime=5)


def test_exit_codes_propagate(executor: LocalExecutor) -> None:
    assert executor.run([PY, "-c", "raise SystemExit(3)"], walltime=10).exit_code == 3
    assert executor.run(["false"], walltime=10).exit_code == 1
    assert executor.run(["true"], walltime=10).exit_code == 0
    killed = executor.run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], walltime=10)
    assert killed.exit_code == -9 and not killed.timed_out and not killed.succeeded


def test_stdout_and_stderr_tails(executor: LocalExecutor) -> None:
    ex = executor.run([PY, "-c", "import sys; print('hello'); print('oops', file=sys.stderr)"], walltime=10)
    assert ex.stdout_tail == "hello\n"
    assert ex.stderr_tail == "oops\n"
    assert not Path(ex.workdir).parent.exists()  # the job's folder, outputs and all, is gone after the job


def test_tail_keeps_only_last_4_kib_and_replaces_bad_bytes(executor: LocalExecutor) -> None:
    script = "import sys; sys.stdout.buffer.write(b'a' * 10000 + b'\\xff' + b'END')"
    ex = executor.run([PY, "-c", script], walltime=10)
    assert len(ex.stdout_tail.encode("utf-8")) <= TAIL_BYTES + 2  # U+FFFD is 3 bytes for 1
    assert ex.stdout_tail.endswith("\ufffdEND")
    assert ex.stdout_tail.startswith("a")


def test_no_shell_interpretation(executor: LocalExecutor) -> None:
    ex = executor.run(["echo", "$HOME", "; rm -rf /", "|", "*"], walltime=10)
    assert ex.stdout_tail == "$HOME ; rm -rf / | *\n"


def test_per_job_directory_and_clean_environment(executor: LocalExecutor, monkeypatch) -> None:
    monkeypatch.setenv("XCENTRE_SECRET", "hunter2")
    script = "import os; print(os.getcwd()); print(os.environ.get('XCENTRE_SECRET')); print(os.environ['MINE'])"
    a = executor.run([PY, "-c", script], walltime=10, env={"MINE": "x"})
    b = executor.run([PY, "-c", script], walltime=10, env={"MINE": "y"})
    cwd_a, secret, mine = a.stdout_tail.splitlines()
    assert Path(cwd_a).resolve() == Path(a.workdir).resolve()
    assert a.workdir != b.workdir
    assert Path(a.workdir).parent.parent == executor.jobs_dir
    assert secret == "None"
    assert mine == "x" and b.stdout_tail.splitlines()[2] == "y"


def test_walltime_kills_job(executor: LocalExecutor) -> None:
    t0 = time.monotonic()
    ex = executor.run(["sleep", "30"], walltime=1)
    assert ex.timed_out and ex.exit_code is None and not ex.succeeded
    assert time.monotonic() - t0 < 10


def test_walltime_kills_children_and_sigterm_ignorers(executor: LocalExecutor) -> None:
    # The job starts a child that sleeps, and itself ignores SIGTERM: both must go.
    marker = f"xcentre-child-{uuid.uuid4().hex}"
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"{_sleeper(marker)}\n"
        "time.sleep(300)\n"
    )
    t0 = time.monotonic()
    ex = executor.run([PY, "-c", script], walltime=1)
    assert ex.timed_out and ex.exit_code is None
    assert time.monotonic() - t0 < 10
    for _ in range(100):  # the kernel may take a moment to tear it down
        if not _running(marker):
            break
        time.sleep(0.05)
    assert not _running(marker)


def test_leftover_background_process_is_killed_when_job_ends(executor: LocalExecutor) -> None:
    marker = f"xcentre-leftover-{uuid.uuid4().hex}"
    ex = executor.run([PY, "-c", f"import subprocess; {_sleeper(marker)}; print('started')"], walltime=10)
    assert ex.exit_code == 0 and not ex.timed_out and ex.stdout_tail == "started\n"
    for _ in range(100):
        if not _running(marker):
            break
        time.sleep(0.05)
    assert not _running(marker)


def test_command_not_found_is_a_failed_execution(executor: LocalExecutor) -> None:
    ex = executor.run(["definitely-not-a-command-xcentre"], walltime=5)
    assert ex.exit_code == EXIT_NOT_FOUND and not ex.timed_out
    assert "command not found" in ex.stderr_tail
    assert ex.cpu_millis == 0 and ex.max_rss_kib == 0


def test_non_executable_file_is_a_failed_execution(executor: LocalExecutor) -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:  # not under /tmp, which a sandbox replaces
        Path(folder).chmod(0o755)
        script = Path(folder) / "not-exec.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        script.chmod(0o644)
        ex = executor.run([str(script)], walltime=5)
    assert ex.exit_code == EXIT_NOT_EXECUTABLE
    assert "permission denied" in ex.stderr_tail


@pytest.mark.parametrize(
    "argv, walltime, env",
    [
        ([], 10, None),
        ("echo hi", 10, None),
        ([""], 10, None),
        (["echo", 3], 10, None),
        (["echo", b"x"], 10, None),
        (["echo", "a\x00b"], 10, None),
        (["echo"], 0, None),
        (["echo"], -5, None),
        (["echo"], 1.5, None),
        (["echo"], True, None),
        (["echo"], "10", None),
        (["echo"], 10, {"A": 1}),
        (["echo"], 10, {"A=B": "x"}),
        (["echo"], 10, ["A"]),
    ],
)
def test_bad_input_raises(executor: LocalExecutor, argv, walltime, env) -> None:
    with pytest.raises(ExecutorError):
        validate_command(argv, walltime, env)
    with pytest.raises(ValueError):  # ExecutorError is a ValueError
        executor.run(argv, walltime, env)
    assert list(executor.jobs_dir.iterdir()) == []  # nothing was started


def test_concurrent_runs_from_threads(executor: LocalExecutor) -> None:
    def job(i: int) -> Execution:
        return executor.run([PY, "-c", f"import sys; print({i}); sys.exit({i % 4})"], walltime=30)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(job, range(12)))
    for i, ex in enumerate(results):
        assert ex.stdout_tail == f"{i}\n"
        assert ex.exit_code == i % 4
        assert ex.cpu_millis > 0
    assert len({ex.workdir for ex in results}) == 12


def test_concurrent_timeouts_do_not_disturb_other_jobs(executor: LocalExecutor) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        slow = [pool.submit(executor.run, ["sleep", "30"], 1) for _ in range(2)]
        fast = [pool.submit(executor.run, ["echo", str(i)], 10) for i in range(6)]
        assert all(f.result().timed_out for f in slow)
        assert [f.result().stdout_tail for f in fast] == [f"{i}\n" for i in range(6)]


def test_execution_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        Execution(exit_code=0, timed_out=False, cpu_millis=-1, wall_millis=0, max_rss_kib=0)
    with pytest.raises(ValueError):
        Execution(exit_code=0, timed_out=False, cpu_millis=1.5, wall_millis=0, max_rss_kib=0)
    with pytest.raises(ValueError):
        Execution(exit_code=0, timed_out=False, cpu_millis=0, wall_millis=0, max_rss_kib=0, started_at=10, ended_at=5)


@pytest.mark.parametrize(
    "limits", [dict(cores=0), dict(memory_mib=0), dict(gpus=-1), dict(cores=1.5), dict(memory_mib=True)]
)
def test_bad_limits_are_refused(limits) -> None:
    with pytest.raises(ExecutorError, match="limits"):
        Limits(**limits)


def test_every_job_leaves_no_folder_behind(executor: LocalExecutor) -> None:
    executor.run(["true"], walltime=5)
    executor.run(["definitely-not-a-command-xcentre"], walltime=5)
    executor.run(["sleep", "5"], walltime=1)
    assert list(executor.jobs_dir.iterdir()) == []


# -- finish_job on its own: what another executor (Slurm) relies on ------------------------------


def _prepared(tmp_path: Path) -> PreparedJob:
    return prepare_job(
        ["mycommand", "x"], 10, limits=Limits(memory_mib=64), jobs_dir=tmp_path, sandbox=Sandbox(kind="none"), uids=None
    )


RESULT = {
    "started_at": 100,
    "ended_at": 102,
    "wall_millis": 1500,
    "cpu_millis": 700,
    "max_rss_kib": 2048,
    "timed_out": False,
    "status": 3 << 8,
    "failure": None,
    "error": None,
    "memory_exceeded": False,
}


def test_finish_job_turns_a_result_into_an_execution_and_cleans_up(tmp_path: Path) -> None:
    job = _prepared(tmp_path)
    assert job.spec["argv"] == ["mycommand", "x"] and job.spec["limits"]["memory_bytes"] == 64 * 1024 * 1024
    job.stdout.write_text("out\n")
    ex = finish_job(job, RESULT)
    assert (ex.exit_code, ex.cpu_millis, ex.wall_millis, ex.max_rss_kib) == (3, 700, 1500, 2048)
    assert ex.stdout_tail == "out\n" and ex.stderr_tail == ""
    assert not job.folder.exists()


def test_finish_job_reports_failures_to_start_and_memory_kills(tmp_path: Path) -> None:
    missing = finish_job(_prepared(tmp_path), RESULT | {"status": None, "failure": [2, "No such file"]})
    assert missing.exit_code == EXIT_NOT_FOUND and missing.cpu_millis == 0
    assert "command not found: mycommand" in missing.stderr_tail
    killed = finish_job(_prepared(tmp_path), RESULT | {"status": 9, "memory_exceeded": True})
    assert killed.exit_code == -9 and "exceeded its memory limit (64 MiB)" in killed.stderr_tail
    timed_out = finish_job(_prepared(tmp_path), RESULT | {"status": None, "timed_out": True})
    assert timed_out.timed_out and timed_out.exit_code is None


@pytest.mark.parametrize(
    "result",
    [
        None,
        [],
        {},
        RESULT | {"status": None},
        RESULT | {"cpu_millis": -1},
        RESULT | {"cpu_millis": "7"},
        RESULT | {"failure": "bad"},
        RESULT | {"error": "the sandbox (bwrap) did not start the job"},
    ],
)
def test_finish_job_refuses_what_is_not_a_launchers_result(tmp_path: Path, result) -> None:
    job = _prepared(tmp_path)
    with pytest.raises(ExecutorFailure):
        finish_job(job, result)
    assert not job.folder.exists()
