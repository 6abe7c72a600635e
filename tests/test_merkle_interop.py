"""ledger.merkle builds the trees of npm @openzeppelin/merkle-tree's StandardMerkleTree
(pinned in tests/interop/package.json), driven through tests/interop/merkle.mjs: the same
roots and the same proofs, for every size from 1 to 17 leaves and for random data."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from ledger.ids import centre_id, user_id
from ledger.merkle import MerkleTree, verify
from ledger.records import Domain, UsageRecord, record_digest, record_leaf

INTEROP = Path(__file__).resolve().parent / "interop"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (needed for the Merkle interop peer)"),
    pytest.mark.skipif(
        not (INTEROP / "node_modules" / "@openzeppelin" / "merkle-tree").is_dir(),
        reason="tests/interop/node_modules is absent: run `npm ci` in tests/interop",
    ),
]

RECORD_TYPES = ["bytes32"]
PAIR_TYPES = ["address", "uint256"]


def standard_leaf(types: list[str], values: list) -> bytes:
    """StandardMerkleTree's leaf: keccak256(keccak256(abi.encode(values)))."""
    return keccak(keccak(encode(types, values)))


def _json(value) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def _peer(cases: list[tuple[list[str], list[list]]]) -> list[dict]:
    """Build every case with StandardMerkleTree in one node process."""
    request = {"cases": [{"types": t, "values": [[_json(x) for x in v] for v in vs]} for t, vs in cases]}
    proc = subprocess.run(
        [NODE, str(INTEROP / "merkle.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=INTEROP,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == len(cases)
    return [
        {
            "root": bytes.fromhex(r["root"][2:]),
            "leaves": [bytes.fromhex(h[2:]) for h in r["leaves"]],
            "proofs": [[bytes.fromhex(h[2:]) for h in p] for p in r["proofs"]],
        }
        for r in results
    ]


def _digests(rng: random.Random, n: int) -> list[list[bytes]]:
    return [[rng.randbytes(32)] for _ in range(n)]


def _pairs(rng: random.Random, n: int) -> list[list]:
    return [[to_checksum_address(rng.randbytes(20)), rng.getrandbits(rng.choice((8, 64, 256)))] for _ in range(n)]


@pytest.fixture(scope="module")
def cases() -> list[tuple[list[str], list[list], dict]]:
    """(types, values, the peer's tree): 1..17 record digests, then random data of other sizes and types."""
    rng = random.Random(20_240_607)
    built: list[tuple[list[str], list[list]]] = [(RECORD_TYPES, _digests(rng, n)) for n in range(1, 18)]
    built += [(RECORD_TYPES, _digests(rng, n)) for n in (31, 32, 33, 100)]
    built += [(PAIR_TYPES, _pairs(rng, n)) for n in (1, 2, 5, 6, 7, 13, 64)]
    return [(t, vs, oz) for (t, vs), oz in zip(built, _peer(built), strict=True)]


def test_roots_leaves_and_proofs_equal_openzeppelins(cases):
    for types, values, oz in cases:
        leaves = [standard_leaf(types, v) for v in values]
        assert leaves == oz["leaves"], (types, len(values))
        tree = MerkleTree(leaves)
        assert tree.root == oz["root"], f"{len(values)} leaves of {types}: roots differ"
        for leaf, theirs in zip(leaves, oz["proofs"], strict=True):
            assert tree.proof(leaf) == theirs, f"{len(values)} leaves of {types}: proofs differ"
            assert verify(oz["root"], leaf, theirs)


def test_sizes_one_to_seventeen_are_covered(cases):
    sizes = {len(values) for types, values, _ in cases if types == RECORD_TYPES}
    assert set(range(1, 18)) <= sizes


def test_record_leaves_are_standard_leaves_of_their_eip712_digest():
    """A usage record's leaf is StandardMerkleTree's leaf of its digest as one bytes32 value,
    so the package rebuilds an epoch's root and proofs from the digests alone."""
    domain = Domain(chain_id=31337, verifying_contract=to_checksum_address(b"\x11" * 20))
    records = [
        UsageRecord(
            bytes([i]) * 32,
            bytes([100 + i]) * 32,
            centre_id("hpc-b"),
            centre_id("hpc-a"),
            user_id(f"u{i}@hpc-a"),
            3,
            1000 + i,
            1010 + i,
            500 * i,
            10_000,
            2048,
            0,
            1,
            17 * i,
            bytes([200 + i]) * 32,
            bytes([210 + i]) * 32,
            bytes([220 + i]) * 32,
            bytes([230 + i]) * 32,
        )
        for i in range(1, 10)
    ]
    digests = [[record_digest(r, domain)] for r in records]
    [oz] = _peer([(RECORD_TYPES, digests)])
    leaves = [record_leaf(r, domain) for r in records]
    assert leaves == oz["leaves"]
    tree = MerkleTree(leaves)
    assert tree.root == oz["root"]
    assert [tree.proof(leaf) for leaf in leaves] == oz["proofs"]
