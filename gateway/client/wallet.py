"""A user's wallet: the credential from their home centre, group memberships and the payment keys, kept in
private files.

The credential never leaves the wallet; only presentations made from it, one
per sign-on and bound to the verifier's challenge, are sent to a gateway. A
group membership (the member's secret sk, the home's blind credential over it
and the supervisors' key) signs anonymously for one project: its signatures
show the project and home only, and only t of n supervisors together can open
one. The payment keys sign one order each and the receipt of its job's record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from auth.credentials import Credential, CredentialError, CredentialSchema, PresentationRequest, make_presentation
from auth.group.credential import GroupCredential
from auth.group.points import g1_from_raw
from auth.group.signature import sign as group_sign
from ledger.primitives.files import write_private
from ledger.primitives.hex import from_hex, to_hex

#: Attributes a wallet never discloses, whoever asks: the enrolment id is the same at every
#: sign-on (and the home maps it to the uid), so a verifier that learnt it could link them all.
WITHHELD = frozenset({"pseudonym"})


@dataclass(frozen=True)
class GroupMembership:
    """Membership of one project of the user's home, for anonymous transactions.

    `secret` (sk) never leaves the wallet: the home signed the credential blindly over
    its tracing key sk·H, so neither the home nor anyone else can sign in the member's name.
    """

    project: str
    secret: int
    credential: GroupCredential
    issuer_pk: bytes
    supervision_key: bytes
    """The supervisors' joint key Y (raw, 96 bytes): each signature encrypts the tracing key under it."""

    def sign(self, message: bytes) -> bytes:
        """A group signature on `message`: verifiers learn the project and the home, nothing else."""
        return group_sign(self.credential, self.secret, self.issuer_pk, g1_from_raw(self.supervision_key), message)

    def to_dict(self) -> dict:
        return {
            "project": self.project,
            "secret": to_hex(self.secret.to_bytes(32, "big")),
            "credential": self.credential.to_dict(),
            "issuer_pk": to_hex(self.issuer_pk),
            "supervision_key": to_hex(self.supervision_key),
        }

    @classmethod
    def from_dict(cls, data: dict) -> GroupMembership:
        return cls(
            project=str(data["project"]),
            secret=int.from_bytes(from_hex(data["secret"], size=32, what="secret"), "big"),
            credential=GroupCredential.from_dict(data["credential"]),
            issuer_pk=from_hex(data["issuer_pk"], what="issuer_pk"),
            supervision_key=from_hex(data["supervision_key"], size=96, what="supervision_key"),
        )


@dataclass(frozen=True)
class Wallet:
    home: str
    home_url: str
    credential: Credential
    issuer_pk: bytes
    schema: CredentialSchema
    groups: tuple[GroupMembership, ...] = ()
    """The user's group memberships at home, one per project."""

    @classmethod
    def from_issuance(cls, home_url: str, issued: dict) -> Wallet:
        """A wallet for what POST /v1/credentials answered."""
        return cls(
            home=issued["home"],
            home_url=home_url,
            credential=Credential.from_dict(issued["credential"]),
            issuer_pk=from_hex(issued["issuer_pk"], what="issuer_pk"),
            schema=CredentialSchema.from_dict(issued["schema"]),
        )

    def present(self, request: dict) -> dict:
        """A presentation answering `request`: only the attributes it names are disclosed.

        A request for an attribute in WITHHELD is refused (CredentialError), whoever makes it.
        """
        parsed = PresentationRequest.from_dict(request)
        withheld = sorted(WITHHELD & set(parsed.attributes))
        if withheld:
            raise CredentialError(
                f"{parsed.verifier} asks for {', '.join(withheld)}, which would link every sign-on "
                "of yours: the wallet never discloses it"
            )
        return make_presentation(self.schema, self.credential, self.issuer_pk, parsed).to_dict()

    def membership(self, project: str | None = None, now: int | None = None) -> GroupMembership:
        """The membership that signs for `project` (the only one when None); ValueError saying what to run when
        there is none, several to choose from, or it has expired."""
        join = "run `xcentre group join --project P` with your home's password"
        if project is None:
            if len(self.groups) != 1:
                names = ", ".join(sorted(m.project for m in self.groups))
                raise ValueError(
                    f"name the project to sign for with --project (this wallet is a member of {names})"
                    if self.groups
                    else f"this wallet is a member of no group yet: {join}"
                )
            project = self.groups[0].project
        found = next((m for m in self.groups if m.project == project), None)
        if found is None:
            raise ValueError(f"this wallet is no member of project {project!r} at {self.home}: {join}")
        now = int(time.time()) if now is None else now
        if found.credential.expires_at <= now:
            raise ValueError(f"your membership of {found.project} expired at {found.credential.expires_at}: {join}")
        return found

    def with_membership(self, membership: GroupMembership) -> Wallet:
        """This wallet with `membership` in place of any earlier one of its project."""
        kept = tuple(m for m in self.groups if m.project != membership.project)
        return replace(self, groups=(*kept, membership))

    def save(self, path: Path) -> None:
        """Write the wallet readable by its owner only (mode 0600), replacing any older one at once."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(
            path,
            json.dumps(
                {
                    "home": self.home,
                    "home_url": self.home_url,
                    "credential": self.credential.to_dict(),
                    "issuer_pk": to_hex(self.issuer_pk),
                    "schema": self.schema.to_dict(),
                    "groups": [m.to_dict() for m in self.groups],
                }
            ),
            replace=True,
        )

    @classmethod
    def load(cls, path: Path) -> Wallet:
        """The wallet saved at `path`; ValueError, saying what to do, for a missing or foreign file."""
        try:
            data = json.loads(path.read_text())
            groups = tuple(GroupMembership.from_dict(m) for m in data.get("groups", []))
            return replace(cls.from_issuance(data["home_url"], data), groups=groups)
        except FileNotFoundError:
            raise ValueError(f"no wallet at {path}: run 'xcentre login' at your home centre first") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{path} is not a wallet ({type(exc).__name__}: {exc}): "
                "run 'xcentre login' at your home centre to make a new one"
            ) from None


class PaymentKeys:
    """The wallet's payment accounts: a fresh secp256k1 key for each order, kept until the job's receipt is done.

    One account per order, so no serving centre can link a user's jobs by account. A key is
    written (0600) before its order is signed, so a crash never loses the key a receipt needs;
    `path=None` keeps them in memory only (a session that ends with its process).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._keys: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            try:
                self._keys = dict(json.loads(path.read_text()))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path} is not a wallet's payment keys ({exc}); move it aside") from None

    @classmethod
    def beside(cls, wallet_path: Path) -> PaymentKeys:
        """The payment keys kept next to a wallet file (`wallet.json` -> `wallet.payments.json`)."""
        return cls(wallet_path.with_suffix(".payments.json"))

    def new(self) -> LocalAccount:
        """A fresh account for one order, kept before it signs anything."""
        account: LocalAccount = Account.create()
        self._keys[account.address] = {"key": to_hex(account.key)}
        self._save()
        return account

    def note(self, address: str, **facts: str) -> None:
        """Remember what an account's order is for (centre, job, order digest), to finish it later."""
        self._keys[address] = self._keys[address] | facts
        self._save()

    def account(self, address: str) -> LocalAccount:
        try:
            return Account.from_key(self._keys[address]["key"])
        except KeyError:
            raise ValueError(f"the wallet holds no payment key for account {address}") from None

    def open(self) -> dict[str, dict[str, str]]:
        """Every account still kept, with what it is for (keys left out)."""
        return {address: {k: v for k, v in facts.items() if k != "key"} for address, facts in self._keys.items()}

    def pending(
        self, *, idempotency_key: str | None = None, submission: str | None = None
    ) -> tuple[str, dict[str, str]] | None:
        """The submission sent to a centre that gave no answer (its account and facts: centre, order, grant,
        idempotency key), by its idempotency key or by the caller's name for the submission; None if none.

        Such a submission may be running there, so it is sent again to that centre alone, with the same order
        and key (gateway.client.dispatch.resume), never placed afresh elsewhere."""
        for address, facts in self._keys.items():
            if "job" in facts or "centre" not in facts or "idempotency_key" not in facts:
                continue
            if idempotency_key is not None and facts["idempotency_key"] == idempotency_key:
                return address, {k: v for k, v in facts.items() if k != "key"}
            if submission is not None and facts.get("submission") == submission:
                return address, {k: v for k, v in facts.items() if k != "key"}
        return None

    def forget(self, address: str) -> None:
        """Drop an account whose job is done (receipt given and key checked) or never ran."""
        if self._keys.pop(address, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(self.path, json.dumps(self._keys), replace=True)
