"""Compiled contract artifacts (committed JSON), so the package runs without Node."""

from __future__ import annotations

import functools
import json
from pathlib import Path

ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "contracts" / "artifacts"
CONTRACT_NAMES = ("Consortium", "UsageLedger", "ConsortiumCredit", "Settlement", "IdentityRegistry", "Supervision")


class ArtifactNotFound(LookupError):
    """No compiled artifact of that name."""


@functools.cache
def _load(name: str) -> str:
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        raise ArtifactNotFound(f"no artifact {name!r} in {ARTIFACTS_DIR} (run scripts/compile_contracts.mjs)")
    return path.read_text()


def load_artifact(name: str) -> dict:
    """{"contractName", "abi", "bytecode"} of a project contract (a fresh copy each call)."""
    if "/" in name or "\\" in name or name.startswith("."):
        raise ArtifactNotFound(f"invalid artifact name {name!r}")
    return json.loads(_load(name))


def abi(name: str) -> list[dict]:
    """The ABI of a project contract."""
    return load_artifact(name)["abi"]
