"""Attack: a serving centre hides a leaf in the sum tree's padding (index >= count).

Before the fix the contract took `count` from the anchor and never checked that the slots from
`count` up to the next power of two are the empty (0, 0) leaves. A dispute may name only an index below `count`, so a
made-up leaf in a padding slot can never be disputed; every genuine leaf answers validly (its proof
runs through the padded subtree, whose sum includes the hidden amount), the claim stands, and the
payer pays the hidden amount. Now every sibling starting at or past `count` must be EMPTY: the
leaf next to the hidden slot cannot be proven, its dispute stands and the whole claim is void.
"""

from __future__ import annotations

from eth_utils import keccak

from ledger.sumtree import EMPTY, leaf, node
from tests.test_contracts import reverts
from tests.test_payment_contracts import (
    NAMES,
    A,
    C,
    answer,
    balances,
    dispute,
    evidence,
    k,  # noqa: F401 - the fixture
    make_job,
    settle_after_window,
)


class PaddedTree:
    """A sum tree over `leaves` (already leaf nodes), padded to a power of two with the given slots."""

    def __init__(self, slots: list[tuple[bytes, int]], count: int) -> None:
        self.count = count
        self.levels = [slots]
        level = slots
        while len(level) > 1:
            level = [node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            self.levels.append(level)
        self.root, self.total = self.levels[-1][0]

    def proof(self, index: int):
        from ledger.sumtree import SumProof

        siblings = [level[(index >> kk) ^ 1] for kk, level in enumerate(self.levels[:-1])]
        return SumProof(tuple(h for h, _ in siblings), tuple(s for _, s in siblings))


def evidence_proof(tree: PaddedTree, index: int) -> tuple[list[bytes], list[int]]:
    proof = tree.proof(index)
    return list(proof.hashes), list(proof.sums)


def test_a_leaf_hidden_in_the_padding_is_never_paid(k):  # noqa: F811
    ul = k.c.usage_ledger.functions
    jobs = [make_job(k, "cloud-c", "hpc-a", 1) for _ in range(3)]
    genuine = sum(j.record.price for j in jobs)
    hidden = 300_000_000
    slots = [leaf(j.digest, j.record.price) for j in jobs] + [leaf(keccak(b"never ran"), hidden)]
    tree = PaddedTree(slots, count=3)
    assert EMPTY != slots[3]
    k.tx(ul.anchor(1, [A], [tree.root], [3], [tree.total], bytes(32), 0), "cloud-c")
    assert ul.claimOf(1, C, A).call() == [tree.root, 3, genuine + hidden, False]
    # the padded slot cannot be disputed at all
    reverts("IndexOutOfRange", k.tx, ul.dispute(C, 1, A, 3, False), "hpc-a")
    # hpc-a's watcher sees the evidence does not rebuild the claim and disputes every leaf ...
    ids = [dispute(k, "hpc-a", "cloud-c", 1, "hpc-a", i) for i in range(3)]
    # ... leaves 0 and 1 answer (their proofs never pass through the padding) ...
    for i in (0, 1):
        answer(k, "cloud-c", ids[i], evidence(jobs[i], tree, i))  # type: ignore[arg-type]
    # ... but leaf 2's sibling is the hidden slot, which must be EMPTY: no proof of leaf 2 exists
    reverts("InvalidProof", answer, k, "cloud-c", ids[2], evidence(jobs[2], tree, 2))  # type: ignore[arg-type]
    assert not ul.verifyRecord(C, 1, A, 2, jobs[2].digest, jobs[2].record.price, *evidence_proof(tree, 2)).call()
    before = balances(k)
    settle_after_window(k, 1)
    after = balances(k)
    paid = before["hpc-a"] - after["hpc-a"]
    print(f"genuine work {genuine}, hpc-a paid {paid}, cloud-c gained {after['cloud-c'] - before['cloud-c']}")
    assert sum(after.values()) == sum(before.values())
    # honest outcome: hpc-a pays at most the work its users ordered (or the claim is void)
    assert paid <= genuine, f"hpc-a paid {paid} for {genuine} of genuine work: {paid - genuine} for a hidden leaf"
    assert ul.claimOf(1, C, A).call()[3] is True  # void: the hidden amount made one leaf unanswerable
    assert NAMES
