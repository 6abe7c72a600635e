"""A consortium's chain node that dies, or comes back without its last blocks, on real processes.

anvil keeps the chain in memory and saves it to `anvil/chain-state.json` every second and when it
stops cleanly; killed, it comes back from its last save. A gateway that indexed a block the chain
no longer has stops keeping its books (it will not build on a history that was rewritten), so
`status` must say which gateways are degraded and why, and `up` must refuse to start a consortium
on a chain that lost blocks its gateways saw, saying what to do, rather than report it up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.client.cli import main
from gateway.consortium import anvil as anvil_node
from gateway.consortium import slapd as slapd_node
from gateway.consortium.control import State
from gateway.consortium.processes import alive, wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CENTRES = ("hpc-a", "cloud-b", "ai-c")

pytestmark = [
    pytest.mark.skipif(anvil_node.anvil_binary() is None, reason="anvil is not installed: run `npm ci` in contracts/"),
    pytest.mark.skipif(not slapd_node.installed(), reason=slapd_node.INSTALL_HINT),
]


@pytest.fixture
def run(tmp_path) -> Iterator[Path]:
    folder = tmp_path / "run"
    assert main(["consortium", "up", "--file", str(EXAMPLES / "consortium.toml"), "--dir", str(folder)]) == 0
    state = State.load(folder)
    assert state is not None
    pids = [p.pid for _, p in state.processes()]
    try:
        yield folder
    finally:
        main(["consortium", "down", "--dir", str(folder)])
        assert not [pid for pid in pids if alive(pid)]


def _health(url: str) -> dict:
    return httpx.get(url + "/v1/health", timeout=5).json()


def test_status_says_which_gateways_lost_their_chain_and_why(run, capsys):
    state = State.load(run)
    assert state is not None and state.anvil is not None and state.anvil.pid is not None
    os.kill(state.anvil.pid, signal.SIGKILL)
    urls = {name: state.centres[name].url for name in CENTRES}
    wait_until(lambda: all(_health(u)["status"] == "degraded" for u in urls.values()), 30, "the gateways to notice")
    health = _health(urls["hpc-a"])
    assert health["chain"]["reachable"] is False and health["chain"]["error"], health

    capsys.readouterr()
    assert main(["consortium", "status", "--dir", str(run), "--json"]) == 3
    report = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    for name in CENTRES:
        gateway = report[f"{name} gateway"]
        assert gateway["running"] and not gateway["healthy"], gateway  # the process runs, its books do not
        assert "degraded" in gateway["detail"] and "chain" in gateway["detail"], gateway
        assert report[f"{name} slapd"]["healthy"]


def test_up_refuses_a_chain_that_came_back_without_blocks_its_gateways_indexed(run, capsys):
    state = State.load(run)
    assert state is not None
    saved = run / "anvil" / "chain-state.json"
    wait_until(saved.is_file, 10, "anvil's first save of the chain")
    time.sleep(1.5)  # a save taken after `up` had finished writing
    older = run / "older-chain-state.json"
    shutil.copy(saved, older)
    height = int(str(anvil_node.rpc(state.chain_url, "eth_blockNumber")), 16)
    anvil_node.rpc(state.chain_url, "anvil_mine", ["0x5"])  # blocks the older save does not have
    urls = [state.centres[name].url for name in CENTRES]
    wait_until(
        lambda: all(_health(u)["chain"]["indexed_block"] >= height + 5 for u in urls), 30, "the new blocks indexed"
    )

    assert main(["consortium", "down", "--dir", str(run)]) == 0
    shutil.copy(older, saved)  # anvil comes back from the older save, as after a kill -9
    capsys.readouterr()
    assert main(["consortium", "up", "--file", str(EXAMPLES / "consortium.toml"), "--dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "lost blocks" in err and all(f"{name}'s index up to block" in err for name in CENTRES), err
    assert f"move {run} aside" in err, err
    after = State.load(run)
    assert after is not None
    assert not [name for name, proc in after.processes() if proc.running()]  # nothing left running by the refusal
