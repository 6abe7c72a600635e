"""Run one job on this machine, sandboxed, under kernel limits, and meter it from the kernel.

The serving centre bills from these numbers and a user's job must never reach
the node that runs it, so:

- every job runs through `gateway/launcher.py` (a small stdlib-only program
  started as root, see its docstring) inside bubblewrap: its own mount, PID,
  IPC, UTS and (unless the centre allows it) network namespaces, a read-only
  system, fresh /proc, /dev and /tmp, the node's data directory, keys, the
  other jobs and /run (daemons' sockets) hidden, and one private writable
  folder (locally a tmpfs counted in its memory, so it cannot fill the disk);
- it runs as a uid of its own, taken from a pool (`UidPool`) for the time it
  runs, with no capabilities, no_new_privs and a seccomp filter (no user
  namespaces, no keyrings, which outlive it under its uid, no vsock);
- memory, processes and cores are limited by the job's cgroups (v1), CPU time
  and file size by rlimits; where cgroups cannot be written, memory and
  processes fall back to RLIMIT_AS and RLIMIT_NPROC (logged);
- every process of the job dies at the walltime: it is all in one PID
  namespace, and when its init dies the kernel kills the rest;
- CPU time and peak memory come from the job's cgroups (else the rusage of the
  sandbox's process tree); its stdout and stderr go to files in a folder it
  cannot see, handed over as descriptors, and read back without following
  links. Nothing the job writes is ever parsed.

`prepare_job` and `finish_job` are the two halves around a launcher run, so
that another executor (Slurm) can run the very same launcher elsewhere.
Running unsandboxed (`sandbox="none"`) is for a developer's own machine: it
is logged loudly and never the default.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gateway.jobs import launcher as _launcher

__all__ = [
    "TAIL_BYTES",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_EXECUTABLE",
    "DEFAULT_JOB_UIDS",
    "LAUNCHER",
    "SANDBOXES",
    "Capacity",
    "Execution",
    "Executor",
    "ExecutorError",
    "ExecutorFailure",
    "Limits",
    "LocalExecutor",
    "PreparedJob",
    "Sandbox",
    "UidPool",
    "finish_job",
    "prepare_job",
    "read_tail",
    "sandbox_problem",
    "validate_command",
]

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
"""How much of the end of stdout/stderr is kept in an Execution."""

EXIT_NOT_FOUND = 127
"""Exit code of a job whose command does not exist (the shell's convention)."""

EXIT_NOT_EXECUTABLE = 126
"""Exit code of a job whose command exists but cannot be executed."""

LAUNCHER = Path(_launcher.__file__).resolve()
"""The launcher program: run it as `<python> -I -S LAUNCHER`, as root, with a spec on stdin."""

SANDBOXES = ("bwrap", "none")
"""How jobs are isolated: bubblewrap (the default), or not at all (a developer's machine only)."""

DEFAULT_JOB_UIDS = (1_900_000_000, 1_900_000_999)
"""Numeric uids jobs run as: no account needs to exist, and none may use them for anything else."""

_LAUNCHER_SLACK_S = 60.0
"""How long past walltime + grace the gateway waits for a launcher before giving up on it."""

_KILL_SLACK_S = 15.0
"""How long a launcher told to stop has to clean up before it is killed."""


class ExecutorError(ValueError):
    """The job cannot be run as given (bad argv, walltime, environment or limits), or the executor is misconfigured."""


class ExecutorFailure(RuntimeError):
    """The executor itself failed (its launcher or sandbox crashed or hung): the job's outcome is unknown."""


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


@dataclass(frozen=True)
class Limits:
    """What a job may use: the kernel holds it to these (cores by CPU quota, memory by its cgroup)."""

    cores: int = 1
    memory_mib: int = 1024
    gpus: int = 0

    def __post_init__(self) -> None:
        for name, low in (("cores", 1), ("memory_mib", 1), ("gpus", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ExecutorError(f"limits.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class Capacity:
    """CPUs an executor offers, and how many of them running jobs do not hold now."""

    total_cpus: int
    free_cpus: int


class Executor(Protocol):
    """What a node needs of an executor."""

    def run(self, argv: list[str], walltime: int, env: dict[str, str] | None = None, *,
            limits: Limits | None = None) -> Execution: ...

    def capacity(self) -> Capacity: ...


@dataclass(frozen=True)
class Sandbox:
    """How jobs are confined: the part of a launcher spec that is the same for every job of a node.

    `hide`: folders and files jobs must not see at all (the node's data
    directory, its keys); the jobs folder is always hidden too.
    `scratch_in_memory`: the job's folder is a tmpfs of its memory limit's
    size, counted in its memory cgroup, so that its files never fill the
    node's disk (else its folder on disk is bound in, as on a cluster's
    shared file system, whose quotas bound it).
    """

    kind: str = "bwrap"
    network: bool = False
    hide: tuple[Path, ...] = ()
    bwrap: str = "bwrap"
    max_processes: int = 1024
    max_file_mib: int = 16 * 1024
    cgroups: bool = True
    scratch_in_memory: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SANDBOXES:
            raise ExecutorError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {self.kind!r}")
        for name in ("max_processes", "max_file_mib"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ExecutorError(f"{name} must be an integer >= 1, got {value!r}")


class UidPool:
    """Numeric uids for jobs, one per running job, so that no job can signal or read another's processes.

    A uid is held with an flock on a file named after it in `lock_dir`, so that
    every pool on this machine (several centres, a restarted gateway, the
    Slurm executor) skips uids another holds; the kernel drops the lock if the
    holder dies. A uid goes back at the end of the queue, to be reused as late
    as possible. Thread-safe.
    """

    def __init__(self, first: int, last: int, lock_dir: Path | str | None = None) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last)):
            raise ExecutorError(f"job uids must be integers, got {first!r}..{last!r}")
        if not 1 <= first <= last <= 2**32 - 2:
            raise ExecutorError(f"job uids must be a range within 1..4294967294, got {first}..{last}")
        if first <= os.geteuid() <= last:
            raise ExecutorError(f"job uids {first}..{last} include the gateway's own uid {os.geteuid()}")
        taken = sorted((p.pw_uid, p.pw_name) for p in pwd.getpwall() if first <= p.pw_uid <= last)
        if taken:
            uid, name = taken[0]
            raise ExecutorError(
                f"job uids {first}..{last} include the account {name!r} (uid {uid}): choose uids that no "
                "account or service uses, since jobs could signal and read what runs or lives under them"
            )
        self.first, self.last = first, last
        self.lock_dir = _private_dir(Path(lock_dir) if lock_dir is not None else _default_lock_dir())
        self._free = deque(range(first, last + 1))
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            for _ in range(len(self._free)):
                uid = self._free.popleft()
                fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another pool on this machine has it now
                    os.close(fd)
                    self._free.append(uid)
                    continue
                self._held[uid] = fd
                return uid
            raise ExecutorFailure(f"every job uid ({self.first}..{self.last}) is in use: widen the range")

    def release(self, uid: int) -> None:
        with self._lock:
            fd = self._held.pop(uid, None)
            if fd is not None:
                os.close(fd)
                self._free.append(uid)


def _default_lock_dir() -> Path:
    run = Path("/run")
    return (run if run.is_dir() else Path(tempfile.gettempdir())) / "xcentre-job-uids"


def _private_dir(folder: Path) -> Path:
    """A folder only we can write to (made if missing), or ExecutorError: lock files must not be someone else's."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ExecutorError(f"{folder} must be a folder owned by uid {os.geteuid()} that no one else can write to")
    return folder


@dataclass
class PreparedJob:
    """A job ready for the launcher: its folder, output files, uid and the launcher's spec.

    `folder` (root-owned, 0711) holds `stdout` and `stderr` (created by the
    launcher) and `work/`, the job's only writable folder, owned by its uid.
    `cleanup()` removes the folder and gives the uid back; finish_job calls it.
    """

    folder: Path
    workdir: Path
    stdout: Path
    stderr: Path
    uid: int | None
    spec: dict
    uids: UidPool | None = field(default=None, repr=False)
    _done: bool = field(default=False, repr=False)

    def cleanup(self) -> None:
        """Remove the job's folder (without following any link the job made) and free its uid. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            _remove_tree(self.folder)
        finally:
            if self.uids is not None and self.uid is not None:
                self.uids.release(self.uid)


def prepare_job(
    argv: list[str],
    walltime: int,
    env: dict[str, str] | None = None,
    *,
    limits: Limits,
    jobs_dir: Path,
    sandbox: Sandbox,
    uids: UidPool | None,
    grace: float = 2.0,
) -> PreparedJob:
    """Make a job's folder, pick its uid and write the launcher's spec (a JSON-able dict).

    The spec's fields: argv, env, workdir, stdout, stderr (absolute paths),
    walltime (s), grace (s), uid (int, or None to stay the launcher's own),
    sandbox (None, or {bwrap, hide, network, scratch_bytes: the size of the job's
    in-memory folder, or None to bind its folder on disk}), limits {cores, memory_bytes,
    processes, file_bytes} and cgroups (bool). Raises ExecutorError for bad
    input, before anything is created.
    """
    validate_command(argv, walltime, env)
    if not isinstance(limits, Limits):
        raise ExecutorError("limits must be a gateway.jobs.executor.Limits")
    jobs_dir = Path(jobs_dir)
    uid = uids.acquire() if uids is not None else None
    try:
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=jobs_dir))
        folder.chmod(0o711)  # the job's uid may pass through to work/, and nothing more
        workdir = folder / "work"
        workdir.mkdir(mode=0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    except BaseException:
        if uid is not None:
            uids.release(uid)
        raise
    # The gateway's PATH may name folders the job's uid cannot enter (say, under /root): a job running
    # as a uid of its own gets the system's.
    path = _launcher.JOB_PATH if uid is not None else os.environ.get("PATH", os.defpath)
    full_env = {"PATH": path, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
    full_env.update(env or {})
    hide = sorted({str(Path(p)) for p in (*sandbox.hide, jobs_dir.resolve())}, key=len)
    spec = {
        "argv": list(argv), "env": full_env, "workdir": str(workdir),
        "stdout": str(folder / "stdout"), "stderr": str(folder / "stderr"),
        "walltime": walltime, "grace": float(grace), "uid": uid,
        "sandbox": None if sandbox.kind == "none" else
        {"bwrap": sandbox.bwrap, "hide": hide, "network": sandbox.network,
         "scratch_bytes": limits.memory_mib * 1024 * 1024 if sandbox.scratch_in_memory else None},
        "limits": {"cores": limits.cores, "memory_bytes": limits.memory_mib * 1024 * 1024,
                   "processes": sandbox.max_processes, "file_bytes": sandbox.max_file_mib * 1024 * 1024},
        "cgroups": sandbox.cgroups,
    }
    return PreparedJob(folder, workdir, folder / "stdout", folder / "stderr", uid, spec, uids)


def finish_job(job: PreparedJob, result: dict) -> Execution:
    """Turn the launcher's result line (a dict) into an Execution, then clean the job up.

    Output tails are read without following links and only from regular
    files; output that cannot be read is a note in stderr_tail, never a lost
    (unbilled) job. A command that could not be executed is a failed job (exit 127 or
    126, the reason in stderr_tail); a job the kernel killed for its memory
    limit says so in stderr_tail. A result that is not a launcher's, or a
    sandbox that did not start, raises ExecutorFailure.
    """
    try:
        if not isinstance(result, dict):
            raise ExecutorFailure(f"the launcher's result is not a JSON object: {result!r:.200}")
        (stdout, out_note), (stderr, err_note) = _output_tail(job.stdout), _output_tail(job.stderr)
        stderr = _tail_text(stderr + out_note + err_note)
        if result.get("error"):
            raise ExecutorFailure(f"{result['error']}: {stderr[-1000:].strip()}")
        try:
            failure, timed_out, status = result["failure"], bool(result["timed_out"]), result["status"]
            if failure is not None:
                number, reason = failure
                code = EXIT_NOT_FOUND if number == errno.ENOENT else EXIT_NOT_EXECUTABLE
                what = "command not found" if code == EXIT_NOT_FOUND else f"cannot execute ({str(reason).lower()})"
                stderr = _tail_text(stderr + f"xcentre: {what}: {job.spec['argv'][0]}\n")
                exit_code: int | None = code
            elif timed_out:
                exit_code = None
            elif isinstance(status, int) and not isinstance(status, bool):
                exit_code = os.waitstatus_to_exitcode(status)
            else:
                raise ValueError("no exit status for a job that did not time out")
            if result.get("memory_exceeded"):
                mib = job.spec["limits"]["memory_bytes"] // (1024 * 1024)
                stderr = _tail_text(stderr + f"xcentre: the job exceeded its memory limit ({mib} MiB): "
                                    "the kernel killed a process of it\n")
            return Execution(
                exit_code=exit_code,
                timed_out=timed_out,
                cpu_millis=0 if failure is not None else result["cpu_millis"],
                wall_millis=result["wall_millis"],
                max_rss_kib=0 if failure is not None else result["max_rss_kib"],
                stdout_tail=stdout,
                stderr_tail=stderr,
                started_at=result["started_at"],
                ended_at=result["ended_at"],
                workdir=str(job.workdir),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ExecutorFailure(f"the launcher's result is malformed ({exc}): {result!r:.200}") from None
    finally:
        job.cleanup()


def _output_tail(path: Path) -> tuple[str, str]:
    """(read_tail, ""), or ("", a note saying why not): the files are the job's, and what it did to them must
    not cost the metering of a job that ran (an ExecutorFailure leaves a job unbilled)."""
    try:
        return read_tail(path), ""
    except ExecutorFailure as exc:
        log.warning("%s", exc)
        return "", f"xcentre: could not read the job's {path.name}: {str(exc).rpartition(': ')[2]}\n"


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a regular file, as text; never through a link, never from a FIFO or device.

    A missing file is empty output (the launcher failed before making it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ExecutorFailure(f"refusing to read job output {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ExecutorFailure(f"refusing to read job output {path}: not a regular file")
        start = max(0, info.st_size - limit)
        return os.pread(fd, info.st_size - start, start).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def _tail_text(text: str, limit: int = TAIL_BYTES) -> str:
    data = text.encode("utf-8", errors="replace")
    return data[-limit:].decode("utf-8", errors="replace") if len(data) > limit else text


def _remove_tree(folder: Path) -> None:
    """rmtree that never follows links (shutil's fd-based walk).

    Not root (jobs run unsandboxed as the gateway's own user), it copes with
    folders the job made unreadable by retrying by path. Root needs no such
    retry, and must not make one: a process of the job still alive (a killed
    launcher, a failed Slurm node) could have swapped a folder on that path
    for a link, and root would chmod and unlink wherever it leads.
    """
    failed: list[str] = []

    def retry(function, path, _exc):
        if os.geteuid() != 0:
            try:
                os.chmod(os.path.dirname(path), 0o700)
                function(path)
                return
            except OSError:
                pass
        failed.append(path)

    if folder.is_symlink() or not folder.exists():
        return
    shutil.rmtree(folder, onerror=retry)
    if failed:
        log.warning("could not remove %d entries of job folder %s (the first: %s)", len(failed), folder, failed[0])


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


def sandbox_problem(bwrap: str | None = None, network: bool = False) -> str | None:
    """Why jobs cannot be sandboxed with bubblewrap here (what to install or change), or None if they can.

    Runs bubblewrap once with the namespaces jobs get, so a kernel or container that refuses
    them is found at start, not at the first job.
    """
    found = shutil.which(bwrap or "bwrap")
    if found is None:
        return (f"needs bubblewrap, and {bwrap or 'bwrap'!r} is not installed: install it "
                "(Debian/Ubuntu: apt-get install bubblewrap)")
    if os.geteuid() != 0:
        return ("needs the gateway to start as root: it runs each job in its sandbox as an unprivileged uid "
                "of job_uids; start it as root")
    argv = [found, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--size", "1048576", "--perms", "0700",
            "--tmpfs", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--as-pid-1",
            *([] if network else ["--unshare-net"]), "--", "true"]
    try:
        probe = subprocess.run(argv, capture_output=True, timeout=30, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run bubblewrap ({found}): {exc}"
    if probe.returncode != 0:
        return (f"cannot make a sandbox here (bubblewrap says: "
                f"{probe.stderr.decode(errors='replace').strip()[-300:]}); the kernel must allow namespaces, "
                "and bubblewrap must be 0.8 or later (for --size)")
    return None


class LocalExecutor:
    """Runs jobs on this machine through the launcher, sandboxed unless told otherwise.

    Safe to call run() from several threads at once: each job has its own
    launcher, sandbox, uid, folder and cgroups. The gateway process must not
    reap children behind subprocess's back (no `os.wait()`/`waitpid(-1)`, no
    SIGCHLD set to SIG_IGN).

    The job's environment is *not* the gateway's (which may hold secrets): it
    is PATH (the system's; the gateway's when jobs run as the gateway's own
    user), HOME and TMPDIR (the job's folder) and LANG=C.UTF-8,
    overridden/extended by `env`.
    """

    def __init__(
        self,
        jobs_dir: Path | str,
        *,
        sandbox: str = "bwrap",
        network: bool = False,
        uids: tuple[int, int] = DEFAULT_JOB_UIDS,
        cpus: int | None = None,
        hide: tuple[Path | str, ...] | list[Path | str] = (),
        grace: float = 2.0,
        python: str | None = None,
        bwrap: str | None = None,
        max_processes: int = 1024,
        max_file_mib: int = 1024,
    ) -> None:
        """Check that jobs can run as asked, or raise ExecutorError saying what to install or set.

        `sandbox="bwrap"` needs bubblewrap and root (each job is dropped to a uid
        of `uids` inside its sandbox); `sandbox="none"` runs jobs unconfined
        (as a uid of `uids` when root, else as the gateway's own user) and is
        logged as a warning. `cpus`: what capacity() offers (default: this
        machine's CPUs). `hide`: what jobs must not see besides the jobs folder.
        A sandboxed job's folder is in memory (a tmpfs of its memory limit, counted
        in it), so the only thing a job writes to the node's disk is its stdout and
        stderr, each at most `max_file_mib`.
        """
        if sandbox not in SANDBOXES:
            raise ExecutorError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {sandbox!r}")
        if grace < 0:
            raise ExecutorError("grace must be >= 0 seconds")
        if cpus is None:
            cpus = os.cpu_count() or 1
        if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
            raise ExecutorError(f"cpus must be an integer >= 1, got {cpus!r}")
        root = os.geteuid() == 0
        if sandbox == "bwrap":
            problem = sandbox_problem(bwrap, network)
            if problem:
                raise ExecutorError(
                    f"sandbox = \"bwrap\" {problem}; or set sandbox = \"none\" to run jobs unsandboxed "
                    "(unsafe: a job could then read the centre's keys)"
                )
            bwrap = shutil.which(bwrap or "bwrap")
        self.jobs_dir = Path(jobs_dir).resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.chmod(0o711)
        self.grace = float(grace)
        self.python = python or sys.executable
        self.sandbox = Sandbox(kind=sandbox, network=bool(network), hide=tuple(Path(p).resolve() for p in hide),
                               bwrap=bwrap or "bwrap", max_processes=max_processes, max_file_mib=max_file_mib,
                               scratch_in_memory=True)
        self.uids = UidPool(*uids) if root else None
        self.cpus = cpus
        self._running = 0
        self._lock = threading.Lock()
        if sandbox == "none":
            log.warning(
                "jobs run UNSANDBOXED (sandbox = \"none\"): a job sees this whole machine%s. Fit only for a "
                "developer's own machine; set sandbox = \"bwrap\" (root and bubblewrap) for anything else",
                " as an unprivileged uid" if root else " and runs as the gateway's own user, so it can read "
                "the centre's keys and databases",
            )
        if _launcher.seccomp_filter() is None:
            log.warning(
                "no system-call filter for this machine (%s): jobs here can make user namespaces, keep keys in "
                "their uid's keyrings for its next job, and open vsock sockets", os.uname().machine
            )
        missing = [c for c in ("memory", "pids") if c not in _launcher.cgroup_dirs()]
        if missing:
            log.warning(
                "cgroup v1 %s not writable here: a job's memory is limited by RLIMIT_AS instead, its processes "
                "by RLIMIT_NPROC (only when jobs have uids of their own), and its CPU time is metered from "
                "rusage", " and ".join(missing)
            )

    def capacity(self) -> Capacity:
        """CPUs offered, and those not held by running jobs (a job holds its cores while it runs)."""
        with self._lock:
            return Capacity(total_cpus=self.cpus, free_cpus=max(0, self.cpus - self._running))

    def run(self, argv: list[str], walltime: int, env: dict[str, str] | None = None, *,
            limits: Limits | None = None) -> Execution:
        """Run argv (no shell) for at most walltime seconds, under limits, and meter it.

        When the walltime passes, every process of the job gets SIGTERM, then
        SIGKILL after `grace` seconds; the result has timed_out=True and
        exit_code=None. When the job's main process ends, whatever it left
        running is killed too (a job ends when its main process ends).

        A command that does not exist (or cannot be executed) is a failed
        *job*, not a bad request: an Execution with exit code 127 (126 if not
        executable), zero usage and the reason in stderr_tail. Malformed
        input raises ExecutorError before anything is started; a crashed or
        hung launcher or sandbox raises ExecutorFailure.
        """
        limits = limits or Limits()
        job = prepare_job(argv, walltime, env, limits=limits, jobs_dir=self.jobs_dir, sandbox=self.sandbox,
                          uids=self.uids, grace=self.grace)
        with self._lock:
            self._running += limits.cores
        try:
            result = self._launch(job, walltime)
        except BaseException:
            job.cleanup()
            raise
        finally:
            with self._lock:
                self._running -= limits.cores
        return finish_job(job, result)

    def _launch(self, job: PreparedJob, walltime: int) -> dict:
        launcher = subprocess.Popen(
            [self.python, "-I", "-S", str(LAUNCHER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, start_new_session=True, cwd="/", env={"LC_ALL": "C.UTF-8"},
        )
        try:
            out, err = launcher.communicate(json.dumps(job.spec).encode(),
                                            timeout=walltime + self.grace + _LAUNCHER_SLACK_S)
        except BaseException:  # hung launcher, or we are interrupted: leave nothing running
            launcher.terminate()  # it kills the job and removes its cgroups on the way out
            try:
                out, err = launcher.communicate(timeout=_KILL_SLACK_S)
            except subprocess.TimeoutExpired:
                launcher.kill()
                out, err = launcher.communicate()
            _kill_job(out)
            raise
        lines = out.decode(errors="replace").splitlines()
        try:
            return json.loads(lines[1])
        except (IndexError, ValueError):
            _kill_job(out)
            raise ExecutorFailure(
                f"job launcher failed (exit {launcher.returncode}): {err.decode(errors='replace')[-1000:].strip()}"
            ) from None


def _kill_job(launcher_out: bytes) -> None:
    """Kill the sandbox's process group when its launcher died before reaping it (best effort)."""
    try:
        pid = json.loads(launcher_out.decode(errors="replace").splitlines()[0])["pid"]
    except (IndexError, ValueError, KeyError, TypeError):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
