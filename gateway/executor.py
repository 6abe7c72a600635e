"""Run one job as local processes and meter what it used.

The serving centre bills from these numbers, so they come from the kernel
(`wait4` rusage of the job's process), not from the job itself. Each job runs
without a shell, in its own working directory and its own session (process
group), so that the walltime limit can stop the job *and* every process it
started.

Why a launcher: Linux folds the RSS of the address space a process had
*before* exec into its ru_maxrss, and a child started from the gateway
(fork or vfork) begins with the gateway's address space, hundreds of MiB
once web3 is loaded. So each job is started by a small launcher
(`python -I -S`, stdlib only, about 10 MiB) that forks, execs the job,
enforces the walltime, reaps it with wait4 and reports the rusage on a pipe
the job cannot reach. A job's max_rss_kib is therefore at least the
launcher's footprint at fork (~10 MiB): a floor, never the gateway's size.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TAIL_BYTES",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_EXECUTABLE",
    "Execution",
    "ExecutorError",
    "ExecutorFailure",
    "LocalExecutor",
    "validate_command",
]

TAIL_BYTES = 4096
"""How much of the end of stdout/stderr is kept in an Execution."""

EXIT_NOT_FOUND = 127
"""Exit code of a job whose command does not exist (the shell's convention)."""

EXIT_NOT_EXECUTABLE = 126
"""Exit code of a job whose command exists but cannot be executed."""

_LAUNCHER_SLACK_S = 60.0
"""How long past walltime + grace the gateway waits for a launcher before giving up on it."""


class ExecutorError(ValueError):
    """The job cannot be run as given (bad argv, walltime or environment)."""


class ExecutorFailure(RuntimeError):
    """The executor itself failed (its launcher crashed or hung): the job's outcome is unknown."""


@dataclass(frozen=True)
class Execution:
    """What one run of a job did and used.

    exit_code is the process's exit status, -N if a signal N ended it, and
    None when the executor killed it because it exceeded its walltime
    (timed_out is then True). Times are int UTC seconds; meters are ints.
    """

    exit_code: int | None
    timed_out: bool
    cpu_millis: int
    wall_millis: int
    max_rss_kib: int
    gpu_millis: int = 0
    stdout_tail: str = ""
    stderr_tail: str = ""
    started_at: int = 0
    ended_at: int = 0
    workdir: str = ""

    def __post_init__(self) -> None:
        for name in ("cpu_millis", "wall_millis", "max_rss_kib", "gpu_millis",
                     "started_at", "ended_at"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Execution.{name} must be a non-negative int, got {value!r}")
        if self.exit_code is not None and (
            not isinstance(self.exit_code, int) or isinstance(self.exit_code, bool)
        ):
            raise ValueError(f"Execution.exit_code must be an int or None, got {self.exit_code!r}")
        if self.ended_at < self.started_at:
            raise ValueError("Execution.ended_at is before started_at")

    @property
    def succeeded(self) -> bool:
        return not self.timed_out and self.exit_code == 0


def validate_command(argv: list[str], walltime: int, env: dict[str, str] | None = None) -> None:
    """Raise ExecutorError unless (argv, walltime, env) can be handed to run().

    Exposed so an API can reject a bad job with a 4xx before queueing it.
    Whether the command exists is *not* checked here: that is only known on
    the serving node at run time (see LocalExecutor.run).
    """
    if not isinstance(argv, (list, tuple)) or not argv:
        raise ExecutorError("argv must be a non-empty list of strings")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise ExecutorError(f"argv[{i}] must be a string, got {type(arg).__name__}")
        if "\x00" in arg:
            raise ExecutorError(f"argv[{i}] contains a NUL byte")
    if not argv[0]:
        raise ExecutorError("argv[0] (the command) must not be empty")
    if not isinstance(walltime, int) or isinstance(walltime, bool):
        raise ExecutorError(f"walltime must be an int number of seconds, got {walltime!r}")
    if walltime <= 0:
        raise ExecutorError(f"walltime must be > 0 seconds, got {walltime}")
    if env is not None:
        if not isinstance(env, dict):
            raise ExecutorError("env must be a dict of strings")
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ExecutorError("env keys and values must be strings")
            if not key or "=" in key or "\x00" in key or "\x00" in value:
                raise ExecutorError(f"invalid environment variable name or value: {key!r}")



# The launcher: runs in its own small interpreter (python -I -S -c), reads a
# JSON spec on stdin, prints {"pid": N} then the JSON result on stdout.
_LAUNCHER = r"""
import json, os, select, signal, sys, time

def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass

def wait_exit(pid, pidfd, timeout):
    # True once pid has exited (left as a zombie, not reaped), False if timeout passes first.
    end = None if timeout is None else time.monotonic() + max(0.0, timeout)
    poller = None
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
    while True:
        left = None if end is None else max(0.0, end - time.monotonic())
        if poller is not None:
            if poller.poll(None if left is None else min(3600000, int(left * 1000) + 1)):
                return True
        else:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.01 if left is None else min(0.01, left))
        if end is not None and time.monotonic() >= end:
            return False

def main():
    spec = json.loads(sys.stdin.buffer.read())
    argv, env = spec["argv"], spec["env"]
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(spec["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    err = os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    err_r, err_w = os.pipe()  # close-on-exec: EOF means exec succeeded
    started_at, t0 = int(time.time()), time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if spec["user"] is not None:  # drop to the job user before anything of the job runs
                uid, gid = spec["user"]
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            os.chdir(spec["cwd"])
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; jobs should not
                signal.signal(sig, signal.SIG_DFL)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(err_w, b"%d %s" % (exc.errno or 0, (exc.strerror or "").encode()))
        finally:
            os._exit(127)
    os.close(err_w)
    sys.stdout.write(json.dumps({"pid": pid}) + "\n")
    sys.stdout.flush()
    failed = os.read(err_r, 1024)
    result = {"started_at": started_at, "timed_out": False, "failure": None}
    if failed:
        errno_, _, reason = failed.decode(errors="replace").partition(" ")
        os.waitpid(pid, 0)
        result.update(failure=[int(errno_), reason], status=None, cpu_millis=0, max_rss_kib=0)
    else:
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = None
        # The job's main process stays a zombie until wait4 below, so its pid (the
        # group id) cannot be reused: signalling the group never hits a stranger.
        if not wait_exit(pid, pidfd, spec["walltime"] - (time.monotonic() - t0)):
            result["timed_out"] = True
            signal_group(pid, signal.SIGTERM)
            if not wait_exit(pid, pidfd, spec["grace"]):
                signal_group(pid, signal.SIGKILL)
                wait_exit(pid, pidfd, None)
        signal_group(pid, signal.SIGKILL)  # what the job left behind in its group
        _, status, usage = os.wait4(pid, 0)
        maxrss = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
        result.update(status=status, cpu_millis=int(round((usage.ru_utime + usage.ru_stime) * 1000)),
                      max_rss_kib=max(0, int(maxrss)))
    result.update(wall_millis=int((time.monotonic() - t0) * 1000), ended_at=max(int(time.time()), started_at))
    sys.stdout.write(json.dumps(result) + "\n")

main()
"""

class LocalExecutor:
    """Runs jobs as local processes, one directory per job, through a small launcher.

    Safe to call run() from several threads at once: each call has its own
    launcher, job process, directory and pipes; nothing is shared but the
    workdir. The gateway process must not reap children behind subprocess's
    back (no `os.wait()`/`waitpid(-1)`, no SIGCHLD set to SIG_IGN).

    The job's environment is *not* the gateway's (which may hold secrets): it
    is PATH (the gateway's), HOME and TMPDIR (the job directory) and
    LANG=C.UTF-8, overridden/extended by `env`. Processes that leave the
    job's session (setsid) escape the walltime kill; confining those needs
    cgroups (a Slurm executor), not this one.
    """

    def __init__(
        self, workdir: Path | str, grace: float = 2.0, python: str | None = None, user: str | None = None
    ) -> None:
        """`user`: run every job as this Unix account (the gateway must be root), so that a
        job can read nothing of the gateway's (keys, databases); None runs jobs as the
        gateway's own user, fit only for users the centre trusts with its keys."""
        if grace < 0:
            raise ValueError("grace must be >= 0 seconds")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grace = float(grace)
        self.python = python or sys.executable
        self.user = _account(user) if user is not None else None

    def run(self, argv: list[str], walltime: int, env: dict[str, str] | None = None) -> Execution:
        """Run argv (no shell) for at most walltime seconds and meter it.

        When the walltime passes, the whole process group gets SIGTERM, then
        SIGKILL after `grace` seconds; the result has timed_out=True and
        exit_code=None. When the job's main process ends, any process it left
        in its group is killed too (a job ends when its main process ends).

        A command that does not exist (or cannot be executed) is a failed
        *job*, not a bad request: run() returns an Execution with exit code
        127 (126 if not executable), zero usage and the reason in
        stderr_tail, so the gateway records and reports it like any failed
        job. Malformed input (empty argv, non-string args, walltime <= 0, bad
        env) raises ExecutorError before anything is started; a crashed or
        hung launcher raises ExecutorFailure.
        """
        validate_command(argv, walltime, env)
        argv = list(argv)
        jobdir = Path(tempfile.mkdtemp(prefix="job-", dir=self.workdir))
        if self.user is not None:
            os.chown(jobdir, *self.user)
        full_env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(jobdir),
            "TMPDIR": str(jobdir),
            "LANG": "C.UTF-8",
        }
        if env:
            full_env.update(env)
        out_path, err_path = jobdir / "stdout", jobdir / "stderr"
        spec = {
            "argv": argv, "env": full_env, "cwd": str(jobdir), "stdout": str(out_path),
            "stderr": str(err_path), "walltime": walltime, "grace": self.grace, "user": self.user,
        }
        launcher = subprocess.Popen(
            [self.python, "-I", "-S", "-c", _LAUNCHER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, start_new_session=True, cwd=jobdir, env={"LC_ALL": "C.UTF-8"},
        )
        try:
            out, err = launcher.communicate(json.dumps(spec).encode(), timeout=walltime + self.grace + _LAUNCHER_SLACK_S)
        except BaseException:  # hung launcher, or we are interrupted: leave nothing running
            launcher.kill()
            out, err = launcher.communicate()
            _kill_job(out)
            raise
        lines = out.decode(errors="replace").splitlines()
        try:
            result = json.loads(lines[1])
        except (IndexError, ValueError):
            _kill_job(out)
            raise ExecutorFailure(
                f"job launcher failed (exit {launcher.returncode}): {err.decode(errors='replace')[-1000:].strip()}"
            ) from None

        if result["failure"] is not None:
            errno_, reason = result["failure"]
            code = EXIT_NOT_FOUND if errno_ == errno.ENOENT else EXIT_NOT_EXECUTABLE
            what = "command not found" if code == EXIT_NOT_FOUND else f"cannot execute ({reason.lower()})"
            message = f"xcentre: {what}: {argv[0]}\n"
            with open(err_path, "ab") as f:
                f.write(message.encode())
            exit_code: int | None = code
        else:
            exit_code = None if result["timed_out"] else os.waitstatus_to_exitcode(result["status"])
        return Execution(
            exit_code=exit_code,
            timed_out=result["timed_out"],
            cpu_millis=result["cpu_millis"],
            wall_millis=result["wall_millis"],
            max_rss_kib=result["max_rss_kib"],
            stdout_tail=_tail(out_path),
            stderr_tail=_tail(err_path),
            started_at=result["started_at"],
            ended_at=result["ended_at"],
            workdir=str(jobdir),
        )



def _account(name: str) -> tuple[int, int]:
    """The (uid, gid) of a Unix account jobs may run as: it exists, is not root, and we can switch to it."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ExecutorError(f"job user {name!r} does not exist on this machine") from None
    if entry.pw_uid == 0:
        raise ExecutorError("jobs must not run as root: name an unprivileged job user")
    if os.geteuid() != 0:
        raise ExecutorError(f"running jobs as {name!r} needs the gateway to start as root")
    return entry.pw_uid, entry.pw_gid


def _kill_job(launcher_out: bytes) -> None:
    """Kill the job's group when its launcher died before reaping it (best effort)."""
    try:
        pid = json.loads(launcher_out.decode(errors="replace").splitlines()[0])["pid"]
    except (IndexError, ValueError, KeyError, TypeError):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, limit: int = TAIL_BYTES) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - limit))
        return f.read().decode("utf-8", errors="replace")
