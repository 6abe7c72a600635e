"""Merkle trees as OpenZeppelin StandardMerkleTree builds them (the npm package itself:
test_merkle_interop; the on-chain check: test_contracts)."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from ledger.merkle import ZERO, MerkleTree, hash_pair, process_proof, verify


def leaves(n: int) -> list[bytes]:
    return [keccak(i.to_bytes(4, "big")) for i in range(n)]


def test_empty_tree_has_zero_root():
    assert MerkleTree([]).root == ZERO == bytes(32)
    assert len(MerkleTree([])) == 0


def test_single_leaf_is_its_own_root_with_empty_proof():
    (leaf,) = leaves(1)
    tree = MerkleTree([leaf])
    assert tree.root == leaf and tree.proof(leaf) == [] and verify(tree.root, leaf, [])


def test_two_leaves_hash_as_sorted_pair():
    a, b = leaves(2)
    expected = keccak(min(a, b) + max(a, b))
    assert MerkleTree([a, b]).root == expected == hash_pair(a, b) == hash_pair(b, a)


def test_five_leaves_take_standard_merkle_trees_shape():
    """StandardMerkleTree lays the sorted leaves l0..l4 out as a complete binary tree:
    root = H(H(H(l0, l1), l4), H(l2, l3)); carrying the odd l4 up instead gives another root."""
    l0, l1, l2, l3, l4 = sorted(leaves(5))
    tree = MerkleTree([l3, l0, l4, l2, l1])
    assert tree.root == hash_pair(hash_pair(hash_pair(l0, l1), l4), hash_pair(l2, l3))
    assert tree.proof(l4) == [hash_pair(l0, l1), hash_pair(l2, l3)]
    assert tree.proof(l0) == [l1, l4, hash_pair(l2, l3)]
    assert tree.proof(l2) == [l3, hash_pair(hash_pair(l0, l1), l4)]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_leaf_proves_and_proofs_are_logarithmic(n):
    ls = leaves(n)
    tree = MerkleTree(ls)
    for leaf in ls:
        proof = tree.proof(leaf)
        assert verify(tree.root, leaf, proof)
        assert process_proof(leaf, proof) == tree.root
        assert len(proof) <= (n - 1).bit_length()


def test_wrong_leaf_or_proof_fails():
    ls = leaves(6)
    tree = MerkleTree(ls)
    assert not verify(tree.root, ls[0], tree.proof(ls[1]))
    assert not verify(tree.root, b"\x01" * 32, tree.proof(ls[0]))
    tampered = tree.proof(ls[2])
    tampered[0] = bytes(32)
    assert not verify(tree.root, ls[2], tampered)


def test_root_does_not_depend_on_leaf_order():
    ls = leaves(11)
    assert MerkleTree(ls).root == MerkleTree(list(reversed(ls))).root
    assert MerkleTree(ls).leaves == sorted(ls)


def test_bad_input_is_rejected():
    ls = leaves(3)
    with pytest.raises(ValueError, match="duplicate"):
        MerkleTree([*ls, ls[0]])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree([b"short"])
    with pytest.raises(KeyError):
        MerkleTree(ls).proof(b"\x05" * 32)
    with pytest.raises(ValueError):
        verify(b"x", ls[0], [])
