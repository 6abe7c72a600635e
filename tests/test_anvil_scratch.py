"""anvil's scratch states stay in the run's own folder and are removed when it stops.

anvil keeps the latest few hundred block states in memory and writes older ones, each a JSON of the
whole world state, under HOME/.foundry/anvil/tmp, which it leaves behind when stopped: a test suite's
run left gigabytes in the user's home and once filled the disk mid-run. The test nodes and the one
`xcentre consortium up` starts get a HOME of their run's own, emptied once they stop.
"""

from __future__ import annotations

from pathlib import Path

from gateway.consortium.anvil import rpc
from tests.fixtures.anvil import running_anvil


def test_anvil_writes_its_old_states_under_the_runs_folder_and_they_go_when_it_stops(tmp_path: Path) -> None:
    home_scratch = Path.home() / ".foundry" / "anvil" / "tmp"
    before = set(home_scratch.glob("*")) if home_scratch.exists() else set()
    with running_anvil(tmp_path) as url:
        rpc(url, "anvil_mine", [hex(800)], timeout=60)  # past what anvil keeps in memory
        states = list((tmp_path / ".foundry" / "anvil" / "tmp").rglob("*.json"))
        assert states, "anvil kept every state in memory: nothing shows where its scratch goes"
    assert not (tmp_path / ".foundry").exists()
    after = set(home_scratch.glob("*")) if home_scratch.exists() else set()
    assert after <= before, f"anvil wrote to the user's home: {sorted(after - before)}"
