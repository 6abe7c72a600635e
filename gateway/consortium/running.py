"""A consortium brought up by `up`, driven from code: what the integration and fault tests (and scripts) use.

It reads the run folder's state and can kill, stop, resume and restart each process, so a
test can take a gateway, a directory or the chain away and bring it back as an operator's
machine would lose and regain it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from gateway.consortium import slapd as slapd_node
from gateway.consortium.control import (
    GATEWAY_START_TIMEOUT,
    State,
    down,
    gateway_health,
    start_gateway,
    status,
    up,
)
from gateway.consortium.processes import accepting, alive, wait_until


@dataclass
class RunningConsortium:
    """The consortium running in `folder` (from `file`)."""

    file: Path
    folder: Path

    @classmethod
    def up(cls, file: Path, folder: Path, quiet: bool = True) -> RunningConsortium:
        up(file, folder, say=(lambda _: None) if quiet else print)
        return cls(Path(file), Path(folder))

    @property
    def state(self) -> State:
        state = State.load(self.folder.resolve())
        if state is None:
            raise RuntimeError(f"no consortium in {self.folder}")
        return state

    @property
    def names(self) -> list[str]:
        return list(self.state.centres)

    def url(self, name: str) -> str:
        return self.state.centres[name].url

    def operator_key(self, name: str) -> str:
        return self.state.centres[name].operator_key

    def data_dir(self, name: str) -> Path:
        return self.folder.resolve() / name / "data"

    def pids(self) -> list[int]:
        """Every pid the state file records as started (running or not)."""
        return [p.pid for _, p in self.state.processes() if p.pid]

    def healthy(self) -> bool:
        return all(h.healthy for h in status(self.folder))

    # -- gateways -----------------------------------------------------------------------------------
    def kill_gateway(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a centre's gateway at once (kill -9 by default) and reap it."""
        gateway = self.state.centres[name].gateway
        pid = gateway.pid
        if pid and gateway.running():
            os.kill(pid, sig)
            wait_until(lambda: not _reaped_alive(pid), 10, f"{name}'s gateway to die")

    def start_gateway(self, name: str, wait: bool = True) -> None:
        """Start a centre's gateway again on its port, configuration and data; wait until it answers."""
        state = self.state
        start_gateway(state, name)
        if wait:
            self.wait_gateway(name)

    def wait_gateway(self, name: str, timeout: float = GATEWAY_START_TIMEOUT) -> None:
        url = self.url(name)
        wait_until(lambda: gateway_health(url) is None, timeout, f"{name}'s gateway")

    # -- the chain ----------------------------------------------------------------------------------
    def pause_chain(self) -> None:
        """SIGSTOP anvil: the node stops answering (connections hang), as a stalled chain node does."""
        anvil = self.state.anvil
        assert anvil is not None and anvil.pid
        os.kill(anvil.pid, signal.SIGSTOP)

    def resume_chain(self) -> None:
        anvil = self.state.anvil
        assert anvil is not None and anvil.pid
        os.kill(anvil.pid, signal.SIGCONT)

    def stop_chain(self) -> None:
        """Stop anvil cleanly (SIGTERM: it saves its chain to the run folder); start_chain brings the same chain
        back on the same port."""
        state = self.state
        assert state.anvil is not None
        state.anvil.stop()
        state.save()

    def start_chain(self) -> None:
        """Start the stopped anvil again (what `up` does for a process that is not running)."""
        up(self.file, self.folder, say=lambda _: None)

    # -- directories --------------------------------------------------------------------------------
    def stop_directory(self, name: str) -> None:
        """Stop a centre's slapd (SIGTERM): its port refuses connections until start_directory."""
        state = self.state
        centre = state.centres[name]
        centre.slapd.stop()
        state.save()

    def start_directory(self, name: str) -> None:
        """Start a centre's slapd again on its folder and port: the same entries."""
        state = self.state
        centre = state.centres[name]
        process = slapd_node.launch(self.folder.resolve() / name / "slapd", centre.slapd.port, detach=True)
        centre.slapd.track(process.pid)
        state.save()
        wait_until(lambda: accepting(centre.slapd.port), 10, f"{name}'s slapd", process)

    def down(self) -> None:
        down(self.folder, say=lambda _: None)


def _reaped_alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return alive(pid)
