"""Merkle trees of usage-record leaves, built exactly as OpenZeppelin's StandardMerkleTree.

The tree is `@openzeppelin/merkle-tree`'s (StandardMerkleTree, default options): leaves sorted,
laid out as a complete binary tree in one array (node i has children 2i+1 and 2i+2, leaves at
the end in reverse order), pairs hashed commutatively (keccak256 of the sorted pair). So its
roots and proofs are the package's, byte for byte, and its proofs check with OpenZeppelin
`MerkleProof` on chain. Sorting makes the root depend only on the set of records, not on the
order a centre stored them in.

A leaf is given already hashed. A usage record's leaf is keccak256(keccak256(digest)) of its
EIP-712 digest (`ledger.records.record_leaf`): StandardMerkleTree's leaf of the one value
[digest] of type ["bytes32"], so the package rebuilds an epoch's tree from the digests alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from eth_utils import keccak

from ledger.primitives.hex import to_hex

ZERO = bytes(32)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin Hashes.commutativeKeccak256."""
    return keccak(a + b) if a < b else keccak(b + a)


def _check_leaf(leaf: bytes) -> bytes:
    if not isinstance(leaf, (bytes, bytearray)) or len(leaf) != 32:
        raise ValueError(f"a Merkle leaf must be 32 bytes, got {leaf!r}")
    return bytes(leaf)


class MerkleTree:
    """A tree over distinct bytes32 leaves, node for node StandardMerkleTree's."""

    def __init__(self, leaves: Iterable[bytes]) -> None:
        ordered = sorted(_check_leaf(leaf) for leaf in leaves)
        for a, b in itertools.pairwise(ordered):
            if a == b:
                raise ValueError(f"duplicate Merkle leaf {to_hex(a)}")
        self._leaves = ordered
        size = 2 * len(ordered) - 1 if ordered else 0
        tree = [ZERO] * size
        self._position: dict[bytes, int] = {}
        for i, leaf in enumerate(ordered):
            tree[size - 1 - i] = leaf
            self._position[leaf] = size - 1 - i
        for i in range(size - 1 - len(ordered), -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        self._tree = tree

    def __len__(self) -> int:
        return len(self._leaves)

    @property
    def leaves(self) -> list[bytes]:
        """The leaves in sorted order."""
        return list(self._leaves)

    @property
    def root(self) -> bytes:
        """The root; bytes32(0) for a tree without leaves (the package refuses an empty tree)."""
        return self._tree[0] if self._tree else ZERO

    def proof(self, leaf: bytes) -> list[bytes]:
        """Sibling hashes from `leaf` up to the root (KeyError if not a leaf)."""
        i = self._position.get(_check_leaf(leaf))
        if i is None:
            raise KeyError(f"not a leaf of this tree: {to_hex(leaf)}")
        proof = []
        while i > 0:
            proof.append(self._tree[i + 1 if i % 2 else i - 1])
            i = (i - 1) // 2
        return proof


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """The root implied by a leaf and its proof (OpenZeppelin MerkleProof.processProof)."""
    node = _check_leaf(leaf)
    for sibling in proof:
        node = hash_pair(node, _check_leaf(sibling))
    return node


def verify(root: bytes, leaf: bytes, proof: Iterable[bytes]) -> bool:
    """True when `proof` links `leaf` to `root` (OpenZeppelin MerkleProof.verify)."""
    return process_proof(leaf, proof) == _check_leaf(root)
