"""The payer home's hold book: what it reserved for each order it granted, until paid or refunded.

A hold is written in the transaction that checks it fits (the project's
allocation, the home's free collateral), so two requests racing for the last
of an allocation cannot both pass: BEGIN IMMEDIATE serialises them, and the
second sees the first's hold. Every payment account pays for one order only:
the account is unique, so a second order from it is refused. An anonymous
grant's hold keeps the group signature it was granted under, found by its
keccak256: the supervisors can ask to open it as they would a job's.

A hold ends `paid` (its record settled: the price is spent, the rest of the
hold released) or `refunded` (its claim was voided, or no record came in
time). A job the home served to its own user has no claim on chain to settle
(a centre never claims on itself): its hold is paid when the epoch that takes
its record closes (`pay_own_records`, in the closing transaction), since that
closure fixes the home's claim on its own users, anchored for the audit and
never netted. Amounts are SQLite integers (64-bit): allocations are bounded so
that every sum fits (gateway.node.config.MAX_ALLOCATION).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from gateway.store import checks
from gateway.store.base import StoreBase
from gateway.store.errors import StoreError

__all__ = [
    "HOLD_STATUSES",
    "MAX_AMOUNT",
    "AccountUsed",
    "CollateralCommitted",
    "Complaint",
    "ComplaintTaken",
    "Hold",
    "HoldBook",
    "HoldStateError",
    "NewHold",
    "OrderTaken",
    "OverBudget",
    "SettleOutcome",
    "UnknownHold",
    "pay_own_records",
]

log = logging.getLogger(__name__)

HOLD_STATUSES = ("held", "paid", "refunded")
MAX_AMOUNT = 2**63 - 1
"""The largest amount the book holds: SQLite's integers are 64-bit."""


class OrderTaken(StoreError):
    """The order was granted before, to another principal: an order pays for one user's one job."""


class AccountUsed(StoreError):
    """The payment account already paid for another order: an account is for one order only."""


class OverBudget(StoreError):
    """The hold does not fit the project's available allocation. `figures` say by how much."""

    def __init__(self, message: str, figures: dict[str, int]) -> None:
        super().__init__(message)
        self.figures = figures


class CollateralCommitted(OverBudget):
    """The home's outstanding holds would exceed its free collateral in the Settlement contract."""


class ComplaintTaken(StoreError):
    """The grant was complained of before, for another record: one complaint per grant."""


class UnknownHold(StoreError, LookupError):
    """No hold with that grant digest."""


class HoldStateError(StoreError):
    """The hold's state does not allow it (a paid hold refunded, a price above the hold)."""


@dataclass(frozen=True)
class NewHold:
    """What a grant reserves: checked (by the payer) before it reaches the book."""

    order_digest: bytes
    grant_digest: bytes
    account: str
    principal: str
    project: str
    centre: str
    amount: int
    deadline: int
    order: dict[str, Any]
    grant: dict[str, Any]
    grant_signature: bytes
    group_signature: bytes | None = None
    """The group signature an anonymous grant was made under (the supervisors may ask to open it); None when the
    user signed on."""


@dataclass(frozen=True)
class Hold:
    order_digest: str
    grant_digest: str
    account: str
    principal: str
    project: str
    centre: str
    amount: int
    deadline: int
    status: str
    price: int | None
    order: dict[str, Any]
    grant: dict[str, Any]
    grant_signature: str
    created_at: int
    updated_at: int
    group_signature: bytes | None = None


@dataclass(frozen=True)
class Complaint:
    record_digest: str
    grant_digest: str
    principal: str
    record: dict[str, Any]
    status: str
    created_at: int


@dataclass(frozen=True)
class SettleOutcome:
    """What settle_holds did with each (grant, price) it was given."""

    paid: list[str]
    already: list[str]
    unknown: list[str]
    refused: list[str]


def _hold(row: sqlite3.Row) -> Hold:
    return Hold(
        order_digest=row["order_digest"],
        grant_digest=row["grant_digest"],
        account=row["account"],
        principal=row["principal"],
        project=row["project"],
        centre=row["centre"],
        amount=int(row["amount"]),
        deadline=int(row["deadline"]),
        status=row["status"],
        price=None if row["price"] is None else int(row["price"]),
        order=json.loads(row["order_json"]),
        grant=json.loads(row["grant_json"]),
        grant_signature=row["grant_signature"],
        created_at=int(row["created_at"]),
        updated_at=int(row["updated_at"]),
        group_signature=None if row["group_signature"] is None else bytes(row["group_signature"]),
    )


def _complaint(row: sqlite3.Row) -> Complaint:
    return Complaint(
        record_digest=row["record_digest"],
        grant_digest=row["grant_digest"],
        principal=row["principal"],
        record=json.loads(row["record"]),
        status=row["status"],
        created_at=int(row["created_at"]),
    )


def _project_figures(db: sqlite3.Connection, project: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN status = 'held' THEN amount END), 0),"
        " COALESCE(SUM(CASE WHEN status = 'paid' THEN price END), 0) FROM holds WHERE project = ?",
        (project,),
    ).fetchone()
    return int(row[0]), int(row[1])


def _held_total(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE status = 'held'").fetchone()[0])


def pay_own_records(db: sqlite3.Connection, epoch: int, now: int) -> list[str]:
    """Pay the holds of this home's own users' jobs served here, whose records the closing `epoch` takes.

    Called inside the closing transaction, so the book and the home's claim on its
    own users (the closure's tree, anchored for the audit) change together. A record
    names the grant it is paid under; a grant digest in this book is one this home
    issued, so the join finds exactly the own users' records. A lapsed record is in
    no claim and pays nothing; a hold already paid is left as it is; a price above
    the hold is never paid (the centre caps a record at its grant). Held or
    refunded, a hold is paid: the claim stands, as `HoldBook.settle` follows a
    settled claim. Returns the grant digests paid.
    """
    rows = db.execute(
        "SELECT h.grant_digest, h.status, h.amount, r.record_id, r.record FROM usage_records AS r"
        " JOIN holds AS h ON h.grant_digest ="
        " (CASE WHEN json_valid(r.record) THEN lower(substr(json_extract(r.record, '$.grant'), 3)) END)"
        " WHERE r.epoch = ? AND r.lapsed_at IS NULL",
        (epoch,),
    ).fetchall()
    paid: list[str] = []
    for row in rows:
        if row["status"] == "paid":
            continue
        price = json.loads(row["record"]).get("price")
        if not isinstance(price, int) or isinstance(price, bool) or not 0 <= price <= row["amount"]:
            log.warning(
                "record %s names grant 0x%s at a price (%r) its hold (%d) does not allow: not paid",
                row["record_id"],
                row["grant_digest"],
                price,
                row["amount"],
            )
            continue
        db.execute(
            "UPDATE holds SET status = 'paid', price = ?, updated_at = ? WHERE grant_digest = ?",
            (price, now, row["grant_digest"]),
        )
        paid.append(row["grant_digest"])
    return paid


class HoldBook(StoreBase):
    """The holds and complaints of a gateway's store (gateway.db), through the store's connections."""

    def __init__(self, store: StoreBase) -> None:
        self._share(store)

    # -- grants ------------------------------------------------------------------

    def reserve(self, new: NewHold, allocation: int, collateral: int) -> tuple[Hold, bool]:
        """Hold `new.amount` against the project's allocation and the home's free collateral, durably.

        Returns (hold, created). The same order again (a retry) returns its hold
        (created=False) whatever the budget is now, and keeps its first group
        signature. Refuses: OrderTaken (the order was granted to someone else,
        or the group signature was granted another order), AccountUsed (the account paid for
        another order), OverBudget (allocation - held - spent < amount),
        CollateralCommitted (held + amount > collateral). Nothing is written
        when it refuses.
        """
        order_digest = checks.hex32("order_digest", new.order_digest)
        grant_digest = checks.hex32("grant_digest", new.grant_digest)
        for name in ("account", "principal", "project", "centre"):
            checks.text(name, getattr(new, name), max_len=512)
        checks.natural("amount", new.amount)
        checks.natural("deadline", new.deadline)
        checks.natural("allocation", allocation)
        checks.natural("collateral", collateral)
        order_json = checks.canonical_json("order", new.order)
        grant_json = checks.canonical_json("grant", new.grant)
        signature = checks.raw_bytes("grant_signature", new.grant_signature).hex()
        signed = checks.group_signature(new.group_signature)
        signed_hash = None if signed is None else keccak(signed).hex()
        with self._tx() as db:
            row = db.execute("SELECT * FROM holds WHERE order_digest = ?", (order_digest,)).fetchone()
            if row is not None:
                if row["principal"] != new.principal:
                    raise OrderTaken(f"order 0x{order_digest} was granted before, to another user")
                return _hold(row), False
            used = db.execute("SELECT order_digest FROM holds WHERE account = ?", (new.account,)).fetchone()
            if used is not None:
                raise AccountUsed(
                    f"payment account {new.account} already paid for order 0x{used[0]}: an account is for one "
                    "order only; sign each order with a fresh account"
                )
            if signed_hash is not None:
                seen = db.execute(
                    "SELECT order_digest FROM holds WHERE group_signature_hash = ?", (signed_hash,)
                ).fetchone()
                if seen is not None:
                    raise OrderTaken(
                        f"this group signature was already accepted for order 0x{seen[0]}: a signature is over one "
                        "order"
                    )
            held, spent = _project_figures(db, new.project)
            available = allocation - held - spent
            if new.amount > available:
                raise OverBudget(
                    f"project {new.project} has {max(available, 0)} available, less than the {new.amount} this "
                    "order may cost",
                    {
                        "allocation": allocation,
                        "held": held,
                        "spent": spent,
                        "available": available,
                        "asked": new.amount,
                    },
                )
            outstanding = _held_total(db)
            if outstanding + new.amount > min(collateral, MAX_AMOUNT):
                raise CollateralCommitted(
                    f"the home's collateral is committed: its outstanding holds ({outstanding}) and this order "
                    f"({new.amount}) would exceed its free collateral in the Settlement contract ({collateral})",
                    {"collateral": collateral, "outstanding": outstanding, "asked": new.amount},
                )
            now = self._now()
            db.execute(
                "INSERT INTO holds (order_digest, grant_digest, account, principal, project, centre, amount, deadline,"
                " status, price, order_json, grant_json, grant_signature, created_at, updated_at, group_signature,"
                " group_signature_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'held', NULL, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order_digest,
                    grant_digest,
                    new.account,
                    new.principal,
                    new.project,
                    new.centre,
                    new.amount,
                    new.deadline,
                    order_json,
                    grant_json,
                    signature,
                    now,
                    now,
                    signed,
                    signed_hash,
                ),
            )
            row = db.execute("SELECT * FROM holds WHERE order_digest = ?", (order_digest,)).fetchone()
        return _hold(row), True

    # -- reading ----------------------------------------------------------------

    def hold(self, grant_digest: bytes | str) -> Hold | None:
        rows = self._read("SELECT * FROM holds WHERE grant_digest = ?", (checks.hex32("grant_digest", grant_digest),))
        return _hold(rows[0]) if rows else None

    def hold_for_order(self, order_digest: bytes | str) -> Hold | None:
        rows = self._read("SELECT * FROM holds WHERE order_digest = ?", (checks.hex32("order_digest", order_digest),))
        return _hold(rows[0]) if rows else None

    def hold_by_group_signature(self, signature_hash: bytes | str) -> Hold | None:
        """The anonymous hold granted under the group signature with this keccak256, if any."""
        rows = self._read(
            "SELECT * FROM holds WHERE group_signature_hash = ?", (checks.hex32("signature hash", signature_hash),)
        )
        return _hold(rows[0]) if rows else None

    def holds_of(self, principal: str, limit: int = 100) -> list[Hold]:
        """A user's holds, most recent first."""
        checks.positive_int("limit", limit)
        rows = self._read(
            "SELECT * FROM holds WHERE principal = ? ORDER BY created_at DESC, rowid DESC LIMIT ?", (principal, limit)
        )
        return [_hold(r) for r in rows]

    def holds_in_status(self, status: str) -> list[Hold]:
        if status not in HOLD_STATUSES:
            raise StoreError(f"status must be one of {', '.join(HOLD_STATUSES)}; got {status!r}")
        return [_hold(r) for r in self._read("SELECT * FROM holds WHERE status = ? ORDER BY rowid", (status,))]

    def billable(self, centre: str, anchored_at: int, booking_delay: int, limit: int) -> int:
        """How many of this home's grants to `centre` a claim anchored at `anchored_at` could bill (on chain: the
        order's deadline + booking delay not passed), counted up to `limit`. Every status counts: the chain pays a
        grant once whatever the book says of it, so a paid or refunded grant can still answer for one leaf."""
        checks.natural("anchored_at", anchored_at)
        checks.natural("booking_delay", booking_delay)
        checks.natural("limit", limit)
        row = self._read(  # SQLite's integers are 64-bit: a claim's count or time may be a uint64
            "SELECT COUNT(*) FROM (SELECT 1 FROM holds WHERE centre = ? AND deadline + ? >= ? LIMIT ?)",
            (centre, min(booking_delay, MAX_AMOUNT), min(anchored_at, MAX_AMOUNT), min(limit, MAX_AMOUNT)),
        )[0]
        return int(row[0])

    def project_figures(self, project: str) -> tuple[int, int]:
        """(held, spent) of a project."""
        with self._reading() as db:
            return _project_figures(db, project)

    def user_figures(self, principal: str) -> tuple[int, int]:
        """(held, spent) of one user, over all their projects."""
        row = self._read(
            "SELECT COALESCE(SUM(CASE WHEN status = 'held' THEN amount END), 0),"
            " COALESCE(SUM(CASE WHEN status = 'paid' THEN price END), 0) FROM holds WHERE principal = ?",
            (principal,),
        )[0]
        return int(row[0]), int(row[1])

    def outstanding(self) -> int:
        """The home's held total: what its free collateral must cover."""
        with self._reading() as db:
            return _held_total(db)

    # -- the hold's end ---------------------------------------------------------

    def settle(self, paid: Iterable[tuple[bytes | str, int]]) -> SettleOutcome:
        """Mark holds paid at their records' prices (records in a settled claim that was not voided).

        One transaction. A hold already paid at that price is left as it is
        (`already`); a grant this home never issued is `unknown`; a price above
        the hold, or a second price for a paid hold, is `refused` and changes
        nothing (a claim can never take more than the grant: the contract caps
        it). A hold refunded by `expire` that a settled claim paid after all is
        paid: the book follows what the chain moved.
        """
        outcome = SettleOutcome([], [], [], [])
        items = [(checks.hex32("grant_digest", g), checks.natural("price", p)) for g, p in paid]
        with self._tx() as db:
            now = self._now()
            for grant, price in items:
                row = db.execute("SELECT status, amount, price FROM holds WHERE grant_digest = ?", (grant,)).fetchone()
                if row is None:
                    outcome.unknown.append(grant)
                elif row["status"] == "paid":
                    (outcome.already if row["price"] == price else outcome.refused).append(grant)
                elif price > row["amount"]:
                    outcome.refused.append(grant)
                else:
                    db.execute(
                        "UPDATE holds SET status = 'paid', price = ?, updated_at = ? WHERE grant_digest = ?",
                        (price, now, grant),
                    )
                    outcome.paid.append(grant)
        return outcome

    def refund(self, grant_digest: bytes | str) -> Hold:
        """Release a hold (its claim was voided): held -> refunded; refunding again is a no-op."""
        grant = checks.hex32("grant_digest", grant_digest)
        with self._tx() as db:
            row = db.execute("SELECT * FROM holds WHERE grant_digest = ?", (grant,)).fetchone()
            if row is None:
                raise UnknownHold(f"no hold for grant 0x{grant}")
            if row["status"] == "paid":
                raise HoldStateError(f"the hold for grant 0x{grant} is paid ({row['price']}): it cannot be refunded")
            if row["status"] == "held":
                db.execute(
                    "UPDATE holds SET status = 'refunded', updated_at = ? WHERE grant_digest = ?", (self._now(), grant)
                )
                row = db.execute("SELECT * FROM holds WHERE grant_digest = ?", (grant,)).fetchone()
        return _hold(row)

    def expire(self, now: int, booking_delay: int) -> list[Hold]:
        """Refund every hold still held whose deadline + booking_delay is before `now`; returns them."""
        checks.natural("now", now)
        checks.natural("booking_delay", booking_delay)
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM holds WHERE status = 'held' AND deadline + ? < ? ORDER BY rowid", (booking_delay, now)
            ).fetchall()
            stamp = self._now()
            for row in rows:
                db.execute(
                    "UPDATE holds SET status = 'refunded', updated_at = ? WHERE grant_digest = ?",
                    (stamp, row["grant_digest"]),
                )
            done = [
                db.execute("SELECT * FROM holds WHERE grant_digest = ?", (row["grant_digest"],)).fetchone()
                for row in rows
            ]
        return [_hold(r) for r in done]

    # -- complaints -------------------------------------------------------------

    def complain(
        self, record_digest: bytes | str, grant_digest: bytes | str, principal: str, record: dict[str, Any]
    ) -> tuple[Complaint, bool]:
        """Note that a user got no key for a record; returns (complaint, created).

        Once per grant: the record is the user's word, and a grant pays for one record, so another record
        for a grant already complained of is refused (ComplaintTaken) rather than stored without end.
        """
        digest = checks.hex32("record_digest", record_digest)
        grant = checks.hex32("grant_digest", grant_digest)
        checks.text("principal", principal, max_len=512)
        text = checks.canonical_json("record", record)
        with self._tx() as db:
            row = db.execute("SELECT * FROM complaints WHERE grant_digest = ?", (grant,)).fetchone()
            if row is not None and row["record_digest"] != digest:
                raise ComplaintTaken(
                    f"you complained about grant 0x{grant} already, for record 0x{row['record_digest']}: "
                    "a grant pays for one record, so one complaint per grant"
                )
            if row is None:
                db.execute(
                    "INSERT INTO complaints (record_digest, grant_digest, principal, record, status, created_at)"
                    " VALUES (?, ?, ?, ?, 'open', ?)",
                    (digest, grant, principal, text, self._now()),
                )
                row = db.execute("SELECT * FROM complaints WHERE record_digest = ?", (digest,)).fetchone()
                return _complaint(row), True
        return _complaint(row), False

    def complaints(self, status: str | None = None) -> list[Complaint]:
        """Complaints in the order they came (only `open` or `disputed` ones, if asked)."""
        if status is None:
            rows = self._read("SELECT * FROM complaints ORDER BY created_at, rowid")
        else:
            if status not in ("open", "disputed"):
                raise StoreError(f"a complaint's status is 'open' or 'disputed', not {status!r}")
            rows = self._read("SELECT * FROM complaints WHERE status = ? ORDER BY created_at, rowid", (status,))
        return [_complaint(r) for r in rows]

    def mark_disputed(self, record_digest: bytes | str) -> None:
        """The watcher disputed the complained-of record on chain."""
        digest = checks.hex32("record_digest", record_digest)
        with self._tx() as db:
            db.execute("UPDATE complaints SET status = 'disputed' WHERE record_digest = ?", (digest,))
