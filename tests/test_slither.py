"""Slither's static analysis of the contracts: no High finding, and something was analysed.

Slither compiles through crytic-compile, which wants a native `solc`; scripts/solc
answers for it with the pinned solcjs. Slither needs web3 < 8, so `make slither-deps`
installs it into its own virtualenv (.venv/slither); XCENTRE_SLITHER may name another.
Slither exits 0 even when it analysed nothing, so that is checked here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
SOLC = ROOT / "scripts" / "solc"
NOTHING_ANALYZED = "No contract was analyzed"


class SlitherFailed(AssertionError):
    """Slither did not run, or analysed nothing."""


def slither_binary() -> str:
    """The project's Slither (make slither-deps), or XCENTRE_SLITHER."""
    path = os.environ.get("XCENTRE_SLITHER") or str(ROOT / ".venv" / "slither" / "bin" / "slither")
    if not Path(path).is_file():
        pytest.fail(f"Slither is not installed at {path}: run `make slither-deps`")
    return path


def run_slither(contracts_dir: Path, target: str = "src") -> list[dict]:
    """Slither's detector results on ``contracts_dir/target`` (imports from its node_modules)."""
    if shutil.which("node") is None or not (CONTRACTS / "node_modules" / "solc").is_dir():
        pytest.fail("node and contracts/node_modules are needed: run `make node-deps`")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "slither.json"
        return _findings(_run(contracts_dir, target, out), out)


def _run(contracts_dir: Path, target: str, out: Path) -> subprocess.CompletedProcess[str]:
    # --json to a file, not "-": with "-" Slither silences the log line that says what it analysed.
    return subprocess.run(
        [
            slither_binary(),
            target,
            "--solc-standard-json",
            "--solc",
            str(SOLC),
            "--exclude-dependencies",
            "--filter-paths",
            "node_modules",  # OpenZeppelin: audited upstream; Math.mulDiv's ^ is a known false positive
            "--json",
            str(out),
        ],
        cwd=contracts_dir,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _findings(result: subprocess.CompletedProcess[str], out: Path) -> list[dict]:
    analyzed = re.search(r"analyzed \((\d+) contracts", result.stderr)
    if NOTHING_ANALYZED in result.stderr or analyzed is None or int(analyzed.group(1)) == 0:
        raise SlitherFailed(f"{NOTHING_ANALYZED} (exit {result.returncode}): {result.stderr[-4000:]}")
    try:
        report = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError):
        raise SlitherFailed(f"Slither failed (exit {result.returncode}): {result.stderr[-4000:]}") from None
    if not report.get("success"):
        raise SlitherFailed(f"Slither failed: {report.get('error') or result.stderr[-4000:]}")
    return list((report.get("results") or {}).get("detectors", []))


def _project(tmp_path: Path, sources: dict[str, str]) -> Path:
    """A contracts directory with the given sources and the project's node_modules."""
    (tmp_path / "src").mkdir()
    for name, text in sources.items():
        (tmp_path / "src" / name).write_text(text)
    (tmp_path / "node_modules").symlink_to(CONTRACTS / "node_modules")
    return tmp_path


def _summary(findings: list[dict]) -> str:
    return "\n".join(f"[{f['impact']}] {f['check']}: {f['description'].strip()}" for f in findings)


def test_solc_wrapper_answers_version_and_refuses_other_commands():
    version = subprocess.run([str(SOLC), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert "Version: 0.8.28" in version.stdout
    other = subprocess.run([str(SOLC), "--bin", "x.sol"], capture_output=True, text=True, timeout=60, check=False)
    assert other.returncode == 2 and "only --version and --standard-json" in other.stderr


def test_the_gate_sees_a_high_finding(tmp_path):
    """A contract sending ether to an address nobody sets: uninitialized-state, High."""
    project = _project(
        tmp_path,
        {
            "Leaky.sol": (
                "// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.28;\n"
                "contract Leaky {\n    address payable private dest;\n"
                "    function pay() external { dest.transfer(1); }\n}\n"
            )
        },
    )
    high = [f for f in run_slither(project) if f["impact"] == "High"]
    assert [f["check"] for f in high] == ["uninitialized-state"]


def test_the_gate_refuses_when_nothing_was_analyzed(tmp_path):
    project = _project(tmp_path, {"Empty.sol": "// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.28;\n"})
    with pytest.raises(SlitherFailed):
        run_slither(project)


def test_contracts_have_no_high_finding():
    findings = run_slither(CONTRACTS)
    assert findings, "Slither reported nothing at all on the contracts: check that it analysed them"
    high = [f for f in findings if f["impact"] == "High"]
    assert not high, f"Slither High findings:\n{_summary(high)}"
