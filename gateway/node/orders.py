"""The serving centre's check of a job's payment: the user's order and its home's grant.

A job runs only under an order its payment account signed for exactly this request,
this centre, the rates version in force and a price that covers the job at its
limits, and under a grant that the user's home signed with its member chain account
for that order. The home is never asked: its account comes from the local index of
the chain, so checking costs no call and no chain read. Pure: every input is given.

On every submission's path: each struct is parsed and hashed once, and its signer
recovered once, by libsecp256k1 (ledger.records.recover_digest) and spelled by
ledger.records.checksum_address; a recovery is a pure function of (digest, signature),
so the last few thousand are kept (`payment_account` shares them with the caller that
scopes an idempotency key by the order's account before the payment is checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.jobs.pricing import max_price
from gateway.node.errors import Conflict, Forbidden, Invalid, PaymentRequired
from gateway.store import Payment
from ledger.ids import centre_id
from ledger.payment import (
    MAX_DEADLINE_AHEAD,
    Grant,
    InvalidPayment,
    InvalidSignature,
    Order,
    grant_digest,
    order_digest,
    request_digest,
)
from ledger.pricing import Prices
from ledger.primitives.hex import HexError, from_hex
from ledger.records import DomainLike, checksum_address, recover_digest

#: Seconds an order's deadline must leave after the job's walltime: the executor's grace to stop it,
#: starting and metering. A job must have ended by its order's deadline for its record to stand.
DEADLINE_MARGIN = 15

#: Recoveries kept: (digest, signature) -> signer. Enough for the submissions in flight many times over.
RECOVERIES_KEPT = 4096


@dataclass(frozen=True)
class Signed:
    """An order and grant as the client sent them: JSON objects and 0x-hex signatures."""

    order: dict[str, Any]
    order_signature: str
    grant: dict[str, Any]
    grant_signature: str


@dataclass(frozen=True)
class Job:
    """What the payment must cover: the request as stored and its limits."""

    request: dict[str, Any]
    walltime: int
    cores: int
    memory_mib: int
    gpus: int


@dataclass(frozen=True)
class Terms:
    """What this centre takes a job under now: its name, the rates in force, the payer's home and its account."""

    centre: str
    rates_version: int
    prices: Prices
    home: str
    home_account: str | None
    """The home's member chain account from the index; None when the home is not an active member."""


@dataclass(frozen=True)
class Accepted:
    """A payment that passed every check."""

    order: Order
    grant: Grant
    account: str
    order_digest: bytes
    grant_digest: bytes
    payment: Payment
    """As the store keeps it, with the signatures the client sent."""
    cost: int
    """The job's price here at its limits: the most its record can bill (a record is capped at it and the grant)."""


def check_payment(signed: Signed, job: Job, terms: Terms, *, now: int, domain: DomainLike) -> Accepted:
    """The order and grant, if they pay for `job` at this centre now; else the refusal that says why.

    Invalid (400), Conflict (409: a rates version not in force), PaymentRequired (402: a price
    below the job's at its limits) or Forbidden (403: a grant its home's account did not sign).
    """
    order: Order = _parse(Order, signed.order, "order")
    grant: Grant = _parse(Grant, signed.grant, "grant")
    order_sig = _signature(signed.order_signature, "order_signature")
    grant_sig = _signature(signed.grant_signature, "grant_signature")
    digest = order_digest(order, domain)
    account = _signer(digest, order_sig, order.WHAT, "the order")
    cost = _check_order(order, job, terms, now)
    granted = grant_digest(grant, domain)
    _check_grant(grant, _signer(granted, grant_sig, grant.WHAT, "the grant"), order, digest, account, terms)
    if grant.amount < cost:
        raise PaymentRequired(
            f"the grant holds {grant.amount}, below the {cost} this job may cost at {terms.centre} at its limits; "
            "ask your home for a grant of the order's maximum price"
        )
    payment = Payment(
        order=order.to_dict(),
        order_signature=order_sig,
        grant=grant.to_dict(),
        grant_signature=grant_sig,
        order_digest=digest,
        account=account,
    )
    return Accepted(order, grant, account, digest, granted, payment, cost)


def payment_account(order: dict[str, Any], order_signature: str, domain: DomainLike) -> str | None:
    """The checksummed account that signed `order` (as the client sent it), or None if it is not a signed order.

    For scoping an idempotency key before the payment is checked: the recovery is kept, so
    check_payment of the same order then costs no second one. None refuses nothing:
    check_payment refuses a malformed or badly signed order with its reason.
    """
    try:
        parsed = Order.from_dict(order)
        return _recovered(order_digest(parsed, domain), from_hex(order_signature, what="signature"), parsed.WHAT)
    except (InvalidPayment, InvalidSignature, HexError):
        return None


def _check_order(order: Order, job: Job, terms: Terms, now: int) -> int:
    """Refuses an order that does not pay for `job` here now; else the job's price at its limits."""
    if order.centre != centre_id(terms.centre):
        raise Invalid(
            f"this order is for another centre ({_name(order.centre)}), not {terms.centre}: "
            f"sign an order naming {terms.centre}"
        )
    if order.request != request_digest(job.request):
        raise Invalid("this order is for another job request: sign the order over the request you submit")
    if order.rates_version != terms.rates_version:
        raise Conflict(
            f"the order is priced at rates version {order.rates_version}, but {terms.centre} takes jobs at "
            f"version {terms.rates_version} now: sign a new order at version {terms.rates_version}"
        )
    if order.deadline <= now:
        raise Invalid(f"the order expired at {order.deadline} (it is {now} now): sign a new order")
    if order.deadline > now + MAX_DEADLINE_AHEAD:
        # Its home's collateral may be withdrawn a week (+ the booking delay) after now: a claim for this
        # job anchored later might find nothing to pay it (Settlement.withdrawalDelay).
        raise Invalid(
            f"the order's deadline {order.deadline} is more than {MAX_DEADLINE_AHEAD // 86400} days out (it is "
            f"{now} now): {terms.centre} could not be sure to be paid for it; sign an order due sooner"
        )
    room = now + job.walltime + DEADLINE_MARGIN
    if order.deadline < room:
        raise Invalid(
            f"the order's deadline {order.deadline} is too short for a walltime of {job.walltime} s: the job must "
            f"have ended by then; sign an order with a deadline of at least {room}"
        )
    cost = _cost(job, terms.prices)
    if order.max_price < cost:
        raise PaymentRequired(
            f"the order's maximum price {order.max_price} is below {cost}, what this job may cost at "
            f"{terms.centre} at its limits (rates version {terms.rates_version})"
        )
    return cost


def _check_grant(grant: Grant, signer: str, order: Order, digest: bytes, account: str, terms: Terms) -> None:
    if grant.home != centre_id(terms.home) or terms.home_account is None or signer != terms.home_account:
        raise Forbidden(
            f"grant from another home: your home is {terms.home}, and only its member account "
            f"({terms.home_account or 'none: not an active member'}) signs grants for you; this one names "
            f"{_name(grant.home)} and was signed by {signer}"
        )
    wrong = [
        name
        for name, ok in (
            ("order", grant.order == digest),
            ("account", grant.account == account),
            ("centre", grant.centre == order.centre),
            ("deadline", grant.deadline == order.deadline),
            ("amount", grant.amount <= order.max_price),
        )
        if not ok
    ]
    if wrong:
        raise Invalid(
            "the grant does not match the order: "
            + ", ".join(wrong)
            + " differ; ask your home for a grant of this order",
            reasons=[f"grant.{name} does not match the order" for name in wrong],
        )


def _cost(job: Job, prices: Prices) -> int:
    return max_price(job.walltime, job.cores, job.memory_mib, job.gpus, prices)


def _parse(kind: type[Order] | type[Grant], data: dict[str, Any], what: str) -> Any:
    try:
        return kind.from_dict(data)
    except InvalidPayment as exc:
        raise Invalid(f"the {what} is malformed: {exc}") from None


def _signature(text: str, what: str) -> bytes:
    try:
        return from_hex(text, what=what)
    except HexError as exc:
        raise Invalid(f"{what}: {exc}") from None


def _signer(digest: bytes, sig: bytes, kind: str, what: str) -> str:
    try:
        return _recovered(digest, sig, kind)
    except InvalidSignature as exc:
        raise Invalid(f"the signature of {what} is not valid: {exc}") from None


@lru_cache(maxsize=RECOVERIES_KEPT)
def _recovered(digest: bytes, sig: bytes, kind: str) -> str:
    """The checksummed signer of an EIP-712 `digest` (ledger.payment.recover's rules and refusals); a refusal is
    never kept."""
    return checksum_address(recover_digest(digest, sig, kind))


def _name(centre: bytes) -> str:
    """A centre id as its name where it is one (ids are names, zero-padded), else its hex."""
    name = centre.rstrip(b"\0")
    try:
        text = name.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + centre.hex()
    return text if text and text.isprintable() else "0x" + centre.hex()
