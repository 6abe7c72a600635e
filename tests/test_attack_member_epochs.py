"""Attack: one member freezes every withdrawal of the consortium by anchoring a far epoch.

Before the fix `anchor` took any epoch number and raised `highestEpoch` to it, and
`requestWithdrawal` waited for highestEpoch + 2 to settle: anchoring epoch 2**64 - 1 made that sum
overflow, so every withdrawal request reverted forever; anchoring epoch 10**12 made every
withdrawal wait for an epoch that settles only if every member (the attacker included) anchors it.
Now an anchor names no epoch past the highest settled + 2 (`EpochTooFar`), and a withdrawal waits
for the highest settled + 2.
"""

from __future__ import annotations

import pytest

from tests.test_contracts import reverts
from tests.test_payment_contracts import pay_consortium, settle_after_window


@pytest.mark.parametrize("far", [2**64 - 1, 10**12, 4])
def test_a_far_anchor_does_not_freeze_other_members_withdrawals(far):
    k = pay_consortium()
    ul, s = k.c.usage_ledger.functions, k.c.settlement.functions
    settle_after_window(k, 1)  # an ordinary epoch
    assert ul.highestSettled().call() == 1
    err = reverts("EpochTooFar", k.tx, ul.anchor(far, [], [], [], []), "cloud-c")  # one empty anchor, far ahead
    assert err.error_args == (far, 3)
    k.tx(s.requestWithdrawal(100), "hpc-a")
    for epoch in (2, 3):
        settle_after_window(k, epoch)
    unlock = s.collateralOf(k.accounts["hpc-a"].address).call()[3]
    assert unlock == 3, f"hpc-a's withdrawal waits for epoch {unlock}"
    k.tx(s.withdraw(), "hpc-a")


def test_epochs_one_and_two_are_open_from_the_start_and_the_bound_follows_the_highest_settled():
    k = pay_consortium()
    ul = k.c.usage_ledger.functions
    reverts("EpochTooFar", k.tx, ul.anchor(3, [], [], [], []), "cloud-c")
    k.tx(ul.anchor(2, [], [], [], []), "cloud-c")  # epochs 1 and 2 before anything settled
    settle_after_window(k, 2)  # settled out of order: the highest settled is 2 ...
    assert ul.highestSettled().call() == 2
    k.tx(ul.anchor(4, [], [], [], []), "cloud-c")  # ... so 4 may be anchored, 5 not yet
    reverts("EpochTooFar", k.tx, ul.anchor(5, [], [], [], []), "cloud-c")
    settle_after_window(k, 1)  # settling a lower epoch never lowers it
    assert ul.highestSettled().call() == 2
