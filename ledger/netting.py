"""Multilateral netting of inter-centre claims, exactly as Settlement.sol computes it.

An auditor recomputes the net positions and transfers of an epoch from the anchored
claims with these functions and compares them with the contract's events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# UsageLedger.MAX_CLAIM: larger claims never reach the chain, so they are refused here too.
MAX_CLAIM = 2**128 - 1


def net_positions(claims: Mapping[tuple[bytes, bytes], int], members: Sequence[bytes]) -> dict[bytes, int]:
    """net[c] = what others owe c - what c owes others, over `members` only.

    `claims` maps (creditor, debtor) to an amount. Claims naming a centre outside
    `members` (e.g. removed before settlement) are ignored, as the contract does.
    The result has one entry per member, in member order, and sums to zero.
    """
    if len(set(members)) != len(members):
        raise ValueError("members must be distinct")
    net = {m: 0 for m in members}
    for (creditor, debtor), amount in claims.items():
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_CLAIM:
            raise ValueError(f"claim amount must be an int in [0, MAX_CLAIM], got {amount!r}")
        if creditor == debtor:
            raise ValueError("a centre cannot claim from itself")
        if creditor in net and debtor in net:
            net[creditor] += amount
            net[debtor] -= amount
    return net


def transfers(net: Mapping[bytes, int], members: Sequence[bytes]) -> list[tuple[bytes, bytes, int]]:
    """Greedy settlement: (debtor, creditor, amount) triples, at most n-1 of them.

    Debtors (net < 0) and creditors (net > 0) are each taken in member order; the first
    remaining debtor pays the first remaining creditor min(debt, due), and whichever is
    exhausted advances (both when equal). Same algorithm and order as Settlement.sol.
    """
    left = [int(net.get(m, 0)) for m in members]
    if sum(left) != 0:
        raise ValueError(f"net positions must sum to zero, got {sum(left)}")
    n = len(left)

    def next_with(start: int, positive: bool) -> int:
        for i in range(start, n):
            if (left[i] > 0) if positive else (left[i] < 0):
                return i
        return n

    out: list[tuple[bytes, bytes, int]] = []
    d, c = next_with(0, False), next_with(0, True)
    while d < n and c < n:
        amount = min(-left[d], left[c])
        left[d] += amount
        left[c] -= amount
        out.append((members[d], members[c], amount))
        if left[d] == 0:
            d = next_with(d + 1, False)
        if left[c] == 0:
            c = next_with(c + 1, True)
    return out
