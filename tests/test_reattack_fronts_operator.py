"""Hostile review (member / operator) of `[server] fronts = N`: the process model, the shared files, the port.

Each test asserts what should hold and fails on main as reviewed (commits 1924cc0..337463d):

(the shared rate-limit file's findings, a full disk, a file cut short and keys sharing a slot, are in
tests/test_shared_ratelimit.py)
- the back's front watcher dies when a front cannot be spawned once, and no front is started again;
- any other process of the gateway's user joins the public port (SO_REUSEPORT) and takes a share of it;
- a back whose fronts cannot listen (the port is taken) runs on for ever, serving nothing, where a one-process
  gateway exits 3;
- a rate-limit file left by another version (another burst) keeps the gateway from starting.

The consortium tests reuse tests/test_fronts.py's fixture: hpc-a runs a back and two fronts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import gateway.api.fronts as fronts_module
from gateway.api.fronts import Fronts
from gateway.consortium import slapd as slapd_node
from gateway.consortium.anvil import anvil_binary
from gateway.consortium.control import gateway_command, gateway_health, start_gateway
from gateway.consortium.processes import alive, wait_until
from gateway.consortium.running import RunningConsortium
from gateway.node.policies import (
    DECISION_BURST,
    DECISIONS_PER_SECOND,
)
from gateway.node.ratelimit import SharedRateLimit
from tests.fixtures.fronts import consortium_with_fronts, fronts_of

FRONTS = 2


# -- the back's fronts ------------------------------------------------------------------------------------


def test_a_front_that_cannot_be_spawned_once_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fronts._watch starts a front again with Popen on the watcher thread, outside any try: one failure to spawn
    (the interpreter briefly missing while a venv is upgraded in place, EAGAIN from a process limit, ENOMEM) ends
    the thread with an exception; no front is ever started again, and the back runs on with nothing on its port.
    (And since PR_SET_PDEATHSIG follows the thread that forked, the fronts that thread started die with it.)"""
    monkeypatch.setattr(fronts_module, "RESTART_AFTER", 0.05)
    monkeypatch.setattr(fronts_module, "STAYED_UP", 0.0)  # no backing off: a restart every 0.05 s
    listening = socket.socket()
    fronts = Fronts(tmp_path / "gateway.toml", 1, listening)
    fronts.command = [sys.executable, "-c", "pass"]  # a front that exits at once
    with fronts:
        fronts.command = [str(tmp_path / "no-such-python")]  # spawning fails for a moment
        time.sleep(1.0)
        fronts.command = [sys.executable, "-c", "import time; time.sleep(60)"]  # and works again
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(p.poll() is None for p in fronts._processes):
            time.sleep(0.05)
        running = [p.pid for p in fronts._processes if p.poll() is None]
        watcher = fronts._watcher.is_alive()
    listening.close()
    assert running, f"no front was started again once spawning worked (watcher thread alive: {watcher})"


# -- a consortium with fronts at hpc-a ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsortium]:
    if anvil_binary() is None or not slapd_node.installed():
        pytest.skip("needs anvil and slapd")
    with consortium_with_fronts(tmp_path_factory.mktemp("reattack-fronts"), FRONTS) as consortium:
        yield consortium


def _fronts(consortium: RunningConsortium) -> list[int]:
    return fronts_of(consortium)


def _address(consortium: RunningConsortium) -> tuple[str, int]:
    url = urlsplit(consortium.url("hpc-a"))
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def _ensure_up(consortium: RunningConsortium) -> None:
    """hpc-a's gateway answering again with its fronts, whatever a test left."""
    if not consortium.state.centres["hpc-a"].gateway.running():
        consortium.start_gateway("hpc-a")
    consortium.wait_gateway("hpc-a")
    wait_until(lambda: len(_fronts(consortium)) == FRONTS, 20, "hpc-a's fronts")


def _stop_own(process: subprocess.Popen) -> None:
    """Stop a gateway this test started (its fronts go with it: they are in its process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_no_other_process_joins_the_public_port_of_a_gateway_with_fronts(running: RunningConsortium) -> None:
    """The fronts listen with SO_REUSEPORT, so any process of the gateway's user (another centre's gateway with
    fronts configured on the same port by mistake, a leftover process, an unsandboxed trial-mode job) binds the
    same port without an error and the kernel hands it a share of the connections: submissions and their bearer
    tokens. A one-process gateway's port refuses a second listener (EADDRINUSE); with fronts it should too
    (e.g. the back binds the socket once and hands it to its fronts)."""
    _ensure_up(running)
    host, port = _address(running)
    code = textwrap.dedent(
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(({host!r}, {port}))
        s.listen(16)
        print("joined")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30)
    assert "joined" not in done.stdout and done.returncode != 0, (
        f"another process of the gateway's user listens on {host}:{port} beside hpc-a's fronts"
    )


def test_a_gateway_whose_fronts_cannot_listen_does_not_run_on(running: RunningConsortium, tmp_path: Path) -> None:
    """A one-process gateway that cannot listen exits 3 (so `consortium up`, systemd and the operator see it). With
    fronts, each front fails to bind and exits, the back starts it again (waits doubling to 60 s) for ever and
    itself runs on, serving only its unix socket: nothing says the centre is not on its port."""
    centre = running.state.centres["hpc-a"]
    running.kill_gateway("hpc-a", signal.SIGTERM)
    host, port = _address(running)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # no SO_REUSEPORT: the port is someone else's
    process: subprocess.Popen | None = None
    try:
        squatter.bind((host, port))
        squatter.listen(16)
        with open(tmp_path / "gateway.log", "wb") as out:
            process = subprocess.Popen(
                gateway_command(Path(centre.config)),
                cwd=running.folder / "hpc-a",
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            code: int | None = process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            code = None
        log = (tmp_path / "gateway.log").read_text(errors="replace")
        assert code is not None and code != 0, (
            f"hpc-a's gateway runs on with no front on {host}:{port} (fronts started "
            f"{log.count('exited')} times in vain): {log[-800:]}"
        )
    finally:
        if process is not None:
            _stop_own(process)
        squatter.close()
        _ensure_up(running)


def test_a_limits_file_of_another_version_does_not_keep_the_gateway_down(running: RunningConsortium) -> None:
    """The limits files hold only token buckets (nothing lost by starting them again), and the spec of the shared
    limit says the class refuses another shape and the caller makes the file again. assemble._decision_limits
    does not: after an upgrade that tunes DECISION_BURST (or DECISIONS_PER_SECOND, or the slots), a gateway with
    fronts refuses to start ("remove it to start again") until the operator deletes limits/decisions.slots by
    hand; the back holds the data folder at start, before any front, so it could replace the file."""
    running.kill_gateway("hpc-a", signal.SIGTERM)
    path = running.data_dir("hpc-a") / "limits" / "decisions.slots"
    try:
        path.unlink(missing_ok=True)
        SharedRateLimit(path, DECISIONS_PER_SECOND, DECISION_BURST + 50).close()  # written by the earlier version
        state = running.state
        start_gateway(state, "hpc-a")
        pid = running.state.centres["hpc-a"].gateway.pid
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and alive(pid) and gateway_health(running.url("hpc-a")) is not None:
            time.sleep(0.5)
        log = Path(running.state.centres["hpc-a"].gateway.log).read_text(errors="replace")
        assert gateway_health(running.url("hpc-a")) is None, f"hpc-a's gateway did not start: {log[-600:]}"
    finally:
        if not running.state.centres["hpc-a"].gateway.running():
            path.unlink(missing_ok=True)
        _ensure_up(running)
