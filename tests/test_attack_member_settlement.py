"""A member (or a coalition short of quorum) against the anchor deadline and settlement.

The anchor deadline of an epoch must not be a clock one member can start on its own: an early
(empty) anchor of an epoch that has not ended would make every honest anchor of it late, and let
that member settle the epoch alone, out of order, to free its collateral before the epochs in
which it owes are settled.
"""

from __future__ import annotations

from ledger.ids import centre_id
from ledger.netting import former_participants
from tests.test_contracts import (
    REMOVE,
    advance,
    anchor_all,
    collateral,
    make_consortium,
    reverts,
    spec,
    until_unlocked,
)

WINDOW = 100
BOND = 1_000


def four(**params: int):
    return make_consortium(
        ["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3, anchor_window=WINDOW, anchor_bond=BOND, **params
    )


def empty_anchor(k, epoch: int, who: str):
    return k.tx(k.c.usage_ledger.functions.anchor(epoch, [], [], [], [], bytes(32), 0), who)


def test_one_member_cannot_start_an_epochs_clock_to_settle_it_alone_and_withdraw_before_paying():
    """hpc-a owes hpc-b for epoch 2 (still open). It asks to withdraw (unlock: epoch 3), anchors
    epoch 3 at once with nothing, waits out the window and settles epoch 3 alone: its collateral
    would leave before epoch 2, where it owes, is settled."""
    k = four()
    st, ul = k.c.settlement.functions, k.c.usage_ledger.functions
    anchor_all(k, 1, {})
    k.tx(st.settle(1), "hpc-b")
    a = k.accounts["hpc-a"].address
    free = st.freeOf(a).call()
    k.tx(st.requestWithdrawal(free), "hpc-a")
    assert st.collateralOf(a).call()[3] == 3
    empty_anchor(k, 3, "hpc-a")  # epoch 3 has not even begun for the others
    advance(k.chain, WINDOW + 5)
    assert ul.anchorDeadline(3).call() == 0  # one anchor of four starts no clock
    assert ul.settleable(3).call() is False
    reverts("NotSettleable", k.tx, st.settle(3), "hpc-a")
    reverts("WithdrawalLocked", k.tx, st.withdraw(), "hpc-a")
    # epoch 2 closes: hpc-b's claim on hpc-a is paid in full from hpc-a's collateral
    before = collateral(k)
    anchor_all(k, 2, {("hpc-b", "hpc-a"): 5_000})
    k.tx(st.settle(2), "hpc-b")
    after = collateral(k)
    assert [x - y for x, y in zip(after, before, strict=True)] == [-5_000, 5_000, 0, 0]


def test_an_early_anchor_by_one_member_does_not_make_the_honest_anchors_late():
    k = four()
    ul = k.c.usage_ledger.functions
    empty_anchor(k, 1, "edge-d")  # at the epoch's start
    advance(k.chain, 10 * WINDOW)
    anchor_all(k, 1, {("hpc-a", "edge-d"): 40, ("hpc-b", "hpc-a"): 7}, skip=("edge-d",))
    for name in ("hpc-a", "hpc-b", "cloud-c"):
        assert ul.lateOf(centre_id(name), 1).call() == [False, False], name
    assert ul.positionOf(1, centre_id("edge-d")).call() == -40  # netted with the epoch


def test_the_clock_starts_at_the_quorumth_anchor_and_a_silent_member_still_blocks_nobody():
    k = four()
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    empty_anchor(k, 1, "hpc-a")
    empty_anchor(k, 1, "hpc-b")
    assert ul.anchorDeadline(1).call() == 0
    receipt = empty_anchor(k, 1, "cloud-c")  # quorum 3: the clock starts here
    at = k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert ul.anchorDeadline(1).call() == at + WINDOW
    advance(k.chain, WINDOW + 1)
    assert ul.settleable(1).call() is True  # edge-d never anchored: settled without it
    k.tx(st.settle(1), "hpc-a")


def test_with_quorum_equal_to_n_the_clock_starts_one_anchor_short():
    """k == n: nobody can be removed, so a silent member must not block settlement for good."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=3, anchor_window=WINDOW)
    ul = k.c.usage_ledger.functions
    empty_anchor(k, 1, "hpc-a")
    assert ul.anchorDeadline(1).call() == 0
    empty_anchor(k, 1, "hpc-b")
    assert ul.anchorDeadline(1).call() != 0
    advance(k.chain, WINDOW + 1)
    assert ul.settleable(1).call() is True


def test_former_participants_count_from_the_chains_deadline_not_the_first_anchor():
    a, b, c, d = (centre_id(n) for n in ("hpc-a", "hpc-b", "cloud-c", "edge-d"))
    # the clock started at b's anchor (150): d's anchor at 240 is on time and names c
    anchors = [(a, 100, [b]), (b, 150, [a]), (d, 240, [c])]
    assert former_participants(anchors, [a, b], 100, deadline=250) == sorted([c, d])
    assert former_participants(anchors, [a, b], 100, deadline=0) == sorted([c, d])  # no clock: all on time
    assert former_participants(anchors, [a, b, d], 100, deadline=200) == []  # d late: names nobody


def test_the_gateway_names_formers_on_time_by_the_chains_deadline():
    """A member removed after an on-time anchor made past first-anchor + window (the clock
    started later): the gateway's settleWithout list must still name it."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=2, anchor_window=WINDOW)
    ul = k.c.usage_ledger.functions
    empty_anchor(k, 1, "hpc-a")
    advance(k.chain, 2 * WINDOW)
    anchor_all(k, 1, {("hpc-b", "edge-d"): 9, ("cloud-c", "hpc-b"): 3}, skip=("hpc-a",))
    assert ul.lateOf(centre_id("edge-d"), 1).call() == [False, False]
    fns = k.c.consortium.functions
    k.tx(fns.propose(REMOVE, spec("edge-d", k.accounts["edge-d"]).as_tuple()), "hpc-a")
    k.tx(fns.vote(fns.proposalCount().call()), "hpc-b")
    advance(k.chain, WINDOW + 1)
    deadline = ul.anchorDeadline(1).call()
    anchors = []
    for name in ("hpc-a", "hpc-b", "cloud-c", "edge-d"):
        at = ul.anchorOf(centre_id(name), 1).call()[1]
        homes = {"hpc-b": [centre_id("edge-d")], "cloud-c": [centre_id("hpc-b")]}.get(name, [])
        anchors.append((centre_id(name), at, homes))
    formers = former_participants(anchors, k.ids()[:3], WINDOW, deadline=deadline)
    assert formers == [centre_id("edge-d")]
    k.tx(k.c.settlement.functions.settleWithout(1, formers), "hpc-a")


def test_a_silent_member_cannot_withdraw_through_a_later_epoch_settled_first():
    """edge-d owes hpc-a for epoch 2 and stays silent in it, so epoch 2 waits for its anchor
    deadline; everyone anchors epoch 3, which settles first. edge-d's withdrawal (asked when
    epoch 1 was the highest settled: unlock at 3) must still wait for epoch 2, where it owes."""
    k = four()
    st, ul = k.c.settlement.functions, k.c.usage_ledger.functions
    anchor_all(k, 1, {})
    k.tx(st.settle(1), "hpc-b")
    d = k.accounts["edge-d"].address
    k.tx(st.requestWithdrawal(st.freeOf(d).call()), "edge-d")
    assert st.collateralOf(d).call()[3] == 3
    anchor_all(k, 2, {("hpc-a", "edge-d"): 5_000}, skip=("edge-d",))
    anchor_all(k, 3, {})
    k.tx(st.settle(3), "hpc-b")  # epoch 2 still waits for its deadline
    assert st.settled(2).call() is False
    reverts("WithdrawalLocked", k.tx, st.withdraw(), "edge-d")
    advance(k.chain, ul.anchorDeadline(2).call() + 1 - k.chain.w3.eth.get_block("latest")["timestamp"])
    before = collateral(k)
    k.tx(st.settle(2), "hpc-b")
    after = collateral(k)
    assert [x - y for x, y in zip(after, before, strict=True)] == [5_000, 0, 0, -5_000]
    until_unlocked(k, "edge-d")
    k.tx(st.withdraw(), "edge-d")  # now what is left of it may go
