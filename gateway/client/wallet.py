"""A user's wallet: the credential from their home centre, kept in a private file.

The credential never leaves the wallet; only presentations made from it, one
per sign-on and bound to the verifier's challenge, are sent to a gateway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from auth.credentials import Credential, CredentialError, CredentialSchema, PresentationRequest, make_presentation
from ledger.primitives.files import write_private
from ledger.primitives.hex import from_hex, to_hex

#: Attributes a wallet never discloses, whoever asks: the enrolment id is the same at every
#: sign-on (and the home maps it to the uid), so a verifier that learnt it could link them all.
WITHHELD = frozenset({"pseudonym"})


@dataclass(frozen=True)
class Wallet:
    home: str
    home_url: str
    credential: Credential
    issuer_pk: bytes
    schema: CredentialSchema

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
                }
            ),
            replace=True,
        )

    @classmethod
    def load(cls, path: Path) -> Wallet:
        """The wallet saved at `path`; ValueError, saying what to do, for a missing or foreign file."""
        try:
            data = json.loads(path.read_text())
            return cls.from_issuance(data["home_url"], data)
        except FileNotFoundError:
            raise ValueError(f"no wallet at {path}: run 'xcentre login' at your home centre first") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{path} is not a wallet ({type(exc).__name__}: {exc}): "
                "run 'xcentre login' at your home centre to make a new one"
            ) from None
