"""The serving side of an anonymous job: a group signature stands in for a sign-on.

A member of a home's project signs the job request (to ask for a quote) or the order
(to submit) with a group signature (auth.group.signature). The centre checks it with
the home's issuer key from its index and the supervisors' key read once from the chain,
refuses what would single a member out or is no longer valid (gateway.node.group_rules: an
expiry no honest home issues now, an issuer key or a revocation epoch other than the home's
at the start of the credential's issue week), and gives the normal quote and submission paths
claims that name no one: a pseudonym made of the signature's hash, the home, and the project
as the only group. No directory is asked, nothing of the member is stored but the signature
itself (for the supervisors). Each network address (an IPv6 /64) has only so many signatures
verified, and the desk only so many in all (group_rules.admit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from py_arkworks_bls12381 import G1Point

from auth.group.credential import issue_week
from auth.group.errors import GroupError
from auth.group.signature import GroupSigned, order_message, parse, quote_message, verify
from auth.tokens import Claims
from gateway.api.schemas import JobRequest
from gateway.node.errors import Invalid, Unauthenticated, Unavailable
from gateway.node.group_rules import (
    admit,
    check_disclosed,
    check_expiry,
    desk_limit,
    group_issuer_key,
    verification_limit,
)
from gateway.node.ratelimit import RateLimit
from ledger.chain import Chain
from ledger.deploy import Deployment
from ledger.index import EventIndex
from ledger.payment import InvalidPayment, Order, order_digest, request_digest
from ledger.primitives.hex import HexError, from_hex
from ledger.records import Domain
from ledger.supervision import Supervision

#: The authentication method of an anonymous job's claims: a group signature, no session.
GROUP = "group"

#: Seconds a "no key yet" answer of the chain is reused for: asking cannot make the chain read hot.
KEY_RECHECK = 5.0


def pseudonymous(claims: Claims) -> bool:
    """Whether the claims name nobody the centre could look up: a presented session or a group signature."""
    return claims.presented or claims.amr == [GROUP]


def job_request_digest(request: JobRequest, centre: str) -> bytes:
    """What an order's `request` names for a job at `centre`, and what a quote's group signature signs."""
    return request_digest(request.model_dump() | {"centre": centre})


class SupervisionKey:
    """The supervisors' joint key Y, read from the chain the first time it is there, then kept.

    One Supervision contract generates one key, never changed afterwards, so one read
    serves for good; until the key is generated, the chain is asked again at most
    every KEY_RECHECK seconds.
    """

    def __init__(
        self,
        read: Callable[[], G1Point | None] | None,
        *,
        committee: Callable[[], tuple[tuple[str, ...], int]] | None = None,
        recheck: float = KEY_RECHECK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`read` gives the contract's key (None until it is generated); None when the consortium has no
        Supervision contract. `committee` gives its supervisors (by name, in index order) and threshold."""
        self._read, self._recheck, self._clock = read, recheck, clock
        self._read_committee = committee
        self._committee: tuple[tuple[str, ...], int] | None = None
        self._key: G1Point | None = None
        self._asked_at: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_chain(cls, chain: Chain, deployment: Deployment) -> SupervisionKey:
        """The key of the deployment's Supervision contract, if it has one (a description from before has none)."""
        if deployment.supervision is None:
            return cls(None)

        def committee() -> tuple[tuple[str, ...], int]:
            supervision = Supervision.of(chain, deployment)
            return supervision.supervisors(), supervision.threshold()

        return cls(lambda: Supervision.of(chain, deployment).public_key(), committee=committee)

    def get(self) -> G1Point:
        """Y, or Unavailable (503) while there is none to sign or verify under."""
        if self._read is None:
            raise Unavailable(
                "this consortium has no supervision contract, so nobody could open an anonymous job's signature: "
                "anonymous jobs are not taken"
            )
        with self._lock:
            now = self._clock()
            if self._key is None and (self._asked_at is None or now - self._asked_at >= self._recheck):
                self._asked_at = now
                try:
                    self._key = self._read()
                except Exception as exc:  # noqa: BLE001 - a chain that does not answer now: asked again later
                    raise Unavailable(f"the supervisors' key cannot be read from the chain now: {exc}") from None
            key = self._key
        if key is None:
            raise Unavailable(
                "the supervisors have not generated their key yet (their distributed key generation is not "
                "finalized), so no anonymous job can be signed or checked; try again later"
            )
        return key

    def committee(self) -> tuple[tuple[str, ...], int]:
        """The supervisors (by name; supervisor i is the i-th) and the threshold, fixed when the contract was
        deployed: read once, then kept. Unavailable (503) when there is no contract or the chain does not answer."""
        if self._read is None or self._read_committee is None:
            raise Unavailable("this consortium has no supervision contract: there is no committee of supervisors")
        with self._lock:
            if self._committee is None:
                try:
                    self._committee = self._read_committee()
                except Exception as exc:  # noqa: BLE001 - a chain that does not answer now: asked again next time
                    raise Unavailable(f"the supervisors' committee cannot be read from the chain now: {exc}") from None
            return self._committee


@dataclass(frozen=True)
class Verified:
    """A group signature that passed every check, and the claims it stands for."""

    signature: bytes
    signed: GroupSigned
    claims: Claims


class AnonymousDesk:
    """Checks group signatures for one centre and turns them into claims for the policy."""

    def __init__(
        self,
        name: str,
        index: EventIndex,
        domain: Domain,
        key: SupervisionKey,
        limit: RateLimit | None = None,
        overall: RateLimit | None = None,
    ) -> None:
        """`limit` bounds the signatures each network address has this desk verify (group_rules.verification_limit),
        `overall` those it verifies in all (group_rules.desk_limit)."""
        self.name, self.index, self.domain, self.key = name, index, domain, key
        self.limit = limit or verification_limit()
        self.overall = overall or desk_limit()

    def for_quote(self, request: JobRequest, group_signature: str, client: str | None = None) -> Verified:
        """The signature over the job request as this centre would take it (quote_message of its digest)."""
        admit(self.limit, self.overall, client, self.name)
        return self._check(group_signature, quote_message(job_request_digest(request, self.name)), "the job request")

    def for_order(self, order: Any, group_signature: str, client: str | None = None) -> Verified:
        """The signature over the order (order_message of its EIP-712 digest); the order's own checks come later."""
        admit(self.limit, self.overall, client, self.name)
        try:
            parsed = Order.from_dict(order)
        except InvalidPayment as exc:
            raise Invalid(f"the order is malformed: {exc}") from None
        return self._check(group_signature, order_message(order_digest(parsed, self.domain)), "the order")

    def _check(self, text: str, message: bytes, what: str) -> Verified:
        try:
            signature = from_hex(text, what="group_signature")
        except HexError as exc:
            raise Invalid(f"group_signature: {exc}") from None
        now = self.index.now()
        key = self.key.get()
        try:
            claimed = parse(signature)
            check_expiry(claimed, now=now)  # the expiry names the week the key and epoch are judged by
            signed = verify(
                signature,
                message,
                issuer_pk_for=lambda home, key_id: group_issuer_key(self.index, home, key_id, claimed.expires_at, now),
                supervision_key=key,
            )
        except GroupError as exc:
            raise Unauthenticated(f"group signature refused: {exc} (it must sign {what} sent with it)") from None
        epoch = self.index.revocation_epoch_at(signed.home, issue_week(signed.expires_at))
        check_disclosed(signed, epoch=epoch, now=now)
        return Verified(signature, signed, self._claims(signed, now))

    def _claims(self, signed: GroupSigned, now: int) -> Claims:
        """A pseudonym from the signature's hash, the home, and the project as the only attribute (its group)."""
        return Claims(
            iss=self.name,
            aud=self.name,
            sub=f"{signed.hash[:8].hex()}@{signed.home}",
            home=signed.home,
            attrs={"groups": signed.project},
            iat=now,
            exp=signed.expires_at,
            amr=[GROUP],
            rev=signed.revocation_epoch,
        )
