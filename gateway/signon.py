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
    CredentialError,
    CredentialSchema,
    NonceStore,
    PresentationError,
    PresentationRequest,
    issue_credential,
    key_id,
    new_request,
    verify_presentation,
)
from auth.directory import Directory, DirectoryError, DirectoryUnavailable, UnknownUser
from auth.tokens import TokenIssuer
from gateway.errors import BadRequest, Forbidden, Unauthorized
from ledger.index import EventIndex
from ledger.outbox import Outbox


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
        self.nonces = NonceStore()
        new_request(schema, name, self.requested)  # a misconfigured attribute list fails at start

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
            {"pk": "0x" + self.issuer_key.pk.hex(), "previous_valid_until": int(time.time()) + self.key_overlap},
        )

    # -- at home -----------------------------------------------------------------

    def enrolment_id(self, uid: str) -> bytes:
        """The user's pseudonymous enrolment id: stable at this home, meaningless anywhere else."""
        return hmac.new(self._enrolment_secret, uid.encode(), hashlib.sha256).digest()

    def issue(self, username: str, password: str) -> dict:
        """A credential over the user's live directory attributes, after a password bind here."""
        try:
            entry = self.directory.authenticate(username, password)
        except DirectoryUnavailable:
            raise
        except DirectoryError:
            raise Unauthorized("unknown user or wrong password") from None
        if self.is_revoked(entry.uid):
            raise Forbidden(f"the enrolment of {entry.uid} at {self.name} is revoked")
        enrolment = self.enrolment_id(entry.uid)
        if self.index.enrolment(enrolment) is None:
            self.outbox.enqueue("enrol", f"enrol:{enrolment.hex()}", {"enrolment": "0x" + enrolment.hex()})
        values = self.schema.from_directory(entry.attributes, entry.groups) | {
            "home": self.name,
            "pseudonym": enrolment.hex(),
            "revocation_epoch": self.index.revocation_epoch(self.name),
        }
        try:
            credential = issue_credential(self.schema, self.issuer_key.sk, self.issuer_key.pk, values)
        except CredentialError as exc:
            raise BadRequest(f"cannot issue a credential for {entry.uid}: {exc}") from None
        return {
            "home": self.name,
            "credential": credential.to_dict(),
            "issuer_pk": "0x" + self.issuer_key.pk.hex(),
            "schema": self.schema.to_dict(),
        }

    def is_revoked(self, uid: str) -> bool:
        """Whether this home revoked the user, or has sent the revocation on its way."""
        enrolment = self.enrolment_id(uid)
        known = self.index.enrolment(enrolment)
        return (known is not None and known.revoked) or self.outbox.item_by_key(f"revoke:{enrolment.hex()}") is not None

    def revoke(self, username: str) -> dict:
        """Revoke a user's enrolment: every centre refuses their credentials once the event lands.

        The uid is the directory's spelling (`Alice ` finds `alice`); someone already
        removed from the directory is revoked under the uid as given.
        """
        try:
            username = self.directory.entry(username).uid
        except UnknownUser:
            pass
        enrolment = self.enrolment_id(username)
        known = self.index.enrolment(enrolment)
        if known is None and self.outbox.item_by_key(f"enrol:{enrolment.hex()}") is None:
            raise BadRequest(f"{username} has no enrolment at {self.name}")
        if known is None or not known.revoked:
            self.outbox.enqueue("revoke", f"revoke:{enrolment.hex()}", {"enrolment": "0x" + enrolment.hex()})
        return {"enrolment": "0x" + enrolment.hex(), "revoked": True}

    # -- anywhere ----------------------------------------------------------------

    def request(self) -> PresentationRequest:
        """A one-time challenge naming the attributes this centre's policy needs."""
        request = new_request(self.schema, self.name, self.requested)
        self.nonces.issue(request)
        return request

    def present(self, presentation: dict) -> tuple[str, dict[str, str]]:
        """Verify a presentation against its challenge; a session token for its disclosed attributes."""
        try:
            nonce = presentation.get("nonce") if isinstance(presentation, dict) else None
            request = self.nonces.consume(nonce if isinstance(nonce, str) else "")
            disclosed = verify_presentation(
                self.schema,
                presentation,
                request,
                self.index.issuer_key,
                self.index.revocation_epoch,
                max(int(time.time()), self.index.chain_time),
                verifier=self.name,
                issuer_known=lambda centre: bool(self.index.issuer_keys(centre)),
            )
        except PresentationError as exc:
            raise Unauthorized(f"presentation refused ({exc.code}): {exc.reason}") from None
        token = self.tokens.issue_presented(disclosed["home"], disclosed, int(disclosed["revocation_epoch"]))
        return token, disclosed
