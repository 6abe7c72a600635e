"""Committed contract artifacts are loadable and equal a fresh compile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.artifacts import ARTIFACTS_DIR, CONTRACT_NAMES, ArtifactNotFound, load_artifact

ROOT = Path(__file__).resolve().parents[1]


def test_every_contract_has_an_artifact():
    assert sorted(p.stem for p in ARTIFACTS_DIR.glob("*.json")) == sorted(CONTRACT_NAMES)
    for name in CONTRACT_NAMES:
        art = load_artifact(name)
        assert set(art) == {"contractName", "abi", "bytecode"}
        assert art["contractName"] == name and art["bytecode"].startswith("0x") and len(art["bytecode"]) > 100
        text = (ARTIFACTS_DIR / f"{name}.json").read_text()
        assert text.endswith("}\n")


def test_unknown_artifact_raises():
    with pytest.raises(ArtifactNotFound):
        load_artifact("Nope")
    with pytest.raises(ArtifactNotFound):
        load_artifact("../pyproject")


def test_committed_artifacts_equal_a_fresh_compile(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; cannot recompile the contracts")
    if not (ROOT / "contracts" / "node_modules" / "solc").is_dir():
        pytest.skip("contracts/node_modules is missing: run `npm ci` in contracts/")
    out = tmp_path / "artifacts"
    result = subprocess.run(
        [node, str(ROOT / "scripts" / "compile_contracts.mjs"), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.name for p in out.glob("*.json"))
    committed = sorted(p.name for p in ARTIFACTS_DIR.glob("*.json"))
    assert fresh == committed
    stale = [n for n in fresh if (out / n).read_text() != (ARTIFACTS_DIR / n).read_text()]
    assert not stale, f"stale artifacts {stale}: run `node scripts/compile_contracts.mjs` and commit"
