"""Paying for a job, on the user's side: the order, the home's grant, the receipt and the result's key.

The client signs an order with a fresh payment account for one centre's quote (its
rates version and the job's maximum price there, from its POST /v1/jobs/quote), gets its home's
grant for it, and submits both with the job. When the job is done it checks the
serving centre's record (its order, a price within the order, the centre's
signature), signs a receipt for it, and opens the sealed outputs with the key k the
receipt releases: k must hash to the record's lock hash, or the user complains at
home (`xcentre complain`), which disputes the record on chain until k is revealed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from gateway.api.schemas import JobRequest
from ledger import lock
from ledger.ids import centre_id
from ledger.payment import Order, Receipt, order_digest, request_digest, sign_typed
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.records import Domain, InvalidRecord, InvalidSignature, UsageRecord, record_digest, recover_signer

#: Seconds an order leaves beyond the job's walltime for it to wait in the centre's queue and end.
ORDER_SLACK = 600


class PaymentError(Exception):
    """The client will not pay as things stand: the record or the key is not what was agreed."""


class RecordRefused(PaymentError):
    """The serving centre's record is not for our order, prices above it, or is not its signature: no receipt."""


class WrongResultKey(PaymentError):
    """The key released for our receipt does not open the result: complain at home to have it revealed on chain."""


@dataclass(frozen=True)
class Quote:
    """What a centre takes a job at now, as it quotes it: its rates version and the job's price at its limits."""

    centre: str
    rates_version: int
    max_price: int


@dataclass(frozen=True)
class Paid:
    """An order signed by a fresh account and its home's grant: what pays for one job at one centre."""

    order: Order
    order_signature: bytes
    grant: dict[str, Any]
    grant_signature: str
    account: str
    digest: bytes

    def fields(self) -> dict[str, Any]:
        """The fields POST /v1/jobs takes besides the request."""
        return {
            "order": self.order.to_dict(),
            "order_signature": to_hex(self.order_signature),
            "grant": self.grant,
            "grant_signature": self.grant_signature,
        }


@dataclass(frozen=True)
class Result:
    """A finished job's outputs, opened; `price` is what the receipt acknowledged (0: not billed)."""

    view: dict
    stdout: str
    stderr: str
    price: int
    record: str | None
    """The digest of the record the receipt is for (None: the job was not billed)."""


def signing_domain(members: dict) -> Domain:
    """The EIP-712 domain orders and receipts are signed in, from the home's `GET /v1/members` answer."""
    return Domain(chain_id=members["domain"]["chain_id"], verifying_contract=members["domain"]["verifying_contract"])


def job_request(job: dict, centre: str) -> dict:
    """The request as the centre stores it (its defaults filled in): what the order's digest covers."""
    return JobRequest.model_validate(job | {"centre": centre}).model_dump() | {"centre": centre}


def make_order(job: dict, quote: Quote, *, now: int, nonce: int | None = None, slack: int = ORDER_SLACK) -> Order:
    """The order for `job` at the quoted centre; it must have ended by now + walltime + `slack`.

    The slack is how long an unused order (a job refused or never run) keeps its hold at home:
    it is refunded once the deadline and the booking delay have passed.
    """
    return Order(
        request=request_digest(job_request(job, quote.centre)),
        centre=centre_id(quote.centre),
        rates_version=quote.rates_version,
        max_price=quote.max_price,
        deadline=now + int(job["walltime"]) + slack,
        nonce=secrets.randbits(256) if nonce is None else nonce,
    )


def pay(
    job: dict,
    quote: Quote,
    account: LocalAccount,
    grant: Callable[[dict, str], dict],
    domain: Domain,
    *,
    now: int | None = None,
    slack: int = ORDER_SLACK,
) -> Paid:
    """Sign the order with `account` (fresh, for this order only) and get the home's grant for it (`grant`)."""
    order = make_order(job, quote, now=int(time.time()) if now is None else now, slack=slack)
    signature = sign_typed(order, domain, account.key)
    granted = grant(order.to_dict(), to_hex(signature))
    return Paid(
        order=order,
        order_signature=signature,
        grant=granted["grant"],
        grant_signature=granted["grant_signature"],
        account=account.address,
        digest=order_digest(order, domain),
    )


def check_record(view: dict, paid: Paid, centre: str, centre_account: str, domain: Domain) -> UsageRecord:
    """The job's record, if it is for our order at that centre, prices within it and is the centre's signature."""
    signed = view.get("record") or {}
    try:
        record = UsageRecord.from_dict(signed.get("data"))
        signature = from_hex(signed.get("signature", ""), what="record signature")
        signer = recover_signer(record, domain, signature)
    except (InvalidRecord, InvalidSignature, HexError) as exc:
        raise RecordRefused(f"{centre}'s usage record of job {view.get('id')} does not parse: {exc}") from None
    problems = []
    if record.order != paid.digest:
        problems.append(f"it names order {to_hex(record.order)}, not ours ({to_hex(paid.digest)})")
    if record.serving_centre != centre_id(centre):
        problems.append("it names another serving centre")
    if record.price > paid.order.max_price or record.price > int(paid.grant["amount"]):
        problems.append(f"its price {record.price} is above the order's maximum {paid.order.max_price}")
    if record.rates_version != paid.order.rates_version:
        problems.append(f"it is priced at rates version {record.rates_version}, not the order's")
    if signer != centre_account:
        problems.append(f"it is signed by {signer}, not by {centre} ({centre_account})")
    if to_hex(record.lock_hash) != view.get("lock_hash"):
        problems.append("its lock hash is not the one the job shows")
    if problems:
        raise RecordRefused(f"no receipt for {centre}'s record of job {view.get('id')}: " + "; ".join(problems))
    return record


def receipt_signature(record: UsageRecord, account: LocalAccount, domain: Domain) -> str:
    """The receipt of a record: the order's account signs Receipt(record digest)."""
    return to_hex(sign_typed(Receipt(record=record_digest(record, domain)), domain, account.key))


def open_result(view: dict, record: UsageRecord, key_hex: str, domain: Domain) -> tuple[str, str]:
    """The job's stdout and stderr, opened with the key released for our receipt.

    WrongResultKey, saying what to run, when the key does not hash to the record's lock hash or
    does not open the outputs.
    """
    digest = to_hex(record_digest(record, domain))
    # an anonymous job's complaint is signed by its order's account; a signed-on one's by the user at home
    who = "" if record.group_signature != bytes(32) else " --user <your uid>"
    complain = (
        f"run `xcentre complain --record {digest}{who}` so that your home disputes the record and the centre must "
        "reveal the key on chain (or lose its claim)"
    )
    try:
        key = from_hex(key_hex, size=32, what="key")
    except HexError as exc:
        raise WrongResultKey(f"the centre's key for job {view['id']} is malformed ({exc}): {complain}") from None
    if lock.lock_hash(key) != record.lock_hash:
        raise WrongResultKey(
            f"the centre released a wrong key for job {view['id']}: keccak256(k) is not the record's lock hash; "
            + complain
        )
    try:
        sealed = view["sealed"]
        stdout = lock.open_sealed(key, from_hex(sealed["stdout"], what="stdout"))
        stderr = lock.open_sealed(key, from_hex(sealed["stderr"], what="stderr"))
    except (lock.WrongKey, HexError, KeyError, TypeError) as exc:
        raise WrongResultKey(f"job {view['id']}'s outputs do not open under its key ({exc}): {complain}") from None
    return stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
