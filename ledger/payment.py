"""The payment protocol's signed pieces: a user's Order, its home's Grant, the user's Receipt.

Each is an EIP-712 struct in the same domain as usage records (ledger.records), so
the UsageLedger contract hashes and checks them exactly as here when a claim is
disputed. An order is signed by a fresh payment account (one per order, so serving
centres cannot link a user's jobs); the grant by the home's member chain account; the
receipt by the order's account, over the usage record's digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from ledger.primitives.canonical import CanonicalError, canonical_bytes
from ledger.records import (
    Address,
    Bytes32,
    DomainLike,
    InvalidSignature,
    InvalidTypedData,
    TypedData,
    Uint64,
    Uint256,
    digest,
    recover,
    sign_typed,
)

MAX_DEADLINE_AHEAD = 7 * 24 * 3600
"""An order's deadline is at most a week after the moment a home grants it or a centre accepts it
(Settlement.MAX_ORDER_AHEAD): work ordered before a moment is claimed at most this + the booking delay
after it, which is what a withdrawal of collateral waits for (Settlement.withdrawalDelay)."""

__all__ = [
    "MAX_DEADLINE_AHEAD",
    "Grant",
    "InvalidPayment",
    "InvalidSignature",
    "Order",
    "Receipt",
    "grant_digest",
    "order_digest",
    "receipt_digest",
    "recover",
    "request_digest",
    "sign_typed",
]


class InvalidPayment(InvalidTypedData):
    """An order, grant or receipt with a field out of its type's range, or malformed JSON."""


@dataclass(frozen=True)
class Order(TypedData, name="Order", what="order", error=InvalidPayment):
    """A user's consent to run one job request at one centre, at one rates version, for at most max_price.

    `deadline` is when the job must have ended (UTC seconds); `nonce` is random, 256 bits.
    """

    request: Bytes32
    centre: Bytes32
    rates_version: Uint64
    max_price: Uint256
    deadline: Uint64
    nonce: Uint256

    def check(self) -> None:
        if self.rates_version == 0:
            raise InvalidPayment("rates_version must name a published version (they count from 1)")


@dataclass(frozen=True)
class Grant(TypedData, name="Grant", what="grant", error=InvalidPayment):
    """A home's promise to pay up to `amount` for the order `order`, signed by its `account`."""

    order: Bytes32
    account: Address
    home: Bytes32
    centre: Bytes32
    amount: Uint256
    deadline: Uint64


@dataclass(frozen=True)
class Receipt(TypedData, name="Receipt", what="receipt", error=InvalidPayment):
    """The user's acknowledgement of one usage record (its digest), in exchange for the result's key."""

    record: Bytes32


def order_digest(order: Order, domain: DomainLike) -> bytes:
    """The order's EIP-712 digest: what the account signs and UsageRecord.order names."""
    return digest(order, domain)


def grant_digest(grant: Grant, domain: DomainLike) -> bytes:
    """The grant's EIP-712 digest: what the home signs and UsageRecord.grant names."""
    return digest(grant, domain)


def receipt_digest(receipt: Receipt, domain: DomainLike) -> bytes:
    """The receipt's EIP-712 digest: what the order's account signs for the key."""
    return digest(receipt, domain)


def request_digest(request: Any) -> bytes:
    """Order.request: keccak256 of the canonical JSON of the job request as submitted."""
    if not isinstance(request, dict):
        raise InvalidPayment(f"a job request must be a JSON object, got {type(request).__name__}")
    try:
        return keccak(canonical_bytes(request))
    except CanonicalError as exc:
        raise InvalidPayment(f"job request: {exc}") from None
