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

A built tree's node array (`MerkleTree.nodes`) can be kept instead of its leaves' sources:
`proof_from_nodes` then finds a leaf by binary search over the leaf region and reads its
siblings, a few dozen 32-byte reads, checking each parent on the way up.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from typing import Protocol

from eth_utils import keccak

from ledger.primitives.hex import to_hex

ZERO = bytes(32)
NODE = 32


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin Hashes.commutativeKeccak256."""
    return keccak(a + b) if a < b else keccak(b + a)


class CorruptTree(ValueError):
    """A node array that is not a tree's: the wrong size, or a node that is not the hash of its children."""


class NodeArray(Protocol):
    """What proof_from_nodes reads: bytes, or anything sliced like them (a sqlite3.Blob)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> bytes: ...


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
    def nodes(self) -> bytes:
        """The node array as laid out (root first, leaves last in reverse sorted order), 32 bytes a node."""
        return b"".join(self._tree)

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


def proof_from_nodes(nodes: NodeArray, leaf: bytes) -> list[bytes]:
    """MerkleTree.proof from the tree's node array, reading only the nodes it needs: KeyError if not a leaf,
    CorruptTree if the array is not a tree's or a node on the leaf's path is not its children's hash."""
    leaf = _check_leaf(leaf)
    size, extra = divmod(len(nodes), NODE)
    if extra:
        raise CorruptTree(f"a node array is whole 32-byte nodes, got {len(nodes)} bytes")
    if size % 2 == 0 and size:
        raise CorruptTree(f"a tree has an odd number of nodes (2 per leaf, less one), got {size}")

    def node(i: int) -> bytes:
        return bytes(nodes[NODE * i : NODE * (i + 1)])

    count = (size + 1) // 2  # the sorted leaf k is node size - 1 - k
    k = bisect.bisect_left(range(count), leaf, key=lambda k: node(size - 1 - k))
    i = size - 1 - k
    if k == count or node(i) != leaf:
        raise KeyError(f"not a leaf of this tree: {to_hex(leaf)}")
    proof, here = [], leaf
    while i > 0:
        sibling, parent = node(i + 1 if i % 2 else i - 1), (i - 1) // 2
        here = hash_pair(here, sibling)
        if node(parent) != here:
            raise CorruptTree(f"node {parent} is not the hash of its children: the node array is damaged")
        proof.append(sibling)
        i = parent
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
