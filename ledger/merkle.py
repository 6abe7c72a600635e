"""Merkle trees of usage-record leaves, compatible with OpenZeppelin MerkleProof.

Pairs are hashed commutatively (keccak256 of the sorted pair), so a proof is just the
list of sibling hashes. Leaves are sorted first: the root depends only on the set of
records, not on the order a centre happened to store them in.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_utils import keccak

ZERO = bytes(32)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin Hashes.commutativeKeccak256."""
    return keccak(a + b) if a < b else keccak(b + a)


def _check_leaf(leaf: bytes) -> bytes:
    if not isinstance(leaf, (bytes, bytearray)) or len(leaf) != 32:
        raise ValueError(f"a Merkle leaf must be 32 bytes, got {leaf!r}")
    return bytes(leaf)


class MerkleTree:
    """A tree over distinct bytes32 leaves. Odd nodes are carried up unchanged."""

    def __init__(self, leaves: Iterable[bytes]) -> None:
        ordered = sorted(_check_leaf(leaf) for leaf in leaves)
        for a, b in zip(ordered, ordered[1:]):
            if a == b:
                raise ValueError(f"duplicate Merkle leaf 0x{a.hex()}")
        self._index = {leaf: i for i, leaf in enumerate(ordered)}
        self._layers: list[list[bytes]] = [ordered]
        layer = ordered
        while len(layer) > 1:
            layer = [hash_pair(layer[i], layer[i + 1]) if i + 1 < len(layer) else layer[i]
                     for i in range(0, len(layer), 2)]
            self._layers.append(layer)

    def __len__(self) -> int:
        return len(self._layers[0])

    @property
    def leaves(self) -> list[bytes]:
        """The leaves in tree (sorted) order."""
        return list(self._layers[0])

    @property
    def root(self) -> bytes:
        """The root; bytes32(0) for a tree without leaves."""
        return self._layers[-1][0] if self._layers[0] else ZERO

    def proof(self, leaf: bytes) -> list[bytes]:
        """Sibling hashes from `leaf` up to the root (KeyError if not a leaf)."""
        i = self._index.get(_check_leaf(leaf))
        if i is None:
            raise KeyError(f"not a leaf of this tree: 0x{bytes(leaf).hex()}")
        proof = []
        for layer in self._layers[:-1]:
            sibling = i ^ 1
            if sibling < len(layer):
                proof.append(layer[sibling])
            i //= 2
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
