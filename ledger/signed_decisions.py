"""A centre's signature of one of its decision-log entries: what a refused user holds.

The log commits every decision only at the epoch's close, so between the answer and
the close a centre could drop a refusal from its log. The 403 therefore carries the
entry and the centre's EIP-712 signature of `Decision(entry digest)` with its chain key,
in the deployment's domain (the one its usage records are signed in): with it the user
can show anyone that the centre made that decision, anchored or not — and an entry
signed but missing from the anchored log is the centre's misconduct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.decisions import entry_digest
from ledger.records import Bytes32, DomainLike, InvalidTypedData, TypedData, recover, sign_typed


class InvalidStatement(InvalidTypedData):
    """A decision statement whose entry digest is not 32 bytes."""


@dataclass(frozen=True)
class Decided(TypedData, name="Decision", what="decision statement", error=InvalidStatement):
    """The centre made the decision-log entry with this digest (ledger.decisions.entry_digest)."""

    entry: Bytes32


def sign_entry(digest: bytes, domain: DomainLike, private_key: Any) -> bytes:
    """The centre's 65-byte signature of Decision(digest)."""
    return sign_typed(Decided(entry=digest), domain, private_key)


def entry_signer(entry: dict, signature: bytes, domain: DomainLike) -> str:
    """The checksummed account that signed Decision(entry_digest(entry)) (ledger.records.recover's errors)."""
    return recover(Decided(entry=entry_digest(entry)), domain, signature)
