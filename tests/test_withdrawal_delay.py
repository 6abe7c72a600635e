"""The withdrawal delay (Settlement.withdrawalDelay) against a hostile member: the latest claim an honest centre
makes for work ordered before a withdrawal was asked for is paid before the collateral may leave.

Contracts run on the embedded chain (eth-tester) through tests/test_contracts.py's helpers; the serving centre's
acceptance is the real gateway check (gateway.node.orders.check_payment) under the deployment's EIP-712 domain.
"""

from __future__ import annotations

import pytest
from eth_account import Account

from gateway.jobs.pricing import max_price
from gateway.node.orders import Job, Signed, Terms, check_payment
from ledger.deploy import Prices
from ledger.ids import centre_id
from ledger.payment import MAX_DEADLINE_AHEAD, Grant, Order, order_digest, request_digest, sign_typed
from ledger.primitives.hex import to_hex
from tests.test_contracts import advance, anchor_all, last_anchored_at, leaf_digest, make_consortium, now

# -- helpers --------------------------------------------------------------------------------------------------

BOOKING = 3_600  # booking delay (s)
DW = 30  # dispute window (s)
AW = 100  # anchor window (s)
CLAIM = 500_000  # what the serving centre claims on the home for its users' work (more than any bond)


def anchor(k, name: str, epoch: int, claims: dict[str, int]) -> None:
    """`name` anchors `epoch` with one record per home claimed."""
    from ledger.sumtree import SumTree

    homes = list(claims)
    trees = [SumTree([(leaf_digest(epoch, name, h), claims[h])]) for h in homes]
    fn = k.c.usage_ledger.functions.anchor(
        epoch,
        [centre_id(h) for h in homes],
        [t.root for t in trees],
        [1] * len(homes),
        [claims[h] for h in homes],
        bytes(32),
        0,
    )
    k.tx(fn, name)


def balance(k, name: str) -> int:
    return k.c.settlement.functions.collateralOf(k.accounts[name].address).call()[0]


def settle_all(k, epoch: int) -> None:
    """Everyone anchors `epoch` empty, the windows pass, it settles."""
    anchor_all(k, epoch, {})
    last = last_anchored_at(k, epoch)
    advance(k.chain, max(0, last + max(2 * DW, AW) + 1 - now(k)))
    k.tx(k.c.settlement.functions.settle(epoch), next(iter(k.accounts)))


def serving_accepts(k, serving: str, home: str, at: int, deadline: int) -> bool:
    """Whether `serving`'s gateway accepts, at its clock `at`, an order of `home`'s user due at `deadline`, granted
    by `home`'s member account (the real check, under the deployment's domain)."""
    from gateway.node.errors import Refusal
    from ledger.records import domain_for

    domain = domain_for(k.deployment)
    prices = Prices(per_cpu_second=1, per_gpu_second=10, per_gib_hour=3)
    request = {"command": ["true"], "walltime": 60, "resources": {"cores": 1, "memory_mib": 1024, "gpus": 0}}
    job = Job({**request, "centre": serving}, walltime=60, cores=1, memory_mib=1024, gpus=0)
    terms = Terms(serving, rates_version=1, prices=prices, home=home, home_account=k.accounts[home].address)
    cost = max_price(60, 1, 1024, 0, prices)
    user = Account.create()
    order = Order(
        request=request_digest(job.request),
        centre=centre_id(serving),
        rates_version=1,
        max_price=cost,
        deadline=deadline,
        nonce=1,
    )
    grant = Grant(
        order=order_digest(order, domain),
        account=user.address,
        home=centre_id(home),
        centre=order.centre,
        amount=cost,
        deadline=deadline,
    )
    signed = Signed(
        order.to_dict(),
        to_hex(sign_typed(order, domain, user.key)),
        grant.to_dict(),
        to_hex(sign_typed(grant, domain, k.accounts[home].key)),
    )
    try:
        check_payment(signed, job, terms, now=at, domain=domain)
    except Refusal:
        return False
    return True


def two_members():
    return make_consortium(
        ["hpc-a", "hpc-b"],
        quorum=2,
        rate_notice=0,
        anchor_window=AW,
        anchor_bond=100,
        booking_delay=BOOKING,
        dispute_window=DW,
    )


# -- the delay ------------------------------------------------------------------------------------------


def test_the_latest_honest_claim_on_a_withdrawing_home_settles_before_the_collateral_may_leave():
    """Every term of the delay met to the second by a hostile home: the serving gateway's clock a second ahead of
    the request's block (it accepts an order due a week after its own now), the claim anchored at deadline + the
    booking delay (on time), the home's own empty anchor of that epoch at its last on-time second (the epoch waits
    for it), then two dispute windows: the epoch is settleable, and settled, before the unlock time."""
    k = two_members()
    s, ul = k.c.settlement.functions, k.c.usage_ledger.functions
    settle_all(k, 1)
    settle_all(k, 2)
    k.tx(s.requestWithdrawal(s.freeOf(k.accounts["hpc-a"].address).call()), "hpc-a")
    asked = now(k)
    unlock = s.collateralOf(k.accounts["hpc-a"].address).call()[4]
    assert unlock == asked + MAX_DEADLINE_AHEAD + BOOKING + 2 * DW + AW + 3_600
    accepted = asked + 1  # the serving gateway's clock, a second past the request's block time
    deadline = accepted + MAX_DEADLINE_AHEAD
    assert serving_accepts(k, "hpc-b", "hpc-a", accepted, deadline)
    assert not serving_accepts(k, "hpc-b", "hpc-a", accepted, deadline + 1)
    settle_all(k, 3)
    settle_all(k, 4)
    advance(k.chain, deadline + BOOKING - 1 - now(k))  # hpc-b's anchor is mined at deadline + booking delay
    anchor(k, "hpc-b", 5, {"hpc-a": CLAIM})
    first = ul.anchorOf(centre_id("hpc-b"), 5).call()[1]
    assert first == deadline + BOOKING
    advance(k.chain, first + AW - 1 - now(k))  # the home's empty anchor, mined at the last on-time second
    anchor(k, "hpc-a", 5, {})
    assert ul.lateOf(centre_id("hpc-a"), 5).call() == [False, False]
    advance(k.chain, first + AW + 2 * DW + 1 - now(k))
    assert ul.settleable(5).call() and now(k) < unlock - 3_000  # with most of the hour's margin to spare
    before = balance(k, "hpc-b")
    k.tx(s.settle(5), "hpc-b")
    assert balance(k, "hpc-b") - before == CLAIM
    advance(k.chain, unlock - now(k))
    k.tx(s.withdraw(), "hpc-a")  # and what is left of it leaves


def test_a_deployment_whose_withdrawal_delay_overflows_a_timestamp_is_refused_before_it_locks_collateral():
    """LOW (careless operator). deploy_consortium takes any anchor window below 2**64 (`_seconds`), but
    `uint64(block.timestamp) + withdrawalDelay` in requestWithdrawal is checked arithmetic: an anchor window meant
    as "wait for ever" near 2**64 deploys, and then every requestWithdrawal reverts (Panic 0x11): no member can
    ever take its collateral out. (A slightly larger one reverts the Settlement constructor mid-deployment, after
    Consortium and UsageLedger are on chain.) The deployment should refuse such windows up front."""
    week, dw, booking = 7 * 86_400, 0, 86_400
    aw = 2**64 - 1 - week - booking - 2 * dw
    with pytest.raises(ValueError, match=r"a withdrawal of collateral would wait \d+ s, more than 100 years"):
        make_consortium(["hpc-a", "hpc-b"], quorum=2, anchor_window=aw, booking_delay=booking, dispute_window=dw)
