"""The payer home's grant desk: its users' orders held against their projects' allocations, and signed.

A user signs an order with a fresh payment account; their home, on a password
sign-on there, reserves the order's maximum price against one of the user's
projects (an LDAP group with an allocation) and signs a Grant for it with the
home's member chain key. The serving centre checks order and grant itself, so
no server-to-server call is made per job. The hold is committed before the
grant leaves the home, so a grant never outlives a crash without its hold;
holds end paid or refunded, driven by the home's watcher (`settle_holds`,
`refund`, `expire`), except the holds of jobs the home served itself: no claim
on chain pays those, so the epoch's close that takes their records pays them
(`gateway.store.holds.pay_own_records`).

The home learns where its users compute (the order names the centre), as a
card issuer does; the serving centre learns only a one-time account.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils import keccak

from auth.directory import Directory
from auth.tokens import Claims
from gateway.api.schemas import JOB_SIGNATURE_SKEW, complaint_message
from gateway.node.errors import Conflict, Forbidden, Invalid, NotFound, PaymentRequired, Unauthenticated, Unavailable
from gateway.store.holds import (
    MAX_AMOUNT,
    AccountUsed,
    CollateralCommitted,
    Complaint,
    ComplaintTaken,
    Hold,
    HoldBook,
    NewHold,
    OrderTaken,
    OverBudget,
    SettleOutcome,
)
from ledger.ids import centre_id
from ledger.index import EventIndex
from ledger.payment import (
    MAX_DEADLINE_AHEAD,
    Grant,
    InvalidPayment,
    InvalidSignature,
    Order,
    grant_digest,
    order_digest,
    recover,
    sign_typed,
)
from ledger.primitives.hex import HexError, bytes32, from_hex, to_hex
from ledger.records import Domain, InvalidRecord, UsageRecord, record_digest

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous:"
"""The principal of an anonymous grant's hold: `anonymous:<project>`, naming no member (gateway.node.groups)."""


class CollateralSource(Protocol):
    """Where the home's free collateral in the Settlement contract is read from."""

    def collateral(self) -> int: ...


@dataclass(frozen=True)
class IndexCollateral:
    """The free collateral as the local index has it from Settlement's events: no chain read per grant."""

    index: EventIndex
    account: str

    def collateral(self) -> int:
        return int(self.index.collateral(self.account).free)


@dataclass(frozen=True)
class ChainCollateral:
    """The free collateral read from the contract: `read()` is Settlement.collateralOf(account).call."""

    read: Callable[[], Any]

    def collateral(self) -> int:
        balance, locked, pending, *_ = self.read()
        return max(0, int(balance) - int(locked) - int(pending))


def collateral_source(index: Any, account: str, settlement: Any) -> CollateralSource:
    """The index when it follows collateral, else the Settlement contract through the chain handle."""
    if callable(getattr(index, "collateral", None)):
        return IndexCollateral(index, account)
    return ChainCollateral(settlement.functions.collateralOf(account).call)


def _figures(figures: Mapping[str, int]) -> list[str]:
    return [f"{name}: {value}" for name, value in figures.items()]


class Payer:
    """One home's grants, holds, balances and complaints."""

    def __init__(
        self,
        *,
        name: str,
        account: LocalAccount,
        domain: Domain,
        index: EventIndex,
        directory: Directory,
        book: HoldBook,
        allocations: Mapping[str, int],
        collateral: CollateralSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.home_id = centre_id(name)
        self._account = account
        self._domain = domain
        self._index = index
        self._directory = directory
        self.book = book
        self._allocations = dict(allocations)
        self._collateral = collateral
        self._clock = clock

    # -- grants ------------------------------------------------------------------

    def grant(self, claims: Claims, order: dict[str, Any], order_signature: str, project: str | None = None) -> dict:
        """Hold the order's maximum price against the user's project and sign the Grant; idempotent per order."""
        self.home_session(claims, "grants")
        return self.hold_and_sign(claims.sub, order, order_signature, lambda: self.project_of(claims, project))

    def hold_and_sign(
        self,
        principal: str,
        order: dict[str, Any],
        order_signature: str,
        project: Callable[[], tuple[str, int]],
        group_signature: bytes | None = None,
    ) -> dict:
        """The grant's own step, for whoever the caller vouched for: a signed-on user (their uid@home), or a group
        signature's project (`anonymous:<project>`, the hold keeping `group_signature` for the supervisors).
        `project()` names the project and its allocation; it is asked only for a new order (a retry gets its grant
        whatever changed since). Idempotent per order."""
        parsed = self.parse_order(order)
        account = self.order_signer(parsed, order_signature)
        digest = order_digest(parsed, self._domain)
        earlier = self.book.hold_for_order(digest)
        if earlier is not None:  # a retry: the same grant, whatever changed since
            if earlier.principal != principal:
                raise Conflict(f"order {to_hex(digest)} was granted before, to another user")
            return self._granted(earlier)
        centre = self._serving_centre(parsed)
        self._check_deadline(parsed.deadline)
        name, allocation = project()
        if parsed.max_price > MAX_AMOUNT:
            raise PaymentRequired(
                f"the order's maximum price {parsed.max_price} is above any allocation at {self.name}",
                reasons=_figures({"allocation": allocation, "asked": parsed.max_price}),
            )
        grant = Grant(
            order=digest,
            account=account,
            home=self.home_id,
            centre=parsed.centre,
            amount=parsed.max_price,
            deadline=parsed.deadline,
        )
        new = NewHold(
            order_digest=digest,
            grant_digest=grant_digest(grant, self._domain),
            account=account,
            principal=principal,
            project=name,
            centre=centre,
            amount=grant.amount,
            deadline=grant.deadline,
            order=parsed.to_dict(),
            grant=grant.to_dict(),
            grant_signature=sign_typed(grant, self._domain, self._account.key),
            group_signature=group_signature,
        )
        try:
            hold, _ = self.book.reserve(new, allocation, self._free_collateral())
        except CollateralCommitted as exc:
            raise PaymentRequired(str(exc), reasons=_figures(exc.figures)) from None
        except OverBudget as exc:
            raise PaymentRequired(str(exc), reasons=_figures(exc.figures)) from None
        except (AccountUsed, OrderTaken) as exc:
            raise Conflict(str(exc)) from None
        return self._granted(hold)

    def _granted(self, hold: Hold) -> dict:
        return {
            "grant": hold.grant,
            "grant_signature": "0x" + hold.grant_signature,
            "order": "0x" + hold.order_digest,
            "project": hold.project,
        }

    def home_session(self, claims: Claims, what: str) -> None:
        """Only a password sign-on here at home: a presented session is pseudonymous, an exchanged one not home's."""
        if claims.presented or not (claims.iss == claims.home == claims.aud == self.name):
            raise Forbidden(
                f"{what} are for a password sign-on at your home centre (xcentre login there); "
                "a session from a presentation or a token exchange is refused"
            )

    def parse_order(self, order: Any) -> Order:
        try:
            parsed: Order = Order.from_dict(order)
        except InvalidPayment as exc:
            raise Invalid(f"the order is malformed: {exc}") from None
        return parsed

    def order_signer(self, order: Order, signature: str) -> str:
        try:
            raw = from_hex(signature, size=65, what="order_signature")
            return recover(order, self._domain, raw)
        except (HexError, InvalidSignature) as exc:
            raise Invalid(f"the order's signature is refused: {exc}") from None

    def _serving_centre(self, order: Order) -> str:
        member = self._index.member(order.centre)
        if member is None or not member.active:
            raise Invalid(f"the order names centre {to_hex(order.centre)}, which is not an active member centre")
        if self._index.rates(order.centre, order.rates_version) is None:
            raise Invalid(
                f"the order names rates version {order.rates_version} of {member.name}, which {member.name} "
                "has not published"
            )
        return member.name

    def _check_deadline(self, deadline: int) -> None:
        now = int(self._clock())
        if deadline <= now:
            raise Invalid(f"the order's deadline {deadline} has passed (now {now})")
        if deadline > now + MAX_DEADLINE_AHEAD:
            raise Invalid(
                f"the order's deadline {deadline} is more than {MAX_DEADLINE_AHEAD // 86400} days out (now {now}): "
                "a hold blocks the allocation until its deadline; choose a nearer one"
            )

    def _projects(self, claims: Claims) -> dict[str, int]:
        """The user's projects: their LDAP groups at home (kept up to `groups_ttl` seconds) that have an allocation, by
        the allocation's name."""
        groups = {g.casefold() for g in self._directory.groups_of(claims.sub)}
        return {name: amount for name, amount in self._allocations.items() if name.casefold() in groups}

    def project_of(self, claims: Claims, asked: str | None) -> tuple[str, int]:
        """The user's project to charge: the one asked for among theirs, else their only one."""
        projects = self._projects(claims)
        yours = ", ".join(sorted(projects)) or "none"
        if asked is not None:
            match = next((name for name in projects if name.casefold() == asked.casefold()), None)
            if match is None:
                raise Forbidden(f"{asked!r} is not one of your projects at {self.name} (yours: {yours})")
            return match, projects[match]
        if not projects:
            raise Forbidden(f"{claims.sub} belongs to no project with an allocation at {self.name}")
        if len(projects) > 1:
            raise Invalid(f"you belong to several projects ({yours}): name the one to charge (project)")
        ((name, amount),) = projects.items()
        return name, amount

    def allocation(self, project: str) -> tuple[str, int] | None:
        """The project's name as allocated and its allocation, if it has one (names ignore case, as LDAP cns)."""
        return next(
            ((name, amount) for name, amount in self._allocations.items() if name.casefold() == project.casefold()),
            None,
        )

    def _free_collateral(self) -> int:
        try:
            return self._collateral.collateral()
        except Exception as exc:  # noqa: BLE001 - the chain (or its index) may be unreachable: refuse for now
            log.warning("%s: free collateral unreadable: %s", self.name, exc)
            raise Unavailable(f"{self.name} cannot read its collateral now, so it grants nothing; try again") from None

    # -- the user's view -----------------------------------------------------------

    def balance(self, claims: Claims, project: str | None = None) -> dict:
        """The project's allocation, held, spent and available; the user's own holds and spending."""
        self.home_session(claims, "balances")
        name, allocation = self.project_of(claims, project)
        held, spent = self.book.project_figures(name)
        user_held, user_spent = self.book.user_figures(claims.sub)
        return {
            "project": {
                "name": name,
                "allocation": allocation,
                "held": held,
                "spent": spent,
                "available": allocation - held - spent,
            },
            "user": {"principal": claims.sub, "held": user_held, "spent": user_spent},
            "holds": [
                {
                    "order": "0x" + h.order_digest,
                    "grant": "0x" + h.grant_digest,
                    "project": h.project,
                    "centre": h.centre,
                    "amount": h.amount,
                    "deadline": h.deadline,
                    "status": h.status,
                    "price": h.price,
                }
                for h in self.book.holds_of(claims.sub)
            ],
        }

    def complain(self, claims: Claims, record: dict[str, Any]) -> dict:
        """The user got no key for one of their records: noted for the watcher to dispute (needKey)."""
        self.home_session(claims, "complaints")
        parsed = self._complained_record(record)
        hold = self.book.hold(parsed.grant)
        if hold is None or hold.principal != claims.sub:
            raise NotFound(f"{self.name} granted no order of yours under grant {to_hex(parsed.grant)}")
        return self._note_complaint(parsed, hold)

    def complain_anonymously(self, record: dict[str, Any], at: int, signature: str) -> dict:
        """`complain` for an anonymous job, on the word of its order's account: its member has no session here
        (the hold names only `anonymous:<project>`), and the account, which the wallet keeps until the result is
        opened, speaks for that one order only, as it does at the serving centre."""
        parsed = self._complained_record(record)
        grant = to_hex(parsed.grant)
        signer = self._complaint_signer(to_hex(record_digest(parsed, self._domain)), at, signature)
        hold = self.book.hold(parsed.grant)
        if hold is None:
            raise NotFound(f"{self.name} granted no order under grant {grant}")
        if hold.account.lower() != signer.lower():
            raise Forbidden(
                f"complaint refused: it is {signer}'s, not by the account that signed grant {grant}'s order"
            )
        if not hold.principal.startswith(ANONYMOUS):
            raise Forbidden(
                f"grant {grant} is for a signed-on user's order: its user complains with a password session at home "
                "(xcentre complain --user <uid>)"
            )
        return self._note_complaint(parsed, hold)

    def _complained_record(self, record: Any) -> UsageRecord:
        try:
            parsed: UsageRecord = UsageRecord.from_dict(record)
        except InvalidRecord as exc:
            raise Invalid(f"the record is malformed: {exc}") from None
        if parsed.home_centre != self.home_id:
            raise Invalid(f"the record bills {to_hex(parsed.home_centre)}, not {self.name}: complain at that home")
        return parsed

    def _complaint_signer(self, digest: str, at: int, signature: str) -> str:
        """Who signed `complaint_message` for this record at `at`: a signature of long ago is refused, as a job
        signature is at the serving centre, so one seen in passing cannot be sent later."""
        now = int(self._clock())
        if abs(now - at) > JOB_SIGNATURE_SKEW:
            raise Unauthenticated(
                f"complaint signature refused: signed at {at}, {now - at:+d} s from {self.name}'s clock; it is good "
                f"for {JOB_SIGNATURE_SKEW} s either side: sign again"
            )
        message = encode_defunct(text=complaint_message(self.name, digest, at))
        try:
            signer: str = Account.recover_message(message, signature=from_hex(signature, size=65))
        except (HexError, ValueError, BadSignature) as exc:
            raise Unauthenticated(f"complaint signature refused: not a valid signature ({exc})") from None
        return signer

    def _note_complaint(self, parsed: UsageRecord, hold: Hold) -> dict:
        """The complaint about a record under `hold`, whose principal the caller was found to speak for."""
        if bytes32(hold.order_digest) != parsed.order:
            raise Invalid("the record names another order than the one its grant was for")
        try:
            complaint, _ = self.book.complain(
                record_digest(parsed, self._domain), parsed.grant, hold.principal, parsed.to_dict()
            )
        except ComplaintTaken as exc:
            raise Conflict(str(exc)) from None
        return _complaint_view(complaint)

    def revealed_key(self, lock_hash: str) -> dict:
        """A result key a serving centre revealed on chain to answer a dispute, found by its lock hash."""
        wanted = bytes32(lock_hash, what="lock_hash")
        key = self._index.revealed_key(wanted)
        if key is None or keccak(key) != wanted:
            raise NotFound(f"no key with lock hash {to_hex(wanted)} was revealed on chain (yet)")
        return {"lock_hash": to_hex(wanted), "key": to_hex(key)}

    # -- the hold's end (the watcher's) -------------------------------------------

    def settle_holds(self, records_paid: Iterable[tuple[bytes | str, int]]) -> SettleOutcome:
        """Holds whose records a settled, standing claim paid: each at its record's price."""
        outcome = self.book.settle(records_paid)
        for grant in outcome.refused:
            log.warning("%s: a settled claim names grant 0x%s at a price the hold does not allow", self.name, grant)
        return outcome

    def refund(self, grant_digest: bytes | str) -> Hold:
        """Release a hold whose claim was voided."""
        return self.book.refund(grant_digest)

    def expire(self, now: int, booking_delay: int) -> list[Hold]:
        """Release every hold no record can claim any more: deadline + booking_delay before `now`.

        The watcher passes as `now` a time up to which every claim anchored has
        been settled and applied (settle_holds), so no hold is released that a
        claim still pending may pay.
        """
        return self.book.expire(now, booking_delay)


def _complaint_view(complaint: Complaint) -> dict:
    return {
        "record": "0x" + complaint.record_digest,
        "grant": "0x" + complaint.grant_digest,
        "status": complaint.status,
    }
