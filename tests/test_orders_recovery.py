"""The payment check's one recovery per signature: same signer, digests and refusals as ledger.payment's reference path.

gateway.node.orders hashes each struct once, recovers with libsecp256k1, spells the signer with
ledger.records.checksum_address and keeps recent recoveries; none of that may change who is
found to have signed, or let a changed order or signature be served a signer it did not earn.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from gateway.node import orders
from gateway.node.errors import Invalid
from ledger.payment import Grant, Order, grant_digest, order_digest, recover
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import _SECP256K1_HALF_N, checksum_address
from tests.test_orders import DOMAIN, JOB, TERMS, check, signed

_N = _SECP256K1_HALF_N * 2 + 1  # the curve's order


@pytest.fixture(autouse=True)
def _no_kept_recoveries():
    orders._recovered.cache_clear()
    yield
    orders._recovered.cache_clear()


def test_checksum_address_spells_addresses_as_eth_utils_does():
    for raw in [bytes(20), b"\xff" * 20, *(os.urandom(20) for _ in range(500))]:
        assert checksum_address(raw) == to_checksum_address(raw)
        assert checksum_address(bytearray(raw)) == to_checksum_address(raw)


@pytest.mark.parametrize("bad", [b"", b"\x01" * 19, b"\x01" * 21, b"\x01" * 32, "0x" + "ab" * 20, None])
def test_checksum_address_refuses_what_is_not_20_bytes(bad):
    with pytest.raises(ValueError, match="an address is 20 bytes"):
        checksum_address(bad)


def test_the_accepted_payment_names_what_the_reference_recovery_and_digests_name():
    user = Account.create()
    payment = signed(user=user)
    accepted = check(payment)
    order, grant = Order.from_dict(payment.order), Grant.from_dict(payment.grant)
    assert accepted.account == recover(order, DOMAIN, from_hex(payment.order_signature)) == user.address
    assert accepted.order_digest == order_digest(order, DOMAIN) == accepted.payment.order_digest
    assert accepted.grant_digest == grant_digest(grant, DOMAIN)
    assert accepted.payment.account == user.address
    assert accepted.payment.order == order.to_dict() and accepted.payment.grant == grant.to_dict()


def test_payment_account_is_the_orders_signer_and_shares_its_recovery_with_the_check():
    user = Account.create()
    payment = signed(user=user)
    assert orders.payment_account(payment.order, payment.order_signature, DOMAIN) == user.address
    kept = orders._recovered.cache_info()
    assert kept.currsize == 1 and kept.misses == 1
    assert check(payment).account == user.address
    after = orders._recovered.cache_info()
    assert after.hits == kept.hits + 1  # the order's signer was not recovered again
    assert after.misses == kept.misses + 1  # the grant's was


@pytest.mark.parametrize(
    "change",
    [
        {"order": {"request": "0x12"}},
        {"order": ["not", "an", "object"]},
        {"order_signature": None},
        {"order_signature": "not hex"},
        {"order_signature": "0x1234"},
        {"order_signature": "0x" + "00" * 65},
    ],
)
def test_payment_account_of_an_unsigned_or_malformed_order_is_none_and_the_check_still_says_why(change):
    payment = dataclasses.replace(signed(), **change)
    assert orders.payment_account(payment.order, payment.order_signature, DOMAIN) is None
    with pytest.raises(Invalid, match=r"order is malformed|order_signature|signature of the order is not valid"):
        check(payment)


def test_an_order_changed_after_its_signer_was_kept_is_not_served_that_signer():
    """The kept signer belongs to (digest, signature): an order changed under the same signature hashes to another
    digest, recovers to some other account, and the grant of the original no longer matches it."""
    user = Account.create()
    payment = signed(user=user)
    assert check(payment).account == user.address
    changed = dataclasses.replace(payment, order=payment.order | {"nonce": payment.order["nonce"] + 1})
    assert orders.payment_account(changed.order, changed.order_signature, DOMAIN) != user.address
    with pytest.raises(Invalid, match="grant does not match the order: order, account differ"):
        check(changed)


def test_a_changed_signature_byte_is_recovered_afresh():
    user = Account.create()
    payment = signed(user=user)
    check(payment)
    sig = bytearray(from_hex(payment.order_signature))
    sig[5] ^= 0x01
    altered = dataclasses.replace(payment, order_signature=to_hex(bytes(sig)))
    with pytest.raises(Invalid):  # another account (a grant mismatch) or no recoverable key
        check(altered)


def test_a_malleable_twin_is_refused_with_the_reference_reason_even_after_its_original_was_kept():
    payment = signed()
    check(payment)
    sig = from_hex(payment.order_signature)
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))  # 27 <-> 28
    with pytest.raises(Invalid, match="signature of the order is not valid: high s"):
        check(dataclasses.replace(payment, order_signature=to_hex(twin)))
    bad_v = sig[:64] + b"\x1d"
    with pytest.raises(Invalid, match="signature of the grant is not valid: v must be 27 or 28, got 29"):
        check(dataclasses.replace(payment, grant_signature=to_hex(bad_v)))


def test_a_refused_recovery_is_never_kept():
    payment = dataclasses.replace(signed(), order_signature="0x" + "00" * 65)
    for _ in range(2):
        with pytest.raises(Invalid, match="signature of the order is not valid"):
            check(payment)
    assert orders._recovered.cache_info().currsize == 0


def test_kept_recoveries_are_bounded():
    assert orders._recovered.cache_info().maxsize == orders.RECOVERIES_KEPT
    for _ in range(3):
        check(signed())
    assert orders._recovered.cache_info().currsize == 6


def test_the_terms_and_job_are_checked_on_every_call_whatever_is_kept():
    """A kept signer skips the curve arithmetic only: a second check under other terms is refused as the first
    would have been."""
    payment = signed()
    check(payment)
    with pytest.raises(Exception, match="rates version"):
        check(payment, dataclasses.replace(TERMS, rates_version=3))
    with pytest.raises(Exception, match="grant from another home"):
        check(payment, dataclasses.replace(TERMS, home_account="0x" + "11" * 20))
    with pytest.raises(Invalid, match="another job request"):
        check(payment, job=dataclasses.replace(JOB, request={**JOB.request, "walltime": 61}))
