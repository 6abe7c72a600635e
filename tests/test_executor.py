"""LocalExecutor: runs without a shell, meters with rusage, enforces walltime on the whole group."""

from __future__ import annotations

import os
import pwd
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.executor import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    TAIL_BYTES,
    Execution,
    ExecutorError,
    ExecutorFailure,
    LocalExecutor,
    validate_command,
)

PY = sys.executable


@pytest.fixture
def executor(tmp_path: Path) -> LocalExecutor:
    return LocalExecutor(tmp_path / "jobs", grace=0.5)


def _alive(pid: int) -> bool:
    """True if pid is a running (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


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
    big = executor.run([PY, "-c", "b = bytearray(100 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"],
                       walltime=30)
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
    assert (Path(ex.workdir) / "stdout").read_text() == "hello\n"


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
    assert Path(a.workdir).parent == executor.workdir
    assert secret == "None"
    assert mine == "x" and b.stdout_tail.splitlines()[2] == "y"


def test_walltime_kills_job(executor: LocalExecutor) -> None:
    t0 = time.monotonic()
    ex = executor.run(["sleep", "30"], walltime=1)
    assert ex.timed_out and ex.exit_code is None and not ex.succeeded
    assert time.monotonic() - t0 < 10


def test_walltime_kills_children_and_sigterm_ignorers(executor: LocalExecutor) -> None:
    # The job starts a child that sleeps, and itself ignores SIGTERM: both must go.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen(['sleep', '300'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    t0 = time.monotonic()
    ex = executor.run([PY, "-c", script], walltime=1)
    assert ex.timed_out and ex.exit_code is None
    assert time.monotonic() - t0 < 10
    child = int(ex.stdout_tail.split()[0])
    for _ in range(100):  # the kernel may take a moment to tear it down
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def test_leftover_background_process_is_killed_when_job_ends(executor: LocalExecutor) -> None:
    script = "import subprocess; p = subprocess.Popen(['sleep', '300']); print(p.pid)"
    ex = executor.run([PY, "-c", script], walltime=10)
    assert ex.exit_code == 0 and not ex.timed_out
    child = int(ex.stdout_tail.split()[0])
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def test_command_not_found_is_a_failed_execution(executor: LocalExecutor) -> None:
    ex = executor.run(["definitely-not-a-command-xcentre"], walltime=5)
    assert ex.exit_code == EXIT_NOT_FOUND and not ex.timed_out
    assert "command not found" in ex.stderr_tail
    assert ex.cpu_millis == 0 and ex.max_rss_kib == 0


def test_non_executable_file_is_a_failed_execution(executor: LocalExecutor, tmp_path: Path) -> None:
    script = tmp_path / "not-exec.sh"
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
    assert list(executor.workdir.iterdir()) == []  # nothing was started


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
        Execution(exit_code=0, timed_out=False, cpu_millis=0, wall_millis=0, max_rss_kib=0,
                  started_at=10, ended_at=5)



def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.skipif(os.geteuid() != 0 or not _has_user("nobody"), reason="needs root and the 'nobody' account")
def test_jobs_run_as_the_job_user_and_cannot_read_the_gateways_secrets() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:  # a folder the job user can traverse
        folder = Path(shared)
        folder.chmod(0o711)
        secret = folder / "secret.key"
        secret.write_text("the centre's key")
        secret.chmod(0o600)
        executor = LocalExecutor(folder / "jobs", user="nobody")
        result = executor.run(["/bin/sh", "-c", f"id -u; cat {secret}; echo done"], walltime=30)
        assert result.stdout_tail.split() == [str(pwd.getpwnam("nobody").pw_uid), "done"]
        assert "Permission denied" in result.stderr_tail


def test_a_job_user_must_exist_and_must_not_be_root(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="does not exist"):
        LocalExecutor(tmp_path, user="no-such-user-xcentre")
    with pytest.raises(ExecutorError, match="must not run as root"):
        LocalExecutor(tmp_path, user="root")
