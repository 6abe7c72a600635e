"""Re-attack of the epoch clock on chain (UsageLedger.epochLength, f860cf9..fc93cf1).

Findings (tests that fail now, asserting the secure behaviour) and attacks the system resists (passing
regression tests). Embedded chain only; every test deploys its own consortium.
"""

from __future__ import annotations

import pytest
from eth_account import Account

from gateway.books.epochs import check_schedule
from ledger.chain import connect
from ledger.deploy import deploy_consortium
from ledger.ids import centre_id
from tests.test_contracts import INITIAL, Consortium, advance, now, reverts, spec
from tests.test_epoch_clock_contract import HOUR, WINDOW, anchor, at, clock, clocked, settled_net

U64 = 2**64 - 1
BOND = 100  # a small anchor bond, so a member can anchor and still ask to withdraw most of its collateral


def clocked_bonded(names: list[str], quorum: int) -> Consortium:
    """`clocked` (an HOUR clock, anchor window WINDOW, no dispute window) with an anchor bond of BOND."""
    return clocked(names, quorum, initial=INITIAL, anchor_bond=BOND)


# -- finding: the deploy parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [HOUR, HOUR - 60])
def test_deploy_refuses_an_epoch_length_that_leaves_no_time_to_anchor(length: int) -> None:
    """ATTACK (deploy parameters, epoch_length vs booking_delay). `deploy_consortium` only refuses an
    epoch_length *longer* than the booking delay. On the clock an epoch can be anchored only from its end
    (EpochNotOver), and a record must be anchored by its order's deadline + the booking delay (rule 6 of
    `answer`: Late). A job ordered at the start of an epoch with a short deadline ends at that deadline:
    its claim is answerable only if it is anchored by start + booking_delay = the epoch's end when
    epoch_length == booking_delay, i.e. in a block whose timestamp is exactly the epoch's end. Any real
    anchor is later, so a hostile home orders such jobs at an honest centre, disputes the record after it
    is anchored, and the honest centre cannot answer: its whole on-time claim is voided and its anchor
    bond paid to the attacker. The gateway knows this (check_schedule: booking delay - 15 min - the
    anchoring margin) and refuses to start on such a clock, so the consortium `deploy_consortium` (and
    `xcentre consortium up`, whose spec never calls check_schedule) deploys is either unrunnable by any
    gateway or, run by anything else, makes honest claims unanswerable - for its whole life, since the
    length is immutable. The secure behaviour: deploy refuses what every gateway refuses.
    """
    with pytest.raises(ValueError):
        check_schedule(length, HOUR)  # every gateway refuses to start on this clock ...
    chain = connect()
    with pytest.raises(ValueError):  # ... so deploying it must be refused too (it is accepted now)
        deploy_consortium(
            chain, chain.dev_account, [spec("hpc-a", Account.create())], 1, 0, booking_delay=HOUR, epoch_length=length
        )


# -- resisted: overflow and huge epoch numbers -------------------------------------------------------------------


def test_huge_epoch_numbers_neither_overflow_nor_brick_anything() -> None:
    """ATTACK: anchor / settle / query epoch 2^64 - 1 to overflow epochEnd (origin + e x length) or to push
    highestSettled far ahead (withdrawals wait for highestSettled + 2). epochEnd is computed in uint256,
    the anchor is refused EpochNotOver, settle NotSettleable (MAX_AHEAD, then the clock). Resisted."""
    k = clocked(["hpc-a", "hpc-b"], 1)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    origin = ul.epochOrigin().call()
    assert ul.epochEnd(U64).call() == origin + U64 * HOUR
    assert ul.anchorDeadline(U64).call() == origin + U64 * HOUR + WINDOW
    for epoch in (U64, U64 - 1, 2**63, 17):
        err = reverts("EpochNotOver", k.tx, ul.anchor(epoch, [], [], [], [], bytes(32), 0), "hpc-a")
        assert err.error_args == (epoch, origin + epoch * HOUR)
        assert ul.settleable(epoch).call() is False
        reverts("NotSettleable", k.tx, st.settle(epoch), "hpc-b")
    assert ul.highestSettled().call() == 0 and st.settledThrough().call() == 0


# -- resisted: epoch 0 -------------------------------------------------------------------------------------------


def test_epoch_zero_moves_neither_settled_through_nor_highest_settled() -> None:
    """ATTACK: epoch 0 ends at the origin (before the deployment), so it is anchorable at once and settles
    after origin + window without anyone else. Try to use it to move the withdrawal bookkeeping. Settling it
    leaves settledThrough and highestSettled at 0, and claims in it are ordinary (netted, disputable) claims.
    Resisted."""
    k = clocked(["hpc-a", "hpc-b"], 1)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    assert ul.epochEnd(0).call() == ul.epochOrigin().call() <= now(k)
    anchor(k, "hpc-a", 0, {"hpc-b": 7})
    at(k, clock(k).end(0) + WINDOW + 1)
    assert ul.settleable(0).call() is True
    net = settled_net(k, k.tx(st.settle(0), "hpc-a"))
    assert net == {"hpc-a": 7, "hpc-b": -7}
    assert st.settledThrough().call() == 0 and ul.highestSettled().call() == 0
    assert ul.settleable(1).call() is False  # epoch 1 is still running: nothing ahead of it


# -- resisted: withdrawals held hostage through empty epochs and highestSettled --------------------------------


def test_settling_ahead_over_empty_epochs_holds_no_withdrawal_hostage() -> None:
    """ATTACK: on the clock every epoch must be settled (even one nobody anchored) for settledThrough to
    move. An attacker settles the furthest epoch MAX_AHEAD allows, raising highestSettled, so a withdrawal
    asked now waits for highestSettled + 2; it then hopes the walk up to it cannot be made. Every empty epoch
    is settleable after its deadline by anyone, so the withdrawer walks it (MAX_AHEAD + 2 settlements at
    most) and leaves on time. Resisted."""
    k = clocked(["hpc-a", "hpc-b"], 1)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    c = clock(k)
    at(k, c.end(40) + WINDOW + 1)  # 40 epochs nobody anchored
    ahead = st.MAX_AHEAD().call()
    reverts("NotSettleable", k.tx, st.settle(ahead + 1), "hpc-b")  # beyond MAX_AHEAD of settledThrough 0
    k.tx(st.settle(ahead), "hpc-b")  # the attacker settles as far ahead as allowed
    assert ul.highestSettled().call() == ahead and st.settledThrough().call() == 0
    a = k.accounts["hpc-a"].address
    k.tx(st.requestWithdrawal(1_000), "hpc-a")
    unlock_epoch, unlock_time = st.collateralOf(a).call()[3:5]
    assert unlock_epoch == ahead + 2
    for epoch in range(1, ahead + 3):
        if not st.settled(epoch).call():
            k.tx(st.settle(epoch), "hpc-a")
    assert st.settledThrough().call() == ahead + 2
    advance(k.chain, unlock_time - now(k))
    k.tx(st.withdraw(), "hpc-a")
    assert k.c.credit.functions.balanceOf(a).call() == 1_000


# -- resisted: escaping a debt by withdrawing --------------------------------------------------------------------


def test_a_debtor_that_withdraws_and_anchors_last_still_pays_its_on_time_debt() -> None:
    """ATTACK: a home asks to withdraw all its free collateral while its users' work at an honest centre is
    billed in the running epoch, then anchors that epoch itself at the very last on-time second (settlement
    waits for the last on-time anchor's answer window) and leaves at its unlock time. On the clock the epoch
    settles by its end + window (+ two dispute windows), long before the withdrawal delay, and settlement
    takes the pending withdrawal. Resisted."""
    k = clocked_bonded(["hpc-a", "hpc-b"], 1)
    st = k.c.settlement.functions
    c = clock(k)
    debtor = k.accounts["hpc-b"].address
    free = st.freeOf(debtor).call() - st.anchorBond().call()  # all it can take while still anchoring
    k.tx(st.requestWithdrawal(free), "hpc-b")
    unlock_time = st.collateralOf(debtor).call()[4]
    at(k, c.end(1))
    anchor(k, "hpc-a", 1, {"hpc-b": 500})  # the honest creditor, on time
    at(k, c.end(1) + WINDOW - 1)
    anchor(k, "hpc-b", 1)  # the debtor, at the deadline itself
    k.chain.mine()
    assert now(k) < unlock_time
    net = settled_net(k, k.tx(st.settle(1), "hpc-a"))
    assert net == {"hpc-a": 500, "hpc-b": -500}
    assert st.settledThrough().call() == 1
    at(k, c.end(2) + WINDOW + 1)
    k.tx(st.settle(2), "hpc-a")
    advance(k.chain, unlock_time - now(k))
    k.tx(st.withdraw(), "hpc-b")
    assert k.c.credit.functions.balanceOf(debtor).call() == free - 500
    assert st.collateralOf(k.accounts["hpc-a"].address).call()[0] == INITIAL + 500


# -- resisted: honest on-time anchors made late / epochs settled ahead of them ---------------------------------


def test_a_coalition_with_every_anchor_but_one_cannot_settle_before_the_deadline_by_removing_nobody() -> None:
    """ATTACK: two of three members (the anchor quorum) anchor the moment the epoch ends, claiming on the
    third, then try to settle it (so the third's anchor becomes late: `_isLate` is true once finalized)
    before the third anchors. settleable needs every active member or the fixed deadline; the third
    anchors within the window on time and its claim is netted. Resisted."""
    k = clocked(["hpc-a", "hpc-b", "cloud-c"], 2)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    c = clock(k)
    at(k, c.end(1))
    anchor(k, "hpc-a", 1, {"cloud-c": 100})
    anchor(k, "hpc-b", 1, {"cloud-c": 100})
    for _ in range(3):
        k.chain.mine()
        reverts("NotSettleable", k.tx, st.settle(1), "hpc-a")
    at(k, c.end(1) + WINDOW - 1)
    anchor(k, "cloud-c", 1, {"hpc-a": 150})
    assert ul.lateOf(centre_id("cloud-c"), 1).call() == [False, False]
    k.chain.mine()
    net = settled_net(k, k.tx(st.settle(1), "hpc-b"))
    assert net == {"hpc-a": -50, "hpc-b": 100, "cloud-c": -50}


# -- the no-clock path --------------------------------------------------------------------------------------------


def test_without_a_clock_epoch_zero_and_huge_epochs_are_anchored_as_before() -> None:
    """The change adds `_checkOver` to every anchor: without a clock epochEnd is 0 for every epoch, so
    nothing is refused and no deadline starts before the quorum-th anchor (behaviour unchanged)."""
    from tests.test_contracts import make_consortium

    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], 3, anchor_window=WINDOW)  # anchorQuorum 2
    ul = k.c.usage_ledger.functions
    for epoch in (0, U64):
        anchor(k, "hpc-a", epoch, {"hpc-b": 3})
        assert ul.anchorDeadline(epoch).call() == 0  # one anchor of a quorum of two
        assert ul.lateOf(centre_id("hpc-a"), epoch).call() == [False, False]
        assert ul.settleable(epoch).call() is False
