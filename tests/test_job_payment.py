"""A job's payment at the serving centre, over HTTP on real parts (slapd per centre, anvil, gateways).

The client pays with an order of a fresh account and its home's grant; the centre checks
both against its index (no call to the home), runs the job, returns its outputs sealed
under k with H(k) in the signed record, and releases k for the payer's receipt. Every
refusal is a clear 4xx with nothing stored. Grants here are signed with the home's member
key directly (what the home's grant desk does after holding the amount), so these tests
are about the serving centre; the home's side has its own.
"""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest

from gateway.client.dispatch import SignOn, finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.paying import WrongResultKey, open_result, receipt_signature
from gateway.client.wallet import PaymentKeys
from gateway.node.orders import DEADLINE_MARGIN
from ledger import lock
from ledger.ids import centre_id
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import UsageRecord, record_digest
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.payment import home_grant, paid, quote

JOB = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


@pytest.fixture(scope="module")
def alice(consortium):
    """alice@hpc-a signed on at home with a password; her grants signed by hpc-a's member key."""
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    session = with_home_session(home)
    yield SignOn(session.home_url, session.at, home_grant(consortium, "hpc-a"))
    home.close()


@pytest.fixture(scope="module")
def paid_run(consortium, alice):
    """alice's job at cloud-b, paid, followed through to its receipt."""
    keys = PaymentKeys()
    submission = submit_anywhere(consortium.url("hpc-a"), JOB, alice, centre="cloud-b", keys=keys)
    accepted = submission.view
    result = finish(submission, keys)
    submission.client.close()
    return submission, accepted, result, keys


@pytest.fixture
def nothing_stored(consortium):
    before = (consortium.job_count(), consortium.record_count())
    yield
    assert (consortium.job_count(), consortium.record_count()) == before


# -- the paid path ------------------------------------------------------------------------------


def test_the_result_is_sealed_until_the_receipt(consortium, paid_run):
    submission, accepted, result, keys = paid_run
    view = result.view
    assert view["status"] == "succeeded" and view["serving_centre"] == "cloud-b"
    assert view["stdout_tail"] is None and view["stderr_tail"] is None  # only sealed
    assert result.stdout.strip() == "42" and result.price == view["usage"]["price"] > 0
    assert keys.open() == {}  # the payment key is dropped once the receipt is done and k checked
    # the job is stored with its order, and the record names it, the grant and H(k)
    record = UsageRecord.from_dict(view["record"]["data"])
    assert accepted["order"] == to_hex(submission.paid.digest) == to_hex(record.order)
    assert to_hex(record.lock_hash) == view["lock_hash"]
    assert record.price <= submission.paid.order.max_price
    stored = consortium.store("cloud-b").get_job(view["id"])
    assert stored.payment.account == submission.paid.account and stored.receipt_signature is not None
    assert lock.lock_hash(stored.result.key) == record.lock_hash
    # nothing of the plaintext reaches the view: the sealed bytes open only under k
    with pytest.raises(lock.WrongKey):
        lock.open_sealed(lock.new_key(), from_hex(view["sealed"]["stdout"]))


def test_a_receipt_again_gets_the_same_key(consortium, paid_run, alice):
    submission, _, result, _ = paid_run
    domain = submission.domain
    record = UsageRecord.from_dict(result.view["record"]["data"])
    stored = consortium.store("cloud-b").get_job(result.view["id"])
    with GatewayClient(consortium.url("cloud-b")) as client:
        alice(client, "cloud-b")
        signature = to_hex(stored.receipt_signature)
        answer = client.receipt(result.view["id"], signature)
    assert answer["record"] == to_hex(record_digest(record, domain))
    assert from_hex(answer["key"]) == stored.result.key


def test_a_receipt_for_another_record_or_by_another_key_releases_nothing(consortium, alice):
    keys = PaymentKeys()
    submission = submit_anywhere(consortium.url("hpc-a"), JOB, alice, centre="cloud-b", keys=keys)
    view = submission.client.wait(submission.view["id"])
    domain = submission.domain
    record = UsageRecord.from_dict(view["record"]["data"])
    account = keys.account(submission.paid.account)
    other = dataclasses.replace(record, price=record.price + 1)
    stranger = PaymentKeys().new()
    try:
        for signature in (receipt_signature(other, account, domain), receipt_signature(record, stranger, domain)):
            with pytest.raises(GatewayRefused) as refused:
                submission.client.receipt(view["id"], signature)
            assert refused.value.status == 400
            assert "receipt is not for this record" in refused.value.error and "no key released" in refused.value.error
        job = consortium.store("cloud-b").get_job(view["id"])
        assert job.receipt_signature is None  # nothing kept, nothing released
    finally:
        finish(submission, keys)  # the honest receipt, so the job's books stay whole
        submission.client.close()


def test_a_wrong_key_tells_the_user_to_complain(paid_run):
    submission, _, result, _ = paid_run
    record = UsageRecord.from_dict(result.view["record"]["data"])
    with pytest.raises(WrongResultKey, match=r"xcentre complain --record 0x[0-9a-f]{64} --user <your uid>"):
        open_result(result.view, record, to_hex(lock.new_key()), submission.domain)


# -- refusals at the serving centre: clear, and nothing stored ---------------------------------------


def submit_paid(consortium, alice, *, centre="cloud-b", **changes):
    """POST /v1/jobs at `centre` with an order and a grant (fields changed as asked); the raw answer."""
    payment = paid(consortium, JOB, centre, **changes)
    with GatewayClient(consortium.url(centre)) as client:
        alice(client, centre)
        return httpx.post(
            f"{consortium.url(centre)}/v1/jobs",
            json=JOB | {"centre": centre} | payment.fields(),
            headers={"Authorization": f"Bearer {client.token}"},
            timeout=30,
        )


def refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    text = response.json()["error"].lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in {text}"


def test_an_order_for_another_centre(consortium, alice, nothing_stored):
    refused(submit_paid(consortium, alice, order_change={"centre": centre_id("ai-c")}), 400, "for another centre")


def test_an_expired_order(consortium, alice, nothing_stored):
    refused(submit_paid(consortium, alice, order_change={"deadline": int(time.time()) - 1}), 400, "expired")


def test_an_order_whose_deadline_leaves_no_room_for_the_walltime(consortium, alice, nothing_stored):
    short = int(time.time()) + JOB["walltime"] + DEADLINE_MARGIN // 2
    refused(submit_paid(consortium, alice, order_change={"deadline": short}), 400, "too short for a walltime")


def test_an_order_at_a_wrong_rates_version(consortium, alice, nothing_stored):
    refused(submit_paid(consortium, alice, order_change={"rates_version": 99}), 409, "rates version 99")


def test_a_maximum_price_below_the_jobs_price(consortium, alice, nothing_stored):
    refused(submit_paid(consortium, alice, order_change={"max_price": 1}), 402, "maximum price 1 is below")


def test_a_grant_from_another_home(consortium, alice, nothing_stored):
    refused(submit_paid(consortium, alice, grantor="ai-c"), 403, "grant from another home")


def test_a_grant_that_does_not_match_the_order(consortium, alice, nothing_stored):
    other = b"\x07" * 32
    refused(submit_paid(consortium, alice, grant_change={"order": other}), 400, "grant does not match the order: order")


def test_a_grant_below_the_jobs_price(consortium, alice, nothing_stored):
    refused(submit_paid(consortium, alice, grant_change={"amount": 1}), 402, "the grant holds 1")


def test_a_replayed_order(consortium, alice):
    keys = PaymentKeys()
    submission = submit_anywhere(consortium.url("hpc-a"), JOB, alice, centre="cloud-b", keys=keys)
    try:
        before = consortium.job_count()
        again = httpx.post(
            f"{consortium.url('cloud-b')}/v1/jobs",
            json=JOB | {"centre": "cloud-b"} | submission.paid.fields(),
            headers={"Authorization": f"Bearer {submission.client.token}"},
            timeout=30,
        )
        refused(again, 409, "replayed order", submission.view["id"])
        assert consortium.job_count() == before
    finally:
        finish(submission, keys)
        submission.client.close()


def test_a_job_without_payment_is_refused(consortium, alice, nothing_stored):
    with GatewayClient(consortium.url("cloud-b")) as client:
        alice(client, "cloud-b")
        response = httpx.post(
            f"{consortium.url('cloud-b')}/v1/jobs",
            json=JOB | {"centre": "cloud-b"},
            headers={"Authorization": f"Bearer {client.token}"},
            timeout=30,
        )
    assert response.status_code == 422 and "order" in response.json()["error"]


# -- the quote: the serving centre's own checks before anything is granted at home --------------------

RESTRICTED = JOB | {"resources": {"cores": 1, "data_class": "restricted"}}
"""A job cloud-b's policy refuses (no restricted data on shared cloud nodes) and hpc-a's and ai-c's take."""


@pytest.fixture(scope="module")
def alice_at_home(consortium):
    """alice signed on at home with a password: her orders are granted by hpc-a's real grant desk (holds)."""
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    yield home
    home.close()


def holds(home: GatewayClient) -> dict[str, dict]:
    return {hold["order"]: hold for hold in home.balance()["holds"]}


def test_a_centre_whose_policy_refuses_the_job_ties_up_no_allocation(consortium, alice_at_home):
    with GatewayClient(consortium.url("hpc-a")) as entry:
        ranking = [c["centre"] for c in entry.placement(RESTRICTED["walltime"], RESTRICTED["resources"])]
    assert ranking[0] == "cloud-b", f"the test needs cloud-b tried first: ranking {ranking}"
    before = holds(alice_at_home)
    keys = PaymentKeys()
    submission = submit_anywhere(consortium.url("hpc-a"), RESTRICTED, with_home_session(alice_at_home), keys=keys)
    try:
        assert submission.centre == ranking[1]  # cloud-b refused it, the next one took it
        new = {order: hold for order, hold in holds(alice_at_home).items() if order not in before}
        assert list(new) == [to_hex(submission.paid.digest)]  # exactly one hold: the accepted order's
        hold = new[to_hex(submission.paid.digest)]
        assert hold["centre"] == submission.centre and hold["amount"] == submission.paid.order.max_price
        assert list(keys.open()) == [submission.paid.account]  # no key was made for cloud-b
    finally:
        finish(submission, keys)
        submission.client.close()


def post_quote(consortium, centre: str, body: dict, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{consortium.url(centre)}/v1/jobs/quote", json=body, headers=headers, timeout=30)


def test_the_quote_is_what_the_order_then_signs(consortium, alice, paid_run):
    submission = paid_run[0]
    expected = quote(consortium, JOB, "cloud-b")
    with GatewayClient(consortium.url("cloud-b")) as client:
        alice(client, "cloud-b")
        answer = client.quote(JOB | {"centre": "cloud-b"})
    decision = answer.pop("decision")  # the id of the policy's allow in cloud-b's decision log
    assert answer == {"centre": "cloud-b", "rates_version": expected.rates_version, "max_price": expected.max_price}
    assert len(decision) == 34 and decision.startswith("0x")
    order = submission.paid.order
    assert (order.rates_version, order.max_price) == (answer["rates_version"], answer["max_price"])
    assert int(submission.paid.grant["amount"]) == answer["max_price"]


def test_a_quote_stores_nothing(consortium, alice):
    before = (consortium.job_count(), consortium.record_count())
    with GatewayClient(consortium.url("cloud-b")) as client:
        alice(client, "cloud-b")
        assert client.quote(JOB)["centre"] == "cloud-b"  # no centre named: this one's
    assert (consortium.job_count(), consortium.record_count()) == before


def test_a_quote_needs_a_session_at_that_centre(consortium, nothing_stored):
    refused(post_quote(consortium, "cloud-b", JOB, None), 401, "session token is required")
    at_home = consortium.login("alice", "hpc-a")  # good at hpc-a only
    refused(post_quote(consortium, "cloud-b", JOB, at_home), 401, "session token refused")


def test_a_quote_the_policy_refuses_says_why(consortium, nothing_stored):
    token = consortium.login("alice", "hpc-a", at="cloud-b")
    response = post_quote(consortium, "cloud-b", RESTRICTED, token)
    refused(response, 403, "cloud-b does not accept this job")
    assert any("restricted data may not be processed" in r for r in response.json()["reasons"])


def test_a_quote_for_another_centre_is_misdirected(consortium, nothing_stored):
    token = consortium.login("alice", "hpc-a", at="cloud-b")
    refused(post_quote(consortium, "cloud-b", JOB | {"centre": "hpc-a"}, token), 421, "sign on at hpc-a")
    refused(post_quote(consortium, "cloud-b", JOB | {"centre": "auto"}, token), 421, "placement is made by the client")


def test_a_quote_with_payment_fields_is_malformed(consortium, nothing_stored):
    token = consortium.login("alice", "hpc-a", at="cloud-b")
    payment = paid(consortium, JOB, "cloud-b")
    assert post_quote(consortium, "cloud-b", JOB | payment.fields(), token).status_code == 422


def test_no_quote_without_rates_in_force(consortium, monkeypatch, nothing_stored):
    """cloud-b's index (a double of its one query) has no rates version in force: nothing can be priced."""
    index = consortium.centres["cloud-b"].node.parts.index
    monkeypatch.setattr(index, "rates_in_force", lambda centre, at: None)
    token = consortium.login("alice", "hpc-a", at="cloud-b")
    refused(post_quote(consortium, "cloud-b", JOB, token), 503, "no published rates in force")
