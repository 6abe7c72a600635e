"""Multilateral netting of inter-centre claims, exactly as Settlement.sol computes it.

An auditor recomputes the net positions and transfers of an epoch from the anchored
claims with these functions and compares them with the contract's events. The epoch's
netting (`EpochSettled`) takes the standing claims of its on-time anchors only: an anchor
the chain marked late (`UsageLedger.AnchoredLate`, made after the epoch's anchor deadline
or its settlement) is paid on its own by `Settlement.settleLate` (`LateClaimsSettled`),
which `late_positions` and `late_settlement` recompute, apart from the epoch's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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


def former_participants(
    anchors: Iterable[tuple[bytes, int, Iterable[bytes]]],
    members: Iterable[bytes],
    anchor_window: int,
    *,
    deadline: int | None = None,
) -> list[bytes]:
    """The centres an epoch's on-time anchors name that are no longer members, ascending.

    `anchors` are (centre, anchored_at, homes) of the epoch's anchors before its settlement;
    those after the anchor deadline are late and name nobody. `deadline` is the chain's
    (`UsageLedger.anchorDeadline`: its clock starts at the `Consortium.anchorQuorum`-th anchor,
    which depends on the quorum and membership of that time; 0 when it has not started: every
    anchor is on time). Without it, the deadline is taken as first anchor + `anchor_window`,
    which is the chain's only when one anchor starts the clock (a quorum of 1, or two members).
    What `Settlement.settleWithout` takes: the chain counts the epoch's participants and
    refuses a list that leaves one out or names a member.
    """
    anchors = list(anchors)
    if not anchors:
        return []
    if deadline is None:
        deadline = min(at for _, at, _ in anchors) + anchor_window
    touched: set[bytes] = set()
    for centre, at, homes in anchors:
        if deadline == 0 or at <= deadline:
            touched.add(centre)
            touched.update(homes)
    return sorted(touched - set(members))


def late_positions(
    creditor: bytes, claims: Mapping[bytes, int], members: Sequence[bytes]
) -> tuple[list[bytes], dict[bytes, int]]:
    """What Settlement.settleLate nets for one late anchor: (centres, net), before collateral.

    `claims` maps each home of `creditor`'s late anchor, in the anchor's order, to its standing
    (not voided) claim. The centres are `creditor`, then each home still a member with a
    non-zero claim (never `creditor` itself); the creditor's net is the sum, each home's minus
    its claim. A creditor no longer in `members` is paid nothing, as in the epoch's netting.
    Feed the result to `settle_from_collateral` for what moved.
    """
    active = set(members)
    ids = [creditor]
    net = {creditor: 0}
    if creditor in active:
        for home, amount in claims.items():
            if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_CLAIM:
                raise ValueError(f"claim amount must be an int in [0, MAX_CLAIM], got {amount!r}")
            if home == creditor or amount == 0 or home not in active:
                continue
            ids.append(home)
            net[home] = -amount
            net[creditor] += amount
    return ids, net


def late_settlement(
    creditor: bytes, claims: Mapping[bytes, int], members: Sequence[bytes], unpaid: Mapping[bytes, int]
) -> tuple[list[bytes], dict[bytes, int], list[tuple[bytes, bytes, int]], list[tuple[bytes, int]]]:
    """What Settlement.settleLate moved for one late anchor: (centres, moved, transfers, shortfalls).

    `claims` and `members` as for `late_positions`; `unpaid` is what the chain reported each home
    could not pay at that late settlement (its own `Shortfall` events, not the epoch's): a home
    that fell short paid its claim less that. An auditor compares the result with the anchor's
    `LateClaimsSettled` (and its transfers), beside the epoch's own `EpochSettled`.
    """
    ids, net = late_positions(creditor, claims, members)
    free = {m: -net[m] - unpaid.get(m, 0) for m in ids if net[m] < 0}
    if any(v < 0 for v in free.values()):
        raise ValueError("a shortfall larger than the claim it is of")
    moved, plan, short = settle_from_collateral(net, free, ids)
    return ids, moved, plan, short


def settle_from_collateral(
    net: Mapping[bytes, int], free: Mapping[bytes, int], members: Sequence[bytes]
) -> tuple[dict[bytes, int], list[tuple[bytes, bytes, int]], list[tuple[bytes, int]]]:
    """What Settlement.settle moves out of collateral: (moved net, transfers, shortfalls).

    Each debtor pays min(debt, free[debtor]) (free = collateral balance - locked; a member
    missing from `free` has none). When every debtor covers its debt, moved == net. Otherwise
    each creditor gets floor(credit * collected / total debt) and the rounding dust goes to
    the first creditor in member order; shortfalls lists (debtor, unpaid) in member order.
    Either way the transfers are the greedy pairing of the moved net, so settlement never
    depends on a debtor's balance and never overdraws one.
    """
    if len(set(members)) != len(members):
        raise ValueError("members must be distinct")
    for m in members:
        value = net.get(m, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"net position must be an int, got {value!r}")
        have = free.get(m, 0)
        if not isinstance(have, int) or isinstance(have, bool) or have < 0:
            raise ValueError(f"free collateral must be a non-negative int, got {have!r}")
    if sum(net.get(m, 0) for m in members) != 0:
        raise ValueError(f"net positions must sum to zero, got {sum(net.get(m, 0) for m in members)}")
    moved = {m: 0 for m in members}
    shortfalls: list[tuple[bytes, int]] = []
    total_debt = collected = 0
    for m in members:
        debt = -net.get(m, 0)
        if debt > 0:
            paid = min(debt, free.get(m, 0))
            moved[m] = -paid
            total_debt += debt
            collected += paid
            if paid < debt:
                shortfalls.append((m, debt - paid))
    creditors = [m for m in members if net.get(m, 0) > 0]
    for m in creditors:
        moved[m] = net[m] * collected // total_debt
    if creditors:
        moved[creditors[0]] += collected - sum(moved[m] for m in creditors)
    return moved, transfers(moved, members), shortfalls


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
