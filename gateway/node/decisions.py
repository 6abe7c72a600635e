"""Reading a centre's decision log: one entry with its Merkle proof, and an epoch's whole log for auditors.

An entry is public to whoever holds its id (the capability its principal was
given with the answer); the whole log of an epoch names every principal's
attributes (and a password session's uid@home), so it goes only to the
centre's configured auditors, each proving it with a fresh signature of its
chain account bound to the epoch, page by page; so does one entry found by its
digest (what a usage record names), the signature bound to that digest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from eth_utils import to_checksum_address

from gateway.api.schemas import (
    AUDIT_PAGE,
    AUDIT_SIGNATURE,
    AUDIT_SIGNATURE_AHEAD,
    AUDIT_SIGNATURE_HEADER,
    AUDIT_SIGNATURE_SKEW,
    DECISION_DIGEST,
    MAX_SEQ,
    audit_message,
)
from gateway.books.epochs import check_epoch
from gateway.node.errors import Conflict, Invalid, NotFound, Unauthenticated
from gateway.store import ClosedEpoch, Store, StoreError
from ledger.decisions import entry_leaf
from ledger.ids import centre_id
from ledger.index import EventIndex
from ledger.merkle import process_proof
from ledger.primitives.hex import HexError, from_hex, to_hex


class DecisionLog:
    """The read side of a centre's decision log: GET /v1/decisions/{id} and GET /v1/audit/decisions/{epoch}."""

    def __init__(
        self,
        name: str,
        store: Store,
        index: EventIndex,
        auditors: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.store = store
        self.index = index
        self.auditors = frozenset(to_checksum_address(a) for a in auditors)
        self.clock = clock

    def entry(self, entry_id: str) -> dict:
        """The entry, and once its epoch is closed, its proof against the closed log's root and the anchored one."""
        try:
            stored = self.store.decision(entry_id)
        except StoreError:
            raise Invalid(f"{entry_id[:80]!r} is not a decision id: expected 0x and 32 hex digits") from None
        if stored is None:
            raise NotFound(f"no decision {entry_id} at {self.name}")
        closure = self.store.closure(stored.epoch)
        proof = root = anchored_root = None
        anchored = False
        if closure is not None:
            proof = [to_hex(h) for h in self._proof(closure, stored.digest_bytes)]
            root = to_hex(closure.decision_root)
            anchor = self.index.anchor(centre_id(self.name), stored.epoch)
            if anchor is not None:
                anchored_root = to_hex(anchor.decision_root)
                anchored = (anchor.decision_root, anchor.decision_count) == (
                    closure.decision_root,
                    closure.decision_count,
                )
        return {
            "entry": stored.entry,
            "digest": to_hex(stored.digest_bytes),
            "epoch": stored.epoch,
            "closed": closure is not None,
            "proof": proof,
            "root": root,
            "anchored_root": anchored_root,
            "anchored": anchored,
        }

    def _proof(self, closure: ClosedEpoch, digest: bytes) -> list[bytes]:
        """The entry's proof from the tree its epoch's close kept (a few node reads, never the log),
        checked against the root the close fixed."""
        proof = self.store.decision_proof(closure.epoch, digest)
        if proof is None or process_proof(entry_leaf(digest), proof) != closure.decision_root:
            raise StoreError(
                f"epoch {closure.epoch}'s decision log tree does not prove entry {to_hex(digest)} under the "
                f"root {to_hex(closure.decision_root)} its close fixed: the store is damaged"
            )
        return proof

    def audit(self, epoch: int, signature: str | None, after: int = 0, limit: int = AUDIT_PAGE) -> dict:
        """A page of a closed epoch's log: up to `limit` entries stored after `after` (a seq), in order, with the
        root and count its close fixed, and `next`, the `after` of the next page (None on the last)."""
        self.check_auditor(signature, epoch)
        check_epoch(epoch)
        if not _is_int(limit) or not 1 <= limit <= AUDIT_PAGE:
            raise Invalid(f"limit must be from 1 to {AUDIT_PAGE} entries, got {limit!r:.20}")
        if not _is_int(after) or not 0 <= after <= MAX_SEQ:
            raise Invalid(f"after must be 0 (the first page) or a page's `next`, got {after!r:.20}")
        closure = self.store.closure(epoch)
        if closure is None:
            raise Conflict(
                f"epoch {epoch} is not closed at {self.name} (the open epoch is {self.store.open_epoch()}): "
                "its decision log is not fixed yet"
            )
        page = self.store.decisions_page(epoch, after, limit + 1)  # one more: is there a next page?
        return {
            "centre": self.name,
            "epoch": epoch,
            "root": to_hex(closure.decision_root),
            "count": closure.decision_count,
            "entries": [d.entry for d in page[:limit]],
            "next": page[limit - 1].seq if len(page) > limit else None,
        }

    def by_digest(self, digest: str, signature: str | None) -> dict:
        """The entry a usage record names, by its digest, with its epoch and its proof against the root that epoch's
        close fixed: one look-up where a record of one epoch names an allow of an earlier one. For auditors only,
        the signature bound to this digest (it may name any principal's entry)."""
        if not isinstance(digest, str) or not re.fullmatch(DECISION_DIGEST, digest):
            raise Invalid(f"{str(digest)[:80]!r} is not an entry digest: expected 0x and 64 hex digits")
        digest = digest.lower()
        self.check_auditor(signature, digest)
        stored = self.store.decision_by_digest(digest)
        if stored is None:
            raise NotFound(f"no decision with digest {digest} at {self.name}")
        closure = self.store.closure(stored.epoch)
        if closure is None:
            raise Conflict(
                f"the entry is in epoch {stored.epoch}, not closed at {self.name} yet: its log's root is not fixed"
            )
        return {
            "centre": self.name,
            "epoch": stored.epoch,
            "digest": digest,
            "entry": stored.entry,
            "proof": [to_hex(h) for h in self._proof(closure, stored.digest_bytes)],
            "root": to_hex(closure.decision_root),
        }

    def check_auditor(self, header: str | None, epoch: int | str) -> str:
        """The account that signed `xcentre-audit:<centre>:<epoch>:<at>` (for one entry: its 0x digest in place of
        the epoch), `at` at most AUDIT_SIGNATURE_SKEW s past and AUDIT_SIGNATURE_AHEAD s ahead, if it is one of
        this centre's `auditors`; else 401 (a signature of another text recovers to some other account, so a wrong
        signature and an outsider's are one refusal).
        Members are not let in as such: the log names other centres' users; a consortium whose members audit
        each other lists their accounts as auditors."""
        if header is None:
            raise Unauthenticated(
                f"the decision log is for {self.name}'s auditors: send {AUDIT_SIGNATURE_HEADER}: "
                f"'<unix time>:0x<signature>', your chain account's EIP-191 signature of "
                f"'xcentre-audit:{self.name}:{epoch}:<unix time>'"
            )
        if not re.fullmatch(AUDIT_SIGNATURE, header.strip()):
            raise Unauthenticated(f"{AUDIT_SIGNATURE_HEADER} must be '<unix time>:0x<65-byte signature>'")
        at_text, _, sig = header.strip().partition(":")
        at, now = int(at_text), int(self.clock())
        if not -AUDIT_SIGNATURE_AHEAD <= now - at <= AUDIT_SIGNATURE_SKEW:
            raise Unauthenticated(
                f"audit signature refused: signed for {at}, {at - now:+d} s from {self.name}'s clock; it is good "
                f"from {AUDIT_SIGNATURE_AHEAD} s ahead to {AUDIT_SIGNATURE_SKEW} s behind: sign again, for now"
            )
        message = audit_message(self.name, epoch, at)
        try:
            signer = Account.recover_message(encode_defunct(text=message), signature=from_hex(sig, size=65))
        except (HexError, ValueError, BadSignature) as exc:
            raise Unauthenticated(f"audit signature refused: not a valid signature ({exc})") from None
        if signer not in self.auditors:
            raise Unauthenticated(
                f"audit signature refused: it recovers to {signer}, not an auditor of {self.name} (or it is not a "
                f"signature of '{message}'): the decision log is for the auditors in {self.name}'s configuration "
                "only; one entry is public to whoever holds its id"
            )
        return signer


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
