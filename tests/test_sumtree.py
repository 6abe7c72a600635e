"""Merkle sum tree (spec §2): roots by hand for 1, 2, 3 and 5 leaves, proofs, tampering, bad input."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from ledger.sumtree import EMPTY, SumProof, SumTree, SumTreeError, depth, verify

D = [keccak(text=f"record-{i}") for i in range(8)]
A = [10, 0, 7, 2**200, 5, 1, 1, 1]


def leaf(d: bytes, a: int) -> tuple[bytes, int]:
    return keccak(encode(["bytes32", "uint256"], [d, a])), a


def node(left: tuple[bytes, int], right: tuple[bytes, int]) -> tuple[bytes, int]:
    h = keccak(encode(["bytes32", "uint256", "bytes32", "uint256"], [left[0], left[1], right[0], right[1]]))
    return h, left[1] + right[1]


def test_depth():
    assert [depth(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [0, 1, 2, 2, 3, 3, 4]
    for bad in (0, -1, True, 2.0):
        with pytest.raises(SumTreeError):
            depth(bad)


def test_empty_is_zero():
    assert EMPTY == (bytes(32), 0)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_root_by_hand(n):
    ls = [leaf(D[i], A[i]) for i in range(n)]
    e = (bytes(32), 0)
    expected = {
        1: lambda: ls[0],
        2: lambda: node(ls[0], ls[1]),
        3: lambda: node(node(ls[0], ls[1]), node(ls[2], e)),
        5: lambda: node(node(node(ls[0], ls[1]), node(ls[2], ls[3])), node(node(ls[4], e), e)),  # all padding: EMPTY
    }[n]()
    tree = SumTree(zip(D[:n], A[:n], strict=True))
    assert (tree.root, tree.total, tree.count) == (expected[0], expected[1], n)
    assert tree.total == sum(A[:n])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_every_proof_verifies(n):
    tree = SumTree(zip(D[:n], A[:n], strict=True))
    for i in range(n):
        proof = tree.proof(i)
        assert len(proof.hashes) == len(proof.sums) == depth(n)
        assert verify(tree.root, tree.total, n, i, D[i], A[i], proof)


def test_proof_siblings_for_index_two_of_three():
    tree = SumTree(zip(D[:3], A[:3], strict=True))
    p = tree.proof(2)
    assert p.hashes == (bytes(32), node(leaf(D[0], A[0]), leaf(D[1], A[1]))[0])
    assert p.sums == (0, A[0] + A[1])


def test_tampering_fails():
    n = 5
    tree = SumTree(zip(D[:n], A[:n], strict=True))
    p = tree.proof(3)
    ok = (tree.root, tree.total, n, 3, D[3], A[3], p)
    assert verify(*ok)
    bad_sums = SumProof(p.hashes, (p.sums[0] + 1, *p.sums[1:]))
    bad_hash = SumProof((keccak(b"x"), *p.hashes[1:]), p.sums)
    short = SumProof(p.hashes[:-1], p.sums[:-1])
    assert not verify(tree.root, tree.total, n, 3, D[3], A[3], bad_sums)
    assert not verify(tree.root, tree.total, n, 3, D[3], A[3], bad_hash)
    assert not verify(tree.root, tree.total, n, 3, D[3], A[3], short)
    assert not verify(tree.root, tree.total, n, 2, D[3], A[3], p)  # another index
    assert not verify(tree.root, tree.total, n, 3, D[3], A[3] + 1, p)  # another amount
    assert not verify(tree.root, tree.total, n, 3, D[2], A[3], p)  # another record
    assert not verify(tree.root, tree.total + 1, n, 3, D[3], A[3], p)  # another total
    assert not verify(tree.root, tree.total, 9, 3, D[3], A[3], p)  # another count (depth 4)
    assert not verify(tree.root, tree.total, n, 5, D[3], A[3], p)  # index past count
    assert not verify(tree.root, tree.total, n, 7, D[3], A[3], p)  # an empty padding slot


def _padded_root(slots: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    level = slots
    while len(level) > 1:
        level = [node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _siblings(slots: list[tuple[bytes, int]], index: int) -> SumProof:
    levels = [slots]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([node(prev[i], prev[i + 1]) for i in range(0, len(prev), 2)])
    sib = [level[(index >> k) ^ 1] for k, level in enumerate(levels[:-1])]
    return SumProof(tuple(h for h, _ in sib), tuple(a for _, a in sib))


def test_every_padding_sibling_of_a_proof_is_empty():
    tree = SumTree(zip(D[:5], A[:5], strict=True))
    p = tree.proof(4)
    assert (p.hashes[0], p.sums[0]) == EMPTY and (p.hashes[1], p.sums[1]) == EMPTY
    assert p.sums[2] == sum(A[:4])


def test_an_amount_hidden_in_the_padding_fails():
    """A leaf past `count` cannot be disputed, so no proof may pass through a padding slot that holds one."""
    slots = [leaf(D[i], A[i]) for i in range(3)] + [leaf(keccak(b"never ran"), 300)]
    root, total = _padded_root(slots)
    assert not verify(root, total, 3, 2, D[2], A[2], _siblings(slots, 2))
    # the leaves whose proofs never touch the padding still verify: their dispute would be answered
    assert verify(root, total, 3, 0, D[0], A[0], _siblings(slots, 0))
    # a subtree of padding must be EMPTY itself, not a node over two EMPTY leaves (which could hide sums)
    e = (bytes(32), 0)
    slots5 = [leaf(D[i], A[i]) for i in range(5)] + [e, e, e]
    root5, total5 = _padded_root(slots5)
    assert not verify(root5, total5, 5, 4, D[4], A[4], _siblings(slots5, 4))
    # a zero hash with a non-zero sum is no EMPTY either
    tree = SumTree(zip(D[:3], A[:3], strict=True))
    p = tree.proof(2)
    assert not verify(tree.root, tree.total + 1, 3, 2, D[2], A[2], SumProof(p.hashes, (1, p.sums[1])))


def test_shifted_amounts_between_siblings_change_the_root():
    """A sum tree commits to each amount, not only the total: moving value between leaves is seen."""
    a = SumTree([(D[0], 5), (D[1], 5)])
    b = SumTree([(D[0], 4), (D[1], 6)])
    assert a.total == b.total and a.root != b.root


def test_proof_json_round_trip():
    p = SumTree(zip(D[:5], A[:5], strict=True)).proof(4)
    assert SumProof.from_dict(p.to_dict()) == p
    assert p.to_dict()["hashes"][0].startswith("0x")
    for bad in [
        {"hashes": ["0x00"], "sums": [1]},
        {"hashes": ["0x" + "00" * 32], "sums": [1, 2]},
        {"hashes": ["0x" + "00" * 32], "sums": [-1]},
        {"hashes": ["0x" + "00" * 32], "sums": [True]},
        {"hashes": ["zz" * 32], "sums": [1]},
        {"hashes": "0x", "sums": []},
        {"sums": []},
        [],
    ]:
        with pytest.raises(SumTreeError):
            SumProof.from_dict(bad)


def test_bad_input():
    with pytest.raises(SumTreeError, match="no leaves"):
        SumTree([])
    for bad in [
        [(b"short", 1)],
        [(D[0], -1)],
        [(D[0], True)],
        [(D[0], 2**256)],
        [(D[0], 1.0)],
        [D[0]],
        ["0x" + "00" * 32],
    ]:
        with pytest.raises(SumTreeError):
            SumTree(bad)
    with pytest.raises(SumTreeError, match="total"):
        SumTree([(D[0], 2**255), (D[1], 2**255)])  # total past uint256
    tree = SumTree([(D[0], 1)])
    for i in (-1, 1, True):
        with pytest.raises(SumTreeError):
            tree.proof(i)
    with pytest.raises(SumTreeError):
        verify(tree.root, 1, 1, 0, b"short", 1, tree.proof(0))
    with pytest.raises(SumTreeError):
        SumProof((b"\x00" * 32,), (-1,))
