"""Run one job on this machine, sandboxed, under kernel limits, and meter it from the kernel.

The serving centre bills from these numbers and a user's job must never reach
the node that runs it, so:

- every job runs through `gateway/jobs/launcher.py` (a small stdlib-only program
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

`prepare_job` and `finish_job` (gateway.jobs.launching) are the two halves
around a launcher run, so that another executor (Slurm) can run the very same
launcher elsewhere; what every executor returns and raises is in
gateway.jobs.execution. Both are re-exported here, the local executor's face.
Running unsandboxed (`sandbox="none"`) is for a developer's own machine: it
is logged loudly and never the default.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.jobs import launcher as _launcher
from gateway.jobs.execution import (
    Capacity,
    Execution,
    Executor,
    ExecutorError,
    ExecutorFailure,
    Limits,
    validate_command,
)
from gateway.jobs.launching import (
    DEFAULT_JOB_UIDS,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    LAUNCHER,
    PID_FILE,
    RELEASED_FILE,
    SANDBOXES,
    TAIL_BYTES,
    PreparedJob,
    Sandbox,
    UidPool,
    finish_job,
    launcher_result,
    prepare_job,
    read_result,
    read_tail,
    recovered_job,
    remove_run,
    run_folder,
)

__all__ = [
    "DEFAULT_JOB_UIDS",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "LAUNCHER",
    "SANDBOXES",
    "TAIL_BYTES",
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

_LAUNCHER_SLACK_S = 60.0
"""How long past walltime + grace the gateway waits for a launcher before giving up on it."""

_KILL_SLACK_S = 15.0
"""How long a launcher told to stop has to clean up before it is killed."""


def sandbox_problem(bwrap: str | None = None, network: bool = False) -> str | None:
    """Why jobs cannot be sandboxed with bubblewrap here (what to install or change), or None if they can.

    Runs bubblewrap once with the namespaces jobs get, so a kernel or container that refuses
    them is found at start, not at the first job.
    """
    found = shutil.which(bwrap or "bwrap")
    if found is None:
        return (
            f"needs bubblewrap, and {bwrap or 'bwrap'!r} is not installed: install it "
            "(Debian/Ubuntu: apt-get install bubblewrap)"
        )
    if os.geteuid() != 0:
        return (
            "needs the gateway to start as root: it runs each job in its sandbox as an unprivileged uid "
            "of job_uids; start it as root"
        )
    argv = [
        found,
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        "1048576",
        "--perms",
        "0700",
        "--tmpfs",
        "/tmp",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--as-pid-1",
        *([] if network else ["--unshare-net"]),
        "--",
        "true",
    ]
    try:
        probe = subprocess.run(argv, check=False, capture_output=True, timeout=30, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run bubblewrap ({found}): {exc}"
    if probe.returncode != 0:
        return (
            f"cannot make a sandbox here (bubblewrap says: "
            f"{probe.stderr.decode(errors='replace').strip()[-300:]}); the kernel must allow namespaces, "
            "and bubblewrap must be 0.8 or later (for --size)"
        )
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
        retention: float = 86400.0,
    ) -> None:
        """Check that jobs can run as asked, or raise ExecutorError saying what to install or set.

        `sandbox="bwrap"` needs bubblewrap and root (each job is dropped to a uid
        of `uids` inside its sandbox); `sandbox="none"` runs jobs unconfined
        (as a uid of `uids` when root, else as the gateway's own user) and is
        logged as a warning. `cpus`: what capacity() offers (default: this
        machine's CPUs). `hide`: what jobs must not see besides the jobs folder.
        A sandboxed job's folder is in memory (a tmpfs of its memory limit, counted
        in it), so the only thing a job writes to the node's disk is its stdout and
        stderr, each at most `max_file_mib`. `retention`: seconds a named run's folder (its result, and of
        its stdout and stderr the tails its job stored) is kept once its job is final and stored (`release`);
        0 removes it at once.
        """
        if sandbox not in SANDBOXES:
            raise ExecutorError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {sandbox!r}")
        if grace < 0:
            raise ExecutorError("grace must be >= 0 seconds")
        if not isinstance(retention, int | float) or isinstance(retention, bool) or retention < 0:
            raise ExecutorError(f"retention must be a number of seconds >= 0, got {retention!r}")
        self.retention = float(retention)
        if cpus is None:
            cpus = os.cpu_count() or 1
        if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
            raise ExecutorError(f"cpus must be an integer >= 1, got {cpus!r}")
        root = os.geteuid() == 0
        if sandbox == "bwrap":
            problem = sandbox_problem(bwrap, network)
            if problem:
                raise ExecutorError(
                    f'sandbox = "bwrap" {problem}; or set sandbox = "none" to run jobs unsandboxed '
                    "(unsafe: a job could then read the centre's keys)"
                )
            bwrap = shutil.which(bwrap or "bwrap")
        self.jobs_dir = Path(jobs_dir).resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.chmod(0o711)
        self.grace = float(grace)
        self.python = python or sys.executable
        self.sandbox = Sandbox(
            kind=sandbox,
            network=bool(network),
            hide=tuple(Path(p).resolve() for p in hide),
            bwrap=bwrap or "bwrap",
            max_processes=max_processes,
            max_file_mib=max_file_mib,
            scratch_in_memory=True,
        )
        self.uids = UidPool(*uids) if root else None
        self.cpus = cpus
        self._running = 0
        self._lock = threading.Lock()
        if sandbox == "none":
            log.warning(
                'jobs run UNSANDBOXED (sandbox = "none"): a job sees this whole machine%s. Fit only for a '
                'developer\'s own machine; set sandbox = "bwrap" (root and bubblewrap) for anything else',
                " as an unprivileged uid"
                if root
                else " and runs as the gateway's own user, so it can read the centre's keys and databases",
            )
        if _launcher.seccomp_filter() is None:
            log.warning(
                "no system-call filter for this machine (%s): jobs here can make user namespaces, keep keys in "
                "their uid's keyrings for its next job, and open vsock sockets",
                os.uname().machine,
            )
        missing = [c for c in ("memory", "pids") if c not in _launcher.cgroup_dirs()]
        if missing:
            log.warning(
                "cgroup v1 %s not writable here: a job's memory is limited by RLIMIT_AS instead, its processes "
                "by RLIMIT_NPROC (only when jobs have uids of their own), and its CPU time is metered from "
                "rusage",
                " and ".join(missing),
            )

    def capacity(self) -> Capacity:
        """CPUs offered, and those not held by running jobs (a job holds its cores while it runs)."""
        with self._lock:
            return Capacity(total_cpus=self.cpus, free_cpus=max(0, self.cpus - self._running))

    def run(
        self,
        argv: list[str],
        walltime: int,
        env: dict[str, str] | None = None,
        *,
        limits: Limits | None = None,
        key: str | None = None,
    ) -> Execution:
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

        `key` (the job's id) names the run: its folder, spec, launcher pid and result stay on disk
        until `release(key)`, so that a gateway that dies while it runs finds it at its restart
        (`recover(key)`): the launcher runs in a session of its own, outlives the gateway, holds
        the job's uid lock until it ends and writes its result to the folder before answering.
        """
        limits = limits or Limits()
        with prepare_job(
            argv,
            walltime,
            env,
            limits=limits,
            jobs_dir=self.jobs_dir,
            sandbox=self.sandbox,
            uids=self.uids,
            grace=self.grace,
            name=key,
        ) as job:
            with self._lock:
                self._running += limits.cores
            try:
                result = self._launch(job, walltime)
            finally:
                with self._lock:
                    self._running -= limits.cores
            return finish_job(job, result)

    def _launch(self, job: PreparedJob, walltime: int) -> dict:
        # The launcher holds the job's uid lock too, so that no gateway hands the uid out while it runs,
        # should this process die first.
        lock_fd = self.uids.lock_fd(job.uid) if self.uids is not None and job.uid is not None else None
        spec = job.spec if lock_fd is None else job.spec | {"lock_fd": lock_fd}
        launcher = subprocess.Popen(
            [self.python, "-I", "-S", str(LAUNCHER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            pass_fds=() if lock_fd is None else (lock_fd,),
            start_new_session=True,
            cwd="/",
            env={"LC_ALL": "C.UTF-8"},
        )
        if job.keep:
            (job.folder / PID_FILE).write_text(str(launcher.pid))
        try:
            out, err = launcher.communicate(
                json.dumps(spec).encode(), timeout=walltime + self.grace + _LAUNCHER_SLACK_S
            )
        except BaseException:  # hung launcher, or we are interrupted: leave nothing running
            launcher.terminate()  # it kills the job and removes its cgroups on the way out
            try:
                out, err = launcher.communicate(timeout=_KILL_SLACK_S)
            except subprocess.TimeoutExpired:
                launcher.kill()
                out, err = launcher.communicate()
            _kill_job(out)
            raise
        result = launcher_result(out.decode(errors="replace"))
        if result is None:
            _kill_job(out)
            raise ExecutorFailure(
                f"job launcher failed (exit {launcher.returncode}): {err.decode(errors='replace')[-1000:].strip()}"
            )
        return result

    def recover(self, key: str, poll: float = 0.2) -> Execution | None:
        """What the run named `key` came to, for a gateway restarted while it ran: its Execution when its
        launcher wrote a result (waiting for a launcher still running, at most until its walltime, grace
        and slack are over, then stopping it), else None (it never finished: nothing to bill). The
        folder stays until `release(key)`. ExecutorFailure for a result that is not a launcher's."""
        folder = run_folder(self.jobs_dir, key)
        job = recovered_job(folder) if folder.is_dir() else None
        if job is None:
            return None
        limit = float(job.spec.get("walltime", 0)) + float(job.spec.get("grace", 0)) + _LAUNCHER_SLACK_S
        while True:
            result = read_result(folder)
            if result is None and _launcher_pid(folder) is None:
                result = read_result(folder)  # it may have ended between the two looks
                if result is None:
                    return None
            if result is not None:
                return finish_job(job, result)
            pid = _launcher_pid(folder)
            if pid is not None and time.time() > (folder / PID_FILE).stat().st_mtime + limit:
                _stop_launcher(pid)  # hung: it kills the job; nothing to bill
                return None
            time.sleep(poll)

    def release(self, key: str) -> None:
        """The run's job is final and its outputs stored: its folder goes after `retention` (now, for 0)."""
        folder = run_folder(self.jobs_dir, key)
        if not folder.is_dir():
            return
        if self.retention <= 0:
            remove_run(folder)
            return
        for output in ("stdout", "stderr"):  # the job stored its tails: the rest would hold the disk for the retention
            _keep_tail(folder / output)
        (folder / RELEASED_FILE).touch()

    def sweep(self, now: float | None = None) -> int:
        """Remove the folders of runs released `retention` seconds ago or more; how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for folder in self.jobs_dir.glob("run-*"):
            try:
                released = (folder / RELEASED_FILE).lstat().st_mtime
            except OSError:
                continue
            if now - released >= self.retention:
                remove_run(folder)
                removed += 1
        return removed


def _keep_tail(path: Path) -> None:
    """Cut a released run's output file to its last TAIL_BYTES (what its job stored), never following a link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError:  # not ours to write (the job's uid owns it): its name goes (the folder is ours)
        with contextlib.suppress(OSError):
            path.unlink()
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size <= TAIL_BYTES:
            return
        tail = os.pread(fd, TAIL_BYTES, info.st_size - TAIL_BYTES)
        os.pwrite(fd, tail, 0)
        os.ftruncate(fd, len(tail))
    finally:
        os.close(fd)


def _launcher_pid(folder: Path) -> int | None:
    """The pid of the run's launcher if it is still running (the process by that pid is a launcher), else None."""
    try:
        pid = int((folder / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(LAUNCHER).encode() in cmdline and state != "Z" else None


def _stop_launcher(pid: int) -> None:
    """SIGTERM a launcher (it kills its job and cleans up), SIGKILL its session if it does not go."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _KILL_SLACK_S
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
