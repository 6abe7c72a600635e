"""Disputes end to end, on real gateways and anvil: nobody is paid on their own word.

A consortium of its own (a fresh deployment with a short dispute window, allocations for
the demo's groups), because every test closes an epoch and waits for its settlement. The
home's watcher and the serving centre's answerer run in the gateways' housekeeping; the
only chain transactions besides anchors and settlements are the disputes and answers
the tests provoke.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable

import httpx
import pytest
from eth_account import Account

from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from gateway.demo import local
from gateway.store import Payment, SealedResult
from ledger import lock
from ledger.deploy import deploy_consortium
from ledger.ids import centre_id, user_id
from ledger.payment import Grant, Order, grant_digest, order_digest, sign_typed
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import UsageRecord, record_digest, record_leaf, sign_record
from tests.fixtures.consortium import PASSWORDS, start_consortium

WINDOW = 4  # seconds: a dispute within it, an answer within as long again, then settlement
ALLOCATIONS = {"physics": 10**12, "biology": 10**12, "gpu-users": 10**12}
JOB = {"command": ["python3", "-c", "print('the answer is 42')"], "walltime": 30}


@pytest.fixture(scope="module")
def court(slapd_factory, anvil_url, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "deploy_consortium", functools.partial(deploy_consortium, dispute_window=WINDOW))
        build_node = local.build_node
        patch.setattr(local, "build_node", lambda **kw: build_node(**{"allocations": ALLOCATIONS, **kw}))
        running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("disputes"))
        try:
            yield running
        finally:
            running.stop()


def eventually(check: Callable[[], object], within: float = 60.0) -> object:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.2)


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


def test_the_watcher_disputes_leaf_0_without_evidence_and_any_grant_paid_before(court):
    """The home's checks on their own, on the claims above: evidence it cannot get, or that does not rebuild the
    anchored claim, is leaf 0; a claim whose grants it already paid (a settled claim anchored again) is bad."""
    from gateway.books.watcher import Watcher, fetch_evidence

    parts = court.centres["hpc-a"].node.parts
    (paid,) = [c for c in parts.index.claims_on("hpc-a") if c.centre == centre_id("cloud-b") and not c.voided]
    assert parts.index.settlement(paid.epoch) is not None

    def watcher(fetch) -> Watcher:
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

    def unreachable(url: str, epoch: int, home: str):
        raise httpx.ConnectError("connection refused")

    def tampered(url: str, epoch: int, home: str):
        rows = fetch_evidence(url, epoch, home)
        rows[-1]["record"]["price"] -= 1
        return rows

    assert watcher(unreachable).findings(paid) == [(0, False)]
    assert watcher(lambda *_: {"not": "evidence"}).findings(paid) == [(0, False)]
    assert watcher(tampered).findings(paid) == [(0, False)]
    assert watcher(fetch_evidence).findings(paid) == [(0, False)]  # every grant in it is paid already
