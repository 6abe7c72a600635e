"""Attack: a debtor home shields its collateral from settlement behind its own dispute bonds.

Before the fix: settlement takes a debtor's debt from balance - locked. Dispute bonds are locked, and anyone may
dispute any leaf of any claim still in its window, also of an epoch anchored early: the contract
checks no epoch's time. So before the epoch it owes for is settled, the debtor anchors the NEXT
epoch with a claim on itself (count 2**64-1, root 0, total 0: never netted) and disputes its own
leaves until nothing of its collateral is free. Settlement records a Shortfall and the creditor
gets (almost) nothing; at the next settlement the unanswered disputes return every bond to the
debtor (its own anchor bond included, as the "challenger"). The debt is gone for good.
Now a centre may not dispute its own claim (`OwnClaim`) nor any claim on a centre's own users
(`OwnUsers`): there is nothing of its own to lock its collateral behind, and the creditor is paid.
"""

from __future__ import annotations

from eth_utils import keccak

from tests.test_contracts import make_consortium, reverts
from tests.test_payment_contracts import NAMES, WINDOW, A, C, anchor, balances, collateral, settle_after_window

INITIAL = 5_000_000  # collateral of each member; the deployment's default bonds (anchor 1,000,000, dispute 100,000)


def test_a_debtor_cannot_lock_its_collateral_away_from_its_debts():
    k = make_consortium(
        NAMES,
        quorum=2,
        rate_notice=0,
        initial=INITIAL,
        dispute_window=WINDOW,
        anchor_bond=1_000_000,
        dispute_bond=100_000,
    )
    ul, s = k.c.usage_ledger.functions, k.c.settlement.functions
    debt = 3_000_000
    # epoch 1: hpc-b did 3,000,000 of work for hpc-a's users (undisputed: it is genuine)
    anchor(k, "hpc-b", 1, {"hpc-a": [(keccak(b"genuine work"), debt)]})
    for name in ("hpc-a", "cloud-c"):
        k.tx(ul.anchor(1, [], [], [], [], bytes(32), 0), name)
    start = balances(k)
    # hpc-a anchors epoch 2 at once, with a claim on itself that is never netted (and one on cloud-c) ...
    k.tx(ul.anchor(2, [A, C], [bytes(32), bytes(32)], [2**63, 2**63 - 1], [0, 0], bytes(32), 0), "hpc-a")
    # ... and tries to dispute its own leaves until none of its collateral is free: refused
    free = s.freeOf(k.accounts["hpc-a"].address).call()
    n = 0
    for index in (0, 1, 2**63 - 2):
        for need_key in (False, True):
            reverts("OwnUsers", k.tx, ul.dispute(A, 2, A, index, need_key), "hpc-a")
            reverts("OwnClaim", k.tx, ul.dispute(A, 2, C, index, need_key), "hpc-a")
    assert s.freeOf(k.accounts["hpc-a"].address).call() == free
    settle_after_window(k, 1)
    after1 = balances(k)
    paid = after1["hpc-b"] - start["hpc-b"]
    # epoch 2 settles; nothing of hpc-a's own claims is paid or locked
    settle_after_window(k, 2)
    end = balances(k)
    print(
        f"hpc-a owed {debt}; hpc-b was paid {paid}; hpc-a's collateral {start['hpc-a']} -> {end['hpc-a']}, "
        f"locked now {collateral(k)['hpc-a'][1]}; {n} disputes"
    )
    assert paid == debt, f"hpc-b was paid {paid} of the {debt} it is owed; hpc-a kept {debt - paid}"
    assert end["hpc-a"] == start["hpc-a"] - debt
