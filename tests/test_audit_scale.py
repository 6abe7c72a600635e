"""The fast audit path gives the eth-account EIP-712 path's digests and roots, and the same verdicts, at scale.

Record digests are hashed by hand (precomputed type hash and domain separator), sum trees folded in
blocks on several processes, signatures recovered with libsecp256k1 directly: each is checked here
against the reference it replaces, and a big epoch with one tampered record is still caught.
"""

from __future__ import annotations

import dataclasses
import random
import sys

import coincurve
import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import audit_scale
from ledger.audit import verify_epoch, verify_records
from ledger.ids import centre_id
from ledger.payment import Grant, Order, Receipt
from ledger.records import (
    Domain,
    InvalidSignature,
    UsageRecord,
    digest,
    record_digest,
    recover,
    recover_digest,
    sign_record,
    signable,
)
from ledger.sumtree import SumTree, fold, leaves_of, root_of
from tests.test_audit import (
    A,
    B,
    audit,
    books,  # noqa: F401 - the fixture, shared with the audit's own tests
    copy,
    has,
)
from tests.test_contracts import make_consortium

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "5a" * 20)
b32 = st.binary(min_size=32, max_size=32)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def records(draw: st.DrawFn) -> UsageRecord:
    started = draw(u64)
    return UsageRecord(
        record_id=draw(b32),
        job_id=draw(b32),
        serving_centre=draw(b32),
        home_centre=draw(b32),
        user=draw(b32),
        epoch=draw(u64),
        started_at=started,
        ended_at=draw(st.integers(started, 2**64 - 1)),
        cpu_millis=draw(u64),
        wall_millis=draw(u64),
        max_rss_kib=draw(u64),
        gpu_millis=draw(u64),
        rates_version=draw(st.integers(1, 2**64 - 1)),
        price=draw(st.integers(0, 2**256 - 1)),
        order=draw(b32),
        grant=draw(b32),
        lock_hash=draw(b32),
        decision=draw(b32),
        group_signature=draw(b32),
    )


addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
domains = st.builds(
    Domain, chain_id=st.integers(1, 2**64), verifying_contract=addresses, name=st.text(max_size=12), version=st.text()
)


def eth_account_digest(obj, domain: Domain) -> bytes:
    """The reference: eth-account's EIP-712 encoder, fed the typed-data document."""
    return _hash_eip191_message(signable(obj, domain))


@settings(max_examples=150, deadline=None)
@given(records(), domains)
def test_record_digests_are_eth_accounts(record, domain):
    assert record_digest(record, domain) == eth_account_digest(record, domain)


@settings(max_examples=60, deadline=None)
@given(b32, addresses, b32, b32, st.integers(0, 2**256 - 1), u64, u64, domains)
def test_order_grant_and_receipt_digests_are_eth_accounts(h, account, centre, home, amount, deadline, nonce, domain):
    """The hand-made encoding covers every field type signed here: addresses too."""
    order = Order(request=h, centre=centre, rates_version=1, max_price=amount, deadline=deadline, nonce=nonce)
    grant = Grant(order=h, account=account, home=home, centre=centre, amount=amount, deadline=deadline)
    for obj in (order, grant, Receipt(record=h)):
        assert digest(obj, domain) == eth_account_digest(obj, domain)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(b32, st.integers(0, 2**200)), min_size=1, max_size=70), st.sampled_from([1, 2, 4, 8, 64]))
def test_folded_blocks_give_the_sum_trees_root(leaves, width):
    tree = SumTree(leaves)
    digests, amounts = [d for d, _ in leaves], [a for _, a in leaves]
    assert root_of(digests, amounts) == (tree.root, tree.total)
    full = 1 << (len(leaves) - 1).bit_length()
    width = min(width, full)
    nodes = leaves_of(digests, amounts)
    blocks = [fold(nodes[i : i + width], width) for i in range(0, len(nodes), width)]
    assert fold(blocks, full // width) == (tree.root, tree.total)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**255))
def test_recovery_is_eth_accounts(message, secret):
    key = (secret % (coincurve.utils.GROUP_ORDER_INT - 1) + 1).to_bytes(32, "big")
    signature = bytes(Account.unsafe_sign_hash(message, key).signature)
    assert (
        "0x" + recover_digest(message, signature).hex() == Account._recover_hash(message, signature=signature).lower()
    )


@pytest.mark.parametrize(
    "signature",
    [
        bytes(32) + (1).to_bytes(32, "big") + b"\x1b",
        bytes(64) + b"\x1b",
        (2**256 - 1).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1c",
    ],
)
def test_a_signature_that_does_not_recover_is_reported_as_before(signature):
    """libsecp256k1 refuses; the message is eth-account's, as the audit always reported it."""
    record = _record(1)
    with pytest.raises(InvalidSignature) as ours:
        recover(record, DOMAIN, signature)
    with pytest.raises(Exception) as theirs:
        Account._recover_hash(record_digest(record, DOMAIN), signature=signature)
    assert str(ours.value) == f"signature does not recover: {theirs.value}"


# -- scale ------------------------------------------------------------------------------------------

NAMES = ["hpc-a", "hpc-b", "hpc-c"]


def _record(n: int, home: str = "hpc-b", price: int | None = None, epoch: int = 1) -> UsageRecord:
    word = n.to_bytes(32, "big")
    return UsageRecord(
        record_id=word,
        job_id=word,
        serving_centre=centre_id("hpc-a"),
        home_centre=centre_id(home),
        user=word,
        epoch=epoch,
        started_at=1,
        ended_at=2,
        cpu_millis=n,
        wall_millis=n,
        max_rss_kib=0,
        gpu_millis=0,
        rates_version=1,
        price=n % 97 if price is None else price,
        order=word,
        grant=word,
        lock_hash=word,
        decision=word,
    )


def _sign(key: coincurve.PrivateKey, record: UsageRecord, domain: Domain) -> bytes:
    """sign_record's signature, by libsecp256k1 directly (low s, v 27/28): thousands of them quickly."""
    sig = key.sign_recoverable(record_digest(record, domain), hasher=None)
    return sig[:64] + bytes((sig[64] + 27,))


@dataclasses.dataclass
class BigEpoch:
    k: object
    domain: Domain
    served: list[tuple[UsageRecord, bytes]]


@pytest.fixture(scope="module")
def big() -> BigEpoch:
    """hpc-a's epoch 1: 12,000 records on hpc-b and 5,000 on hpc-c, interleaved, anchored as two claims."""
    k = make_consortium(NAMES, quorum=2)
    domain = Domain.for_deployment(k.deployment)
    key = coincurve.PrivateKey(bytes(k.accounts["hpc-a"].key))
    homes = ["hpc-b"] * 12_000 + ["hpc-c"] * 5_000
    random.Random(7).shuffle(homes)
    recs = [_record(n, home) for n, home in enumerate(homes)]
    served = [(r, _sign(key, r, domain)) for r in recs]
    claims = []
    for home in ("hpc-b", "hpc-c"):
        mine = [r for r in recs if r.home_centre == centre_id(home)]
        tree = SumTree((record_digest(r, domain), r.price) for r in mine)
        claims.append((centre_id(home), tree.root, tree.count, tree.total))
    homes_, roots, counts, totals = (list(x) for x in zip(*claims, strict=True))
    k.tx(k.c.usage_ledger.functions.anchor(1, homes_, roots, counts, totals, bytes(32), 0), "hpc-a")
    return BigEpoch(k, domain, served)


@pytest.fixture
def blocks(monkeypatch):
    """Blocks of 2,048 leaves, so a big test epoch spans many blocks on two processes."""
    monkeypatch.setattr(audit_scale, "BLOCK", 2048)


def check(big: BigEpoch, served, signatures="unbound", workers=2) -> list[str]:
    k = big.k
    return verify_records("hpc-a", 1, served, k.chain, k.deployment, big.domain, signatures=signatures, workers=workers)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("blocks")
@pytest.mark.parametrize("signatures", ["all", "unbound"])
def test_a_big_honest_epoch_verifies_on_two_processes(big, signatures):
    assert check(big, big.served, signatures) == []


@pytest.mark.usefixtures("blocks")
def test_one_tampered_record_in_a_big_epoch_is_found(big):
    """The centre rewrites one price and signs again: its claim's tree no longer matches the anchored root."""
    served = list(big.served)
    i = 9_001
    record = served[i][0]
    changed = dataclasses.replace(record, price=record.price + 1)
    served[i] = (changed, sign_record(changed, big.domain, big.k.accounts["hpc-a"].key))  # type: ignore[attr-defined]
    home = "hpc-b" if record.home_centre == centre_id("hpc-b") else "hpc-c"
    for signatures, workers in [("unbound", 2), ("all", 2), ("all", 1)]:
        findings = check(big, served, signatures, workers)
        assert len(findings) == 1 and f"hpc-a on {home}: sum tree of the supplied records" in findings[0], findings


@pytest.mark.usefixtures("blocks")
def test_a_record_standing_alone_has_its_signature_checked(big):
    """A dropped record unbinds its claim: in mode "unbound" the claim's records are then all signature-checked,
    and one forged among them is named, as mode "all" names it."""
    served = list(big.served)
    home = served.pop(100)[0].home_centre
    forged_at = next(i for i, (r, _) in enumerate(served) if r.home_centre == home and i > 200)
    record = served[forged_at][0]
    served[forged_at] = (record, sign_record(record, big.domain, Account.create().key))
    unbound, every = check(big, served, "unbound"), check(big, served, "all")
    assert unbound == every
    assert any("does not recover to hpc-a's account" in f for f in unbound) and any("anchored" in f for f in unbound)


@pytest.mark.usefixtures("blocks")
def test_a_bad_signature_under_a_matching_root_is_reported_only_when_all_are_checked(big):
    """The one difference between the modes: the anchor already binds the record, so "unbound" skips it."""
    served = list(big.served)
    record = served[5][0]
    served[5] = (record, b"\x01" * 65)
    assert check(big, served, "unbound") == []
    assert check(big, served, "all") == [
        f"hpc-a: record 0x{record.record_id.hex()} has a malformed signature (v must be 27 or 28, got 1)"
    ]


def test_duplicates_and_misfiled_records_are_found_in_order(big):
    served = list(big.served)
    foreign = dataclasses.replace(served[3][0], epoch=2)
    served[3] = (foreign, served[3][1])
    served.append(served[0])
    findings = check(big, served, "unbound", workers=1)
    assert findings[0] == f"hpc-a: record 0x{foreign.record_id.hex()} is for epoch 2, not 1"
    assert any("appears more than once (also under hpc-a)" in f for f in findings)


def test_the_signature_mode_is_checked(big):
    with pytest.raises(ValueError, match="signatures must be one of all, unbound"):
        check(big, big.served[:1], "some")


# -- the same verdicts as the path with every signature, on the audit's own books ---------------------


def test_unbound_mode_gives_the_audits_verdicts(books):  # noqa: F811 - the imported fixture
    """Every tampering the audit's own tests make is reported alike in both modes but a signature-only forgery."""
    evs = copy(books)
    ev = evs[A][0]
    changed = dataclasses.replace(ev.record, price=ev.record.price + 1)
    evs[A][0] = dataclasses.replace(
        ev, record=changed, signature=sign_record(changed, books.domain, books.k.accounts["hpc-a"].key)
    )
    del evs[B][1]
    cases = [copy(books), evs]
    for case in cases:
        every = verify_epoch(1, case, books.k.chain, books.k.deployment, books.domain)
        unbound = verify_epoch(1, case, books.k.chain, books.k.deployment, books.domain, signatures="unbound")
        parallel = verify_epoch(1, case, books.k.chain, books.k.deployment, books.domain, workers=2)
        assert unbound.to_dict() == every.to_dict() == parallel.to_dict()
    assert has(audit(books, evidence=evs), "hpc-a on hpc-b", "sum tree of the supplied records")


def test_both_keccak_backends_are_ethereums_keccak(monkeypatch):
    """safe-pysha3 when installed, pycryptodome without it: the same Keccak-256 as eth_utils."""
    import importlib

    from eth_utils import keccak

    from ledger.primitives import keccak as module

    for data in (b"", b"abc", bytes(range(256)) * 3):
        assert module.keccak256(data) == keccak(data)
    monkeypatch.setitem(sys.modules, "sha3", None)  # import sha3 now fails
    fallback = importlib.reload(module)
    try:
        assert fallback.BACKEND == "pycryptodome"
        for data in (b"", b"abc", bytes(range(256)) * 3):
            assert fallback.keccak256(data) == fallback.new(data).digest() == keccak(data)
    finally:
        monkeypatch.undo()
        importlib.reload(module)
