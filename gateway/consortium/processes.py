"""Starting, probing and stopping the consortium's processes (anvil, slapd, gateways).

Every process runs in a session of its own with its output in a log file, so it outlives
the command that started it (`xcentre consortium up` returns) and never blocks on a pipe.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT = 10.0
"""Seconds a process has to exit after SIGTERM before it is killed."""


LISTEN_PORTS = (20_000, 32_000)
"""Where the consortium's servers listen: below Linux's ephemeral range (32768 and up by default), so that no
outgoing connection's local port takes a server's port between its choice and its (re)start."""


def free_port() -> int:
    """A TCP port on loopback that nothing uses now, outside the ephemeral range outgoing connections take."""
    low, high = LISTEN_PORTS
    try:
        first, _last = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        high = min(high, first)
    except (OSError, ValueError):
        pass
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: any port the OS gives
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepting(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def spawn(
    command: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    detach: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start `command` with stdout and stderr appended to `log`; in a new session when `detach` (so a Ctrl-C
    at the terminal that ran `consortium up` does not reach it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
            env=env,
        )


def alive(pid: int | None) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    try:  # a child that exited but was not reaped is no longer running
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def start_time(pid: int | None) -> int | None:
    """When the process with this pid started (clock ticks since boot): with the pid, who it is. A pid is
    reused once its process is gone, so a pid alone in a state file may name someone else's process."""
    if not pid:
        return None
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(pid: int | None, timeout: float = STOP_TIMEOUT, first: int = signal.SIGTERM) -> str:
    """Stop a process: `first` (SIGTERM), then SIGKILL after `timeout` seconds. Says how it ended."""
    if not alive(pid):
        return "not running"
    assert pid is not None
    if _stopped(pid):
        os.kill(pid, signal.SIGCONT)  # a stopped process never sees SIGTERM
    try:
        os.kill(pid, first)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return "stopped"
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    return "killed"


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def wait_until(check: Callable[[], object], timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    """Poll `check` until it is truthy; TimeoutError naming `what` after `timeout` seconds, RuntimeError at once
    if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.05)
