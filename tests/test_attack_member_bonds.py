"""Attacks on the bonds that are meant to make cheating and griefing cost something (as they were
before the fix; now refused with `NotPayerHome` and `OwnClaim`).

1. A needKey dispute answered by a reveal returns the challenger's bond: any member (not only the
   payer home, the only party that can know whether its user got k) can dispute every leaf of an
   honest centre's claim with needKey for gas alone. The centre must put every record, order, grant
   and result key on chain (each answer far dearer than the dispute), or lose its whole claim and
   its anchor bond.
2. A cheating centre disputes its own cheating claim first: at settlement the first open dispute
   takes the anchor bond, so the cheat's bond goes back to itself and the honest challenger who
   caught it gets nothing. Cheating costs nothing.
"""

from __future__ import annotations

from tests.test_contracts import reverts
from tests.test_payment_contracts import (
    ANCHOR_BOND,
    DISPUTE_BOND,
    A,
    anchor,
    answer,
    balances,
    collateral,
    dispute,
    evidence,
    k,  # noqa: F401 - the fixture
    make_job,
    settle_after_window,
)


def test_a_third_party_cannot_force_key_reveals_for_free(k):  # noqa: F811
    ul = k.c.usage_ledger.functions
    jobs = [make_job(k, "hpc-b", "hpc-a", 1) for _ in range(4)]  # receipted: the users have their keys
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    B = k.c.consortium.functions.idOf(k.accounts["hpc-b"].address).call()
    before = collateral(k)["cloud-c"]
    for i in range(len(jobs)):  # cloud-c, no party to these jobs, asks for every key
        err = reverts("NotPayerHome", k.tx, ul.dispute(B, 1, A, i, True), "cloud-c")
        assert err.error_args == (k.accounts["cloud-c"].address.lower(), A)
    reverts("NotPayerHome", k.tx, ul.dispute(B, 1, A, 0, True), k.outsider())
    assert collateral(k)["cloud-c"] == before  # nothing locked, nothing lost
    # the payer home may ask (its user lacks the key); the reveal answers and returns its bond
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0, need_key=True)
    home_before = collateral(k)["hpc-a"]
    answer(k, "hpc-b", did, evidence(jobs[0], tree, 0, key=jobs[0].key))
    assert collateral(k)["hpc-a"][0] == home_before[0]
    # a third party may still dispute without needKey, and an answer by receipt takes its bond
    did = dispute(k, "cloud-c", "hpc-b", 1, "hpc-a", 1)
    answer(k, "hpc-b", did, evidence(jobs[1], tree, 1))
    assert collateral(k)["cloud-c"][0] == before[0] - DISPUTE_BOND, "cloud-c griefed hpc-b for gas alone"


def test_a_cheat_cannot_take_back_its_own_anchor_bond(k):  # noqa: F811
    ul = k.c.usage_ledger.functions
    # cloud-c anchors a made-up claim on hpc-a (and one genuine-looking claim on itself, for the audit)
    k.tx(ul.anchor(1, [A], [bytes(32)], [5], [400_000_000], bytes(32), 0), "cloud-c")
    C = k.c.consortium.functions.idOf(k.accounts["cloud-c"].address).call()
    reverts("OwnClaim", dispute, k, "cloud-c", "cloud-c", 1, "hpc-a", 4)  # it may not dispute its own claim
    dispute(k, "hpc-a", "cloud-c", 1, "hpc-a", 0)  # the honest payer catches the cheat
    before = balances(k)
    settle_after_window(k, 1)
    after = balances(k)
    assert ul.standing(1, C, A).call() == 0  # the claim is void, as it should be ...
    print(f"cloud-c {before['cloud-c']} -> {after['cloud-c']}, hpc-a {before['hpc-a']} -> {after['hpc-a']}")
    # ... but the cheat must lose its bond to the member that caught it
    assert after["cloud-c"] == before["cloud-c"] - ANCHOR_BOND, "the cheat kept its anchor bond"
    assert after["hpc-a"] == before["hpc-a"] + ANCHOR_BOND
