"""EIP-712 usage records and the bytes32 identifiers."""

from __future__ import annotations

import json

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from ledger.ids import InvalidName, centre_id, centre_name, user_id
from ledger.records import (
    Domain,
    InvalidRecord,
    InvalidSignature,
    UsageRecord,
    record_digest,
    record_leaf,
    recover_signer,
    sign_record,
    typed_data,
)

DOMAIN = Domain(chain_id=31337, verifying_contract="0x5FC8d32690cc91D4c39d9d3abcBD16989F875707")
KEY = Account.from_key("0x" + "42" * 32)


def record(**changes) -> UsageRecord:
    fields = dict(
        record_id=keccak(text="rec-1"),
        job_id=keccak(text="job-1"),
        serving_centre=centre_id("hpc-b"),
        home_centre=centre_id("hpc-a"),
        user=user_id("alice@hpc-a"),
        epoch=3,
        started_at=1_700_000_000,
        ended_at=1_700_000_060,
        cpu_millis=59_000,
        wall_millis=60_000,
        max_rss_kib=204_800,
        gpu_millis=0,
        rates_version=2,
        price=2**70 + 5,
        order=keccak(text="order-1"),
        grant=keccak(text="grant-1"),
        lock_hash=keccak(b"\x07" * 32),
        decision=keccak(text="decision-entry-1"),
        group_signature=keccak(text="group-signature-1"),
    )
    fields.update(changes)
    return UsageRecord(**fields)


def test_ids_round_trip_and_validate():
    assert centre_id("hpc-a") == b"hpc-a" + bytes(27)
    assert centre_name(centre_id("edge-7")) == "edge-7"
    assert centre_name(centre_id("a" * 32)) == "a" * 32
    for bad in ["", "HPC", "hpc_a", "a" * 33, "é"]:
        with pytest.raises(InvalidName):
            centre_id(bad)
    for bad in [b"short", b"\xff" * 32, b"hpc a".ljust(32, b"\0"), b"a\0b".ljust(32, b"\0")]:
        with pytest.raises(InvalidName):
            centre_name(bad)
    assert user_id("alice@hpc-a") == keccak(text="alice@hpc-a") and len(user_id("x@y")) == 32
    with pytest.raises(ValueError):
        user_id("")


def test_digest_matches_a_hand_computed_eip712_hash():
    rec = record()
    type_hash = keccak(
        text="UsageRecord(bytes32 recordId,bytes32 jobId,bytes32 servingCentre,bytes32 homeCentre,"
        "bytes32 user,uint64 epoch,uint64 startedAt,uint64 endedAt,uint64 cpuMillis,"
        "uint64 wallMillis,uint64 maxRssKib,uint64 gpuMillis,uint64 ratesVersion,"
        "uint256 price,bytes32 order,bytes32 grant,bytes32 lockHash,bytes32 decision,"
        "bytes32 groupSignature)"
    )
    struct_hash = keccak(
        encode(
            ["bytes32"] * 6 + ["uint64"] * 8 + ["uint256"] + ["bytes32"] * 5,
            [
                type_hash,
                rec.record_id,
                rec.job_id,
                rec.serving_centre,
                rec.home_centre,
                rec.user,
                rec.epoch,
                rec.started_at,
                rec.ended_at,
                rec.cpu_millis,
                rec.wall_millis,
                rec.max_rss_kib,
                rec.gpu_millis,
                rec.rates_version,
                rec.price,
                rec.order,
                rec.grant,
                rec.lock_hash,
                rec.decision,
                rec.group_signature,
            ],
        )
    )
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="xcentre"), keccak(text="1"), 31337, DOMAIN.verifying_contract],
        )
    )
    digest = keccak(b"\x19\x01" + separator + struct_hash)
    assert record_digest(rec, DOMAIN) == digest
    assert record_leaf(rec, DOMAIN) == keccak(keccak(digest))
    assert encode_typed_data(full_message=typed_data(rec, DOMAIN)).body == struct_hash
    assert typed_data(rec, DOMAIN)["domain"]["name"] == "xcentre"


def test_sign_and_recover():
    rec = record()
    sig = sign_record(rec, DOMAIN, KEY.key)
    assert len(sig) == 65
    assert recover_signer(rec, DOMAIN, sig) == KEY.address
    assert sign_record(rec, DOMAIN, KEY) == sig  # a LocalAccount works too
    assert recover_signer(rec, DOMAIN.as_dict(), sig) == KEY.address


def test_tampering_or_another_domain_changes_the_signer():
    rec = record()
    sig = sign_record(rec, DOMAIN, KEY.key)
    assert recover_signer(record(price=rec.price + 1), DOMAIN, sig) != KEY.address
    assert recover_signer(record(rates_version=rec.rates_version + 1), DOMAIN, sig) != KEY.address
    assert record_leaf(record(rates_version=1), DOMAIN) != record_leaf(rec, DOMAIN)
    other_chain = Domain(chain_id=1, verifying_contract=DOMAIN.verifying_contract)
    other_ledger = Domain(chain_id=31337, verifying_contract="0x" + "11" * 20)
    assert recover_signer(rec, other_chain, sig) != KEY.address
    assert recover_signer(rec, other_ledger, sig) != KEY.address
    assert len({record_digest(rec, d) for d in (DOMAIN, other_chain, other_ledger)}) == 3


def test_malformed_signature_is_rejected():
    with pytest.raises(InvalidSignature):
        recover_signer(record(), DOMAIN, b"\x00" * 64)
    with pytest.raises(InvalidSignature):
        recover_signer(record(), DOMAIN, b"\x00" * 64 + b"\x05")


def test_json_round_trip_uses_hex_strings():
    rec = record()
    text = rec.to_json()
    data = json.loads(text)
    assert data["serving_centre"] == "0x" + centre_id("hpc-b").hex() and data["price"] == 2**70 + 5
    assert data["rates_version"] == 2 and typed_data(rec, DOMAIN)["message"]["ratesVersion"] == 2
    assert UsageRecord.from_json(text) == rec
    assert UsageRecord.from_json(data) == rec
    assert UsageRecord.from_dict(rec.to_dict()) == rec


@pytest.mark.parametrize(
    "changes",
    [
        {"record_id": b"short"},
        {"user": "0x" + "00" * 32},
        {"epoch": -1},
        {"cpu_millis": 2**64},
        {"price": 2**256},
        {"gpu_millis": 1.5},
        {"wall_millis": True},
        {"ended_at": 1},
        {"rates_version": 0},
        {"rates_version": 2**64},
        {"rates_version": None},
        {"order": b"\x01" * 31},
        {"grant": "0x" + "00" * 32},
        {"lock_hash": None},
        {"decision": None},
        {"decision": b"\x01" * 31},
        {"decision": "0x" + "00" * 32},
        {"group_signature": None},
        {"group_signature": b"\x01" * 31},
        {"group_signature": "0x" + "00" * 32},
    ],
)
def test_invalid_fields_raise(changes):
    with pytest.raises(InvalidRecord):
        record(**changes)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("price"),
        lambda d: d.pop("rates_version"),
        lambda d: d.update(extra=1),
        lambda d: d.update(job_id="abc"),
        lambda d: d.update(job_id="0xzz"),
        lambda d: d.update(epoch="3"),
        lambda d: d.update(lock_hash="0x" + "ab" * 31),
        lambda d: d.update(grant=123),
        lambda d: d.pop("decision"),
        lambda d: d.update(decision="0x" + "cd" * 33),
        lambda d: d.pop("group_signature"),
        lambda d: d.update(group_signature="0x" + "cd" * 31),
    ],
)
def test_malformed_json_raises(mutate):
    data = record().to_dict()
    mutate(data)
    with pytest.raises(InvalidRecord):
        UsageRecord.from_json(json.dumps(data))
    with pytest.raises(InvalidRecord):
        UsageRecord.from_json("{not json")


def test_domain_for_deployment_and_validation():
    from ledger.deploy import Deployment

    dep = Deployment(5, "0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20, "0x" + "04" * 20, 0)
    d = Domain.for_deployment(dep)
    assert d.chain_id == 5 and d.verifying_contract.lower() == "0x" + "02" * 20
    assert record_digest(record(), dep) == record_digest(record(), d)
    with pytest.raises(ValueError):
        Domain(chain_id=0, verifying_contract=DOMAIN.verifying_contract)
    with pytest.raises(ValueError):
        Domain(chain_id=1, verifying_contract="nope")


def test_a_record_from_before_payment_names_the_missing_fields():
    """Records stored before orders and grants existed lack three fields: the error names them."""
    data = record().to_dict()
    for name in ("order", "grant", "lock_hash"):
        data.pop(name)
    with pytest.raises(InvalidRecord, match=r"missing \['order', 'grant', 'lock_hash'\]"):
        UsageRecord.from_dict(data)


def test_a_record_from_before_decision_logs_names_the_missing_field():
    """Records signed before decision logs lack `decision`: the error names it, nothing is guessed."""
    data = record().to_dict()
    data.pop("decision")
    with pytest.raises(InvalidRecord, match=r"missing \['decision'\]"):
        UsageRecord.from_dict(data)


def test_the_decision_field_is_signed():
    """Naming another decision entry changes the digest: a record cannot be re-pointed after signing."""
    assert record_digest(record(), DOMAIN) != record_digest(record(decision=keccak(text="other")), DOMAIN)


def test_a_record_from_before_anonymous_jobs_names_the_missing_field():
    """Records signed before anonymous jobs lack `group_signature`: their digest was another, so the error names
    the field rather than reading it as zero."""
    data = record().to_dict()
    data.pop("group_signature")
    with pytest.raises(InvalidRecord, match=r"missing \['group_signature'\]"):
        UsageRecord.from_dict(data)


def test_the_group_signature_is_signed_and_zero_for_a_signed_on_job():
    """A record names keccak256 of its job's group signature, signed with the rest; a job signed on with a
    session names none: zero, the constructor's default, so callers that make such records need not name it."""
    fields = {k: v for k, v in record().__dict__.items() if k != "group_signature"}
    assert UsageRecord(**fields).group_signature == bytes(32)
    assert record_digest(UsageRecord(**fields), DOMAIN) != record_digest(record(), DOMAIN)
    other = record(group_signature=keccak(text="another signature"))
    assert record_digest(other, DOMAIN) != record_digest(record(), DOMAIN)


def test_high_s_and_bad_v_signatures_are_refused_as_the_contract_does():
    """OpenZeppelin's ECDSA refuses the malleable twin (n - s, flipped v) and v outside 27/28."""
    rec = record()
    sig = sign_record(rec, DOMAIN, KEY.key)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(InvalidSignature, match="high s"):
        recover_signer(rec, DOMAIN, twin)
    with pytest.raises(InvalidSignature, match="v must be 27 or 28"):
        recover_signer(rec, DOMAIN, sig[:64] + bytes([sig[64] - 27]))
