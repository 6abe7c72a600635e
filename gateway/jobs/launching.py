"""A job's run through the launcher, on the node's side: what comes before it and after it, for any executor.

`prepare_job` checks the job, makes its folder, takes its uid from the `UidPool`
and writes the launcher's spec (with the node's `Sandbox` settings);
`finish_job` turns the launcher's result line into an `Execution`, reading the
job's output without following links, then removes the folder and frees the
uid. Between the two, the local executor runs the launcher on this machine
(gateway.jobs.executor) and the Slurm executor as a batch job on a compute node
(gateway.jobs.slurm).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pwd
import re
import shutil
import stat
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.jobs import launcher as _launcher
from gateway.jobs.execution import Execution, ExecutorError, ExecutorFailure, Limits, validate_command

__all__ = [
    "DEFAULT_JOB_UIDS",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "LAUNCHER",
    "SANDBOXES",
    "TAIL_BYTES",
    "PreparedJob",
    "Sandbox",
    "UidPool",
    "finish_job",
    "launcher_result",
    "prepare_job",
    "read_tail",
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

    def lock_fd(self, uid: int) -> int | None:
        """The descriptor holding `uid`'s lock (for a launcher to hold it too, outliving this process)."""
        with self._lock:
            return self._held.get(uid)

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
    `cleanup()` removes the folder and gives the uid back; finish_job calls it, and so
    does leaving a `with` block on it, so that a launch that fails leaves nothing behind.
    """

    folder: Path
    workdir: Path
    stdout: Path
    stderr: Path
    uid: int | None
    spec: dict
    uids: UidPool | None = field(default=None, repr=False)
    keep: bool = False
    """Keep the folder at cleanup (the uid is still freed): a named run's, removed once its job is final and
    stored (`release_run`), so that its result survives a crash of the gateway in between."""
    _done: bool = field(default=False, repr=False)

    def __enter__(self) -> PreparedJob:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the job's folder (without following any link the job made) and free its uid. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            if not self.keep:
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
    name: str | None = None,
) -> PreparedJob:
    """Make a job's folder, pick its uid and write the launcher's spec (a JSON-able dict).

    `name` (a run key, see `run_folder`) names the folder `run-<name>` and keeps it at cleanup, with
    the spec in `spec.json` and the launcher's result in `result.json` (the spec's `result_file`),
    so that a restarted gateway finds what a run left (`recover_run`); else it is a fresh temporary
    folder, removed at cleanup.

    The spec's fields: argv, env, workdir, stdout, stderr (absolute paths),
    walltime (s), grace (s), uid (int, or None to stay the launcher's own),
    sandbox (None, or {bwrap, hide, network, scratch_bytes: the size of the job's
    in-memory folder, or None to bind its folder on disk}), limits {cores, memory_bytes,
    processes, file_bytes} and cgroups (bool). Raises ExecutorError for bad
    input, before anything is created.
    """
    validate_command(argv, walltime, env)
    if not isinstance(limits, Limits):
        raise ExecutorError("limits must be a gateway.jobs.execution.Limits")
    jobs_dir = Path(jobs_dir)
    uid = uids.acquire() if uids is not None else None
    try:
        if name is None:
            folder = Path(tempfile.mkdtemp(prefix="job-", dir=jobs_dir))
        else:
            folder = run_folder(jobs_dir, name)
            _remove_tree(folder)  # what an earlier attempt left
            folder.mkdir(mode=0o700)
        folder.chmod(0o711)  # the job's uid may pass through to work/, and nothing more
        workdir = folder / "work"
        workdir.mkdir(mode=0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    except BaseException:
        if uids is not None and uid is not None:
            uids.release(uid)
        raise
    # The gateway's PATH may name folders the job's uid cannot enter (say, under /root): a job running
    # as a uid of its own gets the system's.
    path = _launcher.JOB_PATH if uid is not None else os.environ.get("PATH", os.defpath)
    full_env = {"PATH": path, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
    full_env.update(env or {})
    hide = sorted({str(Path(p)) for p in (*sandbox.hide, jobs_dir.resolve())}, key=len)
    spec = {
        "argv": list(argv),
        "env": full_env,
        "workdir": str(workdir),
        "stdout": str(folder / "stdout"),
        "stderr": str(folder / "stderr"),
        "walltime": walltime,
        "grace": float(grace),
        "uid": uid,
        "sandbox": None
        if sandbox.kind == "none"
        else {
            "bwrap": sandbox.bwrap,
            "hide": hide,
            "network": sandbox.network,
            "scratch_bytes": limits.memory_mib * 1024 * 1024 if sandbox.scratch_in_memory else None,
        },
        "limits": {
            "cores": limits.cores,
            "memory_bytes": limits.memory_mib * 1024 * 1024,
            "processes": sandbox.max_processes,
            "file_bytes": sandbox.max_file_mib * 1024 * 1024,
        },
        "cgroups": sandbox.cgroups,
    }
    if name is not None:
        spec["result_file"] = str(folder / RESULT_FILE)
        _write_private(folder / SPEC_FILE, json.dumps(spec))
    return PreparedJob(folder, workdir, folder / "stdout", folder / "stderr", uid, spec, uids, keep=name is not None)


RESULT_FILE = "result.json"
"""Where the launcher of a named run writes its result line before it answers."""

SPEC_FILE = "spec.json"
"""A named run's launcher spec, kept to read its result at a restart."""

PID_FILE = "launcher.pid"
"""The pid of a named run's launcher, to know at a restart whether it is still running."""

RELEASED_FILE = "released"
"""Made when a named run's job is final and stored: from then (its mtime) the retention counts."""

_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def run_folder(jobs_dir: Path, key: str) -> Path:
    """The folder of the run named `key` (a job id): `jobs_dir/run-<key>`; ExecutorError for a key that is
    not a plain name."""
    if not isinstance(key, str) or not _RUN_KEY.match(key):
        raise ExecutorError(f"a run key must be letters, digits, '.', '_' or '-' (at most 128), got {key!r:.80}")
    return Path(jobs_dir) / f"run-{key}"


def recovered_job(folder: Path) -> PreparedJob | None:
    """A named run's PreparedJob as its folder has it (no uid: the launcher held and freed it), or None
    when the folder holds no spec (it never started)."""
    try:
        spec = json.loads((folder / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("argv"), list):
        return None
    return PreparedJob(folder, folder / "work", folder / "stdout", folder / "stderr", None, spec, None, keep=True)


def read_result(folder: Path) -> dict | None:
    """The result line a named run's launcher wrote, or None (not yet, or never)."""
    try:
        fd = os.open(folder / RESULT_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        result = json.loads(os.read(fd, 1 << 20))
    except ValueError:
        return None
    finally:
        os.close(fd)
    return result if isinstance(result, dict) else None


def remove_run(folder: Path) -> None:
    """Remove a run's folder, never following a link the job made."""
    _remove_tree(folder)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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
                stderr = _tail_text(
                    stderr + f"xcentre: the job exceeded its memory limit ({mib} MiB): "
                    "the kernel killed a process of it\n"
                )
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


def launcher_result(output: str) -> dict | None:
    """The result a launcher wrote: the line after its `{"pid": N}`; None when it left none (it died first)."""
    lines = output.splitlines()
    try:
        result = json.loads(lines[1])
    except (IndexError, ValueError):
        return None
    return result if isinstance(result, dict) else None


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

    def retry(function: Callable[[str], object], path: str, _exc: object) -> None:
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
