"""Attack: one member freezes every withdrawal of the consortium by anchoring a far epoch.

Before the fix `anchor` raised `highestEpoch` to any epoch it named, and `requestWithdrawal`
waited for highestEpoch + 2 to settle: anchoring epoch 2**64 - 1 made that sum overflow, so every
withdrawal request reverted forever; anchoring epoch 10**12 made every withdrawal wait for an epoch
that settles only if every member (the attacker included) anchors it. Now a withdrawal waits for
the highest *settled* epoch + 2, which a far anchor cannot raise (an epoch settles only once every
member anchored it). Anchors themselves take any epoch: holding an honest centre's anchor back
would let its records pass their booking deadline and void its claim.
"""

from __future__ import annotations

import pytest

from ledger.ids import centre_id
from tests.test_contracts import until_unlocked
from tests.test_payment_contracts import pay_consortium, settle_after_window


@pytest.mark.parametrize("far", [2**64 - 1, 10**12, 4])
def test_a_far_anchor_does_not_freeze_other_members_withdrawals(far):
    k = pay_consortium()
    ul, s = k.c.usage_ledger.functions, k.c.settlement.functions
    settle_after_window(k, 1)  # an ordinary epoch
    k.tx(ul.anchor(far, [], [], [], [], bytes(32), 0), "cloud-c")  # one empty anchor, far ahead
    assert ul.highestSettled().call() == 1
    k.tx(s.requestWithdrawal(100), "hpc-a")
    for epoch in (2, 3):
        settle_after_window(k, epoch)
    unlock = s.collateralOf(k.accounts["hpc-a"].address).call()[3]
    assert unlock == 3, f"hpc-a's withdrawal waits for epoch {unlock}"
    until_unlocked(k, "hpc-a")
    k.tx(s.withdraw(), "hpc-a")


def test_an_honest_anchor_is_never_held_back_by_an_unsettled_epoch():
    k = pay_consortium()
    ul = k.c.usage_ledger.functions
    for epoch in (1, 2, 3, 4):  # nothing settled yet (a slow member): the anchors still go on chain
        k.tx(ul.anchor(epoch, [], [], [], [], bytes(32), 0), "cloud-c")
        assert ul.anchorOf(centre_id("cloud-c"), epoch).call()[0]
    settle_after_window(k, 2)  # settled out of order: the highest settled is 2 ...
    assert ul.highestSettled().call() == 2
    settle_after_window(k, 1)  # ... and settling a lower epoch never lowers it
    assert ul.highestSettled().call() == 2
