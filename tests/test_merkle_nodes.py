"""Proofs read from a tree's stored node array (ledger.merkle.proof_from_nodes): the same proofs as the tree
gives, found with a few node reads, and a damaged array refused rather than answered from."""

from __future__ import annotations

import random

import pytest
from eth_utils import keccak

from ledger.merkle import CorruptTree, MerkleTree, proof_from_nodes, verify


def leaves(n: int, salt: int = 0) -> list[bytes]:
    return [keccak(b"%d:%d" % (salt, i)) for i in range(n)]


class CountingNodes:
    """bytes that count their reads, as the store's sqlite3.Blob is read (len and slices)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.reads = data, 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: slice) -> bytes:
        self.reads += 1
        return self.data[key]


@pytest.mark.parametrize("n", range(1, 71))
def test_the_node_array_gives_the_trees_proof_of_every_leaf(n: int) -> None:
    ls = leaves(n, salt=n)
    random.Random(n).shuffle(ls)
    tree = MerkleTree(ls)
    nodes = tree.nodes
    assert isinstance(nodes, bytes) and len(nodes) == 32 * (2 * n - 1) and nodes[:32] == tree.root
    for leaf in ls:
        assert proof_from_nodes(nodes, leaf) == tree.proof(leaf)


def test_an_empty_tree_has_no_nodes_and_no_leaf() -> None:
    assert MerkleTree([]).nodes == b""
    with pytest.raises(KeyError):
        proof_from_nodes(b"", leaves(1)[0])


def test_a_value_that_is_not_a_leaf_is_a_key_error() -> None:
    ls = leaves(9)
    tree = MerkleTree(ls)
    inner = tree.nodes[32:64]  # an inner node is in the array, but not a leaf
    for absent in (keccak(b"absent"), tree.root, inner, b"\x00" * 32, b"\xff" * 32, min(ls)[:31] + b"\x00"):
        with pytest.raises(KeyError, match="not a leaf"):
            proof_from_nodes(tree.nodes, absent)
    with pytest.raises(ValueError, match="32 bytes"):
        proof_from_nodes(tree.nodes, b"short")


def test_a_proof_reads_a_few_nodes_not_the_array() -> None:
    ls = leaves(100_000 // 64)  # the reads grow with the depth: 1,562 leaves, 11 levels
    tree = MerkleTree(ls)
    for leaf in random.Random(1).sample(ls, 20):
        nodes = CountingNodes(tree.nodes)
        assert proof_from_nodes(nodes, leaf) == tree.proof(leaf)
        assert nodes.reads <= 4 * (len(ls) - 1).bit_length() + 4


@pytest.mark.parametrize(
    "blob, why",
    [
        (MerkleTree(leaves(5)).nodes[:-1], "whole 32-byte nodes"),
        (MerkleTree(leaves(5)).nodes + b"\x00", "whole 32-byte nodes"),
        (MerkleTree(leaves(5)).nodes[:-32], "odd number of nodes"),
        (MerkleTree(leaves(5)).nodes + bytes(32), "odd number of nodes"),
    ],
)
def test_a_node_array_of_the_wrong_size_is_refused(blob: bytes, why: str) -> None:
    with pytest.raises(CorruptTree, match=why):
        proof_from_nodes(blob, leaves(5)[0])


def test_a_damaged_node_is_refused_or_never_reached() -> None:
    """Any one node changed: a proof through it is refused (CorruptTree, naming the node) or finds no leaf
    (KeyError); a proof that does not pass it is still the tree's. Never a proof of another root."""
    ls = leaves(13)
    tree = MerkleTree(ls)
    refused = 0
    for index in range(2 * len(ls) - 1):
        damaged = bytearray(tree.nodes)
        damaged[32 * index + 7] ^= 0x01
        for leaf in ls:
            try:
                proof = proof_from_nodes(bytes(damaged), leaf)
            except CorruptTree as exc:
                assert "damaged" in str(exc)
                refused += 1
            except KeyError:
                assert index >= len(ls) - 1  # only a damaged leaf hides a leaf
            else:
                assert proof == tree.proof(leaf) and verify(tree.root, leaf, proof)
    assert refused > 0
    root_damaged = bytearray(tree.nodes)
    root_damaged[0] ^= 0x80
    for leaf in ls:  # every proof ends at the root
        with pytest.raises(CorruptTree, match="node 0 is not the hash of its children"):
            proof_from_nodes(bytes(root_damaged), leaf)
