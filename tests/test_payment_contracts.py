"""Fair payment on chain: disputes decided from signed evidence, settlement from collateral.

The embedded chain, as tests/test_contracts.py; orders, grants, records and receipts are
built and signed with ledger.payment / ledger.records as the gateways do, and their
digests are checked against eth_account's own EIP-712 encoding.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, replace

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.logs import DISCARD

from ledger.deploy import Prices
from ledger.ids import centre_id
from ledger.lock import lock_hash, new_key
from ledger.payment import Grant, Order, Receipt, grant_digest, order_digest, receipt_digest
from ledger.pricing import Meters
from ledger.pricing import price as py_price
from ledger.records import Domain, TypedData, UsageRecord, record_digest, sign_typed
from ledger.sumtree import SumTree
from tests.test_contracts import Consortium, advance, last_anchored_at, make_consortium, now, reverts, until_unlocked

WINDOW = 100  # dispute window (s); answers are due within 2 windows of the anchor
INITIAL = 10**9
ANCHOR_BOND = 1_000_000
DISPUTE_BOND = 100_000
NAMES = ["hpc-a", "hpc-b", "cloud-c"]
A, B, C = (centre_id(n) for n in NAMES)


def pay_consortium(**params: int) -> Consortium:
    return make_consortium(
        NAMES,
        quorum=2,
        rate_notice=0,
        initial=INITIAL,
        **{"dispute_window": WINDOW, "anchor_bond": ANCHOR_BOND, "dispute_bond": DISPUTE_BOND, **params},
    )


def fields(obj: TypedData) -> tuple:
    """The ABI tuple of a typed-data struct (its fields in struct order)."""
    return tuple(getattr(obj, name) for name, _ in obj.solidity_fields())


DEFAULT_METERS = Meters(cpu_millis=90_000, gpu_millis=0, max_rss_kib=2048, wall_millis=60_000)


@dataclass(frozen=True)
class Job:
    """One job's signed pieces, as the client, the home and the serving centre make them."""

    account: LocalAccount
    order: Order
    order_sig: bytes
    grant: Grant
    grant_sig: bytes
    record: UsageRecord
    key: bytes
    receipt_sig: bytes
    digest: bytes


def make_job(
    k: Consortium,
    serving: str,
    home: str,
    epoch: int,
    *,
    meters: Meters = DEFAULT_METERS,
    rates_version: int = 1,
    max_price: int = 10**6,
    deadline: int | None = None,
    grant_signer: LocalAccount | None = None,
    order_signer: LocalAccount | None = None,
    grant_changes: dict | None = None,
    order_changes: dict | None = None,
    record_changes: dict | None = None,
) -> Job:
    """A job of `home`'s user at `serving`: order, grant, record (priced at the pinned rates,
    capped at the grant) and receipt, every piece valid unless a `*_changes` or signer says otherwise."""
    domain = Domain.for_deployment(k.deployment)
    account = Account.create()
    t = now(k)
    deadline = t + 10_000 if deadline is None else deadline
    order = Order(
        request=keccak(secrets.token_bytes(16)),
        centre=centre_id(serving),
        rates_version=rates_version,
        max_price=max_price,
        deadline=deadline,
        nonce=secrets.randbits(256),
    )
    order = replace(order, **(order_changes or {}))
    od = order_digest(order, domain)
    grant = Grant(
        order=od,
        account=account.address,
        home=centre_id(home),
        centre=order.centre,
        amount=max_price,
        deadline=deadline,
    )
    grant = replace(grant, **(grant_changes or {}))
    key = new_key()
    try:
        _, _, p = k.c.consortium.functions.rates(centre_id(serving), rates_version).call()
        cost = min(py_price(meters, Prices.from_tuple(p)), grant.amount)
    except Exception:  # noqa: BLE001 - an unpublished version: the record is refused on chain anyway
        cost = 0
    record = UsageRecord(
        record_id=secrets.token_bytes(32),
        job_id=secrets.token_bytes(32),
        serving_centre=centre_id(serving),
        home_centre=centre_id(home),
        user=secrets.token_bytes(32),
        epoch=epoch,
        started_at=min(t - 10, deadline) - 90,
        ended_at=min(t - 10, deadline),
        cpu_millis=meters.cpu_millis,
        wall_millis=meters.wall_millis,
        max_rss_kib=meters.max_rss_kib,
        gpu_millis=meters.gpu_millis,
        rates_version=rates_version,
        price=cost,
        order=od,
        grant=grant_digest(grant, domain),
        lock_hash=lock_hash(key),
        decision=secrets.token_bytes(32),
    )
    record = replace(record, **(record_changes or {}))
    digest = record_digest(record, domain)
    return Job(
        account=account,
        order=order,
        order_sig=sign_typed(order, domain, order_signer or account),
        grant=grant,
        grant_sig=sign_typed(grant, domain, grant_signer or k.accounts[home]),
        record=record,
        key=key,
        receipt_sig=sign_typed(Receipt(record=digest), domain, account),
        digest=digest,
    )


def anchor(k: Consortium, serving: str, epoch: int, claims: dict[str, list]) -> dict[str, SumTree]:
    """`serving` anchors `epoch`: per home, the sum tree of its jobs (or (digest, amount) pairs)."""
    trees = {
        home: SumTree([(j.digest, j.record.price) if isinstance(j, Job) else j for j in jobs])
        for home, jobs in claims.items()
    }
    homes = list(trees)
    k.tx(
        k.c.usage_ledger.functions.anchor(
            epoch,
            [centre_id(h) for h in homes],
            [trees[h].root for h in homes],
            [trees[h].count for h in homes],
            [trees[h].total for h in homes],
            bytes(32),
            0,
        ),
        serving,
    )
    return trees


def evidence(job: Job, tree: SumTree, index: int, *, key: bytes | None = None, receipt: bytes | None = None) -> tuple:
    """The Evidence tuple answering a dispute of leaf `index` (by receipt unless a key is given)."""
    proof = tree.proof(index)
    return (
        fields(job.record),
        fields(job.order),
        job.order_sig,
        fields(job.grant),
        job.grant_sig,
        job.receipt_sig if receipt is None else receipt,
        bytes(32) if key is None else key,
        list(proof.hashes),
        list(proof.sums),
    )


def dispute(k: Consortium, who: str, centre: str, epoch: int, home: str, index: int, need_key: bool = False) -> int:
    receipt = k.tx(k.c.usage_ledger.functions.dispute(centre_id(centre), epoch, centre_id(home), index, need_key), who)
    return k.c.usage_ledger.events.Disputed().process_receipt(receipt, errors=DISCARD)[0]["args"]["id"]


def answer(k: Consortium, who: str, dispute_id: int, ev: tuple):
    return k.tx(k.c.usage_ledger.functions.answer(dispute_id, ev), who)


def settle_after_window(k: Consortium, epoch: int, who: str = "hpc-a"):
    """Anchors `epoch` empty for whoever has not, waits out the answer window, settles."""
    for name in NAMES:
        if not k.c.usage_ledger.functions.anchorOf(centre_id(name), epoch).call()[0]:
            k.tx(k.c.usage_ledger.functions.anchor(epoch, [], [], [], [], bytes(32), 0), name)
    last = last_anchored_at(k, epoch)
    advance(k.chain, last + 2 * WINDOW + 1 - now(k))
    return k.tx(k.c.settlement.functions.settle(epoch), who)


def collateral(k: Consortium) -> dict[str, list[int]]:
    return {n: k.c.settlement.functions.collateralOf(k.accounts[n].address).call() for n in NAMES}


def balances(k: Consortium) -> dict[str, int]:
    return {n: c[0] for n, c in collateral(k).items()}


def events(k: Consortium, contract: str, name: str, receipt) -> list[dict]:
    c = getattr(k.c, contract)
    return [e["args"] for e in getattr(c.events, name)().process_receipt(receipt, errors=DISCARD)]


@pytest.fixture
def k() -> Consortium:
    return pay_consortium()


# -- EIP-712 and pricing agree with the Python side -------------------------------------------

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
SPEC_TYPES = {  # spelled out from the protocol spec, independently of ledger.payment
    "Order": "bytes32 request,bytes32 centre,uint64 ratesVersion,uint256 maxPrice,uint64 deadline,uint256 nonce",
    "Grant": "bytes32 order,address account,bytes32 home,bytes32 centre,uint256 amount,uint64 deadline",
    "Receipt": "bytes32 record",
    "UsageRecord": "bytes32 recordId,bytes32 jobId,bytes32 servingCentre,bytes32 homeCentre,bytes32 user,"
    "uint64 epoch,uint64 startedAt,uint64 endedAt,uint64 cpuMillis,uint64 wallMillis,uint64 maxRssKib,"
    "uint64 gpuMillis,uint64 ratesVersion,uint256 price,bytes32 order,bytes32 grant,bytes32 lockHash,"
    "bytes32 decision,bytes32 groupSignature",
}


def eth_account_digest(k: Consortium, primary: str, message: dict) -> bytes:
    members = [dict(zip(("type", "name"), f.split(), strict=True)) for f in SPEC_TYPES[primary].split(",")]
    domain = {
        "name": "xcentre",
        "version": "1",
        "chainId": k.chain.chain_id,
        "verifyingContract": k.deployment.usage_ledger,
    }
    typed = {"types": {"EIP712Domain": DOMAIN_TYPE, primary: members}, "primaryType": primary, "domain": domain}
    return _hash_eip191_message(encode_typed_data(full_message={**typed, "message": message}))


def test_contract_digests_are_eth_accounts_eip712_digests(k):
    ul = k.c.usage_ledger.functions
    domain = Domain.for_deployment(k.deployment)
    anonymous = make_job(k, "hpc-b", "cloud-c", 3, record_changes={"group_signature": keccak(b"a group signature")})
    for job in (
        make_job(k, "hpc-b", "hpc-a", 1),
        make_job(k, "cloud-c", "hpc-b", 2**64 - 1, max_price=2**256 - 1),
        anonymous,
    ):
        assert ul.hashOrder(fields(job.order)).call() == eth_account_digest(k, "Order", job.order.message())
        assert ul.hashOrder(fields(job.order)).call() == order_digest(job.order, domain) == job.record.order
        assert ul.hashGrant(fields(job.grant)).call() == eth_account_digest(k, "Grant", job.grant.message())
        assert ul.hashGrant(fields(job.grant)).call() == job.record.grant
        assert ul.hashRecord(fields(job.record)).call() == eth_account_digest(k, "UsageRecord", job.record.message())
        assert ul.hashRecord(fields(job.record)).call() == job.digest
        receipt = ul.hashReceipt(job.digest).call()
        assert receipt == eth_account_digest(k, "Receipt", {"record": job.digest})
        assert receipt == receipt_digest(Receipt(record=job.digest), domain)


EDGE_METERS = [
    Meters(0, 0, 0, 0),
    Meters(1, 1, 1, 1),
    Meters(999, 1001, 1025, 3_599_999),
    Meters(1000, 2000, 1024 * 1024, 3_600_000),
    Meters(2**64 - 1, 2**64 - 1, 2**64 - 1, 2**64 - 1),
]
EDGE_RATES = [(1, 10, 3), (0, 0, 0), (7, 13, 29), (10**18, 3 * 10**18, 5), (2**256 - 1, 2**256 - 1, 2**256 - 1)]


def test_the_contract_prices_records_exactly_as_ledger_pricing(k):
    """The on-chain price (read from WrongPrice's `expected`) is min(ledger.pricing.price, grant)
    for edge meters and rates, including terms that do not fit in 256 bits."""
    fns = k.c.consortium.functions
    for i, prices in enumerate(EDGE_RATES[1:]):
        k.tx(fns.publishRates(prices, now(k) + 2 + i), "hpc-b")
    advance(k.chain, 10)
    cases = []
    for version, prices in enumerate(EDGE_RATES, start=1):
        for meters in EDGE_METERS:
            for cap in (2**100, 12_345):
                expected = min(py_price(meters, Prices(*prices)), cap)
                wrong = {"price": expected + 1}
                cases.append(
                    (
                        make_job(
                            k,
                            "hpc-b",
                            "hpc-a",
                            1,
                            meters=meters,
                            rates_version=version,
                            max_price=cap,
                            record_changes=wrong,
                        ),
                        expected,
                    )
                )
    tree = anchor(k, "hpc-b", 1, {"hpc-a": [job for job, _ in cases]})["hpc-a"]
    for index, (job, expected) in enumerate(cases):
        did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", index)
        err = reverts("WrongPrice", k.chain.call, k.c.usage_ledger.functions.answer(did, evidence(job, tree, index)))
        assert err.error_args == (expected, expected + 1), (index, job.record.rates_version)
    assert len({expected for _, expected in cases}) > 10  # the cases are not all alike


# -- the three attacks of the issue ---------------------------------------------------------------


def test_a_claim_with_root_zero_is_voided_and_the_thief_gains_nothing(k):
    """cloud-c anchors root 0 with 400,000,000 on hpc-a and 300,000,000 on hpc-b. Both dispute;
    nobody can answer; at settlement both claims are void, cloud-c's anchor bond goes to the
    first challenger, and the honest members' own work is paid as usual."""
    ul = k.c.usage_ledger.functions
    honest = make_job(k, "hpc-a", "hpc-b", 1)
    anchor(k, "hpc-a", 1, {"hpc-b": [honest]})
    k.tx(ul.anchor(1, [A, B], [bytes(32), bytes(32)], [5, 5], [400_000_000, 300_000_000], bytes(32), 0), "cloud-c")
    before = balances(k)
    first = dispute(k, "hpc-a", "cloud-c", 1, "hpc-a", 0)
    second = dispute(k, "hpc-b", "cloud-c", 1, "hpc-b", 3)
    # whatever the thief answers, no record is under root 0
    forged = make_job(k, "cloud-c", "hpc-a", 1)
    fake_tree = SumTree([(forged.digest, forged.record.price)] * 5)
    reverts("InvalidProof", k.tx, ul.answer(first, evidence(forged, fake_tree, 0)), "cloud-c")
    receipt = settle_after_window(k, 1)
    voided = events(k, "usage_ledger", "ClaimVoided", receipt)
    assert [(e["centre"], e["home"], e["disputeId"]) for e in voided] == [(C, A, first), (C, B, second)]
    assert ul.claimOf(1, C, A).call()[3] is True and ul.standing(1, C, A).call() == 0
    assert ul.disputeOf(first).call()[6] == 3 and ul.disputeOf(second).call()[6] == 3  # upheld
    after = balances(k)
    price = honest.record.price
    assert after["cloud-c"] == before["cloud-c"] - ANCHOR_BOND  # the thief gains nothing and loses its bond
    assert after["hpc-a"] == before["hpc-a"] + price + ANCHOR_BOND  # paid for its work, and the bond
    assert after["hpc-b"] == before["hpc-b"] - price  # pays only its user's job
    assert sum(after.values()) == sum(before.values()) == 3 * INITIAL
    # the dispute bonds came back and the thief's anchor bond was paid out; the honest
    # members' anchor bonds stay locked for their next anchors
    assert {n: c[1] for n, c in collateral(k).items()} == {"hpc-a": ANCHOR_BOND, "hpc-b": ANCHOR_BOND, "cloud-c": 0}


def test_records_billed_to_another_home_without_its_grant_are_voided(k):
    """cloud-c signs five made-up records billed to hpc-a (orders by fresh accounts, grants
    signed by cloud-c itself, or by another member) and anchors their sum: 250,000,000.
    hpc-a disputes one; every answer reverts; the claim is void at settlement."""
    ul = k.c.usage_ledger.functions
    big = Meters(cpu_millis=50_000_000_000, gpu_millis=0, max_rss_kib=0, wall_millis=0)
    signers = [k.accounts["cloud-c"]] * 4 + [k.accounts["hpc-b"]]
    forged = [make_job(k, "cloud-c", "hpc-a", 1, meters=big, max_price=50_000_000, grant_signer=s) for s in signers]
    assert sum(j.record.price for j in forged) == 250_000_000
    tree = anchor(k, "cloud-c", 1, {"hpc-a": forged})["hpc-a"]
    before = balances(k)
    ids = {index: dispute(k, "hpc-a", "cloud-c", 1, "hpc-a", index) for index in (2, 4)}
    for index, did in ids.items():  # its own signature, or another member's: not hpc-a's
        err = reverts("InvalidGrantSignature", k.tx, ul.answer(did, evidence(forged[index], tree, index)), "cloud-c")
        assert err.error_args == ()
    did = ids[2]
    reverts(
        "InvalidProof",
        k.tx,
        ul.answer(did, evidence(forged[4], tree, 4)[:7] + evidence(forged[2], tree, 2)[7:]),
        "cloud-c",
    )
    reverts("InvalidGrantSignature", k.tx, ul.answer(did, evidence(forged[2], tree, 2, key=forged[2].key)), "cloud-c")
    receipt = settle_after_window(k, 1)
    assert [(e["centre"], e["home"]) for e in events(k, "usage_ledger", "ClaimVoided", receipt)] == [(C, A)]
    assert events(k, "settlement", "SettlementTransfer", receipt) == []
    after = balances(k)
    assert after["hpc-a"] == before["hpc-a"] + ANCHOR_BOND and after["cloud-c"] == before["cloud-c"] - ANCHOR_BOND
    assert after["hpc-b"] == before["hpc-b"]


def test_a_debtor_moving_its_credit_away_cannot_block_settlement():
    """The old attack: the debtor moves its credit away with an ERC-20 transfer, or is claimed
    for its balance + 1, and settle reverts for everyone. Settlement now pays from collateral:
    the transfer moves nothing the settlement needs, a withdrawal waits for the epoch after
    the next, and a claim beyond the collateral is paid as far as it goes (Shortfall)."""
    k = pay_consortium(anchor_bond=0)
    s, credit = k.c.settlement.functions, k.c.credit.functions
    debtor = k.accounts["hpc-a"]
    # hpc-a takes 600,000,000 of its collateral out, properly: it waits for epoch 2 to settle
    k.tx(s.requestWithdrawal(600_000_000), "hpc-a")
    for epoch in (1, 2):
        settle_after_window(k, epoch)
    until_unlocked(k, "hpc-a")
    k.tx(s.withdraw(), "hpc-a")
    assert credit.balanceOf(debtor.address).call() == 600_000_000
    # epoch 3: hpc-b claims the debtor's whole collateral + 1
    claim = 400_000_000 + 1
    anchor(k, "hpc-b", 3, {"hpc-a": [(keccak(b"work"), claim)]})
    # the debtor moves its tokens away and asks to withdraw all its collateral
    k.tx(credit.transfer(Account.create().address, 600_000_000), "hpc-a")
    k.tx(s.requestWithdrawal(400_000_000), "hpc-a")
    err = reverts("WithdrawalLocked", k.tx, s.withdraw(), "hpc-a")
    # the highest settled (2) + 2: nothing can be anchored past it yet; and a week and more from now
    assert err.error_args == (4, s.collateralOf(debtor.address).call()[4])
    before = balances(k)
    receipt = settle_after_window(k, 3)
    assert [(e["debtor"], e["unpaid"]) for e in events(k, "settlement", "Shortfall", receipt)] == [(A, 1)]
    moved = [(e["from"], e["to"], e["amount"]) for e in events(k, "settlement", "SettlementTransfer", receipt)]
    assert moved == [(A, B, 400_000_000)]
    after = balances(k)
    assert after == {"hpc-a": 0, "hpc-b": before["hpc-b"] + 400_000_000, "cloud-c": before["cloud-c"]}
    assert sum(after.values()) == sum(before.values())
    (settled,) = events(k, "settlement", "EpochSettled", receipt)
    assert (settled["centres"], settled["net"]) == ([A, B, C], [-400_000_000, 400_000_000, 0])


# -- answers ----------------------------------------------------------------------------------


def test_a_valid_answer_by_receipt_keeps_the_claim_and_costs_the_challenger_its_bond(k):
    ul = k.c.usage_ledger.functions
    jobs = [make_job(k, "hpc-b", "hpc-a", 1) for _ in range(3)]
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    before = collateral(k)
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 1)
    assert collateral(k)["hpc-a"][1] == before["hpc-a"][1] + DISPUTE_BOND
    err = reverts("AlreadyDisputed", k.tx, ul.dispute(B, 1, A, 1, False), "cloud-c")
    assert err.error_args == (did,)
    receipt = answer(k, "hpc-b", did, evidence(jobs[1], tree, 1))
    ev = events(k, "usage_ledger", "DisputeAnswered", receipt)[0]
    assert (ev["id"], ev["recordDigest"], ev["key"]) == (did, jobs[1].digest, bytes(32))
    assert ul.disputeOf(did).call() == [k.accounts["hpc-a"].address, B, 1, A, 1, False, 2]
    reverts("DisputeNotOpen", k.tx, ul.answer(did, evidence(jobs[1], tree, 1)), "hpc-b")
    after = collateral(k)
    assert after["hpc-a"][0] == before["hpc-a"][0] - DISPUTE_BOND and after["hpc-a"][1] == before["hpc-a"][1]
    assert after["hpc-b"][0] == before["hpc-b"][0] + DISPUTE_BOND
    # answered: not again the same way (the claimant would pay to answer again and again) ...
    err = reverts("AlreadyDisputed", k.tx, ul.dispute(B, 1, A, 1, False), "cloud-c")
    assert err.error_args == (did,)
    # ... but a receipt does not give the user its key: it may still ask for it
    dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 1, need_key=True)  # only the payer home may ask
    receipt = settle_after_window(k, 1)
    assert ul.standing(1, B, A).call() == 0  # the second dispute went unanswered
    assert events(k, "usage_ledger", "ClaimVoided", receipt)[0]["home"] == A


def test_the_claim_stands_and_is_paid_when_every_dispute_is_answered(k):
    jobs = [make_job(k, "hpc-b", "hpc-a", 1) for _ in range(2)]
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0)
    answer(k, "cloud-c", did, evidence(jobs[0], tree, 0))  # anyone may carry the evidence
    before = balances(k)
    receipt = settle_after_window(k, 1)
    assert events(k, "usage_ledger", "ClaimVoided", receipt) == []
    assert balances(k)["hpc-b"] == before["hpc-b"] + tree.total
    assert balances(k)["hpc-a"] == before["hpc-a"] - tree.total


def test_a_need_key_dispute_is_answered_only_by_revealing_the_key(k):
    ul = k.c.usage_ledger.functions
    jobs = [make_job(k, "hpc-b", "hpc-a", 1) for _ in range(2)]
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    before = collateral(k)
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0, need_key=True)
    reverts("WrongKey", k.tx, ul.answer(did, evidence(jobs[0], tree, 0)), "hpc-b")  # a receipt does not do
    reverts("WrongKey", k.tx, ul.answer(did, evidence(jobs[0], tree, 0, key=jobs[1].key)), "hpc-b")
    receipt = answer(k, "hpc-b", did, evidence(jobs[0], tree, 0, key=jobs[0].key))
    ev = events(k, "usage_ledger", "DisputeAnswered", receipt)[0]
    assert ev["key"] == jobs[0].key and lock_hash(ev["key"]) == jobs[0].record.lock_hash  # the user reads k here
    assert collateral(k)["hpc-a"] == before["hpc-a"]  # the user lacked the key: its bond comes back
    assert collateral(k)["hpc-b"][0] == before["hpc-b"][0]


def test_without_need_key_a_receipt_or_the_key_answers_and_nothing_else(k):
    ul = k.c.usage_ledger.functions
    jobs = [make_job(k, "hpc-b", "hpc-a", 1) for _ in range(2)]
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0)
    domain = Domain.for_deployment(k.deployment)
    stranger = sign_typed(Receipt(record=jobs[0].digest), domain, Account.create())
    for bad in (b"", stranger, jobs[1].receipt_sig, jobs[0].receipt_sig[:64], b"\x00" * 65):
        reverts("NoReceipt", k.tx, ul.answer(did, evidence(jobs[0], tree, 0, receipt=bad)), "hpc-b")
    reverts("NoReceipt", k.tx, ul.answer(did, evidence(jobs[0], tree, 0, receipt=b"", key=jobs[1].key)), "hpc-b")
    receipt = answer(k, "hpc-b", did, evidence(jobs[0], tree, 0, receipt=b"", key=jobs[0].key))
    assert events(k, "usage_ledger", "DisputeAnswered", receipt)[0]["key"] == jobs[0].key


def test_every_rule_of_an_answer_refuses_with_its_error(k):
    """One claim of hpc-b on hpc-a with a valid record at 0 and, after it, records that each
    break one rule; each dispute's answer reverts with the rule's error. Unanswered, they
    void the claim."""
    ul = k.c.usage_ledger.functions
    t = now(k)
    good = make_job(k, "hpc-b", "hpc-a", 1)
    outsider = Account.create()
    booking = k.c.usage_ledger.functions.bookingDelay().call()
    bad = {
        "OrderMismatch": make_job(k, "hpc-b", "hpc-a", 1, order_changes={"centre": C}),
        "InvalidOrderSignature": make_job(k, "hpc-b", "hpc-a", 1, order_signer=outsider),
        "GrantMismatch": make_job(k, "hpc-b", "hpc-a", 1, grant_changes={"amount": 10**6 + 1}),
        "InvalidGrantSignature": make_job(k, "hpc-b", "hpc-a", 1, grant_signer=k.accounts["hpc-b"]),
        "WrongPrice": make_job(k, "hpc-b", "hpc-a", 1, record_changes={"price": 1}),
        "UnknownRates": make_job(k, "hpc-b", "hpc-a", 1, rates_version=9),
        "Late": make_job(k, "hpc-b", "hpc-a", 1, deadline=t - booking - 1),
    }
    late_end = make_job(k, "hpc-b", "hpc-a", 1, deadline=t - 50, record_changes={"ended_at": t - 49})
    other_deadline = make_job(k, "hpc-b", "hpc-a", 1, grant_changes={"deadline": t + 5})
    other_home = make_job(k, "hpc-b", "hpc-a", 1, grant_changes={"home": C})
    jobs = [good, *bad.values(), late_end, other_deadline, other_home]
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    expected = [*bad, "Late", "GrantMismatch", "GrantMismatch"]
    for index, (job, error) in enumerate(zip(jobs[1:], expected, strict=True), start=1):
        did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", index)
        reverts(error, k.tx, ul.answer(did, evidence(job, tree, index)), "hpc-b")
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0)
    # rules 1-2: the record must be the disputed leaf of this claim
    ev = evidence(good, tree, 0)
    other = replace(good.record, home_centre=C)
    reverts("WrongRecord", k.tx, ul.answer(did, (fields(other), *ev[1:])), "hpc-b")
    reverts("InvalidProof", k.tx, ul.answer(did, evidence(jobs[1], tree, 1)), "hpc-b")  # another leaf
    reverts("InvalidProof", k.tx, ul.answer(did, (*ev[:7], ev[7][:-1], ev[8][:-1])), "hpc-b")  # short proof
    answer(k, "hpc-b", did, ev)
    receipt = settle_after_window(k, 1)
    assert [e["disputeId"] for e in events(k, "usage_ledger", "ClaimVoided", receipt)] == [1]  # voided once


def test_an_anchor_locks_its_whole_bond_or_is_refused(k):
    """A claim that nothing backs is no claim: the anchor bond is locked in full or the anchor reverts."""
    ul, s = k.c.usage_ledger.functions, k.c.settlement.functions
    account = k.accounts["hpc-a"].address
    k.tx(s.requestWithdrawal(INITIAL - ANCHOR_BOND + 1), "hpc-a")  # one short of a whole bond stays free
    err = reverts("InsufficientCollateral", k.tx, ul.anchor(1, [B], [b"\x01" * 32], [1], [5], bytes(32), 0), "hpc-a")
    assert err.error_args == (account.lower(), ANCHOR_BOND - 1, ANCHOR_BOND)
    assert ul.anchorOf(A, 1).call()[0] is False and ul.bondOf(A).call()[1] == 0  # nothing kept of it
    assert s.collateralOf(account).call()[1] == 0
    k.tx(ul.anchor(1, [A], [b"\x01" * 32], [1], [5], bytes(32), 0), "hpc-b")  # a centre with a whole bond free anchors
    assert ul.bondOf(B).call() == [k.accounts["hpc-b"].address, ANCHOR_BOND]


def test_an_anchor_counting_more_than_a_uint64_of_records_is_refused(k):
    ul = k.c.usage_ledger.functions
    err = reverts(
        "TooManyRecords", k.tx, ul.anchor(1, [A, B], [bytes(32)] * 2, [2**64 - 1, 1], [0, 0], bytes(32), 0), "cloud-c"
    )
    assert err.error_args == (2**64,)
    k.tx(ul.anchor(1, [A, B], [bytes(32)] * 2, [2**64 - 2, 1], [0, 0], bytes(32), 0), "cloud-c")
    assert ul.anchorOf(C, 1).call()[2] == 2**64 - 1


def test_disputes_and_answers_keep_to_their_windows_and_bonds(k):
    ul = k.c.usage_ledger.functions
    jobs = [make_job(k, "hpc-b", "hpc-a", 1) for _ in range(2)]
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    err = reverts("NoClaim", k.tx, ul.dispute(B, 1, C, 0, False), "hpc-a")
    assert err.error_args == (B, 1, C)
    reverts("NoClaim", k.tx, ul.dispute(B, 2, A, 0, False), "hpc-a")
    err = reverts("IndexOutOfRange", k.tx, ul.dispute(B, 1, A, 2, False), "hpc-a")
    assert err.error_args == (2, 2)
    poor = k.outsider()
    err = reverts("InsufficientCollateral", k.tx, ul.dispute(B, 1, A, 0, False), poor)
    assert err.error_args == (poor.address.lower(), 0, DISPUTE_BOND)
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0)
    anchored_at = ul.anchorOf(B, 1).call()[1]
    advance(k.chain, anchored_at + WINDOW + 1 - now(k))
    err = reverts("TooLate", k.tx, ul.dispute(B, 1, A, 1, False), "hpc-a")
    assert err.error_args == (anchored_at + WINDOW,)
    answer(k, "hpc-b", did, evidence(jobs[0], tree, 0))  # answers are due until 2 windows
    k2 = pay_consortium()
    job = make_job(k2, "hpc-b", "hpc-a", 1)
    tree2 = anchor(k2, "hpc-b", 1, {"hpc-a": [job]})["hpc-a"]
    did2 = dispute(k2, "hpc-a", "hpc-b", 1, "hpc-a", 0)
    at2 = k2.c.usage_ledger.functions.anchorOf(B, 1).call()[1]
    advance(k2.chain, at2 + 2 * WINDOW + 1 - now(k2))
    err = reverts("TooLate", k2.tx, k2.c.usage_ledger.functions.answer(did2, evidence(job, tree2, 0)), "hpc-b")
    assert err.error_args == (at2 + 2 * WINDOW,)
    reverts("DisputeNotOpen", k2.tx, k2.c.usage_ledger.functions.answer(99, evidence(job, tree2, 0)), "hpc-b")


def test_billing_one_grant_twice_voids_the_claim_at_once(k):
    ul = k.c.usage_ledger.functions
    once = make_job(k, "hpc-b", "hpc-a", 1)
    twice = replace(once.record, record_id=secrets.token_bytes(32))  # same order, same grant
    domain = Domain.for_deployment(k.deployment)
    second = replace(once, record=twice, digest=record_digest(twice, domain))
    honest = make_job(k, "hpc-b", "hpc-a", 1)
    tree = anchor(k, "hpc-b", 1, {"hpc-a": [once, honest, second]})["hpc-a"]

    def leaf(epoch: int, index: int, job: Job, t: SumTree) -> tuple:
        p = t.proof(index)
        return (epoch, index, fields(job.record), list(p.hashes), list(p.sums))

    reverts("NotDuplicate", k.tx, ul.disputeDuplicate(B, A, leaf(1, 0, once, tree), leaf(1, 0, once, tree)), "cloud-c")
    reverts(
        "NotDuplicate", k.tx, ul.disputeDuplicate(B, A, leaf(1, 0, once, tree), leaf(1, 1, honest, tree)), "cloud-c"
    )
    forged = (1, 1, fields(twice), leaf(1, 1, honest, tree)[3], leaf(1, 1, honest, tree)[4])
    reverts("InvalidProof", k.tx, ul.disputeDuplicate(B, A, leaf(1, 0, once, tree), forged), "cloud-c")
    before = balances(k)
    receipt = k.tx(ul.disputeDuplicate(B, A, leaf(1, 0, once, tree), leaf(1, 2, second, tree)), "cloud-c")
    ev = events(k, "usage_ledger", "ClaimVoided", receipt)[0]
    assert (ev["centre"], ev["epoch"], ev["home"], ev["disputeId"]) == (B, 1, A, 0)
    assert balances(k)["cloud-c"] == before["cloud-c"] + ANCHOR_BOND
    assert balances(k)["hpc-b"] == before["hpc-b"] - ANCHOR_BOND
    reverts(
        "AlreadyVoided", k.tx, ul.disputeDuplicate(B, A, leaf(1, 0, once, tree), leaf(1, 2, second, tree)), "cloud-c"
    )
    reverts("AlreadyVoided", k.tx, ul.dispute(B, 1, A, 1, False), "hpc-a")
    # across epochs: the same grant billed again in epoch 2 voids epoch 2's claim
    third = replace(once.record, record_id=secrets.token_bytes(32), epoch=2)
    again = replace(once, record=third, digest=record_digest(third, domain))
    tree2 = anchor(k, "hpc-b", 2, {"hpc-a": [again]})["hpc-a"]
    k.tx(ul.disputeDuplicate(B, A, leaf(1, 0, once, tree), leaf(2, 0, again, tree2)), "hpc-a")
    assert ul.claimOf(2, B, A).call()[3] is True


# -- cost --------------------------------------------------------------------------------------


def test_gas_of_anchor_settle_and_a_depth_14_answer(k, capsys):
    """The honest path costs one anchor per centre and one settle per epoch; an answer with a
    proof of depth 14 (16,384 records on one home) stays under 200k gas."""
    job = make_job(k, "hpc-b", "hpc-a", 1)
    n = 2**14
    pairs = [(keccak(i.to_bytes(4, "big")), 3) for i in range(n - 1)]
    index = n - 1000
    pairs.insert(index, (job.digest, job.record.price))
    trees = {"hpc-a": SumTree(pairs), "cloud-c": SumTree([(keccak(b"c"), 5)])}
    homes = list(trees)
    ul = k.c.usage_ledger.functions
    anchor_rx = k.tx(
        ul.anchor(
            1,
            [centre_id(h) for h in homes],
            [trees[h].root for h in homes],
            [trees[h].count for h in homes],
            [trees[h].total for h in homes],
            bytes(32),
            0,
        ),
        "hpc-b",
    )
    anchor(k, "hpc-a", 1, {"hpc-b": [(keccak(b"b"), 17)], "cloud-c": [(keccak(b"a"), 7)]})
    anchor(k, "cloud-c", 1, {"hpc-a": [(keccak(b"x"), 11)], "hpc-b": [(keccak(b"y"), 13)]})
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", index)
    answer_rx = answer(k, "hpc-b", did, evidence(job, trees["hpc-a"], index))
    assert len(trees["hpc-a"].proof(index).hashes) == 14
    settle_rx = settle_after_window(k, 1)
    assert len(events(k, "settlement", "SettlementTransfer", settle_rx)) == 2
    gas = {
        "anchor (2 homes)": anchor_rx["gasUsed"],
        "settle (3 members)": settle_rx["gasUsed"],
        "answer (depth 14)": answer_rx["gasUsed"],
    }
    with capsys.disabled():
        print(f"\ngas: {gas}")
    assert gas["answer (depth 14)"] < 200_000
    # ceilings against regressions: 2 storage slots per home, 1 per anchor, and this first
    # anchor also locks the bond (kept across epochs); the first anchor of an epoch also starts
    # the running net of each centre it names (one slot each) and the epoch's book (one slot),
    # so that settle reads n nets, not n^2 claims; settle stores one bit per epoch
    assert gas["anchor (2 homes)"] < 330_000 and gas["settle (3 members)"] < 200_000


def test_a_grant_is_answered_at_one_leaf_only(k):
    """A centre withholding its evidence is disputed on every index; two leaves naming one real
    grant must not both stand: the second answer reverts GrantAlreadyAnswered and, unanswered,
    voids the claim at settlement. The leaf that was answered may still be asked for its key."""
    ul = k.c.usage_ledger.functions
    once = make_job(k, "hpc-b", "hpc-a", 1)
    copy = replace(once.record, record_id=secrets.token_bytes(32))  # same order, same grant
    domain = Domain.for_deployment(k.deployment)
    digest = record_digest(copy, domain)
    receipt_sig = sign_typed(Receipt(record=digest), domain, once.account)  # the user signed both
    second = replace(once, record=copy, digest=digest, receipt_sig=receipt_sig)
    tree = anchor(k, "hpc-b", 1, {"hpc-a": [once, second]})["hpc-a"]
    first_id, second_id = (dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", i) for i in (0, 1))
    answer(k, "hpc-b", first_id, evidence(once, tree, 0))
    err = reverts("GrantAlreadyAnswered", k.tx, ul.answer(second_id, evidence(second, tree, 1)), "hpc-b")
    leaf = keccak(encode(["bytes32", "uint64", "bytes32", "uint64"], [B, 1, A, 0]))
    assert err.error_args == (once.record.grant, leaf)
    reverts("GrantAlreadyAnswered", k.tx, ul.answer(second_id, evidence(second, tree, 1, key=second.key)), "hpc-b")
    need_key = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0, need_key=True)
    answer(k, "hpc-b", need_key, evidence(once, tree, 0, key=once.key))  # the same leaf: answered again
    before = balances(k)
    receipt = settle_after_window(k, 1)
    assert [(e["centre"], e["home"], e["disputeId"]) for e in events(k, "usage_ledger", "ClaimVoided", receipt)] == [
        (B, A, second_id)
    ]
    assert ul.standing(1, B, A).call() == 0 and ul.disputeOf(second_id).call()[6] == 3
    assert balances(k)["hpc-a"] == before["hpc-a"] + ANCHOR_BOND  # pays nothing, wins the bond


def test_the_honest_path_costs_under_100_gas_per_job_over_10000_jobs(k):
    """Three centres each anchor sum trees on the three homes (their own included) of an epoch of
    10,000 jobs, then one settle: under 1,000,000 gas in all, once the anchor bonds are locked
    (they stay locked across epochs; the first epoch also pays for locking them)."""
    rng = random.Random(8)
    gas = {}
    for epoch in (1, 2):
        leaves = {c: {h: [] for h in NAMES} for c in NAMES}
        for j in range(10_000):
            leaves[NAMES[j % 3]][rng.choice(NAMES)].append((rng.randbytes(32), rng.randrange(1, 100_000)))
        trees = {c: {h: SumTree(p) for h, p in homes.items()} for c, homes in leaves.items()}
        used = []
        for c, t in trees.items():
            fn = k.c.usage_ledger.functions.anchor(
                epoch,
                [centre_id(h) for h in t],
                [x.root for x in t.values()],
                [x.count for x in t.values()],
                [x.total for x in t.values()],
                bytes(32),
                0,
            )
            used.append(k.tx(fn, c)["gasUsed"])
        used.append(settle_after_window(k, epoch)["gasUsed"])
        gas[epoch] = used
    assert sum(gas[2]) < 1_000_000, gas
    # + the bonds, + the first epoch's running-net slots, + the quorum read until its clock starts
    assert sum(gas[1]) < 1_180_000, gas
    assert all(k.c.usage_ledger.functions.bondOf(centre_id(n)).call()[1] == ANCHOR_BOND for n in NAMES)
