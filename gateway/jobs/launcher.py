"""The job launcher: runs one job in its sandbox, under its limits, and meters it.

One file, however long, because it is a program and not a library: `python -I -S`
puts no folder of ours on `sys.path`, so it cannot import a sibling module, and
the sandbox's init is this very file's source run again with `-c`.

Run by root as `<python> -I -S /abs/path/gateway/jobs/launcher.py` (the local
executor, or a Slurm batch job: `python -I -S launcher.py < spec.json >
result.json`). Standard library only, so it starts in milliseconds with about
10 MiB, and none of the gateway's address space is ever billed to a job.

Protocol: a JSON spec on stdin (built by `gateway.jobs.launching.prepare_job`, which
documents its fields); on stdout `{"pid": N}` as soon as the job starts (the
process group that `kill -KILL -N` ends, sandbox and all, should the launcher
itself die), then one JSON result line when it is over.

Two roles, one file:

- the *launcher* (outside the sandbox) creates the job's cgroups, opens its
  output files in a folder the job cannot see and hands them over as file
  descriptors, starts bubblewrap, enforces the walltime, and meters the job
  from the kernel: CPU time and peak memory from the job's cgroups, which
  count every process of it (else `wait4` of the sandbox's process tree, in
  which every process of the job is reaped);
- the *init* (`launcher.py --init`, the sandbox's PID 1, still root) starts
  the job's main process as the job's uid, with no capabilities,
  no_new_privs and the seccomp filter of `seccomp_filter`, reaps every
  process of the job, kills what is left when the main process ends, and
  reports how it ended on a pipe the job cannot reach.

Nothing the job can write is read as a result: its stdout and stderr go to
files, and the result line comes from this process alone.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
"""cgroup v1 controllers a job gets its own group in: memory (limit, peak), pids (process count), cpu (cores),
cpuacct (CPU time of every process of the job, reaped or not: rusage misses children a job lets the kernel
reap, by ignoring SIGCHLD)."""

CPU_PERIOD_US = 100_000
"""The CFS period; a job gets `cores` times it as quota, so it cannot use more than its cores."""

JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH for bubblewrap and the init, and the default of a job running as a uid of its own."""

RUNTIME_DIRS = ("/run", "/var/run")
"""Where daemons put their sockets (slapd's ldapi, munge, dbus, nscd): hidden, since a read-only bind still
lets a job connect() to a socket, network namespace or not."""

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_CAPBSET_DROP = 24
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_KILL_SLACK_S = 10.0
"""How long the launcher waits for the sandbox to go once it has been killed."""


# -- cgroups (v1) -------------------------------------------------------------------


def cgroup_dirs() -> dict[str, str]:
    """This process's own cgroup folder for each controller of CONTROLLERS that is mounted (v1) and writable.

    Job groups are made inside it, so a job stays within whatever limits the
    caller's own group has (a Slurm job's, a service's).
    """
    mounts: dict[str, tuple[str, str]] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
                    continue
                for option in tail[2].split(","):
                    if option in CONTROLLERS:
                        mounts[option] = (_unescape(fields[3]), _unescape(fields[4]))
        own: dict[str, str] = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for name in parts[1].split(","):
                        own[name] = parts[2]
    except OSError:
        return {}
    found = {}
    for controller, (root, mountpoint) in mounts.items():
        path = own.get(controller)
        if path is None:
            continue
        relative = os.path.relpath(path, root)
        if relative.startswith(".."):
            continue  # our group is not under this mount: not ours to use
        folder = os.path.normpath(os.path.join(mountpoint, relative))
        if os.access(folder, os.W_OK | os.X_OK):
            found[controller] = folder
    return found


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


class JobCgroups:
    """The job's own cgroups: made before it starts, limits written, read and removed after it ends."""

    def __init__(self, name: str, limits: dict) -> None:
        self.folders: dict[str, str] = {}
        settings = {
            "memory": [("memory.limit_in_bytes", limits["memory_bytes"])],
            "pids": [("pids.max", limits["processes"])],
            "cpu": [("cpu.cfs_period_us", CPU_PERIOD_US), ("cpu.cfs_quota_us", limits["cores"] * CPU_PERIOD_US)],
            "cpuacct": [],
        }
        for controller, parent in cgroup_dirs().items():
            _remove_stale(parent)
            folder = os.path.join(parent, name)
            try:
                os.mkdir(folder, 0o700)
            except OSError:
                continue
            try:
                for key, value in settings[controller]:
                    _write(os.path.join(folder, key), value)
            except OSError:
                _rmdir(folder)
                continue
            if controller == "memory":  # no escape into swap, where swap is accounted
                try:
                    _write(os.path.join(folder, "memory.memsw.limit_in_bytes"), limits["memory_bytes"])
                except OSError:
                    pass
            self.folders[controller] = folder

    def open_procs(self) -> list[int]:
        """Write ends of each group's cgroup.procs: the job's process writes "0" to them to join, before exec."""
        return [
            os.open(os.path.join(folder, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            for folder in self.folders.values()
        ]

    def cpu_millis(self) -> int | None:
        value = self._read("cpuacct", "cpuacct.usage")
        return None if value is None else int(value) // 1_000_000

    def peak_memory_kib(self) -> int | None:
        value = self._read("memory", "memory.max_usage_in_bytes")
        return None if value is None else int(value) // 1024

    def memory_exceeded(self) -> bool:
        """Whether the kernel's OOM killer killed a process of the job for its memory limit."""
        control = self._read("memory", "memory.oom_control") or ""
        for line in control.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value) > 0
        return int(self._read("memory", "memory.failcnt") or 0) > 0  # kernels without the oom_kill count

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders.values():
            try:
                with open(os.path.join(folder, "cgroup.procs")) as f:
                    found.update(int(line) for line in f if line.strip())
            except OSError:
                pass
        return found

    def remove(self) -> None:
        """Kill anything still in the groups (nothing should be), then remove them."""
        deadline = time.monotonic() + _KILL_SLACK_S
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for folder in self.folders.values():
            _rmdir(folder)

    def _read(self, controller: str, key: str) -> str | None:
        folder = self.folders.get(controller)
        if folder is None:
            return None
        try:
            with open(os.path.join(folder, key)) as f:
                return f.read()
        except OSError:
            return None


def _remove_stale(parent: str) -> None:
    """Remove the empty groups of launchers that are gone (killed with SIGKILL: nothing else skips cleanup)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        parts = name.split("-", 2)
        if len(parts) == 3 and parts[0] == "xcentre" and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
            try:
                os.rmdir(os.path.join(parent, name))  # fails, harmlessly, while anything is in it
            except OSError:
                pass


def _write(path: str, value: int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _rmdir(folder: str) -> None:
    for _ in range(100):  # a group whose last task just exited can be busy for a moment
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.01)


# -- the job's system-call filter (seccomp) -------------------------------------------------

_SYSCALLS = {
    # machine: the ABIs its kernel runs (audit arch, system-call numbers); the native one first
    "x86_64": (
        (
            0xC000003E,
            {
                "clone": 56,
                "unshare": 272,
                "clone3": 435,
                "add_key": 248,
                "request_key": 249,
                "keyctl": 250,
                "socket": 41,
            },
        ),
        (
            0x40000003,
            {
                "clone": 120,
                "unshare": 310,
                "clone3": 435,
                "add_key": 286,
                "request_key": 287,
                "keyctl": 288,
                "socket": 359,
                "socketcall": 102,
            },
        ),
    ),
    "aarch64": (
        (
            0xC00000B7,
            {
                "clone": 220,
                "unshare": 97,
                "clone3": 435,
                "add_key": 217,
                "request_key": 218,
                "keyctl": 219,
                "socket": 198,
            },
        ),
        (
            0x40000028,
            {
                "clone": 120,
                "unshare": 337,
                "clone3": 435,
                "add_key": 309,
                "request_key": 310,
                "keyctl": 311,
                "socket": 281,
            },
        ),
    ),
}
_X32_BIT = 0x40000000
_CLONE_NEWUSER = 0x10000000
_AF_VSOCK = 40
_SYS_SOCKET = 1  # socketcall's "socket"
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (the low half of args[0], little-endian)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The classic-BPF program every job runs under, or None on a machine whose system calls we do not know.

    It refuses what namespaces and uids do not confine:
    - user namespaces (clone and unshare with CLONE_NEWUSER: EPERM; clone3, whose flags a filter cannot
      read, ENOSYS, so that libc falls back to clone): root's powers over new namespaces are the kernel's
      largest attack surface, and a job needs none;
    - keyrings (add_key, request_key, keyctl: EPERM): they are per uid and outlive the job, so the next job
      of its uid would find what it left;
    - vsock sockets (EAFNOSUPPORT): they reach the hypervisor and the node's vsock services from any
      network namespace. i386's socketcall carries its arguments in memory, so under it no socket can be
      made at all;
    - x32 system calls, and any ABI not listed (ENOSYS).
    """
    machine = machine or os.uname().machine
    abis = _SYSCALLS.get(machine)
    if abis is None:
        return None
    code: list = [(_LD_ABS, 0, 0, _ARCH)]
    code += [(_JEQ, f"abi{i}", 0, arch) for i, (arch, _) in enumerate(abis)]
    code.append((_RET, 0, 0, _ERRNO | errno.ENOSYS))
    for i, (_, numbers) in enumerate(abis):
        code += [f"abi{i}", (_LD_ABS, 0, 0, _NR)]
        if machine == "x86_64" and i == 0:  # x32 shares x86_64's audit arch, with this bit in the number
            code.append((_JGE, "enosys", 0, _X32_BIT))
        code += [
            (_JEQ, "newuser", 0, numbers["clone"]),
            (_JEQ, "newuser", 0, numbers["unshare"]),
            (_JEQ, "enosys", 0, numbers["clone3"]),
        ]
        code += [(_JEQ, "eperm", 0, numbers[name]) for name in ("add_key", "request_key", "keyctl")]
        code.append((_JEQ, "socket", 0, numbers["socket"]))
        if "socketcall" in numbers:
            code.append((_JEQ, "socketcall", 0, numbers["socketcall"]))
        code.append((_RET, 0, 0, _ALLOW))
    code += [
        "newuser",
        (_LD_ABS, 0, 0, _ARG0),
        (_JSET, "eperm", "allow", _CLONE_NEWUSER),
        "socket",
        (_LD_ABS, 0, 0, _ARG0),
        (_JEQ, "eafnosupport", "allow", _AF_VSOCK),
        "socketcall",
        (_LD_ABS, 0, 0, _ARG0),
        (_JEQ, "eafnosupport", "allow", _SYS_SOCKET),
        "allow",
        (_RET, 0, 0, _ALLOW),
        "eperm",
        (_RET, 0, 0, _ERRNO | errno.EPERM),
        "enosys",
        (_RET, 0, 0, _ERRNO | errno.ENOSYS),
        "eafnosupport",
        (_RET, 0, 0, _ERRNO | errno.EAFNOSUPPORT),
    ]
    return _assemble(code)


def _assemble(code: list) -> bytes:
    """struct sock_filter[] from instructions (op, jt, jf, k) whose jumps may name a label (a str in the list)."""
    labels: dict[str, int] = {}
    instructions: list[tuple[int, int | str, int | str, int]] = []
    for item in code:
        if isinstance(item, str):
            labels[item] = len(instructions)
        else:
            instructions.append(item)
    out = b""
    for at, (op, jump_true, jump_false, k) in enumerate(instructions):
        jt, jf = (labels[j] - at - 1 if isinstance(j, str) else j for j in (jump_true, jump_false))
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp filter: jump out of range")
        out += struct.pack("=HBBI", op, jt, jf, k)
    return out


# -- the launcher ---------------------------------------------------------------------


def sweep_uid(uid: int) -> None:
    """Kill every process running as `uid` (the job's own, from a pool no one else uses).

    Done before a job starts (leftovers of a crashed gateway) and after it ends,
    so a uid goes back to the pool with nothing of its last job alive.
    """
    deadline = time.monotonic() + _KILL_SLACK_S
    while _processes_of(uid) and time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal (its own), in one pass
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.005)


def _processes_of(uid: int) -> bool:
    """Whether a live (not zombie) process runs as uid."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
        uids = fields.get(b"Uid", b"").split()
        if uid in {int(u) for u in uids} and not fields.get(b"State", b"").strip().startswith(b"Z"):
            return True
    return False


def bwrap_argv(spec: dict, info_fd: int) -> list[str]:
    """bubblewrap's command line: read-only system, fresh /proc, /dev and /tmp, hidden node, own namespaces."""
    sandbox, workdir = spec["sandbox"], spec["workdir"]
    argv = [
        sandbox["bwrap"],
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--tmpfs",
        "/dev/shm",
    ]
    runtime = [d for d in RUNTIME_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    for path in sorted({*runtime, *sandbox["hide"]}, key=len):  # outer folders first: inner ones are then gone
        if os.path.isdir(path):
            argv += ["--tmpfs", path]
        elif os.path.lexists(path):
            argv += ["--ro-bind", "/dev/null", path]
    for path in dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.executable)):
        argv += ["--ro-bind", path, path]  # the init's interpreter, wherever the masks above fell
    resolver = os.path.realpath("/etc/resolv.conf")
    if sandbox["network"] and resolver.startswith(tuple(d + "/" for d in runtime)) and os.path.isfile(resolver):
        argv += ["--ro-bind", resolver, resolver]  # a job with the network still resolves names
    if sandbox.get("scratch_bytes"):  # in memory: counted in the job's memory cgroup, and off the node's disk
        argv += ["--size", str(sandbox["scratch_bytes"]), "--perms", "0700", "--tmpfs", workdir]
    else:
        argv += ["--bind", workdir, workdir]
    argv += ["--chdir", workdir, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "xcentre-job"]
    if not sandbox["network"]:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--as-pid-1", "--info-fd", str(info_fd)]
    return argv


def wait_exit(pid: int, pidfd: int | None, timeout: float | None) -> bool:
    """True once pid (our child) has exited (left a zombie, not reaped), False if timeout passes first."""
    end = None if timeout is None else time.monotonic() + max(0.0, timeout)
    poller = None
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
    while True:
        left = None if end is None else max(0.0, end - time.monotonic())
        if poller is not None:
            if poller.poll(None if left is None else min(3_600_000, int(left * 1000) + 1)):
                return True
        else:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.01 if left is None else min(0.01, left))
        if end is not None and time.monotonic() >= end:
            return False


def _read_json(fd: int) -> dict | None:
    """Everything on a pipe until EOF, as one JSON object, or None when there is none."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def launch(spec: dict, announce: Callable[[int], None]) -> dict:
    """Run the job described by spec; `announce(pid)` is called once it started. Returns the result."""
    uid, limits = spec["uid"], spec["limits"]
    name = f"xcentre-{os.getpid()}-{os.path.basename(os.path.dirname(spec['workdir']))}"
    cgroups = JobCgroups(name, limits) if spec["cgroups"] else None
    try:
        # Not inherited from whoever started the gateway: no real-time or raised priority (outside the CPU quota).
        rlimits = [
            ("RLIMIT_CORE", 0),
            ("RLIMIT_RTPRIO", 0),
            ("RLIMIT_NICE", 0),
            ("RLIMIT_FSIZE", limits["file_bytes"]),
            ("RLIMIT_CPU", limits["cores"] * spec["walltime"] + int(spec["grace"]) + 1),
        ]
        if cgroups is None or "memory" not in cgroups.folders:
            rlimits.append(("RLIMIT_AS", limits["memory_bytes"]))
        if uid is not None:
            rlimits.append(("RLIMIT_NPROC", limits["processes"]))  # counted per uid, and the uid is the job's alone
            sweep_uid(uid)
        meters = {
            "memory_limit": "cgroup" if cgroups is not None and "memory" in cgroups.folders else "rlimit",
            "cpu_meter": "cgroup" if cgroups is not None and "cpuacct" in cgroups.folders else "rusage",
        }
        return _run(spec, cgroups, rlimits, announce) | meters
    finally:
        if uid is not None:
            sweep_uid(uid)
        if cgroups is not None:
            cgroups.remove()


def _run(spec: dict, cgroups: JobCgroups | None, rlimits: list, announce: Callable[[int], None]) -> dict:
    sandboxed = spec["sandbox"] is not None
    # A new file, never a link; the job's, so that it can reopen it as /dev/stdout (it cannot reach its name).
    create = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(spec["stdout"], create, 0o600)
    err = os.open(spec["stderr"], create, 0o600)
    if spec["uid"] is not None:
        for fd in (out, err):
            try:
                os.fchown(fd, spec["uid"], spec["uid"])
            except OSError:  # a shared file system that squashes root, or maps no such uid: stays as it is
                pass
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    cgroup_fds = cgroups.open_procs() if cgroups is not None else []
    report_r, report_w = os.pipe()
    info_r, info_w = os.pipe()
    config = os.memfd_create("xcentre-init", os.MFD_CLOEXEC)
    os.write(
        config,
        json.dumps(
            {
                "argv": spec["argv"],
                "env": spec["env"],
                "workdir": spec["workdir"],
                "uid": spec["uid"],
                "rlimits": rlimits,
                "cgroup_fds": cgroup_fds,
                "report_fd": report_w,
                "pid1": sandboxed,
                "own_workdir": bool(sandboxed and spec["sandbox"].get("scratch_bytes")),
            }
        ).encode(),
    )
    os.lseek(config, 0, os.SEEK_SET)
    # The init runs from this file's text and the interpreter's real path: the sandbox may hide
    # where the code or a virtualenv lives (a checkout under /tmp, say); bwrap_argv shows the interpreter.
    with open(os.path.abspath(__file__), encoding="utf-8") as own:
        init = [os.path.realpath(sys.executable), "-I", "-S", "-c", own.read(), "--init", str(config)]
    argv = [*bwrap_argv(spec, info_w), "--", *init] if sandboxed else init
    passed = [config, report_w, *cgroup_fds] + ([info_w] if sandboxed else [])
    started_at, t0 = int(time.time()), time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            for fd in passed:
                os.set_inheritable(fd, True)
            os.execve(argv[0], argv, {"PATH": JOB_PATH, "LANG": "C.UTF-8"})
        finally:
            os._exit(126)
    for fd in (out, err, null, config, report_w, info_w, *cgroup_fds):
        os.close(fd)
    announce(pid)
    # The sandbox's init: bwrap names it on the info pipe; without bwrap it is our own child.
    init_pid: int | None = pid
    if sandboxed:
        info = _read_json(info_r)
        init_pid = info.get("child-pid") if info else None
    os.close(info_r)
    pidfd, init_fd = _pidfd(pid), _pidfd(init_pid)  # signals go to these very processes, never to a reused pid
    # The sandbox's top process stays a zombie until wait4 below, so its pid cannot be reused meanwhile.
    timed_out = not wait_exit(pid, pidfd, spec["walltime"] - (time.monotonic() - t0))
    if timed_out:
        _signal(init_fd, signal.SIGTERM)  # the init passes it on to every process of the job
        if not wait_exit(pid, pidfd, spec["grace"]):
            # In the sandbox, killing its PID 1 makes the kernel kill every process in it.
            _signal(init_fd, signal.SIGKILL if sandboxed else signal.SIGUSR1)
            if not wait_exit(pid, pidfd, _KILL_SLACK_S):
                _signal(init_fd, signal.SIGKILL)
                _signal(pidfd, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    wall_millis = int((time.monotonic() - t0) * 1000)
    report = _read_json(report_r)
    os.close(report_r)
    for open_fd in (pidfd, init_fd):
        if open_fd is not None:
            os.close(open_fd)
    # From the job's cgroups where there are some; else the sandbox's rusage (which includes the
    # sandbox's own few ms, and misses children the job let the kernel reap).
    cpu = cgroups.cpu_millis() if cgroups is not None else None
    peak = cgroups.peak_memory_kib() if cgroups is not None else None
    result: dict[str, Any] = {
        "started_at": started_at,
        "ended_at": max(int(time.time()), started_at),
        "wall_millis": wall_millis,
        "cpu_millis": max(0, cpu if cpu is not None else round((usage.ru_utime + usage.ru_stime) * 1000)),
        "max_rss_kib": max(0, int(peak if peak is not None else usage.ru_maxrss)),
        "timed_out": timed_out,
        "status": None,
        "failure": None,
        "error": None,
        "memory_exceeded": bool(cgroups is not None and cgroups.memory_exceeded()),
    }
    if report is not None:
        result["status"] = report.get("status")
        result["failure"] = report.get("failure")
    elif not timed_out:
        what = "the sandbox (bwrap)" if sandboxed else "the job's init"
        result["error"] = f"{what} did not start the job (exit status {os.waitstatus_to_exitcode(status)})"
    return result


def _pidfd(pid: int | None) -> int | None:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # already gone
        return None


def _signal(pidfd: int | None, sig: int) -> None:
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Stopped(Exception):
    """A signal asked the launcher to stop: the job is killed and cleaned up on the way out."""


def _stop(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # scancel, ^C, a closed terminal
        signal.signal(sig, _stop)
    spec = json.loads(sys.stdin.buffer.read())
    if isinstance(spec.get("lock_fd"), int):  # the job's uid lock, held while we run: never the job's to inherit
        os.set_inheritable(spec["lock_fd"], False)

    def announce(pid: int) -> None:
        _say(json.dumps({"pid": pid}))

    result = launch(spec, announce)
    line = json.dumps(result)
    if spec.get("result_file"):  # first on disk, so that a gateway that died meanwhile finds it at its restart
        try:
            write_result(spec["result_file"], line)
        except OSError:  # a full disk, say: the gateway still gets the line below
            pass
    _say(line)


def _say(line: str) -> None:
    """A line to the gateway, which may have died (then the job goes on, and its result is on disk)."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass


def write_result(path: str, line: str) -> None:
    """The result line, durably and whole: a new file written and synced, then renamed into place."""
    part = path + ".part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)


# -- the init, inside the sandbox ---------------------------------------------------------


class _Init:
    """PID 1 of the sandbox (or, unsandboxed, a child subreaper): starts the job and outlives it."""

    def __init__(self, config: dict) -> None:
        self.config = config
        self.pid1 = config["pid1"]
        self.libc = ctypes.CDLL(None, use_errno=True)

    def run(self) -> None:
        config = self.config
        report = config["report_fd"]
        keep = {0, 1, 2, report, *config["cgroup_fds"]}
        for fd in _open_fds():
            if fd not in keep:
                _close(fd)
        for fd in keep - {0, 1, 2}:
            os.set_inheritable(fd, False)  # the job gets its stdio and nothing else of ours
        if not self.pid1:
            self._prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of the job come back to us, not to the system
        signal.signal(signal.SIGTERM, lambda *_: self.kill_all(signal.SIGTERM))
        signal.signal(signal.SIGUSR1, lambda *_: self.kill_all(signal.SIGKILL))
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        failed_r, failed_w = os.pipe()  # close-on-exec: EOF means the exec succeeded
        pid = os.fork()
        if pid == 0:
            self.start_job(failed_w)
        os.close(failed_w)
        for fd in config["cgroup_fds"]:
            os.close(fd)
        failed = b""
        while chunk := os.read(failed_r, 1024):
            failed += chunk
        os.close(failed_r)
        status = None
        while status is None:  # reap everything; the job ends when its main process does
            try:
                died, code, _ = os.wait4(-1, 0)
            except ChildProcessError:
                break
            if died == pid:
                status = code
        self.kill_all(signal.SIGKILL)
        while True:
            try:
                os.wait4(-1, 0)
            except ChildProcessError:
                break
            self.kill_all(signal.SIGKILL)  # unsandboxed, orphans arrive as their parents die
        if failed:
            number, _, reason = failed.decode(errors="replace").partition(" ")
            answer: dict[str, object] = {"failure": [int(number), reason]}
        else:
            answer = {"status": status}
        os.write(report, json.dumps(answer).encode())
        os._exit(0)

    def start_job(self, failed_w: int) -> None:
        """In the job's main process: join its cgroups, take its limits and uid, drop every privilege, exec."""
        config = self.config
        try:
            os.setsid()
            for fd in config["cgroup_fds"]:
                os.write(fd, b"0")  # "0": this process; its descendants follow it
                os.close(fd)
            uid = config["uid"]
            if config["own_workdir"] and uid is not None:  # the sandbox's fresh tmpfs, which nothing else can reach
                os.chown(config["workdir"], uid, uid, follow_symlinks=False)
            os.chdir(config["workdir"])
            for name, value in config["rlimits"]:
                resource.setrlimit(getattr(resource, name), (value, value))
            if os.geteuid() == 0:
                with open("/proc/sys/kernel/cap_last_cap") as f:
                    last_cap = int(f.read())
                for cap in range(last_cap + 1):
                    self._prctl(_PR_CAPBSET_DROP, cap)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)  # leaving uid 0 clears the permitted, effective and ambient sets
            self._prctl(_PR_SET_NO_NEW_PRIVS, 1)
            program = seccomp_filter()
            if program is not None:
                self._seccomp(program)
            os.umask(0o077)
            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            _exec(config["argv"], config["env"])
        except OSError as exc:
            os.write(failed_w, b"%d %s" % (exc.errno or 0, (exc.strerror or str(exc)).encode()))
        except BaseException as exc:  # noqa: BLE001 - a bug of ours, not the job's: say what it was, then _exit
            os.write(failed_w, b"0 %s" % repr(exc).encode())
        finally:
            os._exit(127)

    def kill_all(self, sig: int) -> None:
        """Signal every process of the job: the whole PID namespace, or (unsandboxed) all our descendants."""
        if self.pid1:
            try:
                os.kill(-1, sig)  # from PID 1: every other process of the namespace, atomically
            except ProcessLookupError:
                pass
            return
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _seccomp(self, program: bytes) -> None:
        """Filter this process's system calls, and those of everything it starts, for good (no_new_privs is set)."""

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

        prog = SockFprog(len(program) // 8, program)
        if (
            self.libc.prctl(
                _PR_SET_SECCOMP,
                ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                ctypes.byref(prog),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
            )
            != 0
        ):
            number = ctypes.get_errno()
            raise OSError(number, f"seccomp: {os.strerror(number)}")

    def _prctl(self, option: int, value: int) -> None:
        if self.libc.prctl(option, value, 0, 0, 0) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"prctl({option}): {os.strerror(number)}")


def _exec(argv: list[str], env: dict[str, str]) -> None:
    """execvpe, without os.execvpe: that imports modules, which the job's uid may not be able to read."""
    command = argv[0]
    if "/" in command:
        os.execve(command, argv, env)
    first_error = None
    for folder in env.get("PATH", os.defpath).split(":"):
        try:
            os.execve(os.path.join(folder or ".", command), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:  # say, permission denied: keep looking, report it if nothing else runs
            first_error = first_error or exc
    raise first_error or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)


def _open_fds() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _descendants(root: int) -> list[int]:
    """Every process below root, parents before children (read from /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def init_main(config_fd: int) -> None:
    with os.fdopen(config_fd, "rb") as f:
        config = json.loads(f.read())
    _Init(config).run()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--init":
        init_main(int(sys.argv[2]))
    else:
        main()
