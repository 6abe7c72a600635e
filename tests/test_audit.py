"""An auditor recomputes an epoch from the signed records and the chain, and catches tampering."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.audit import AuditReport, verify_epoch
from ledger.chain import Chain, connect
from ledger.deploy import Deployment, MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id, user_id
from ledger.merkle import MerkleTree
from ledger.records import Domain, UsageRecord, record_leaf, sign_record

NAMES = ("hpc-a", "hpc-b", "hpc-c")
A, B, C = (centre_id(n) for n in NAMES)
EPOCH = 1


@dataclass
class Books:
    chain: Chain
    deployment: Deployment
    domain: Domain
    keys: dict[bytes, LocalAccount]
    records: dict[bytes, list[tuple[UsageRecord, bytes]]]


STARTED = 2_000_000_000
"""When the records' jobs started, unless a test says: after every genesis rates version of these chains."""


def _record(
    n: int,
    serving: bytes,
    home: bytes,
    price: int,
    epoch: int = EPOCH,
    rates_version: int = 1,
    cpu_millis: int | None = None,
    started_at: int = STARTED,
) -> UsageRecord:
    """A record whose meters cost exactly `price` at the genesis rates (1 per cpu-second, no memory)."""
    return UsageRecord(
        record_id=n.to_bytes(32, "big"),
        job_id=(1000 + n).to_bytes(32, "big"),
        serving_centre=serving,
        home_centre=home,
        user=user_id(f"user{n}@{home.rstrip(bytes(1)).decode()}"),
        epoch=epoch,
        started_at=started_at + n,
        ended_at=started_at + 60 + n,
        cpu_millis=price * 1000 if cpu_millis is None else cpu_millis,
        wall_millis=60_000,
        max_rss_kib=0,
        gpu_millis=0,
        rates_version=rates_version,
        price=price,
    )


def _anchor(
    chain: Chain,
    deployment: Deployment,
    domain: Domain,
    key: LocalAccount,
    centre: bytes,
    epoch: int,
    signed: list[tuple[UsageRecord, bytes]],
) -> None:
    sums: dict[bytes, int] = {}
    for rec, _ in signed:
        if rec.home_centre != centre:
            sums[rec.home_centre] = sums.get(rec.home_centre, 0) + rec.price
    root = MerkleTree(record_leaf(r, domain) for r, _ in signed).root
    ledger = bind(chain, deployment).usage_ledger
    chain.transact(ledger.functions.anchor(epoch, root, len(signed), list(sums), list(sums.values())), key)


@pytest.fixture(scope="module")
def books() -> Books:
    """Epoch 1: hpc-a serves b, b, c and one of its own users; hpc-b serves a twice;
    hpc-c serves a once. Every centre anchors, then the epoch is settled."""
    chain = connect("embedded")
    keys = {centre_id(n): Account.create() for n in NAMES}
    for acct in keys.values():
        chain.fund(acct.address, 10**19)
    specs = [
        MemberSpec(n, keys[centre_id(n)].address, f"https://{n}", bytes([i + 1]) * 32, Prices(1, 1, 1))
        for i, n in enumerate(NAMES)
    ]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 2, 10_000)
    domain = Domain.for_deployment(deployment)
    plan = {
        A: [(1, B, 40), (2, B, 15), (3, C, 25), (4, A, 99)],
        B: [(5, A, 30), (6, A, 12)],
        C: [(7, A, 8)],
    }
    records = {}
    for centre, rows in plan.items():
        signed = []
        for n, home, price in rows:
            rec = _record(n, centre, home, price)
            signed.append((rec, sign_record(rec, domain, keys[centre])))
        records[centre] = signed
        _anchor(chain, deployment, domain, keys[centre], centre, EPOCH, signed)
    chain.transact(bind(chain, deployment).settlement.functions.settle(EPOCH), keys[A])
    return Books(chain, deployment, domain, keys, records)


def _audit(books: Books, records=None, epoch: int = EPOCH) -> AuditReport:
    return verify_epoch(
        epoch, records if records is not None else books.records, books.chain, books.deployment, books.domain
    )


def _copy(books: Books) -> dict[bytes, list]:
    return {c: list(items) for c, items in books.records.items()}


def _has(report: AuditReport, *fragments: str) -> bool:
    return any(all(f in line for f in fragments) for line in report.findings)


def test_clean_epoch_passes(books):
    report = _audit(books)
    assert report.ok, report.findings
    assert report.findings == [] and report.settled
    a = report.totals["hpc-a"]
    assert (a.records, a.amount) == (4, 40 + 15 + 25 + 99)
    assert a.claims == a.anchored_claims == {"hpc-b": 55, "hpc-c": 25}
    assert report.totals["hpc-b"].claims == {"hpc-a": 42}
    # a is owed 55 + 25 and owes 42 + 8: net +30; b: 42 - 55 = -13; c: 8 - 25 = -17
    assert report.net == {"hpc-a": 30, "hpc-b": -13, "hpc-c": -17}
    assert {n: t.net for n, t in report.totals.items()} == report.net
    assert report.transfers == [("hpc-b", "hpc-a", 13), ("hpc-c", "hpc-a", 17)]
    assert report.to_dict()["totals"]["hpc-c"]["records"] == 1


def test_records_may_be_keyed_by_name(books):
    by_name = {"hpc-a": books.records[A], "hpc-b": books.records[B], "hpc-c": books.records[C]}
    assert _audit(books, by_name).ok


def test_changed_price_is_detected(books):
    records = _copy(books)
    rec, sig = records[A][0]
    records[A][0] = (dataclasses.replace(rec, price=rec.price + 100), sig)
    report = _audit(books, records)
    rid = "0x" + rec.record_id.hex()
    assert not report.ok
    assert _has(report, "hpc-a", rid, "signature does not recover to hpc-a's account")
    assert _has(report, "hpc-a", "Merkle root")
    assert _has(report, "hpc-a", "claim on hpc-b is 155 by the records but 55 anchored")
    assert not _has(report, "hpc-b:") and not _has(report, "hpc-c:")


def test_dropped_record_is_detected(books):
    records = _copy(books)
    del records[B][1]
    report = _audit(books, records)
    assert _has(report, "hpc-b: 1 records supplied, 2 anchored")
    assert _has(report, "hpc-b", "Merkle root")
    assert _has(report, "hpc-b: claim on hpc-a is 30 by the records but 42 anchored")


def test_added_record_is_detected(books):
    records = _copy(books)
    extra = _record(8, C, B, 5)  # genuinely signed by hpc-c, but never anchored
    records[C].append((extra, sign_record(extra, books.domain, books.keys[C])))
    report = _audit(books, records)
    assert _has(report, "hpc-c: 2 records supplied, 1 anchored")
    assert _has(report, "hpc-c", "Merkle root")
    assert _has(report, "hpc-c: claim on hpc-b is 5 by the records but 0 anchored")
    assert not _has(report, "signature")


def test_signature_from_another_key_is_detected(books):
    records = _copy(books)
    rec, _ = records[C][0]
    records[C][0] = (rec, sign_record(rec, books.domain, books.keys[B]))
    report = _audit(books, records)
    rid = "0x" + rec.record_id.hex()
    assert report.findings == [
        f"hpc-c: record {rid} signature does not recover to hpc-c's account (recovers to {books.keys[B].address})"
    ]


def test_malformed_signature_is_detected(books):
    records = _copy(books)
    rec, sig = records[C][0]
    records[C][0] = (rec, sig[:64])
    report = _audit(books, records)
    assert _has(report, "hpc-c", "malformed signature")


def test_record_of_another_epoch_is_detected(books):
    records = _copy(books)
    rec, _ = records[B][0]
    moved = dataclasses.replace(rec, epoch=EPOCH + 1)
    records[B][0] = (moved, sign_record(moved, books.domain, books.keys[B]))
    report = _audit(books, records)
    assert _has(report, "hpc-b: record 0x" + rec.record_id.hex(), f"is for epoch {EPOCH + 1}, not {EPOCH}")
    assert _has(report, "hpc-b", "Merkle root")  # its leaf changed too


def test_duplicate_and_misfiled_records_are_detected(books):
    records = _copy(books)
    records[B].append(records[B][0])  # the same record twice
    records[C].append(records[A][1])  # hpc-a's record filed under hpc-c
    report = _audit(books, records)
    rid_b = "0x" + records[B][0][0].record_id.hex()
    rid_a = "0x" + records[A][1][0].record_id.hex()
    assert _has(report, "hpc-b", rid_b, "appears more than once")
    assert _has(report, "hpc-b: 3 records supplied, 2 anchored")
    assert _has(report, "hpc-c", rid_a, "names hpc-a as serving centre")
    assert _has(report, "hpc-c", rid_a, "signature does not recover to hpc-c's account")


def test_missing_centre_and_unknown_centre_are_detected(books):
    records = _copy(books)
    del records[C]
    stranger = centre_id("hpc-x")
    rec = _record(9, stranger, A, 1)
    records[stranger] = [(rec, sign_record(rec, books.domain, Account.create()))]
    report = _audit(books, records)
    assert _has(report, "hpc-c: anchored 1 records for epoch 1, but none were supplied")
    assert _has(report, "hpc-x: not a member")


def test_unsettled_epoch_is_reported_not_failed(books):
    epoch = 2
    records = {}
    for centre in (A, B, C):
        rec = _record(100 + centre[4], centre, B if centre != B else A, 3, epoch=epoch)
        signed = [(rec, sign_record(rec, books.domain, books.keys[centre]))]
        _anchor(books.chain, books.deployment, books.domain, books.keys[centre], centre, epoch, signed)
        records[centre] = signed
    report = _audit(books, records, epoch=epoch)
    assert report.ok, report.findings
    assert not report.settled and report.net == {} and report.transfers == []
    assert f"epoch {epoch} is not settled" in report.notes
    assert all(t.net is None for t in report.totals.values())


def test_unanchored_epoch_with_records_is_a_finding(books):
    rec = _record(200, A, B, 1, epoch=9)
    report = _audit(books, {A: [(rec, sign_record(rec, books.domain, books.keys[A]))]}, epoch=9)
    assert _has(report, "hpc-a: 1 records supplied, but epoch 9 is not anchored")
    assert "hpc-b has not anchored epoch 9" in report.notes


def test_bad_arguments_are_refused(books):
    with pytest.raises(ValueError):
        _audit(books, {"Not A Centre": []})
    with pytest.raises(ValueError):
        _audit(books, {}, epoch=-1)


def test_audit_over_json_rpc(anvil_url):
    """Same audit against a real node (anvil): reads and revert mapping over JSON-RPC."""
    chain = connect(anvil_url)
    keys = {centre_id(n): Account.create() for n in ("aud-a", "aud-b")}
    for acct in keys.values():
        chain.fund(acct.address, 10**19)
    specs = [
        MemberSpec(n, keys[centre_id(n)].address, f"https://{n}", bytes([i + 1]) * 32, Prices(1, 1, 1))
        for i, n in enumerate(("aud-a", "aud-b"))
    ]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 1, 1_000)
    domain = Domain.for_deployment(deployment)
    x, y = keys
    records = {}
    for n, (serving, home) in enumerate([(x, y), (y, x)]):
        rec = _record(n, serving, home, 10 + n)
        records[serving] = [(rec, sign_record(rec, domain, keys[serving]))]
        _anchor(chain, deployment, domain, keys[serving], serving, EPOCH, records[serving])
    chain.transact(bind(chain, deployment).settlement.functions.settle(EPOCH), keys[x])

    report = verify_epoch(EPOCH, records, chain, deployment)
    assert report.ok, report.findings
    assert report.net == {"aud-a": -1, "aud-b": 1}
    stranger = centre_id("aud-z")
    rec = _record(5, stranger, x, 1)
    report = verify_epoch(
        EPOCH, {**records, stranger: [(rec, sign_record(rec, domain, Account.create()))]}, chain, deployment
    )
    assert report.findings == [
        "aud-z: not a member of the consortium, yet records are supplied for it",
        "aud-z: 1 records supplied, but epoch 1 is not anchored",
    ]


def test_claims_anchored_without_records_are_a_finding(books):
    """A centre that anchors no records but claims on others must not pass unseen when
    its (empty) record list is not supplied."""
    epoch = 3
    ledger = bind(books.chain, books.deployment).usage_ledger
    for centre in (A, B):
        _anchor(books.chain, books.deployment, books.domain, books.keys[centre], centre, epoch, [])
    books.chain.transact(ledger.functions.anchor(epoch, bytes(32), 0, [A], [500]), books.keys[C])
    report = _audit(books, {A: [], B: []}, epoch=epoch)
    assert _has(report, "hpc-c: claim on hpc-a is 0 by the records but 500 anchored"), report.findings
    supplied = _audit(books, {A: [], C: []}, epoch=epoch)
    assert _has(supplied, "hpc-c: claim on hpc-a is 0 by the records but 500 anchored")
    assert not _has(supplied, "hpc-b")  # anchored nothing, claims nothing: nothing to supply


def test_audit_of_a_settled_epoch_survives_a_later_removal():
    """Settlement netted the members of its time; removing one afterwards must neither
    make the honest books look wrong nor hide the removed centre's anchor."""
    chain = connect("embedded")
    names = ("hpc-a", "hpc-b", "hpc-c", "hpc-d")
    keys = {centre_id(n): Account.create() for n in names}
    for acct in keys.values():
        chain.fund(acct.address, 10**19)
    specs = [
        MemberSpec(n, keys[centre_id(n)].address, f"https://{n}", bytes([i + 1]) * 32, Prices(1, 1, 1))
        for i, n in enumerate(names)
    ]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 2, 10_000)
    domain = Domain.for_deployment(deployment)
    D = centre_id("hpc-d")
    plan = {A: [(1, B, 40), (2, D, 15)], B: [(3, A, 30)], C: [], D: [(4, A, 8), (5, C, 9)]}
    records = {}
    for centre, rows in plan.items():
        signed = [
            (rec, sign_record(rec, domain, keys[centre]))
            for rec in (_record(n, centre, home, price) for n, home, price in rows)
        ]
        records[centre] = signed
        _anchor(chain, deployment, domain, keys[centre], centre, EPOCH, signed)
    k = bind(chain, deployment)
    chain.transact(k.settlement.functions.settle(EPOCH), keys[A])
    before = verify_epoch(EPOCH, records, chain, deployment, domain)
    assert before.ok, before.findings
    chain.transact(k.consortium.functions.propose(1, k.consortium.functions.member(D).call()), keys[A])
    chain.transact(k.consortium.functions.vote(k.consortium.functions.proposalCount().call()), keys[B])
    assert D not in k.consortium.functions.memberIds().call()

    after = verify_epoch(EPOCH, records, chain, deployment, domain)
    assert after.ok, after.findings
    assert after.net == before.net and after.transfers == before.transfers
    without_d = {c: v for c, v in records.items() if c != D}
    missing = verify_epoch(EPOCH, without_d, chain, deployment, domain)
    assert _has(missing, "hpc-d: anchored 2 records for epoch 1, but none were supplied"), missing.findings


def _anchored_alone(books: Books, epoch: int, centre: bytes, recs: list[UsageRecord]) -> dict[bytes, list]:
    """`recs` genuinely signed by `centre` and anchored (root, count, claims) for an epoch of their own."""
    signed = [(r, sign_record(r, books.domain, books.keys[centre])) for r in recs]
    _anchor(books.chain, books.deployment, books.domain, books.keys[centre], centre, epoch, signed)
    return {centre: signed}


def test_a_record_priced_at_other_rates_fails_the_audit(books):
    """Signed, anchored and claimed consistently, yet priced at rates x1000: the price is recomputed from the chain."""
    epoch = 4
    honest = _record(400, A, B, 25, epoch=epoch)
    dearer = _record(401, A, B, 25_000, epoch=epoch, cpu_millis=25_000)  # 25 cpu-seconds at 1000 per second
    records = _anchored_alone(books, epoch, A, [honest, dearer])
    report = _audit(books, records, epoch=epoch)
    rid = "0x" + dearer.record_id.hex()
    assert report.findings == [
        f"hpc-a: record {rid} is priced 25000, but its meters at hpc-a's rates version 1 cost 25"
    ]


def test_each_record_is_priced_at_the_version_it_names(books):
    """hpc-b publishes dearer rates (version 2): records naming 2 are checked at them, those naming 1 at the
    genesis rates, and a version never published is a finding."""
    epoch = 5
    consortium = bind(books.chain, books.deployment).consortium
    t = books.chain.w3.eth.get_block("latest")["timestamp"]
    books.chain.transact(consortium.functions.publishRates((1000, 0, 0), t + 2 * 86_400), books.keys[B])
    assert consortium.functions.ratesCount(B).call() == 2
    old = _record(500, B, A, 7, epoch=epoch)
    new = _record(501, B, A, 7_000, epoch=epoch, rates_version=2, cpu_millis=7_000)
    unknown = _record(502, B, A, 7, epoch=epoch, rates_version=3)
    report = _audit(books, _anchored_alone(books, epoch, B, [old, new, unknown]), epoch=epoch)
    assert report.findings == [
        f"hpc-b: record 0x{unknown.record_id.hex()} names rates version 3, which hpc-b never published"
    ]
    swapped = _record(503, B, A, 7, epoch=epoch + 1, rates_version=2)  # genesis price under version 2's name
    report = _audit(books, _anchored_alone(books, epoch + 1, B, [swapped]), epoch=epoch + 1)
    assert _has(report, "is priced 7, but its meters at hpc-b's rates version 2 cost 7000")


def test_a_record_naming_rates_not_yet_in_force_fails_the_audit(books):
    """hpc-c publishes rates x1000 due in two days (the notice allows no sooner) and names them at once in
    the records of jobs it runs now, priced, signed, anchored and claimed consistently: a job is priced at
    the rates in force when it was accepted, which was before it started, so the audit refuses the record."""
    epoch = 7
    consortium = bind(books.chain, books.deployment).consortium
    now = books.chain.w3.eth.get_block("latest")["timestamp"]
    due = now + 2 * 86_400
    books.chain.transact(consortium.functions.publishRates((1000, 0, 0), due), books.keys[C])
    early = _record(700, C, A, 7_000, epoch=epoch, rates_version=2, cpu_millis=7_000, started_at=now)
    honest = _record(701, C, A, 7, epoch=epoch, started_at=now)
    report = _audit(books, _anchored_alone(books, epoch, C, [early, honest]), epoch=epoch)
    assert report.findings == [
        (
            f"hpc-c: record 0x{early.record_id.hex()} names rates version 2, in force only "
            f"from {due}, but its job started at {now + 700}"
        )
    ]
