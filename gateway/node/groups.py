"""The home's group desk: members join their projects' groups, members' orders are granted unnamed, and an
opened signature is mapped back to its member, on the record.

- **Join** (`POST /v1/groups/join`, a password session at home): the member proves knowledge of the secret
  behind a tracing key T, the proof bound to the uid the home knows them by (so nobody registers another
  member's T); the project must be one of their LDAP groups with an allocation. The home keeps T with the
  member (T is unique) and signs a group credential over it blindly: it never sees the secret, so it can
  never sign in the member's name. Everything the credential discloses is the week's: it expires at the
  week boundary after next (credential_expiry), carries the home's revocation epoch as it stood when the
  week began and is signed under the issuer key the home had then (group_rules.week_issuer_key); a home
  that rotated since issues nothing until the next week (503).
- **Anonymous grant** (`POST /v1/anonymous/grants`, no session): a group signature over the order, by a
  credential of this home that singles nobody out and is still valid (gateway.node.group_rules, as at the
  serving centre: an expiry every member of its week holds, the revocation epoch and issuer key the home had
  when that week began), lets the home hold the order's
  maximum price on the signed project exactly as a signed-on grant does (the Payer's step), under the
  principal `anonymous:<project>`. The home learns the project, never the member, and stores nothing that
  links the grant to one but the signature itself, kept with the hold (`GET /v1/anonymous/signatures/{hash}`):
  only t supervisors can open it, for the order it signs. Anonymous spending is budgeted per project, not per
  member.
- **Identify** (`POST /v1/supervision/identify/{opening}`, the operator): once t supervisors have opened a
  signature on chain to T, its home maps T to the member row, keeps that, and records on chain the member's
  enrolment id (`Supervision.identify`, through the outbox).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from py_arkworks_bls12381 import G1Point

from auth.credentials.credential import key_id
from auth.group.credential import (
    CREDENTIAL_PERIOD,
    JoinRequest,
    check_join,
    credential_expiry,
    issue_group_credential,
    issue_week,
)
from auth.group.errors import GroupError
from auth.group.points import g1_raw
from auth.group.signature import MAX_LENGTH, order_message, parse, verify
from auth.tokens import Claims
from gateway.node.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated, Unavailable
from gateway.node.group_rules import (
    admit,
    check_disclosed,
    check_expiry,
    desk_limit,
    group_issuer_key,
    verification_limit,
    week_issuer_key,
)
from gateway.node.payer import ANONYMOUS, Payer
from gateway.node.ratelimit import RateLimit
from gateway.node.signon import IssuerKey
from gateway.store.groups import GroupBook, TracingKeyTaken
from ledger.chain import ChainRevert
from ledger.index import EventIndex
from ledger.outbox import DONE, Outbox
from ledger.payment import order_digest
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.records import Domain
from ledger.supervision import Supervision

log = logging.getLogger(__name__)

ENROL_WAIT = 5.0
"""Seconds a first join waits for the member's enrolment to land on chain before answering 503."""

NO_SUPERVISION = "this consortium has no supervision contract"


@dataclass(frozen=True)
class OpeningFacts:
    """What the home needs of an opening on chain."""

    home: str
    """The home the opening was asked of (a member centre's name)."""
    opened: bool
    tracing_key: G1Point | None
    """T, once opened."""


class Openings(Protocol):
    """The openings of the consortium's Supervision contract, as the home reads them."""

    def __call__(self, opening: int) -> OpeningFacts | None:
        """The opening with this id, or None if there is none."""
        ...


class GroupDesk:
    """One home's group memberships, anonymous grants and identifications."""

    def __init__(
        self,
        *,
        name: str,
        payer: Payer,
        domain: Domain,
        issuer_key: IssuerKey,
        enrol: Callable[[str], bytes],
        index: EventIndex,
        book: GroupBook,
        outbox: Outbox,
        supervision_key: Callable[[], G1Point],
        openings: Openings | None,
        clock: Callable[[], int] | None = None,
        limit: RateLimit | None = None,
        overall: RateLimit | None = None,
    ) -> None:
        """`enrol(uid)` is the member's enrolment id, sent on its way to the chain if it is not there yet
        (SignOn.enrol); `supervision_key()` is the supervisors' joint key Y, or Unavailable while there is none
        (gateway.node.anonymous.SupervisionKey.get); `openings` is None on a deployment without a Supervision
        contract; `limit` bounds the grant requests each network address has this desk verify, `overall` those it
        verifies in all."""
        self.name = name
        self._payer = payer
        self._domain = domain
        self._issuer = issuer_key
        self._enrol = enrol
        self._index = index
        self.book = book
        self._outbox = outbox
        self._supervision_key = supervision_key
        self._openings = openings
        self._clock = clock or index.now
        self._limit = limit or verification_limit()
        self._overall = overall or desk_limit()

    # -- join ------------------------------------------------------------------------

    def join(self, claims: Claims, body: Any) -> dict:
        """A blind group credential for a tracing key the member proves, in one of their projects."""
        self._payer.home_session(claims, "group memberships")
        uid = claims.sub.rsplit("@", 1)[0]
        try:
            request = JoinRequest.from_dict(body)
        except GroupError as exc:
            raise Invalid(f"the join request is malformed: {exc}") from None
        project, _ = self._payer.project_of(claims, request.project)
        if project != request.project:
            raise Invalid(f"the project is called {project!r} at {self.name}: join it by that name")
        try:
            tracing_key = check_join(request, home=self.name, member=uid)
        except GroupError as exc:
            raise Invalid(f"{exc}: it must prove the secret of this tracing key, for {uid} at {self.name}") from None
        supervision_key = self._supervision_key()
        registered = self.book.member(tracing_key.to_compressed_bytes())
        if registered is not None and (registered.uid, registered.project) != (uid, project):
            raise Conflict("this tracing key is already registered: draw a new secret and join again")
        now = self._clock()
        expires_at = credential_expiry(now)
        week = issue_week(expires_at)
        self._check_week_key(week, now)
        credential = issue_group_credential(
            self._issuer.sk,
            self._issuer.pk,
            request,
            home=self.name,
            member=uid,
            revocation_epoch=self._index.revocation_epoch_at(self.name, week),
            expires_at=expires_at,
        )
        enrolment = self._enrol(uid)
        try:  # the enrolment goes on chain only for a key this member may register (add_member checks again)
            self.book.add_member(uid, enrolment, project, tracing_key.to_compressed_bytes(), credential.expires_at)
        except TracingKeyTaken as exc:
            raise Conflict(f"{exc}: draw a new secret and join again") from None
        self._enrolled_on_chain(uid, enrolment)
        return {
            "credential": credential.to_dict(),
            "supervision_key": to_hex(g1_raw(supervision_key)),
            "issuer_pk": to_hex(self._issuer.pk),
        }

    def _check_week_key(self, week: int, now: int) -> None:
        """Unavailable (503) unless the issuer key this home holds is its key of the week from `week`, still valid:
        group credentials of a week are all under the key the home had when it began (a rotation takes effect for
        groups at the next week), so a home that rotated mid-week issues none until then."""
        of_week = week_issuer_key(self._index.issuer_keys(self.name), week)
        if of_week is None:
            why = "none: it had no key on chain"
        elif of_week.pk != self._issuer.pk:
            why = f"key {of_week.short_id}, and {self.name} now issues with key {key_id(self._issuer.pk)}"
        elif not of_week.valid_at(now):
            why = f"key {of_week.short_id}, which has ended since"
        else:
            return
        turn = week + CREDENTIAL_PERIOD
        raise Unavailable(
            f"group credentials this week are issued under the key in force at the week's start ({why}); join again "
            f"after {turn} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(turn))})"
        )

    def _enrolled_on_chain(self, uid: str, enrolment: bytes) -> None:
        """No credential before the member's enrolment is on chain: an opening is identified only as an
        enrolment made before it was requested (Supervision.identify), so a member who could sign first could
        never be named. A first join waits for the enrolment's write (ENROL_WAIT s at most), else 503."""
        if self._index.enrolment(self.name, enrolment) is not None:
            return
        item = self._outbox.item_by_key(f"enrol:{enrolment.hex()}")
        if item is not None:
            self._outbox.retry(item.id)  # a write the chain refused before is sent again for this request
            if self._outbox.attempt(item.id, ENROL_WAIT).status == DONE:
                return
        raise Unavailable(
            f"{uid}'s enrolment at {self.name} is not on chain yet, and a member is given a credential only once it "
            "is (so that an opening of their signature can be put on record as theirs): join again in a few seconds"
        )

    # -- anonymous grants --------------------------------------------------------------

    def grant(
        self, order: dict[str, Any], order_signature: str, group_signature: str, client: str | None = None
    ) -> dict:
        """The Payer's hold and grant for an order a member of one of this home's projects signed, unnamed.

        `client`: the network address asking, whose verifications are bounded (429 past the bound, before any)."""
        admit(self._limit, self._overall, client, self.name)
        signature = _signature_bytes(group_signature)
        parsed = self._payer.parse_order(order)
        digest = order_digest(parsed, self._domain)
        try:
            claimed = parse(signature)
        except GroupError as exc:
            raise Unauthenticated(f"the group signature is refused: {exc}") from None
        if claimed.home != self.name:
            raise Forbidden(
                f"the group signature is by a member of {claimed.home}, not of {self.name}: its home grants its orders"
            )
        now = self._clock()
        check_expiry(claimed, now=now)  # the expiry names the week the key and epoch are judged by
        try:
            signed = verify(
                signature,
                order_message(digest),
                issuer_pk_for=lambda home, kid: group_issuer_key(self._index, home, kid, claimed.expires_at, now),
                supervision_key=self._supervision_key(),
            )
        except GroupError as exc:
            raise Unauthenticated(
                f"the group signature is refused: {exc} (it must sign the order sent with it)"
            ) from None
        epoch = self._index.revocation_epoch_at(self.name, issue_week(signed.expires_at))
        check_disclosed(signed, epoch=epoch, now=now)
        return self._payer.hold_and_sign(
            ANONYMOUS + signed.project, order, order_signature, lambda: self._allocation(signed.project), signature
        )

    def _allocation(self, project: str) -> tuple[str, int]:
        found = self._payer.allocation(project)
        if found is None:
            raise Forbidden(f"project {project} has no allocation at {self.name} any more: it grants nothing")
        return found

    # -- identification ------------------------------------------------------------------

    def identify(self, opening: int) -> dict:
        """Map an opening of a signature by one of this home's members to the member, and put it on record."""
        if self._openings is None:
            raise Unavailable(NO_SUPERVISION)
        try:
            facts = self._openings(opening)
        except GroupError as exc:
            raise Conflict(f"opening {opening} on chain holds no usable tracing key: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the chain may be unreachable: refuse for now
            log.warning("%s: opening %d unreadable: %s", self.name, opening, exc)
            raise Unavailable(f"opening {opening} cannot be read from the chain now; try again") from None
        if facts is None:
            raise NotFound(f"there is no opening {opening} on chain")
        if facts.home != self.name:
            raise Forbidden(f"opening {opening} is of a signature by a member of another home: that home identifies it")
        if not facts.opened or facts.tracing_key is None:
            raise Conflict(
                f"opening {opening} is not opened yet: it needs the threshold of supervisors' shares on chain"
            )
        member = self.book.member(facts.tracing_key.to_compressed_bytes())
        if member is None:
            raise NotFound(f"no member of {self.name} has this tracing key")
        identified, _ = self.book.identify(opening, member)
        enrolment = to_hex(identified.enrolment)
        item = self._outbox.enqueue("identify", f"identify:{opening}", {"opening": opening, "enrolment": enrolment})
        self._outbox.retry(item)  # a revert before does not bind this new request: the chain may have changed
        return {"opening": opening, "uid": identified.uid, "enrolment": enrolment, "project": identified.project}


def chain_openings(supervision: Supervision) -> Openings:
    """The openings of the deployment's Supervision contract, read from the chain when asked (operator only)."""

    def read(opening: int) -> OpeningFacts | None:
        try:
            found = supervision.opening(opening)
        except ChainRevert as exc:
            if exc.reason == "UnknownOpening":
                return None
            raise
        return OpeningFacts(home=found.home, opened=found.opened, tracing_key=found.tracing_key)

    return read


def _signature_bytes(value: object) -> bytes:
    try:
        raw = from_hex(value, what="group_signature")
    except HexError as exc:
        raise Invalid(f"the group signature is refused: {exc}") from None
    if not 0 < len(raw) <= MAX_LENGTH:
        raise Invalid(f"the group signature is refused: it is 1 to {MAX_LENGTH} bytes, not {len(raw)}")
    return raw
