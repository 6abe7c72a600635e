"""Orders, grants and receipts: EIP-712 digests by hand and by eth_account, signing, validation."""

from __future__ import annotations

import json

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from ledger.ids import centre_id
from ledger.payment import (
    Grant,
    InvalidPayment,
    Order,
    Receipt,
    grant_digest,
    order_digest,
    receipt_digest,
    recover,
    request_digest,
    sign_typed,
)
from ledger.primitives.canonical import canonical_json
from ledger.records import Domain, InvalidSignature, digest, typed_data
from tests.test_records import DOMAIN

USER = Account.from_key("0x" + "11" * 32)
HOME = Account.from_key("0x" + "22" * 32)


def order(**changes) -> Order:
    values = dict(
        request=keccak(text="request"),
        centre=centre_id("hpc-b"),
        rates_version=2,
        max_price=2**70 + 3,
        deadline=1_700_003_600,
        nonce=2**255 + 17,
    )
    values.update(changes)
    return Order(**values)


def grant(**changes) -> Grant:
    values = dict(
        order=order_digest(order(), DOMAIN),
        account=USER.address,
        home=centre_id("hpc-a"),
        centre=centre_id("hpc-b"),
        amount=2**70 + 3,
        deadline=1_700_003_600,
    )
    values.update(changes)
    return Grant(**values)


def separator() -> bytes:
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text="xcentre"), keccak(text="1"), 31337, DOMAIN.verifying_contract],
        )
    )


def by_hand(type_string: str, types: list[str], values: list) -> bytes:
    struct = keccak(encode(["bytes32", *types], [keccak(text=type_string), *values]))
    return keccak(b"\x19\x01" + separator() + struct)


def by_eth_account(obj) -> bytes:
    s = encode_typed_data(full_message=typed_data(obj, DOMAIN))
    return keccak(b"\x19" + s.version + s.header + s.body)


@pytest.mark.parametrize(
    "make, type_string, fields",
    [
        (
            order,
            "Order(bytes32 request,bytes32 centre,uint64 ratesVersion,uint256 maxPrice,uint64 deadline,uint256 nonce)",
            "request:bytes32 centre:bytes32 rates_version:uint64 max_price:uint256 deadline:uint64 nonce:uint256",
        ),
        (
            grant,
            "Grant(bytes32 order,address account,bytes32 home,bytes32 centre,uint256 amount,uint64 deadline)",
            "order:bytes32 account:address home:bytes32 centre:bytes32 amount:uint256 deadline:uint64",
        ),
    ],
)
def test_digest_known_answer(make, type_string, fields):
    obj = make()
    names, types = zip(*(f.split(":") for f in fields.split()), strict=True)
    expected = by_hand(type_string, list(types), [getattr(obj, n) for n in names])
    assert digest(obj, DOMAIN) == expected == by_eth_account(obj)
    assert {order: order_digest, grant: grant_digest}[make](obj, DOMAIN) == expected


def test_receipt_digest_known_answer():
    r = Receipt(record=keccak(text="record"))
    assert receipt_digest(r, DOMAIN) == by_hand("Receipt(bytes32 record)", ["bytes32"], [r.record]) == by_eth_account(r)


def test_sign_and_recover_each_type():
    for obj, key in [(order(), USER), (grant(), HOME), (Receipt(record=b"\x05" * 32), USER)]:
        sig = sign_typed(obj, DOMAIN, key.key)
        assert len(sig) == 65 and sig[64] in (27, 28)
        assert recover(obj, DOMAIN, sig) == key.address
        # the same signature over another struct with the same fields' values recovers elsewhere
        other = Domain(chain_id=1, verifying_contract=DOMAIN.verifying_contract)
        assert recover(obj, other, sig) != key.address


def test_an_order_and_a_grant_never_share_a_digest():
    """Different type hashes: an order signature can never pass as a receipt or a grant."""
    r = Receipt(record=order().request)
    assert len({order_digest(order(), DOMAIN), grant_digest(grant(), DOMAIN), receipt_digest(r, DOMAIN)}) == 3


def test_tampered_order_recovers_to_someone_else():
    sig = sign_typed(order(), DOMAIN, USER.key)
    assert recover(order(max_price=order().max_price + 1), DOMAIN, sig) != USER.address
    assert recover(order(centre=centre_id("hpc-c")), DOMAIN, sig) != USER.address


def test_bad_signatures_are_refused():
    for sig in [b"", b"\x00" * 64, "0x" + "00" * 65, b"\x00" * 64 + b"\x1b", None]:
        with pytest.raises(InvalidSignature):
            recover(order(), DOMAIN, sig)


def test_request_digest_is_keccak_of_canonical_json():
    req = {"command": ["echo", "hi"], "centre": "hpc-b", "limits": {"cpus": 1, "seconds": 60}}
    assert request_digest(req) == keccak(canonical_json(req).encode())
    assert request_digest(dict(reversed(list(req.items())))) == request_digest(req)
    assert request_digest(req | {"centre": "hpc-c"}) != request_digest(req)
    for bad in [None, [1, 2], "text", {"x": b"raw"}, {"x": float("nan")}]:
        with pytest.raises(InvalidPayment):
            request_digest(bad)


def test_json_round_trip():
    for obj in [order(), grant(), Receipt(record=b"\x09" * 32)]:
        text = obj.to_json()
        assert type(obj).from_json(text) == obj
        assert type(obj).from_dict(json.loads(text)) == obj
    data = grant().to_dict()
    assert data["account"] == USER.address and data["home"] == "0x" + centre_id("hpc-a").hex()
    assert Grant.from_dict(data | {"account": USER.address.lower()}).account == USER.address


@pytest.mark.parametrize(
    "make, changes",
    [(order, c) for c in ({"request": b"short"}, {"request": "0x" + "00" * 32}, {"centre": None})]
    + [(order, c) for c in ({"rates_version": 0}, {"rates_version": -1}, {"rates_version": 2**64})]
    + [(order, c) for c in ({"max_price": 2**256}, {"max_price": True}, {"deadline": 1.0}, {"nonce": -5})]
    + [(grant, c) for c in ({"account": "0x1234"}, {"account": b"\x01" * 20}, {"account": "0x" + "zz" * 20})]
    + [(grant, c) for c in ({"amount": -1}, {"amount": False}, {"deadline": 2**64}, {"home": b"\x00" * 33})],
)
def test_invalid_fields(make, changes):
    with pytest.raises(InvalidPayment):
        make(**changes)


def test_malformed_json_is_refused_naming_the_field():
    cases = [
        (order(), "nonce", None, "missing"),
        (order(), "extra", 1, "unexpected"),
        (order(), "request", "abc", "0x-hex"),
        (order(), "request", "0x" + "gg" * 32, "not hex"),
        (order(), "request", "0x" + "00" * 31, "32 bytes"),
        (order(), "deadline", "3", "deadline"),
        (grant(), "account", "0x12", "account"),
        (grant(), "amount", -1, "amount"),
    ]
    for obj, name, value, phrase in cases:
        data = obj.to_dict()
        if value is None:
            del data[name]
        else:
            data[name] = value
        with pytest.raises(InvalidPayment, match=phrase):
            type(obj).from_json(json.dumps(data))
    for text in ["[1, 2", "[]", "null"]:
        with pytest.raises(InvalidPayment):
            Order.from_json(text)
    with pytest.raises(InvalidPayment):
        Receipt.from_dict([])


def test_invalid_receipt():
    with pytest.raises(InvalidPayment):
        Receipt(record=b"\x00" * 31)
