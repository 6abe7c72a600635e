"""Disputes end to end, on real gateways and anvil: nobody is paid on their own word.

A consortium of its own (a fresh deployment with a short dispute window, allocations for
the demo's groups), because every test closes an epoch and waits for its settlement. The
home's watcher and the serving centre's answerer run in the gateways' housekeeping; the
only chain transactions besides anchors and settlements are the disputes and answers
the tests provoke.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time

import httpx
import pytest
from eth_account import Account
from joserfc import jws

from auth.tokens import TokenIssuer
from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from gateway.node.errors import Unavailable
from gateway.store import Payment, SealedResult
from ledger import lock
from ledger.ids import centre_id, user_id
from ledger.payment import Grant, Order, grant_digest, order_digest, sign_typed
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import UsageRecord, record_digest, record_leaf, sign_record
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.fixtures.consortium import court as consortium_court

WINDOW = 4  # seconds: a dispute within it, an answer within as long again, then settlement
JOB = {"command": ["python3", "-c", "print('the answer is 42')"], "walltime": 30}


@pytest.fixture(scope="module")
def court(slapd_factory, anvil_url, tmp_path_factory):
    with consortium_court(slapd_factory, anvil_url, tmp_path_factory.mktemp("disputes"), WINDOW) as running:
        yield running


def home_session(court) -> GatewayClient:
    home = GatewayClient(court.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    return home


def run_paid(court, centre: str, keys: PaymentKeys, *, receipt: bool = True):
    """alice@hpc-a runs JOB at `centre`, paid by an order and hpc-a's grant; with or without her receipt."""
    with home_session(court) as home:
        submission = submit_anywhere(court.url("hpc-a"), JOB, with_home_session(home), centre=centre, keys=keys)
        if receipt:
            return submission, finish(submission, keys)
        return submission, submission.client.wait(submission.view["id"], timeout=60)


def close_and_settle(court) -> int:
    """Close the open epoch everywhere; wait until every gateway's index shows it settled.

    anvil mines a block only for a transaction, so the test mines one now and then, as a
    consortium's chain (Besu/QBFT) produces blocks while quiet: the windows pass in block time.
    """
    epoch = court.close_epoch_everywhere()[0]["epoch"]
    for name in court.centres:
        index = court.centres[name].node.parts.index

        def settled(index=index) -> object:
            court.chain.mine()
            return index.sync() is not None and index.settlement(epoch)

        eventually(settled)
    return epoch


def hold_status(court, grant: dict) -> str:
    payer = court.centres["hpc-a"].node.parts.payer
    domain = court.centres["hpc-a"].node.parts.domain
    return payer.book.hold(grant_digest(Grant.from_dict(grant), domain)).status


def fabricate(court, cheater: str, victim: str, price: int) -> bytes:
    """A record `cheater` signs for a job nobody ordered, billed to `victim`: its order by a made-up account,
    its grant by a key that is not the victim's. Stored as the cheater's gateway stores real ones."""
    node = court.centres[cheater].node
    store, domain, account = node.parts.store, node.parts.domain, court.centres[cheater].account
    buyer, forger = Account.create(), Account.create()
    index = node.parts.index
    rates = index.member(cheater).rates_version
    order = Order(
        request=secrets.token_bytes(32),
        centre=centre_id(cheater),
        rates_version=rates,
        max_price=price,
        deadline=int(time.time()) + 600,
        nonce=secrets.randbits(256),
    )
    grant = Grant(
        order=order_digest(order, domain),
        account=buyer.address,
        home=centre_id(victim),
        centre=centre_id(cheater),
        amount=price,
        deadline=order.deadline,
    )
    key = lock.new_key()
    payment = Payment(
        order=order.to_dict(),
        order_signature=sign_typed(order, domain, buyer.key),
        grant=grant.to_dict(),
        grant_signature=sign_typed(grant, domain, forger.key),
        order_digest=order_digest(order, domain),
        account=buyer.address,
    )
    job, _ = store.create_job(
        f"mallory@{victim}", victim, JOB | {"centre": cheater}, cheater, rates_version=rates, payment=payment
    )
    store.update_job(job.id, status="running")
    now = int(time.time())

    def signed(epoch: int):
        record = UsageRecord(
            record_id=secrets.token_bytes(32),
            job_id=secrets.token_bytes(32),
            serving_centre=centre_id(cheater),
            home_centre=centre_id(victim),
            user=user_id(f"mallory@{victim}"),
            epoch=epoch,
            started_at=now - 10,
            ended_at=now,
            cpu_millis=1,
            wall_millis=1,
            max_rss_kib=1,
            gpu_millis=0,
            rates_version=rates,
            price=price,
            order=order_digest(order, domain),
            grant=grant_digest(grant, domain),
            lock_hash=lock.lock_hash(key),
            decision=secrets.token_bytes(32),
        )
        return record, sign_record(record, domain, account.key), record_leaf(record, domain)

    sealed = SealedResult(key, lock.lock_hash(key), lock.seal(key, b"nothing"), lock.seal(key, b""))
    store.complete_job(job.id, "succeeded", 0, "", "", record=signed, result=sealed)
    return grant_digest(grant, domain)


def test_a_fabricated_claim_is_disputed_by_the_home_and_voided(court):
    """cloud-b bills hpc-a for a job nobody ordered: hpc-a's watcher disputes that leaf, cloud-b cannot answer,
    and settlement voids its whole claim on hpc-a: cloud-b gains nothing, hpc-a pays nothing and gets the bond."""
    keys = PaymentKeys()
    honest, result = run_paid(court, "cloud-b", keys)
    assert result.price > 0
    fabricate(court, "cloud-b", "hpc-a", 250_000_000)
    home = court.centres["hpc-a"].node
    before = {n: home.parts.index.collateral(court.centres[n].account.address).balance for n in court.centres}

    epoch = close_and_settle(court)

    index = home.parts.index
    (claim,) = index.claims_on("hpc-a", epoch)
    assert (claim.centre, claim.count, claim.voided) == (centre_id("cloud-b"), 2, True)
    disputes = index.disputes(epoch=epoch)
    assert [(d.centre, d.home, d.index, d.need_key, d.challenger, d.status) for d in disputes] == [
        (centre_id("cloud-b"), centre_id("hpc-a"), 1, False, court.centres["hpc-a"].account.address, "voided")
    ]
    after = {n: index.collateral(court.centres[n].account.address).balance for n in court.centres}
    bond = before["cloud-b"] - after["cloud-b"]
    assert bond > 0 and after["hpc-a"] - before["hpc-a"] == bond  # the cheater's bond, nothing else, moved
    assert index.settlement(epoch).net.get(centre_id("cloud-b"), 0) <= 0
    # the honest job in the voided claim is refunded to alice's project: the home paid nothing
    eventually(lambda: hold_status(court, honest.paid.grant) == "refunded")


def test_a_missing_key_is_revealed_on_chain_and_read_at_home(court):
    """alice gives no receipt (her client vanished): hpc-a disputes with needKey, ai-c answers by revealing k
    on chain, alice reads k from her home (GET /v1/keys/{lock_hash}) and opens her outputs; ai-c is paid."""
    keys = PaymentKeys()
    submission, view = run_paid(court, "ai-c", keys, receipt=False)
    assert view["record"] and view["lock_hash"]
    # and one she gave a receipt for, but says she got no key for: her home disputes it too
    _, receipted = run_paid(court, "ai-c", keys)
    with home_session(court) as home:
        home._call("POST", "/v1/complaints", json={"record": receipted.view["record"]["data"]})

    epoch = close_and_settle(court)

    index = court.centres["hpc-a"].node.parts.index
    (claim,) = index.claims_on("hpc-a", epoch)
    assert claim.centre == centre_id("ai-c") and not claim.voided
    assert [(d.index, d.need_key, d.status) for d in index.disputes(epoch=epoch)] == [
        (0, True, "answered"),
        (1, True, "answered"),
    ]
    assert [c.status for c in court.centres["hpc-a"].node.parts.payer.book.complaints()] == ["disputed"]
    answer = httpx.get(f"{court.url('hpc-a')}/v1/keys/{view['lock_hash']}", timeout=10)
    assert answer.status_code == 200, answer.text
    key = from_hex(answer.json()["key"], size=32)
    assert to_hex(lock.lock_hash(key)) == view["lock_hash"]
    assert lock.open_sealed(key, from_hex(view["sealed"]["stdout"])).decode().strip() == "the answer is 42"
    record = UsageRecord.from_dict(view["record"]["data"])
    assert index.settlement(epoch).net[centre_id("ai-c")] == record.price + receipted.price
    eventually(lambda: hold_status(court, submission.paid.grant) == "paid")


def test_an_honest_epoch_settles_without_a_dispute(court):
    """Jobs paid by receipt: one anchor per centre, no dispute, settlement pays the serving centre its prices."""
    keys = PaymentKeys()
    runs = [run_paid(court, "cloud-b", keys) for _ in range(2)]

    epoch = close_and_settle(court)

    index = court.centres["hpc-a"].node.parts.index
    assert index.disputes(epoch=epoch) == []
    total = sum(result.price for _, result in runs)
    assert total > 0 and index.settlement(epoch).net[centre_id("cloud-b")] == total
    assert [c.total for c in index.claims_on("hpc-a", epoch)] == [total]
    for submission, _ in runs:
        eventually(lambda s=submission: hold_status(court, s.paid.grant) == "paid")
    domain = court.centres["hpc-a"].node.parts.domain
    assert all(record_digest(UsageRecord.from_dict(r.view["record"]["data"]), domain) for _, r in runs)


def bill_again(court, centre: str, job_id: str) -> None:
    """`centre` stores a second record billing the grant of its real job `job_id` (same order and grant, a new
    record id and key), as a cheat pads its claim: the contract takes either record's evidence, so the home must
    not pay the grant twice."""
    node = court.centres[centre].node
    store, domain, account = node.parts.store, node.parts.domain, court.centres[centre].account
    real = store.get_job(job_id)
    original = UsageRecord.from_json(store.record(real.record_id).record)
    payment = dataclasses.replace(real.payment, order_digest=secrets.token_bytes(32))  # past the store's replay check
    job, _ = store.create_job(
        real.principal, real.home, JOB | {"centre": centre}, centre, rates_version=real.rates_version, payment=payment
    )
    store.update_job(job.id, status="running")
    key = lock.new_key()

    def signed(epoch: int):
        record = dataclasses.replace(
            original,
            record_id=secrets.token_bytes(32),
            job_id=secrets.token_bytes(32),
            epoch=epoch,
            lock_hash=lock.lock_hash(key),
        )
        return record, sign_record(record, domain, account.key), record_leaf(record, domain)

    sealed = SealedResult(key, lock.lock_hash(key), lock.seal(key, b"again"), lock.seal(key, b""))
    store.complete_job(job.id, "succeeded", 0, "", "", record=signed, result=sealed)


def balances(court) -> dict[str, int]:
    index = court.centres["hpc-a"].node.parts.index
    index.sync()
    return {n: index.collateral(court.centres[n].account.address).balance for n in court.centres}


def test_a_grant_billed_twice_in_a_claim_is_voided_by_disputeDuplicate(court):
    """ai-c serves its evidence, but bills one real grant at two leaves: hpc-a proves both leaves to the contract
    (disputeDuplicate), which voids the claim at once: no index dispute, nothing for ai-c to answer; ai-c's anchor
    bond goes to hpc-a and alice's hold is refunded."""
    submission, result = run_paid(court, "ai-c", PaymentKeys())
    bill_again(court, "ai-c", submission.view["id"])
    before = balances(court)

    epoch = close_and_settle(court)

    index = court.centres["hpc-a"].node.parts.index
    (claim,) = index.claims_on("hpc-a", epoch)
    assert (claim.centre, claim.count, claim.total, claim.voided) == (centre_id("ai-c"), 2, 2 * result.price, True)
    assert index.disputes(epoch=epoch) == []
    key = f"duplicate:{to_hex(centre_id('ai-c'))}:{epoch}"
    sent = court.centres["hpc-a"].node.parts.epochs.outbox.item_by_key(key)
    assert (sent.status, sent.payload["a"]["index"], sent.payload["b"]["index"]) == ("done", 0, 1)
    after = balances(court)
    bond = before["ai-c"] - after["ai-c"]
    assert bond > 0 and after["hpc-a"] - before["hpc-a"] == bond
    assert index.settlement(epoch).net.get(centre_id("ai-c"), 0) == 0
    eventually(lambda: hold_status(court, submission.paid.grant) == "refunded")


def test_a_grant_paid_in_an_earlier_epoch_and_billed_again_is_voided(court):
    """cloud-b is paid for alice's job in one epoch and bills its grant again in the next: hpc-a proves the earlier
    leaf and the new one (disputeDuplicate) and the new claim is voided; a watcher restarted without memory finds
    the earlier leaf from cloud-b's evidence of the earlier epoch."""
    from gateway.books.watcher import DuplicateDispute, fetch_evidence

    submission, result = run_paid(court, "cloud-b", PaymentKeys())
    first = close_and_settle(court)
    eventually(lambda: hold_status(court, submission.paid.grant) == "paid")
    bill_again(court, "cloud-b", submission.view["id"])

    second = close_and_settle(court)

    parts = court.centres["hpc-a"].node.parts
    (claim,) = parts.index.claims_on("hpc-a", second)
    assert (claim.centre, claim.count, claim.voided) == (centre_id("cloud-b"), 1, True)
    assert parts.index.disputes(epoch=second) == []
    assert parts.index.settlement(second).net.get(centre_id("cloud-b"), 0) == 0
    assert hold_status(court, submission.paid.grant) == "paid"  # once, at its price
    assert parts.payer.book.hold(grant_digest(Grant.from_dict(submission.paid.grant), parts.domain)).price == (
        result.price
    )
    fresh = watcher_of(court, fetch_evidence)
    found = fresh.review(claim, claim.anchored_at)
    assert len(found) == 1 and isinstance(found[0], DuplicateDispute)
    assert (found[0].first.epoch, found[0].second.epoch, found[0].second.index) == (first, second, 0)


def test_withheld_evidence_gets_every_leaf_disputed_and_a_padded_claim_voided(court, monkeypatch):
    """cloud-b pads its claim with two copies of a real grant and withholds its evidence: hpc-a asks again, then
    disputes all three leaves; cloud-b answers the genuine one, a grant answers for one leaf only, so the copies
    stand unanswered and the claim is void: cloud-b loses its bond, hpc-a pays nothing."""
    submission, _ = run_paid(court, "cloud-b", PaymentKeys())
    bill_again(court, "cloud-b", submission.view["id"])
    bill_again(court, "cloud-b", submission.view["id"])
    asked: list[int] = []

    def withheld(epoch: int, home: str, *page: int) -> dict:
        asked.append(epoch)
        raise Unavailable("evidence withheld")

    monkeypatch.setattr(court.centres["cloud-b"].node.parts.epochs, "evidence", withheld)
    before = balances(court)

    epoch = close_and_settle(court)

    index = court.centres["hpc-a"].node.parts.index
    (claim,) = index.claims_on("hpc-a", epoch)
    assert (claim.centre, claim.count, claim.voided) == (centre_id("cloud-b"), 3, True)
    assert asked.count(epoch) >= 1
    disputes = index.disputes(epoch=epoch)
    assert sorted((d.index, d.need_key) for d in disputes) == [(0, False), (1, False), (2, False)]
    assert sum(d.status == "answered" for d in disputes) <= 1  # the grant answers for one leaf at most
    assert index.settlement(epoch).net.get(centre_id("cloud-b"), 0) == 0
    assert index.settlement(epoch).net.get(centre_id("hpc-a"), 0) == 0
    after = balances(court)
    assert after["cloud-b"] < before["cloud-b"] and after["hpc-a"] > before["hpc-a"]


def test_a_grant_refunded_after_a_voided_claim_and_billed_again_is_a_bad_leaf(court):
    """cloud-b's claim is voided (it billed a made-up job too), so alice's real job in it is refunded to her project;
    cloud-b bills that grant again in the next epoch: the home proves the duplicate with the voided claim's leaf, and
    a watcher that cannot (cloud-b withholds the voided epoch's evidence) finds the hold refunded: a bad leaf, disputed
    as one (not merely as a record without its receipt, which a key reveal would answer)."""
    from gateway.books.watcher import EvidenceUnavailable, LeafDispute, fetch_evidence

    submission, _ = run_paid(court, "cloud-b", PaymentKeys())
    fabricate(court, "cloud-b", "hpc-a", 250_000_000)
    first = close_and_settle(court)
    eventually(lambda: hold_status(court, submission.paid.grant) == "refunded")
    bill_again(court, "cloud-b", submission.view["id"])

    second = close_and_settle(court)

    parts = court.centres["hpc-a"].node.parts
    (claim,) = parts.index.claims_on("hpc-a", second)
    assert (claim.centre, claim.count, claim.voided) == (centre_id("cloud-b"), 1, True)
    assert parts.index.settlement(second).net.get(centre_id("cloud-b"), 0) == 0
    assert hold_status(court, submission.paid.grant) == "refunded"  # the home paid nothing for it

    def withheld_first(url: str, epoch: int, home: str, count: int):
        if epoch == first:
            raise EvidenceUnavailable("withheld")
        return fetch_evidence(url, epoch, home, count)

    assert watcher_of(court, withheld_first).review(claim, claim.anchored_at) == [LeafDispute(0)]


def watcher_of(court, fetch):
    from gateway.books.watcher import Watcher

    parts = court.centres["hpc-a"].node.parts
    return Watcher(
        name="hpc-a",
        index=parts.index,
        outbox=parts.epochs.outbox,
        payer=parts.payer,
        domain=parts.domain,
        dispute_window=WINDOW,
        booking_delay=court.deployment.booking_delay,
        fetch=fetch,
    )


def test_the_watcher_retries_missing_evidence_then_disputes_every_leaf(court):
    """The home's checks on their own, on a settled claim above: evidence it cannot get, or that does not rebuild
    the anchored claim, is asked for again over the first half of the window, then every leaf is disputed; a claim
    whose grants it already paid (a settled claim anchored again) has every leaf bad."""
    from gateway.books.watcher import LeafDispute, fetch_evidence

    parts = court.centres["hpc-a"].node.parts
    paid = next(c for c in parts.index.claims_on("hpc-a") if c.centre == centre_id("cloud-b") and not c.voided)
    assert parts.index.settlement(paid.epoch) is not None
    every = [LeafDispute(i) for i in range(paid.count)]
    calls: list[int] = []

    def unreachable(url: str, epoch: int, home: str, count: int):
        calls.append(epoch)
        raise httpx.ConnectError("connection refused")

    def tampered(url: str, epoch: int, home: str, count: int):
        rows = fetch_evidence(url, epoch, home, count)
        rows[-1]["record"]["price"] -= 1
        return rows

    at = paid.anchored_at
    watcher = watcher_of(court, unreachable)
    assert watcher.review(paid, at) is None  # asked again later
    assert watcher.review(paid, at) is None and len(calls) == 1  # not before it is due: housekeeping goes on
    assert watcher.review(paid, at + 1) is None and len(calls) == 2
    assert watcher.review(paid, at + 2) == every and len(calls) == 3
    late = at + WINDOW // 2  # first seen late in the window: no time to ask again
    assert watcher_of(court, lambda *_: {"not": "evidence"}).review(paid, late) == every
    assert watcher_of(court, tampered).review(paid, late) == every
    assert watcher_of(court, fetch_evidence).review(paid, late) == every  # every grant in it is paid already
    # served on the second try: judged from the evidence
    flaky = iter([httpx.ConnectError("refused")])

    def once_down(url: str, epoch: int, home: str, count: int):
        for exc in flaky:
            raise exc
        return fetch_evidence(url, epoch, home, count)

    retried = watcher_of(court, once_down)
    assert retried.review(paid, at) is None
    assert retried.review(paid, at + 1) == every


def test_the_orders_account_fetches_the_result_after_the_session_ended(court, tmp_path):
    """`xcentre result` signs as the job's payment account (X-Job-Signature) instead of presenting the session that
    submitted, which may have ended: the outputs still come. A signature by another key, or an old one, is a 401
    and releases nothing."""
    from gateway.client.http import GatewayRefused, job_signer
    from tests.test_cli import run_cli

    wallet = tmp_path / "wallet.json"
    code, _, err = run_cli(
        ["login", "--gateway", court.url("hpc-a"), "--user", "alice", "--password-stdin", "--wallet", wallet],
        stdin=PASSWORDS["alice"] + "\n",
    )
    assert code == 0, err
    code, out, err = run_cli(
        ["submit", "--user", "alice", "--password-stdin", "--gateway", court.url("hpc-a"), "--centre", "cloud-b",
         "--walltime", "60", "--wallet", wallet, "--", "python3", "-c", "print(6 * 9)"],
        stdin=PASSWORDS["alice"] + "\n",
    )  # fmt: skip
    assert code == 0, err
    job = json.loads(out)["id"]
    keys = PaymentKeys.beside(wallet)
    ((account, facts),) = keys.open().items()
    # the session that submitted, as it is once expired: refused
    claims = json.loads(jws.extract_compact(facts["session"].encode()).payload)
    expired = TokenIssuer("cloud-b", court.centres["cloud-b"].token_key)._sign(
        claims | {"iat": claims["iat"] - 7200, "exp": int(time.time()) - 3600}
    )
    with GatewayClient(court.url("cloud-b"), token=expired) as client:
        with pytest.raises(GatewayRefused) as refused:
            client.job(job)
        assert refused.value.status == 401 and "expired" in refused.value.error
    store = court.centres["cloud-b"].node.parts.store
    with GatewayClient(court.url("cloud-b")) as client:
        client.job_signer = job_signer("cloud-b", keys.account(account))
        view = client.wait(job, timeout=60)
        receipt = "0x" + "11" * 65
        for signer, phrase in [
            (job_signer("cloud-b", Account.create()), "not that of the account"),
            (job_signer("cloud-b", keys.account(account), clock=lambda: time.time() - 121), "good for 120 s"),
            (job_signer("hpc-a", keys.account(account)), "not that of the account"),  # signed for another centre
            (lambda _: "yesterday", "X-Job-Signature must be"),
        ]:
            client.job_signer = signer
            for call in (lambda: client.job(job), lambda: client.receipt(job, receipt)):
                with pytest.raises(GatewayRefused) as refused:
                    call()
                assert refused.value.status == 401 and phrase in refused.value.error, refused.value.error
    assert view["record"] and store.get_job(job).receipt_signature is None  # nothing released, nothing taken

    code, out, err = run_cli(["result", job, "--centre", "cloud-b", "--wallet", wallet])

    assert code == 0, err
    done = json.loads(out)
    assert done["stdout"].strip() == "54" and done["paid"] == done["usage"]["price"] > 0
    assert store.get_job(job).receipt_signature is not None
