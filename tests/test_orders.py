"""The serving centre's check of a job's order and grant (gateway.node.orders), refusal by refusal.

Pure: real signatures by real keys, no gateway. The same refusals over HTTP, with the
stores unchanged, are in tests/test_gateway_errors.py.
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account

from gateway.api.schemas import MAX_WALLTIME
from gateway.client.paying import Quote, job_request, make_order
from gateway.jobs.pricing import max_price
from gateway.node.errors import Conflict, Forbidden, Invalid, PaymentRequired
from gateway.node.orders import DEADLINE_MARGIN, Job, Signed, Terms, check_payment
from ledger.deploy import Prices
from ledger.ids import centre_id
from ledger.payment import MAX_DEADLINE_AHEAD, Grant, Order, order_digest, request_digest, sign_typed
from ledger.primitives.hex import to_hex
from ledger.records import Domain

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "cd" * 20)
PRICES = Prices(per_cpu_second=25_000, per_gpu_second=0, per_gib_hour=100_000)
NOW = 1_900_000_000
HOME = Account.from_key(b"\x01" * 32)  # hpc-a's member account
OTHER_HOME = Account.from_key(b"\x02" * 32)  # ai-c's
REQUEST = {"command": ["true"], "walltime": 60, "resources": {"cores": 1, "memory_mib": 1024, "gpus": 0}}
JOB = Job({**REQUEST, "centre": "cloud-b"}, walltime=60, cores=1, memory_mib=1024, gpus=0)
TERMS = Terms("cloud-b", rates_version=2, prices=PRICES, home="hpc-a", home_account=HOME.address)
COST = max_price(60, 1, 1024, 0, PRICES)


def signed(order_change: dict | None = None, grant_change: dict | None = None, *, home=HOME, user=None) -> Signed:
    """An order of a fresh account for JOB at cloud-b and hpc-a's grant of it, with fields changed as asked."""
    user = user or Account.create()
    order = Order(
        request=request_digest(JOB.request),
        centre=centre_id("cloud-b"),
        rates_version=2,
        max_price=COST,
        deadline=NOW + 3600,
        nonce=7,
    )
    order = dataclasses.replace(order, **(order_change or {}))
    grant = Grant(
        order=order_digest(order, DOMAIN),
        account=user.address,
        home=centre_id("hpc-a"),
        centre=order.centre,
        amount=order.max_price,
        deadline=order.deadline,
    )
    grant = dataclasses.replace(grant, **(grant_change or {}))
    return Signed(
        order.to_dict(),
        to_hex(sign_typed(order, DOMAIN, user.key)),
        grant.to_dict(),
        to_hex(sign_typed(grant, DOMAIN, home.key)),
    )


def check(payment: Signed, terms: Terms = TERMS, job: Job = JOB):
    return check_payment(payment, job, terms, now=NOW, domain=DOMAIN)


def test_an_order_and_its_homes_grant_are_accepted():
    user = Account.create()
    accepted = check(signed(user=user))
    assert accepted.account == user.address
    assert accepted.payment.account == user.address and accepted.payment.order_digest == accepted.order_digest
    assert accepted.grant.amount == COST


def test_an_order_for_another_centre_is_refused():
    with pytest.raises(Invalid, match="for another centre \\(ai-c\\), not cloud-b"):
        check(signed({"centre": centre_id("ai-c")}))


def test_an_order_for_another_request_is_refused():
    with pytest.raises(Invalid, match="another job request"):
        check(signed({"request": request_digest({**JOB.request, "walltime": 61})}))


def test_an_order_at_another_rates_version_is_a_conflict():
    with pytest.raises(Conflict, match=r"rates version 1.*version 2"):
        check(signed({"rates_version": 1}))


@pytest.mark.parametrize(
    ("deadline", "words"),
    [(NOW - 1, "expired"), (NOW, "expired"), (NOW + 60 + DEADLINE_MARGIN - 1, "too short for a walltime of 60")],
)
def test_an_expired_or_too_short_deadline_is_refused(deadline, words):
    with pytest.raises(Invalid, match=words):
        check(signed({"deadline": deadline}))
    check(signed({"deadline": NOW + 60 + DEADLINE_MARGIN}))  # just enough room


def test_an_order_due_more_than_a_week_out_is_refused_as_the_contract_lets_its_home_withdraw_by_then():
    # A claim for it could be anchored after its home's collateral left (Settlement.withdrawalDelay).
    with pytest.raises(Invalid, match=r"more than 7 days out .* could not be sure to be paid for it"):
        check(signed({"deadline": NOW + MAX_DEADLINE_AHEAD + 1}))
    check(signed({"deadline": NOW + MAX_DEADLINE_AHEAD}))  # a week to the second: accepted


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_the_longest_job_the_api_takes_ordered_by_the_wallet_is_accepted_with_clocks_minutes_apart(skew):
    request = REQUEST | {"walltime": MAX_WALLTIME}
    job = Job(job_request(request, "cloud-b"), walltime=MAX_WALLTIME, cores=1, memory_mib=1024, gpus=0)
    quote = Quote(centre="cloud-b", rates_version=2, max_price=max_price(MAX_WALLTIME, 1, 1024, 0, PRICES))
    order = make_order(request, quote, now=NOW - skew, nonce=7)  # the wallet's clock, `skew` s behind the centre's
    assert order.deadline - (NOW - skew) <= MAX_DEADLINE_AHEAD  # its home grants it
    check(signed(dataclasses.asdict(order)), job=job)  # and the serving centre takes it


def test_a_maximum_price_below_the_jobs_price_at_its_limits_needs_payment():
    with pytest.raises(PaymentRequired, match=f"below {COST}"):
        check(signed({"max_price": COST - 1}))


def test_a_grant_below_the_jobs_price_at_its_limits_needs_payment():
    with pytest.raises(PaymentRequired, match=f"holds {COST - 1}"):
        check(signed({"max_price": COST + 10}, {"amount": COST - 1}))


def test_a_grant_from_another_home_is_forbidden():
    with pytest.raises(Forbidden, match="grant from another home"):  # signed by another member's account
        check(signed(home=OTHER_HOME))
    with pytest.raises(Forbidden, match="grant from another home"):  # naming another home
        check(signed(grant_change={"home": centre_id("ai-c")}))
    with pytest.raises(Forbidden, match="grant from another home"):  # the user's home is not a member
        check(signed(), dataclasses.replace(TERMS, home_account=None))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"order": b"\x05" * 32}, "order"),
        ({"account": "0x" + "99" * 20}, "account"),
        ({"centre": centre_id("ai-c")}, "centre"),
        ({"deadline": NOW + 3599}, "deadline"),
        ({"amount": COST + 1}, "amount"),
    ],
)
def test_a_grant_that_does_not_match_the_order_is_refused(change, field):
    with pytest.raises(Invalid, match=f"grant does not match the order: {field}"):
        check(signed(grant_change=change))


def test_bad_signatures_are_refused():
    good = signed()
    for change in (
        {"order_signature": "0x" + "00" * 65},
        {"order_signature": "0x1234"},
        {"grant_signature": "not hex"},
    ):
        with pytest.raises(Invalid, match="signature"):
            check(dataclasses.replace(good, **change))


def test_an_order_signed_by_another_account_than_the_granted_one_is_refused():
    """Whoever signs the order must be the account the home granted: a stolen grant pays for nothing."""
    good = signed()
    thief = Account.create()
    order = Order.from_dict(good.order)
    with pytest.raises(Invalid, match="account"):
        check(dataclasses.replace(good, order_signature=to_hex(sign_typed(order, DOMAIN, thief.key))))


def test_a_malformed_order_or_grant_is_refused():
    good = signed()
    with pytest.raises(Invalid, match="order is malformed"):
        check(dataclasses.replace(good, order={"request": "0x12"}))
    with pytest.raises(Invalid, match="grant is malformed"):
        check(dataclasses.replace(good, grant=good.grant | {"amount": -1}))
