"""Checking one usage record's payment evidence, by the rules UsageLedger.answer applies.

A claim on a home stands only if every record in it can be evidenced: the order signed
by a payment account, the home's grant to that account, the price at the pinned rates
capped at the grant, the deadlines, and a receipt or the result key. The home's watcher,
the serving centre before it answers a dispute, and `xcentre audit verify` all run the
same pure check, so what they accept is what the contract accepts.

RecordEvidence is one record's bundle as the serving centre serves it
(`GET /v1/epochs/{e}/evidence?home=H`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from eth_utils import is_address, keccak, to_checksum_address

from ledger.ids import InvalidName, centre_name
from ledger.index.rows import ClaimInfo
from ledger.payment import Grant, Order, Receipt, grant_digest, order_digest
from ledger.pricing import Prices, price
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.records import (
    DomainLike,
    InvalidSignature,
    InvalidTypedData,
    TypedData,
    UsageRecord,
    expect_fields,
    record_digest,
    recover,
)
from ledger.sumtree import SumProof, SumTreeError, verify

__all__ = ["EvidenceError", "RecordEvidence", "check_evidence"]

SIGNATURE_BYTES = 65


class EvidenceError(ValueError):
    """An evidence bundle or argument that is malformed (not a finding about a valid one)."""


def _name(centre: bytes) -> str:
    try:
        return centre_name(centre)
    except InvalidName:
        return to_hex(centre)


def _uint64(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise EvidenceError(f"{what} must be an int in [0, 2**64), got {value!r:.80}")
    return value


def _sig(value: object, what: str) -> bytes:
    """A 65-byte signature from its 0x-hex spelling."""
    try:
        return from_hex(value, size=SIGNATURE_BYTES, what=what)
    except HexError as exc:
        raise EvidenceError(str(exc)) from None


def _typed(cls: type[TypedData], data: Any, what: str) -> Any:
    try:
        return cls.from_dict(data)
    except InvalidTypedData as exc:
        raise EvidenceError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class RecordEvidence:
    """One record of a claim with everything that evidences it, and its place in the sum tree."""

    record: UsageRecord
    signature: bytes
    order: Order
    order_signature: bytes
    grant: Grant
    grant_signature: bytes
    receipt_signature: bytes | None
    index: int
    proof: SumProof

    def to_dict(self) -> dict[str, Any]:
        """JSON: typed data as their to_dict, signatures as 0x-hex (receipt_signature null if none)."""
        return {
            "record": self.record.to_dict(),
            "signature": to_hex(self.signature),
            "order": self.order.to_dict(),
            "order_signature": to_hex(self.order_signature),
            "grant": self.grant.to_dict(),
            "grant_signature": to_hex(self.grant_signature),
            "receipt_signature": None if self.receipt_signature is None else to_hex(self.receipt_signature),
            "index": self.index,
            "proof": self.proof.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> RecordEvidence:
        """From the evidence endpoint's JSON; EvidenceError naming the first malformed part."""
        expect_fields(data, [f.name for f in fields(cls)], "record evidence", EvidenceError)
        try:
            proof = SumProof.from_dict(data["proof"])
        except SumTreeError as exc:
            raise EvidenceError(f"proof: {exc}") from None
        receipt = data["receipt_signature"]
        return cls(
            record=_typed(UsageRecord, data["record"], "record"),
            signature=_sig(data["signature"], "signature"),
            order=_typed(Order, data["order"], "order"),
            order_signature=_sig(data["order_signature"], "order_signature"),
            grant=_typed(Grant, data["grant"], "grant"),
            grant_signature=_sig(data["grant_signature"], "grant_signature"),
            receipt_signature=None if receipt is None else _sig(receipt, "receipt_signature"),
            index=_uint64(data["index"], "index"),
            proof=proof,
        )


def _signer(obj: TypedData, domain: DomainLike, sig: bytes, what: str) -> tuple[str | None, list[str]]:
    try:
        return recover(obj, domain, sig), []
    except InvalidSignature as exc:
        return None, [f"{what} signature is malformed ({exc})"]


def check_evidence(
    ev: RecordEvidence,
    *,
    domain: DomainLike,
    home_account: str,
    rates: Prices | None,
    anchored_at: int | None,
    booking_delay: int,
    claim: ClaimInfo | None = None,
    key: bytes | None = None,
    need_key: bool = False,
    delivery: bool = True,
) -> list[str]:
    """Findings against UsageLedger.answer's rules 1-7 (empty: the contract would accept it).

    `home_account` is the payer home's member chain account; `rates` the serving centre's
    prices of the record's rates version (None: never published); `anchored_at` the
    anchor's block time (None before anchoring: rule 6's booking delay is not checked).
    Without a `claim`, rules 1 and 2 are skipped and centre and home are the record's.
    `key` is a revealed result key; `need_key` a dispute only a key answers. With
    `delivery=False` only rules 1-6 (the terms) are checked: for a payer that judges
    delivery itself, from the receipt or its user's complaint.
    """
    if not isinstance(home_account, str) or not is_address(home_account):
        raise EvidenceError(f"home_account must be an address, got {home_account!r:.80}")
    if anchored_at is not None:
        _uint64(anchored_at, "anchored_at")
    _uint64(booking_delay, "booking_delay")
    if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) != 32):
        raise EvidenceError(f"a result key is 32 bytes, got {key!r:.80}")
    if not delivery and (key is not None or need_key):
        raise EvidenceError("a key or need_key asks about delivery, which delivery=False leaves out")
    rec, order, grant = ev.record, ev.order, ev.grant
    centre, home = (claim.centre, claim.home) if claim else (rec.serving_centre, rec.home_centre)
    rd = record_digest(rec, domain)
    od, gd = order_digest(order, domain), grant_digest(grant, domain)
    out: list[str] = []
    # 1. the record belongs to the claim
    if claim:
        if rec.serving_centre != centre:
            out.append(f"record names {_name(rec.serving_centre)} as serving centre, the claim is {_name(centre)}'s")
        if rec.home_centre != home:
            out.append(f"record names {_name(rec.home_centre)} as home, the claim is on {_name(home)}")
        if rec.epoch != claim.epoch:
            out.append(f"record is for epoch {rec.epoch}, the claim for epoch {claim.epoch}")
        # 2. the record and its price are the claim's leaf at index
        try:
            proven = verify(claim.root, claim.total, claim.count, ev.index, rd, rec.price, ev.proof)
        except SumTreeError as exc:
            raise EvidenceError(f"claim: {exc}") from None
        if not proven:
            out.append(f"sum proof of the record at index {ev.index} does not match the anchored claim")
    # 3. the order
    if od != rec.order:
        out.append("record does not name this order (order digest differs)")
    if order.centre != centre:
        out.append(f"order is for {_name(order.centre)}, not {_name(centre)}")
    if order.rates_version != rec.rates_version:
        out.append(f"order is priced at rates version {order.rates_version}, the record at {rec.rates_version}")
    signer, bad = _signer(order, domain, ev.order_signature, "order")
    out += bad
    if signer is not None and signer != grant.account:
        out.append(f"order is not signed by the granted account {grant.account} (recovers to {signer})")
    # 4. the grant
    if gd != rec.grant:
        out.append("record does not name this grant (grant digest differs)")
    if grant.order != rec.order:
        out.append("grant is for another order than the record's")
    if grant.home != home:
        out.append(f"grant is from {_name(grant.home)}, not {_name(home)}")
    if grant.centre != centre:
        out.append(f"grant is for {_name(grant.centre)}, not {_name(centre)}")
    if grant.amount > order.max_price:
        out.append(f"grant of {grant.amount} is more than the order's maximum price {order.max_price}")
    if grant.deadline != order.deadline:
        out.append(f"grant deadline {grant.deadline} differs from the order's {order.deadline}")
    signer, bad = _signer(grant, domain, ev.grant_signature, "grant")
    out += bad
    if signer is not None and signer != to_checksum_address(home_account):
        out.append(f"grant is not signed by {_name(home)}'s account {home_account} (recovers to {signer})")
    # 5. the price, at the pinned rates, capped at the grant
    if rates is None:
        out.append(f"record names rates version {rec.rates_version}, which {_name(centre)} never published")
    else:
        expected = min(price(rec, rates), grant.amount)
        if rec.price != expected:
            out.append(
                f"record is priced {rec.price}, but its meters at rates version {rec.rates_version}"
                f" capped at the grant cost {expected}"
            )
    # 6. deadlines
    if rec.ended_at > order.deadline:
        out.append(f"job ended at {rec.ended_at}, after the order's deadline {order.deadline}")
    if anchored_at is not None and anchored_at > order.deadline + booking_delay:
        out.append(
            f"claim anchored at {anchored_at}, after the order's deadline {order.deadline}"
            f" plus the booking delay {booking_delay}"
        )
    if not delivery:
        return out
    # 7. delivery: the key, or the user's receipt
    # (as the contract: a valid receipt answers even beside a wrong key, unless need_key)
    key_ok = key is not None and keccak(key) == rec.lock_hash
    wrong_key = "key does not match the record's lock hash"
    if need_key and not key_ok:
        out.append(wrong_key if key is not None else "the user says it did not get the key: only the key answers")
    elif not key_ok:
        bad = _receipt_findings(ev.receipt_signature, rd, grant.account, domain)
        out.extend(f"{wrong_key}, and {f}" if key is not None else f for f in bad)
    return out


def _receipt_findings(sig: bytes | None, record: bytes, account: str, domain: DomainLike) -> list[str]:
    if sig is None:
        return ["neither a receipt nor the key evidences delivery"]
    signer, bad = _signer(Receipt(record=record), domain, sig, "receipt")
    if bad:
        return bad
    if signer != account:
        return [f"receipt is not signed by the granted account {account} for this record (recovers to {signer})"]
    return []
