"""anvil, the development chain node (npm @foundry-rs/anvil), on loopback.

`npm ci` in contracts/ installs it under contracts/node_modules; one on PATH serves too.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO

from gateway.consortium.processes import spawn

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "contracts" / "node_modules" / "@foundry-rs"
START_TIMEOUT = 30.0
HARDFORK = "prague"
STATE_INTERVAL = 1  # seconds between saves of a chain kept in a file: what a kill -9 can lose


def anvil_binary() -> Path | None:
    """The anvil executable from contracts/node_modules (or PATH), None if not installed."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform, sys.platform)
    exe = "anvil.exe" if system == "win32" else "anvil"
    candidate = NODE_MODULES / f"anvil-{system}-{arch}" / "bin" / exe
    if candidate.is_file():
        return candidate
    found = shutil.which("anvil")
    return Path(found) if found else None


def anvil_command(binary: Path, port: int, state: Path | None = None, balance: int | None = None) -> list[str]:
    """anvil on 127.0.0.1:port (prague); with `state`, the chain is loaded from that file and saved to it every
    STATE_INTERVAL seconds and when anvil stops; with `balance`, each development account starts with that many
    ether (anvil's default: 10,000)."""
    command = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--hardfork", HARDFORK, "--quiet"]
    if state is not None:
        command += ["--state", str(state), "--state-interval", str(STATE_INTERVAL)]
    if balance is not None:
        command += ["--balance", str(balance)]
    return command


def start_anvil(
    binary: Path,
    port: int,
    log: IO[bytes],
    *,
    state: Path | None = None,
    balance: int | None = None,
    home: Path | None = None,
) -> subprocess.Popen:
    """Starts anvil on loopback with its output to `log` (an open file, so it never blocks); with `home`, its
    scratch states go there (`anvil_env`)."""
    command = anvil_command(binary, port, state, balance)
    env = None if home is None else anvil_env(home)
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)


def spawn_anvil(binary: Path, port: int, log: Path, *, state: Path | None = None, home: Path) -> subprocess.Popen:
    """Starts anvil detached (it outlives `xcentre consortium up`), its output appended to `log`, its scratch
    states under `home`."""
    return spawn(anvil_command(binary, port, state), log, env=anvil_env(home))


def anvil_env(home: Path) -> dict[str, str]:
    """anvil's environment with `home` as its HOME. anvil writes the states of older blocks to
    HOME/.foundry/anvil/tmp (gigabytes over a test suite's run) and leaves them there when it is stopped,
    so they go to a folder of the run's own, which `remove_scratch` empties once anvil has stopped."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home)}


def remove_scratch(home: Path) -> None:
    """Remove the states anvil wrote under `home` (`anvil_env`); for an anvil that has stopped."""
    shutil.rmtree(home / ".foundry", ignore_errors=True)


def rpc(url: str, method: str, params: list | None = None, timeout: float = 1.0) -> object:
    """One JSON-RPC call; OSError (or ValueError for an error answer) when the node does not answer it."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "result" not in answer:
        raise ValueError(f"{method}: {answer.get('error')}")
    return answer["result"]


def answers(url: str) -> bool:
    """Whether a JSON-RPC node answers at `url`."""
    try:
        rpc(url, "eth_chainId")
        return True
    except (OSError, ValueError):
        return False


def block_height(url: str) -> int | None:
    """The node's latest block number, None when it does not answer."""
    try:
        return int(str(rpc(url, "eth_blockNumber")), 16)
    except (OSError, ValueError):
        return None
