"""A centre's Cedar policy on chain: publish the hash of a new version, read every version back.

The chain keeps only hashes (sha256 of the policy text and of its schema text, as
UTF-8); the text itself is served by the centre's gateway, and whoever fetches it
checks it against these hashes (`verify_text`). Versions count from 1, are in force
from the block that published them, and never change; only the centre itself
publishes its own (`Consortium.publishPolicy`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3.logs import DISCARD

from auth.policy import PolicyEngine, PolicyError
from ledger.chain import Chain, ChainRevert
from ledger.deploy import Deployment, bind
from ledger.ids import centre_id, centre_name
from ledger.primitives.hex import to_hex

NO_SCHEMA = bytes(32)
"""The schema hash of a centre that publishes no schema."""


class PolicyUnchanged(ValueError):
    """The policy and schema are those of the centre's latest version already: nothing was published."""


class PolicyTextMismatch(ValueError):
    """A policy text (or schema) does not hash to what the chain says for that version."""


def policy_hash(text: str) -> bytes:
    """sha256 of the policy text as UTF-8: what the chain holds for it."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def schema_hash(text: str | None) -> bytes:
    """sha256 of the schema text as UTF-8; zero for a centre without a schema."""
    return NO_SCHEMA if text is None else hashlib.sha256(text.encode("utf-8")).digest()


def read_text(path: Path, what: str = "policy") -> str:
    """A policy or schema file's text exactly as its bytes say (strict UTF-8, line ends kept),
    so its hash is the sha256 of the file itself."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"the {what} file {path} is not UTF-8 text: {exc}") from None


@dataclass(frozen=True)
class PolicyVersion:
    """One version of a centre's policy as the chain holds it."""

    centre: str
    version: int
    policy_hash: bytes
    schema_hash: bytes  # NO_SCHEMA: published without a schema
    published_at: int  # UTC seconds (block time): in force from then

    def to_dict(self) -> dict:
        return {
            "centre": self.centre,
            "version": self.version,
            "policy_hash": to_hex(self.policy_hash),
            "schema_hash": to_hex(self.schema_hash),
            "published_at": self.published_at,
        }


def validate(policy_text: str, schema_text: str | None = None) -> PolicyEngine:
    """The engine a gateway would serve these texts with; PolicyError says what is wrong with them.

    A text without a single policy is refused too: served, it would refuse every request.
    """
    engine = PolicyEngine(policy_text, schema_text)
    if not engine.policy_ids:
        raise PolicyError("the policy text has no policies: a centre serving it would refuse every request")
    return engine


def publish(
    chain: Chain, deployment: Deployment, account: LocalAccount, policy_text: str, schema_text: str | None = None
) -> PolicyVersion:
    """Publish the hashes of `policy_text` (and `schema_text`) as the account's centre's next version.

    The texts are checked with the Cedar engine first: an invalid policy raises PolicyError
    and nothing is sent. The same texts as the latest version raise PolicyUnchanged,
    naming it; an account that is no member's reverts on chain (`NotMember`).
    """
    validate(policy_text, schema_text)
    consortium = bind(chain, deployment).consortium
    hashes = policy_hash(policy_text), schema_hash(schema_text)
    try:
        receipt = chain.transact(consortium.functions.publishPolicy(*hashes), account)
    except ChainRevert as exc:
        if exc.reason != "PolicyUnchanged":
            raise
        ident, version = exc.error_args
        raise PolicyUnchanged(
            f"{centre_name(bytes(ident))}'s policy version {int(version)} already has this policy "
            f"(sha256 {to_hex(hashes[0])}) and schema (sha256 {to_hex(hashes[1])}): nothing was published"
        ) from None
    event = consortium.events.PolicyPublished().process_receipt(receipt, errors=DISCARD)[0]["args"]
    return PolicyVersion(
        centre_name(bytes(event["id"])),
        int(event["version"]),
        bytes(event["policyHash"]),
        bytes(event["schemaHash"]),
        int(event["publishedAt"]),
    )


def history(chain: Chain, deployment: Deployment, centre: str) -> list[PolicyVersion]:
    """Every policy version `centre` published, oldest first (a centre that published none has none)."""
    consortium = bind(chain, deployment, named=True).consortium.functions
    ident = centre_id(centre)
    versions = []
    for v in range(1, int(chain.call(consortium.policyCount(ident))) + 1):
        published = chain.call(consortium.policy(ident, v))
        versions.append(
            PolicyVersion(
                centre,
                int(published.version),
                bytes(published.policyHash),
                bytes(published.schemaHash),
                int(published.publishedAt),
            )
        )
    return versions


def verify_text(version: PolicyVersion, policy_text: str, schema_text: str | None) -> None:
    """Raises PolicyTextMismatch unless the texts hash to what the chain holds for `version`."""
    got = policy_hash(policy_text), schema_hash(schema_text)
    wrong = [
        f"the {what} hashes to {to_hex(actual)}, the chain has {to_hex(expected)}"
        for what, actual, expected in (
            ("policy text", got[0], version.policy_hash),
            ("schema", got[1], version.schema_hash),
        )
        if actual != expected
    ]
    if wrong:
        raise PolicyTextMismatch(
            f"this is not {version.centre}'s policy version {version.version}: " + "; ".join(wrong)
        )


def check_latest(versions: list[PolicyVersion], policy_text: str, schema_text: str | None) -> PolicyVersion:
    """The latest of `versions` (oldest first) if the texts are its own; else PolicyTextMismatch, saying
    which earlier version they are, if any (a gateway that has not caught up yet)."""
    if not versions:
        raise PolicyTextMismatch("the centre has published no policy on chain: there is nothing to check the text by")
    latest = versions[-1]
    try:
        verify_text(latest, policy_text, schema_text)
    except PolicyTextMismatch as exc:
        hashes = policy_hash(policy_text), schema_hash(schema_text)
        older = [v for v in versions[:-1] if (v.policy_hash, v.schema_hash) == hashes]
        if older:
            raise PolicyTextMismatch(
                f"{exc}; it is version {older[-1].version}, which version {latest.version} replaced"
            ) from None
        raise
    return latest
