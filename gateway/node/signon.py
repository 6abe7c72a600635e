"""Attribute-based sign-on: BBS credentials issued at home, presentations verified anywhere.

The home centre is the only one that sees a password; it reads the user's
attributes live from its directory and signs them into a credential. Any
member centre then asks for a presentation bound to its own challenge and
learns only the attributes it requests. Keys, revocation epochs and
enrolments come from the local index of the IdentityRegistry: no chain read
at sign-on.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

from auth.credentials import (
    Challenges,
    CredentialError,
    CredentialSchema,
    PresentationError,
    PresentationRequest,
    issue_credential,
    key_id,
    verify_presentation,
)
from auth.directory import Directory, DirectoryEntry, DirectoryError, DirectoryUnavailable, UnknownUser
from auth.tokens import TokenIssuer
from gateway.api.schemas import RevokeResponse
from gateway.node.errors import Conflict, Forbidden, Invalid, Unauthenticated, Unavailable
from ledger.index import EventIndex
from ledger.outbox import DONE, FAILED, Outbox
from ledger.primitives.hex import to_hex

#: Seconds a revocation request waits for its transaction before answering "queued".
REVOKE_WAIT = 5.0


@dataclass(frozen=True)
class IssuerKey:
    """The home centre's BBS issuer key pair (32-byte secret, 96-byte public key)."""

    sk: bytes
    pk: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.pk)


class SignOn:
    def __init__(
        self,
        *,
        name: str,
        schema: CredentialSchema,
        issuer_key: IssuerKey,
        enrolment_secret: bytes,
        directory: Directory,
        index: EventIndex,
        outbox: Outbox,
        tokens: TokenIssuer,
        requested: Sequence[str],
        key_overlap: int = 86_400,
    ) -> None:
        self.name = name
        self.schema = schema
        self.issuer_key = issuer_key
        self._enrolment_secret = enrolment_secret
        self.directory = directory
        self.index = index
        self.outbox = outbox
        self.tokens = tokens
        self.requested = list(requested)
        self.key_overlap = key_overlap
        self.challenges = Challenges(schema, name, self.requested)  # a misconfigured attribute list fails at start

    # -- the issuer key on chain -------------------------------------------------

    def publish_issuer_key(self) -> None:
        """Make this centre's issuer key the current one on chain; the previous one stays valid a while."""
        current = self.index.current_issuer_key(self.name)
        if current is not None and current.pk == self.issuer_key.pk:
            return
        key = f"issuer-key:{self.issuer_key.key_id}"
        if self.outbox.item_by_key(key) is not None:  # queued by an earlier start: its payload is fixed
            return
        self.outbox.enqueue(
            "issuer-key",
            key,
            {"pk": to_hex(self.issuer_key.pk), "previous_valid_until": int(time.time()) + self.key_overlap},
        )

    # -- at home -----------------------------------------------------------------

    def enrolment_id(self, uid: str) -> bytes:
        """The user's pseudonymous enrolment id: stable at this home, meaningless anywhere else."""
        return hmac.new(self._enrolment_secret, uid.encode(), hashlib.sha256).digest()

    def enrol(self, uid: str) -> bytes:
        """The user's enrolment id, its registration on chain queued if the index does not show it yet."""
        enrolment = self.enrolment_id(uid)
        if self.index.enrolment(self.name, enrolment) is None:
            self.outbox.enqueue("enrol", f"enrol:{enrolment.hex()}", {"enrolment": to_hex(enrolment)})
        return enrolment

    def bind(self, username: str, password: str) -> DirectoryEntry:
        """The user's live directory entry, after a password bind here; a revoked enrolment is refused."""
        try:
            entry = self.directory.authenticate(username, password)
        except DirectoryUnavailable:
            raise
        except DirectoryError:
            raise Unauthenticated("unknown user or wrong password") from None
        if self.is_revoked(entry.uid):
            raise Forbidden(f"the enrolment of {entry.uid} at {self.name} is revoked")
        return entry

    def issue(self, username: str, password: str) -> dict:
        """A credential over the user's live directory attributes, after a password bind here."""
        entry = self.bind(username, password)
        enrolment = self.enrol(entry.uid)
        values = self.schema.from_directory(entry.attributes, entry.groups) | {
            "home": self.name,
            "pseudonym": enrolment.hex(),
            "revocation_epoch": self.index.revocation_epoch(self.name),
        }
        try:
            credential = issue_credential(self.schema, self.issuer_key.sk, self.issuer_key.pk, values)
        except CredentialError as exc:
            raise Invalid(f"cannot issue a credential for {entry.uid}: {exc}") from None
        return {
            "home": self.name,
            "credential": credential.to_dict(),
            "issuer_pk": to_hex(self.issuer_key.pk),
            "schema": self.schema.to_dict(),
        }

    def is_revoked(self, uid: str) -> bool:
        """Whether this home revoked the user, or has sent the revocation on its way."""
        enrolment = self.enrolment_id(uid)
        known = self.index.enrolment(self.name, enrolment)
        return (known is not None and known.revoked) or self.outbox.item_by_key(f"revoke:{enrolment.hex()}") is not None

    def revoke(self, username: str, wait: float = REVOKE_WAIT) -> RevokeResponse:
        """Revoke a user's enrolment on chain and say what actually happened.

        Every centre refuses the user's credentials once the event reaches it, so only
        a mined revocation is reported as done. A revert is an error (409) with the
        chain's reason, and asking again sends it again; a chain that does not take the
        write within `wait` seconds leaves it queued (sent again until it lands). This
        home refuses the user from the first request on, whatever the chain did.
        The uid is the directory's spelling (`Alice ` finds `alice`); someone already
        removed from the directory is revoked under the uid as given.
        """
        try:
            username = self.directory.entry(username).uid
        except UnknownUser:
            pass
        enrolment = self.enrolment_id(username)
        answer = {"username": username, "enrolment": to_hex(enrolment)}
        known = self.index.enrolment(self.name, enrolment)
        if known is not None and known.revoked:
            return RevokeResponse(
                **answer,
                revoked=True,
                status="done",
                tx_hash=None,
                detail=f"{username}'s enrolment at {self.name} is revoked on chain",
            )
        if known is None and self.outbox.item_by_key(f"enrol:{enrolment.hex()}") is None:
            raise Invalid(f"{username} has no enrolment at {self.name}")
        item_id = self.outbox.enqueue("revoke", f"revoke:{enrolment.hex()}", {"enrolment": answer["enrolment"]})
        tried = self.outbox.retry(item_id).attempts  # a revert before does not bind this new request
        item = self.outbox.attempt(item_id, wait)
        if item.status == FAILED:
            raise Conflict(
                f"the chain refused to revoke {username} at {self.name} ({item.last_error}): nothing changed on "
                f"chain, so other members still accept {username}'s credentials; {self.name} refuses {username}",
                reasons=[item.last_error or "reverted"],
            )
        if item.status == DONE:
            return RevokeResponse(
                **answer,
                revoked=True,
                status="done",
                tx_hash=item.tx_hash,
                detail=f"revoked on chain: every member refuses {username} once the event reaches it",
            )
        why = item.last_error if item.attempts > tried else f"not sent within {wait:g} s"
        return RevokeResponse(
            **answer,
            revoked=False,
            status="queued",
            tx_hash=None,
            detail=f"not on chain yet ({why}): the revocation is queued and will be retried until "
            f"it lands; {self.name} already refuses {username}, other members do not yet",
        )

    # -- anywhere ----------------------------------------------------------------

    def request(self) -> PresentationRequest:
        """A one-time challenge naming the attributes this centre's policy needs; sealed, so nothing is stored.

        Stamped by the clock `present` judges it by (the later of this machine's and the chain's), or a
        chain running ahead would expire every request before the wallet could answer it.
        """
        return self.challenges.issue(now=self._now())

    def _now(self) -> int:
        return max(int(time.time()), self.index.chain_time)

    def present(self, presentation: dict) -> tuple[str, dict[str, str]]:
        """Verify a presentation against its challenge; a session token for its disclosed attributes."""
        now = self._now()
        try:
            nonce = presentation.get("nonce") if isinstance(presentation, dict) else None
            request = self.challenges.open(nonce, now=now)
            disclosed = verify_presentation(
                self.schema,
                presentation,
                request,
                self.index.issuer_key,
                self.index.revocation_epoch,
                now,
                verifier=self.name,
                issuer_known=lambda centre: bool(self.index.issuer_keys(centre)),
            )
            self.challenges.spend(request, now=now)  # only a proof that verified uses up its request
        except PresentationError as exc:
            if exc.code == "busy":
                raise Unavailable(f"sign-on refused for now: {exc.reason}") from None
            raise Unauthenticated(f"presentation refused ({exc.code}): {exc.reason}") from None
        try:
            token = self.tokens.issue_presented(disclosed["home"], disclosed, int(disclosed["revocation_epoch"]))
        except ValueError as exc:  # verified in the very second it expires: no time left for a session
            raise Unauthenticated(
                f"presentation refused (credential_expired): {exc}; refresh it at your home centre"
            ) from None
        return token, disclosed
