"""check_evidence mirrors UsageLedger.answer rules 1-7; RecordEvidence is the evidence endpoint's JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_account import Account
from eth_utils import keccak

from ledger.deploy import Prices
from ledger.evidence import EvidenceError, RecordEvidence, check_evidence
from ledger.ids import centre_id
from ledger.index.rows import ClaimInfo
from ledger.lock import lock_hash
from ledger.payment import Grant, Order, Receipt, grant_digest, order_digest, sign_typed
from ledger.pricing import price
from ledger.records import record_digest, sign_record
from ledger.sumtree import SumTree
from tests.test_records import DOMAIN, record

USER = Account.from_key("0x" + "11" * 32)  # the order's payment account
HOME = Account.from_key("0x" + "22" * 32)  # hpc-a's member account
SERVING = Account.from_key("0x" + "33" * 32)  # hpc-b's member account
STRANGER = Account.from_key("0x" + "44" * 32)
RATES = Prices(per_cpu_second=1000, per_gpu_second=0, per_gib_hour=7200)
KEY = bytes(range(32))
A, B = centre_id("hpc-a"), centre_id("hpc-b")
DEADLINE = 1_700_003_600
ANCHORED_AT = 1_700_004_000
BOOKING_DELAY = 86_400


def build(order_changes=None, grant_changes=None, record_changes=None, order_key=USER, grant_key=HOME, receipt=True):
    order = Order(
        request=keccak(text="request"),
        centre=B,
        rates_version=2,
        max_price=100_000,
        deadline=DEADLINE,
        nonce=12345,
    )
    order = replace(order, **(order_changes or {}))
    od = order_digest(order, DOMAIN)
    grant = Grant(order=od, account=USER.address, home=A, centre=B, amount=order.max_price, deadline=order.deadline)
    grant = replace(grant, **(grant_changes or {}))
    values = dict(
        order=od,
        grant=grant_digest(grant, DOMAIN),
        lock_hash=lock_hash(KEY),
        price=0,
        serving_centre=B,
        home_centre=A,
        epoch=7,
    )
    template = record(**values)
    values["price"] = min(price(template, RATES), grant.amount)
    values.update(record_changes or {})
    rec = record(**values)
    other = replace(rec, record_id=keccak(text="other"), price=5)
    leaves = [(record_digest(other, DOMAIN), other.price), (record_digest(rec, DOMAIN), rec.price)]
    tree = SumTree([*leaves, (keccak(text="third"), 9)])
    rd = record_digest(rec, DOMAIN)
    ev = RecordEvidence(
        record=rec,
        signature=sign_record(rec, DOMAIN, SERVING.key),
        order=order,
        order_signature=sign_typed(order, DOMAIN, order_key.key),
        grant=grant,
        grant_signature=sign_typed(grant, DOMAIN, grant_key.key),
        receipt_signature=sign_typed(Receipt(record=rd), DOMAIN, USER.key) if receipt else None,
        index=1,
        proof=tree.proof(1),
    )
    claim = ClaimInfo(centre=B, epoch=7, home=A, root=tree.root, count=tree.count, total=tree.total)
    return ev, claim


def check(ev, claim, **changes):
    kwargs = dict(
        domain=DOMAIN,
        home_account=HOME.address,
        rates=RATES,
        anchored_at=ANCHORED_AT,
        booking_delay=BOOKING_DELAY,
        claim=claim,
    )
    kwargs.update(changes)
    return check_evidence(ev, **kwargs)


def only(findings, phrase):
    assert len(findings) == 1 and phrase in findings[0], findings
    return findings[0]


def test_valid_evidence_has_no_findings():
    ev, claim = build()
    assert ev.record.price > 0
    assert check(ev, claim) == []
    assert check(ev, None) == []  # without a claim: rules 3-7 against the record's own centres
    assert check(ev, claim, key=KEY) == []
    assert check(ev, claim, key=KEY, need_key=True) == []


def test_rule_1_claim_of_another_centre_home_or_epoch():
    ev, claim = build()
    only(check(ev, replace(claim, epoch=8)), "epoch")
    assert any("serving centre" in f for f in check(ev, replace(claim, centre=A)))
    assert any("home" in f for f in check(ev, replace(claim, home=B)))


def test_rule_2_proof_must_match_the_claim():
    ev, claim = build()
    only(check(replace(ev, index=0), claim), "sum proof")
    only(check(ev, replace(claim, total=claim.total + 1)), "sum proof")
    tampered = replace(ev, record=replace(ev.record, price=ev.record.price - 1))
    assert any("sum proof" in f for f in check(tampered, claim))


def test_rule_3_order_for_another_centre():
    ev, claim = build(order_changes={"centre": A})
    only(check(ev, claim), "order is for hpc-a")


def test_rule_3_wrong_rates_version():
    ev, claim = build(order_changes={"rates_version": 3})
    only(check(ev, claim), "rates version")


def test_rule_3_order_not_signed_by_the_granted_account():
    ev, claim = build(order_key=STRANGER)
    only(check(ev, claim), "order is not signed by the granted account")


def test_rule_3_record_names_another_order():
    ev, claim = build(record_changes={"order": keccak(text="another order")})
    findings = check(ev, claim)
    assert any("does not name this order" in f for f in findings)


def test_rule_4_grant_from_another_home():
    ev, claim = build(grant_key=STRANGER)
    only(check(ev, claim), "grant is not signed by hpc-a's account")
    ev, claim = build(grant_changes={"home": B})
    assert any("grant is from hpc-b" in f for f in check(ev, claim))


def test_rule_4_grant_must_match_the_order():
    ev, claim = build(grant_changes={"amount": 100_001})
    assert any("more than the order's maximum" in f for f in check(ev, claim))
    ev, claim = build(grant_changes={"deadline": DEADLINE + 1})
    assert any("deadline" in f for f in check(ev, claim))
    ev, claim = build(grant_changes={"order": keccak(text="x")})
    assert any("grant is for another order" in f for f in check(ev, claim))
    ev, claim = build(grant_changes={"centre": A})
    assert any("grant is for hpc-a" in f for f in check(ev, claim))


def test_rule_5_price_recomputed_and_capped_at_the_grant():
    ev, claim = build(record_changes={"price": 999})
    only(check(ev, claim), "priced 999")
    ev, claim = build(grant_changes={"amount": 10})
    assert ev.record.price == 10  # capped
    assert check(ev, claim) == []
    ev, claim = build()
    only(check(ev, claim, rates=None), "never published")


def test_rule_6_deadlines():
    ev, claim = build(record_changes={"ended_at": DEADLINE + 1})
    only(check(ev, claim), "ended at")
    ev, claim = build()
    only(check(ev, claim, anchored_at=DEADLINE + BOOKING_DELAY + 1), "anchored at")
    assert check(ev, claim, anchored_at=DEADLINE + BOOKING_DELAY) == []


def test_rule_7_receipt_or_key():
    ev, claim = build(receipt=False)
    only(check(ev, claim), "neither a receipt nor the key")
    assert check(ev, claim, key=KEY) == []
    only(check(ev, claim, key=b"\x01" * 32), "key does not match")
    ev, claim = build()
    only(check(ev, claim, need_key=True), "only the key")
    only(check(ev, claim, need_key=True, key=b"\x01" * 32), "key does not match")
    assert check(ev, claim, key=b"\x01" * 32) == []  # as answer(): a receipt answers beside a wrong key


def test_rules_1_to_6_alone_without_delivery():
    """delivery=False: the terms only (the home's watcher judges delivery by the receipt itself)."""
    ev, claim = build(receipt=False)
    assert check(ev, claim, delivery=False) == []
    late, claim = build(record_changes={"ended_at": DEADLINE + 1}, receipt=False)
    only(check(late, claim, delivery=False), "after the order's deadline")
    with pytest.raises(EvidenceError, match="delivery"):
        check(ev, claim, delivery=False, key=KEY)
    with pytest.raises(EvidenceError, match="delivery"):
        check(ev, claim, delivery=False, need_key=True)


def test_rule_7_receipt_for_another_record():
    ev, claim = build()
    wrong = sign_typed(Receipt(record=keccak(text="another record")), DOMAIN, USER.key)
    only(check(replace(ev, receipt_signature=wrong), claim), "receipt is not signed by the granted account")
    malformed = check(replace(ev, receipt_signature=b"\x00" * 65), claim)
    only(malformed, "receipt")


def test_malformed_signatures_are_findings_not_crashes():
    ev, claim = build()
    assert any("order signature" in f for f in check(replace(ev, order_signature=b"\x00" * 65), claim))
    assert any("grant signature" in f for f in check(replace(ev, grant_signature=b"\x01" * 65), claim))


def test_bad_arguments_raise():
    ev, claim = build()
    with pytest.raises(EvidenceError):
        check(ev, claim, key=b"short")
    with pytest.raises(EvidenceError):
        check(ev, claim, home_account="nope")
    with pytest.raises(EvidenceError):
        check(ev, claim, anchored_at=-1)
    with pytest.raises(EvidenceError):
        check(ev, claim, booking_delay=True)
    with pytest.raises(EvidenceError, match="root"):
        check(ev, replace(claim, root=b"x"))
    with pytest.raises(EvidenceError, match="count"):
        check(ev, replace(claim, count=0))


def test_bundle_json_round_trip():
    ev, _ = build()
    data = json.loads(json.dumps(ev.to_dict()))
    assert set(data) == {
        "record",
        "signature",
        "order",
        "order_signature",
        "grant",
        "grant_signature",
        "receipt_signature",
        "index",
        "proof",
    }
    assert RecordEvidence.from_dict(data) == ev
    assert data["proof"]["hashes"][0].startswith("0x") and data["signature"].startswith("0x")
    no_receipt, _ = build(receipt=False)
    assert no_receipt.to_dict()["receipt_signature"] is None
    assert RecordEvidence.from_dict(no_receipt.to_dict()) == no_receipt


@pytest.mark.parametrize(
    "mutate, phrase",
    [
        (lambda d: d.pop("grant"), "missing"),
        (lambda d: d.update(extra=1), "unexpected"),
        (lambda d: d.update(index=-1), "index"),
        (lambda d: d.update(index=True), "index"),
        (lambda d: d.update(signature="0x" + "00" * 64), "signature"),
        (lambda d: d.update(order_signature="0xzz"), "order_signature"),
        (lambda d: d.update(receipt_signature=5), "receipt_signature"),
        (lambda d: d["record"].pop("lock_hash"), "lock_hash"),
        (lambda d: d["order"].update(max_price=-1), "max_price"),
        (lambda d: d["grant"].update(account="0x12"), "account"),
        (lambda d: d["proof"].update(sums=[1]), "proof"),
    ],
)
def test_malformed_bundles_are_refused_clearly(mutate, phrase):
    ev, _ = build()
    data = ev.to_dict()
    mutate(data)
    with pytest.raises(EvidenceError, match=phrase):
        RecordEvidence.from_dict(data)


def test_bundle_must_be_an_object():
    with pytest.raises(EvidenceError):
        RecordEvidence.from_dict([1])
