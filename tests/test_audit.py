"""An auditor recomputes an epoch from the payment evidence and the chain, and catches tampering."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from eth_account import Account
from web3.logs import DISCARD

from ledger.audit import AuditReport, verify_epoch
from ledger.evidence import RecordEvidence
from ledger.ids import centre_id, user_id
from ledger.lock import lock_hash
from ledger.payment import Grant, Order, Receipt, grant_digest, order_digest, sign_typed
from ledger.records import Domain, UsageRecord, record_digest, sign_record
from ledger.sumtree import SumTree
from tests.test_contracts import Consortium, advance, make_consortium

NAMES = ["hpc-a", "hpc-b", "hpc-c"]
A, B, C = (centre_id(n) for n in NAMES)
WINDOW = 100
STARTED = 2_000_000_000


@dataclass
class Books:
    k: Consortium
    domain: Domain
    evidence: dict[int, dict[bytes, list[RecordEvidence]]]  # epoch -> centre -> evidence


def key_of(n: int) -> bytes:
    return n.to_bytes(32, "big")


def evidence(
    k: Consortium,
    domain: Domain,
    n: int,
    epoch: int,
    serving: str,
    home: str,
    price: int,
    *,
    grant_by=None,
    receipt=True,
) -> RecordEvidence:
    """One job of `price` (cpu-seconds at 1 per second), ordered, granted, recorded and receipted."""
    user = Account.create()
    order = Order(
        request=key_of(10_000 + n),
        centre=centre_id(serving),
        rates_version=1,
        max_price=price + 5,
        deadline=STARTED * 2,
        nonce=n,
    )
    od = order_digest(order, domain)
    grant = Grant(
        order=od,
        account=user.address,
        home=centre_id(home),
        centre=centre_id(serving),
        amount=price + 5,
        deadline=order.deadline,
    )
    record = UsageRecord(
        record_id=key_of(n),
        job_id=key_of(1000 + n),
        serving_centre=centre_id(serving),
        home_centre=centre_id(home),
        user=user_id(f"user{n}@{home}"),
        epoch=epoch,
        started_at=STARTED + n,
        ended_at=STARTED + 60 + n,
        cpu_millis=price * 1000,
        wall_millis=60_000,
        max_rss_kib=0,
        gpu_millis=0,
        rates_version=1,
        price=price,
        order=od,
        grant=grant_digest(grant, domain),
        lock_hash=lock_hash(key_of(n)),
        decision=key_of(2000 + n),
    )
    rd = record_digest(record, domain)
    return RecordEvidence(
        record=record,
        signature=sign_record(record, domain, k.accounts[serving].key),
        order=order,
        order_signature=sign_typed(order, domain, user.key),
        grant=grant,
        grant_signature=sign_typed(grant, domain, (grant_by or k.accounts[home]).key),
        receipt_signature=sign_typed(Receipt(record=rd), domain, user.key) if receipt else None,
        index=0,
        proof=SumTree([(rd, price)]).proof(0),
    )


def anchor(k: Consortium, domain: Domain, epoch: int, centre: str, evs: list[RecordEvidence]) -> list[RecordEvidence]:
    """Anchors one sum tree per home; returns the evidence with indices and proofs filled in."""
    homes: dict[bytes, list[RecordEvidence]] = {}
    for ev in evs:
        homes.setdefault(ev.record.home_centre, []).append(ev)
    out, roots, counts, totals = [], [], [], []
    for home_evs in homes.values():
        tree = SumTree((record_digest(ev.record, domain), ev.record.price) for ev in home_evs)
        roots.append(tree.root)
        counts.append(tree.count)
        totals.append(tree.total)
        out += [dataclasses.replace(ev, index=i, proof=tree.proof(i)) for i, ev in enumerate(home_evs)]
    k.tx(k.c.usage_ledger.functions.anchor(epoch, list(homes), roots, counts, totals, bytes(32), 0), centre)
    return out


def answer_with_key(k: Consortium, dispute_id: int, ev: RecordEvidence, key: bytes, centre: str) -> None:
    fn = k.c.usage_ledger.functions.answer(
        dispute_id,
        (
            ev.record.as_tuple(),
            ev.order.as_tuple(),
            ev.order_signature,
            ev.grant.as_tuple(),
            ev.grant_signature,
            ev.receipt_signature or b"",
            key,
            list(ev.proof.hashes),
            list(ev.proof.sums),
        ),
    )
    k.tx(fn, centre)


def dispute(k: Consortium, centre: bytes, epoch: int, home: bytes, index: int, need_key: bool, who: str) -> int:
    fn = k.c.usage_ledger.functions.dispute(centre, epoch, home, index, need_key)
    receipt = k.tx(fn, who)
    return k.c.usage_ledger.events.Disputed().process_receipt(receipt, errors=DISCARD)[0]["args"]["id"]


@pytest.fixture(scope="module")
def books() -> Books:
    """Epoch 1: hpc-a serves b twice, c once and one of its own users; hpc-b serves a twice, one
    of them without a receipt (disputed needKey, answered by revealing the key); hpc-c bills a
    made-up job to a with a grant it signed itself (disputed, unanswered: voided).
    Epoch 2: hpc-a bills hpc-b more than hpc-b's collateral (a shortfall)."""
    k = make_consortium(NAMES, quorum=2, initial=1000, dispute_window=WINDOW, anchor_bond=10, dispute_bond=5)
    domain = Domain.for_deployment(k.deployment)
    e1 = {
        A: [
            evidence(k, domain, n, 1, "hpc-a", home, price)
            for n, home, price in [(1, "hpc-b", 40), (2, "hpc-b", 15), (3, "hpc-c", 25), (4, "hpc-a", 99)]
        ],
        B: [
            evidence(k, domain, 5, 1, "hpc-b", "hpc-a", 30),
            evidence(k, domain, 6, 1, "hpc-b", "hpc-a", 12, receipt=False),
        ],
        C: [evidence(k, domain, 7, 1, "hpc-c", "hpc-a", 300, grant_by=k.accounts["hpc-c"])],
    }
    e1 = {c: anchor(k, domain, 1, centre_name_of(c), evs) for c, evs in e1.items()}
    unreceipted = e1[B][1]
    answer_with_key(k, dispute(k, B, 1, A, 1, True, "hpc-a"), unreceipted, key_of(6), "hpc-b")
    dispute(k, C, 1, A, 0, False, "hpc-a")  # hpc-c cannot answer
    e2 = {
        A: anchor(k, domain, 2, "hpc-a", [evidence(k, domain, 8, 2, "hpc-a", "hpc-b", 5000)]),
        B: anchor(k, domain, 2, "hpc-b", []),
        C: anchor(k, domain, 2, "hpc-c", []),
    }
    advance(k.chain, 2 * WINDOW + 1)
    k.tx(k.c.settlement.functions.settle(1), "hpc-b")
    k.tx(k.c.settlement.functions.settle(2), "hpc-b")
    return Books(k, domain, {1: e1, 2: e2})


def centre_name_of(centre: bytes) -> str:
    return centre.rstrip(b"\0").decode()


def audit(books: Books, epoch: int = 1, evidence=None) -> AuditReport:
    ev = evidence if evidence is not None else books.evidence[epoch]
    return verify_epoch(epoch, ev, books.k.chain, books.k.deployment, books.domain)


def copy(books: Books, epoch: int = 1) -> dict[bytes, list[RecordEvidence]]:
    return {c: list(evs) for c, evs in books.evidence[epoch].items()}


def has(report: AuditReport, *fragments: str) -> bool:
    return any(all(f in line for f in fragments) for line in report.findings)


def test_clean_epoch_passes_with_the_voided_claim_noted(books):
    report = audit(books)
    assert report.ok, report.findings
    assert report.settled
    a = report.totals["hpc-a"]
    assert (a.records, a.amount) == (4, 40 + 15 + 25 + 99)
    assert a.claims == {"hpc-b": 55, "hpc-c": 25}
    assert a.anchored_claims == {"hpc-b": 55, "hpc-c": 25, "hpc-a": 99}  # own users anchored, never claimed
    assert report.totals["hpc-c"].voided == ["hpc-a"]
    assert any("hpc-c: its claim on hpc-a" in n and "voided" in n for n in report.notes)
    assert any("grant is not signed by hpc-a's account" in n for n in report.notes)  # the thief's, remedied
    # standing: a is owed 55 + 25, owes 42 (c's 300 is void): a +38, b 42 - 55 = -13, c -25
    assert report.net == {"hpc-a": 38, "hpc-b": -13, "hpc-c": -25}
    assert {n: t.net for n, t in report.totals.items()} == report.net
    assert report.transfers == [("hpc-b", "hpc-a", 13), ("hpc-c", "hpc-a", 25)]
    assert report.shortfalls == {}


def test_a_shortfall_is_recomputed_from_collateral(books):
    report = audit(books, 2)
    assert report.ok, report.findings
    assert report.shortfalls and report.shortfalls["hpc-b"] > 0
    paid = 5000 - report.shortfalls["hpc-b"]
    assert report.net == {"hpc-a": paid, "hpc-b": -paid, "hpc-c": 0}


def test_the_key_revealed_on_chain_stands_for_a_missing_receipt(books):
    """Without the reveal, hpc-b's unreceipted record would be a finding: the audit read the key from the chain."""
    ev = books.evidence[1][B][1]
    assert ev.receipt_signature is None
    report = audit(books)
    assert not has(report, "neither a receipt nor the key")


def test_a_record_with_neither_receipt_nor_key_is_a_finding(books):
    evs = copy(books)
    evs[A][0] = dataclasses.replace(evs[A][0], receipt_signature=None)
    report = audit(books, evidence=evs)
    assert not report.ok and has(report, "hpc-a on hpc-b", "neither a receipt nor the key")


def test_changed_price_is_detected(books):
    evs = copy(books)
    ev = evs[A][0]
    changed = dataclasses.replace(ev.record, price=ev.record.price + 1, cpu_millis=ev.record.cpu_millis + 1000)
    k = books.k
    evs[A][0] = dataclasses.replace(
        ev, record=changed, signature=sign_record(changed, books.domain, k.accounts["hpc-a"].key)
    )
    report = audit(books, evidence=evs)
    assert has(report, "hpc-a on hpc-b", "sum tree of the supplied records")
    assert has(report, "sum proof")


def test_dropped_record_is_detected(books):
    evs = copy(books)
    del evs[A][1]
    assert has(audit(books, evidence=evs), "hpc-a on hpc-b", "1 records supplied, 2 anchored")


def test_a_grant_not_signed_by_the_home_is_detected(books):
    """The made-up-records attack: the serving centre signs the grant itself."""
    evs = copy(books)
    ev = evs[B][0]
    forged = sign_typed(ev.grant, books.domain, books.k.accounts["hpc-b"].key)
    evs[B][0] = dataclasses.replace(ev, grant_signature=forged)
    assert has(audit(books, evidence=evs), "hpc-b on hpc-a", "grant is not signed by hpc-a's account")


def test_signature_from_another_key_is_detected(books):
    evs = copy(books)
    ev = evs[A][0]
    evs[A][0] = dataclasses.replace(ev, signature=sign_record(ev.record, books.domain, Account.create().key))
    assert has(audit(books, evidence=evs), "hpc-a: record", "does not recover to hpc-a's account")


def test_duplicate_and_misfiled_records_are_detected(books):
    evs = copy(books)
    evs[C] = evs[C] + [evs[A][0]]
    report = audit(books, evidence=evs)
    assert has(report, "appears more than once") and has(report, "names hpc-a as serving centre")


def test_missing_evidence_of_an_anchored_centre_is_a_finding(books):
    evs = copy(books)
    del evs[A]
    assert has(audit(books, evidence=evs), "hpc-a: anchored 4 records", "no evidence")


def test_evidence_may_be_keyed_by_name(books):
    assert audit(books, evidence={centre_name_of(c): evs for c, evs in books.evidence[1].items()}).ok


def test_unsettled_unanchored_epoch_is_reported_not_failed(books):
    report = audit(books, 9, evidence={})
    assert report.ok and not report.settled
    assert "epoch 9 is not settled" in report.notes and "hpc-a has not anchored epoch 9" in report.notes


def test_bad_arguments_are_refused(books):
    for bad in (-1, 2**64, True):
        with pytest.raises(ValueError, match="epoch"):
            audit(books, bad, evidence={})
    with pytest.raises(ValueError, match="twice"):
        audit(books, evidence={"hpc-a": [], A: []})
    with pytest.raises(ValueError, match="RecordEvidence"):
        audit(books, evidence={A: [books.evidence[1][A][0].to_dict()]})
    with pytest.raises(ValueError, match="name or bytes32"):
        audit(books, evidence={b"short": []})
