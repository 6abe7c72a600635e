"""Closing a centre's epoch: commit its usage records by Merkle root, then settle.

One chain transaction per centre per epoch (the anchor), plus one settlement
per epoch by whichever centre closes last; never one per job.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict

from gateway.api.schemas import EpochClosure
from gateway.node.errors import Conflict, Invalid
from gateway.store import ClosedEpoch, Store
from ledger.ids import centre_id, centre_name
from ledger.index import EventIndex
from ledger.merkle import MerkleTree
from ledger.outbox import Outbox
from ledger.primitives.hex import to_hex
from ledger.records import UsageRecord

log = logging.getLogger(__name__)

MAX_EPOCH = 2**63 - 1
"""Epochs are uint64 on chain, but the gateway's SQLite files hold signed 64-bit integers."""
_RECORD_ID = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def check_epoch(epoch: int) -> int:
    """An epoch number a caller asked about, refused with a 400 when no epoch can have it."""
    if not 1 <= epoch <= MAX_EPOCH:
        raise Invalid(f"epoch {epoch} does not exist: epochs are numbered from 1 to {MAX_EPOCH}")
    return epoch


def check_record_id(record_id: str) -> str:
    """A usage record id as shown in job views: 32 bytes in hex, with or without 0x."""
    if not _RECORD_ID.fullmatch(record_id):
        raise Invalid(f"{record_id[:80]!r} is not a usage record id: expected 0x and 64 hex digits")
    return record_id


class EpochCloser:
    def __init__(self, name: str, store: Store, outbox: Outbox, index: EventIndex) -> None:
        self.name = name
        self.store = store
        self.outbox = outbox
        self.index = index
        self._oldest_unsettled = 1
        self._closing = threading.Lock()  # one close at a time, so a named epoch is checked and closed as one

    def close(self, epoch: int | None = None) -> EpochClosure:
        """Close the open epoch: durable closure first, then the anchor through the outbox.

        The closure is committed before anything is sent, so once it is, the answer
        is the closure even when the chain cannot be reached right now: the anchor
        waits in the outbox (anchored=False) and housekeeping sends it. Naming the
        `epoch` makes a retry safe: an epoch already closed answers its closure
        instead of closing the next one.
        """
        with self._closing:
            if epoch is not None:
                check_epoch(epoch)
                closed = self.store.closure(epoch)
                if closed is not None:
                    return self._closure(closed)
                open_epoch = self.store.open_epoch()
                if epoch != open_epoch:
                    raise Conflict(f"epoch {epoch} is not open at {self.name}: the open epoch is {open_epoch}")
            closure = self.store.close_open_epoch(self._commit)
            self._enqueue_anchor(closure)
            try:
                self.flush()
                self._settle_if_ready(closure.epoch)
            except Exception as exc:  # noqa: BLE001 - the chain may be briefly unreachable: housekeeping retries
                log.warning("%s: epoch %d closed; its anchor waits in the outbox: %s", self.name, closure.epoch, exc)
        return self._closure(closure)

    def resend_anchors(self) -> None:
        """Queue the anchor of every closed epoch the chain does not show anchored.

        A crash between committing a closure and queuing its anchor would otherwise
        leave that epoch closed here and never anchored, so never settled. Queuing is
        idempotent (same outbox key, same payload), so this is safe at every start.
        """
        me = centre_id(self.name)
        for closure in self.store.closures():
            if self.index.anchor(me, closure.epoch) is None:
                self._enqueue_anchor(closure)

    def _enqueue_anchor(self, closure: ClosedEpoch) -> None:
        self.outbox.enqueue(
            "anchor",
            f"anchor:{closure.epoch}",
            {
                "epoch": closure.epoch,
                "root": "0x" + closure.root,
                "count": closure.count,
                "debtors": list(closure.claims),
                "amounts": list(closure.claims.values()),
            },
        )

    def _commit(self, epoch: int, rows: list) -> tuple[bytes, dict[str, int]]:
        """The epoch's Merkle root and what each home centre owes for its users' jobs here."""
        claims: dict[str, int] = defaultdict(int)
        for row in rows:
            record = UsageRecord.from_json(row.record)
            home = centre_name(record.home_centre)
            if home != self.name:
                claims[home] += record.price
        return MerkleTree(row.leaf_bytes for row in rows).root, dict(sorted(claims.items()))

    def flush(self) -> None:
        """Send what the outbox holds and bring the local index up to date."""
        self.outbox.drain()
        self.index.sync()

    def catch_up(self) -> None:
        """Settle closed epochs whose last anchor arrived after this centre closed them."""
        for closure in self.store.closures(since=self._oldest_unsettled):
            if self.index.settlement(closure.epoch) is None:
                self._settle_if_ready(closure.epoch)
            if self.index.settlement(closure.epoch) is not None and closure.epoch == self._oldest_unsettled:
                self._oldest_unsettled += 1

    def _settle_if_ready(self, epoch: int) -> None:
        anchored = {a.centre for a in self.index.anchors(epoch)}
        members = {m.id for m in self.index.members()}
        if members <= anchored and self.index.settlement(epoch) is None:
            self.outbox.enqueue("settle", f"settle:{epoch}", {"epoch": epoch})
            self.flush()

    def _closure(self, closure: ClosedEpoch) -> EpochClosure:
        epoch = closure.epoch
        return EpochClosure(
            centre=self.name,
            epoch=epoch,
            root="0x" + closure.root,
            record_count=closure.count,
            claims=closure.claims,
            anchored=self.index.anchor(centre_id(self.name), epoch) is not None,
            settled=self.index.settlement(epoch) is not None,
        )

    def audit_view(self, epoch: int) -> dict:
        """What the chain says of `epoch`, from the local index: roots, counts, claims, nets."""
        check_epoch(epoch)
        self.index.sync()
        anchors = {
            centre_name(a.centre): {
                "root": to_hex(a.root),
                "record_count": a.record_count,
                "claims": {centre_name(d): amount for d, amount in a.claims.items()},
                "tx": a.tx_hash,
            }
            for a in self.index.anchors(epoch)
        }
        settlement = self.index.settlement(epoch)
        return {
            "epoch": epoch,
            "anchors": anchors,
            "settled": settlement is not None,
            "net_positions": {centre_name(c): n for c, n in settlement.net.items()} if settlement else {},
            "transfers": [
                {"from": centre_name(f), "to": centre_name(t), "amount": a} for f, t, a in settlement.transfers
            ]
            if settlement
            else [],
        }

    def records(self, epoch: int) -> list[dict]:
        check_epoch(epoch)
        return [{"record": row.data, "signature": "0x" + row.signature} for row in self.store.records_for_epoch(epoch)]

    def proof(self, record_id: str) -> dict | None:
        """A usage record, its signature and its Merkle proof against the anchored root."""
        row = self.store.record(check_record_id(record_id))
        if row is None:
            return None
        tree = MerkleTree(r.leaf_bytes for r in self.store.records_for_epoch(row.epoch))
        leaf = row.leaf_bytes
        anchor = self.index.anchor(centre_id(self.name), row.epoch)
        return {
            "record": row.data,
            "signature": "0x" + row.signature,
            "epoch": row.epoch,
            "leaf": to_hex(leaf),
            "proof": [to_hex(p) for p in tree.proof(leaf)],
            "anchored_root": to_hex(anchor.root) if anchor else None,
            "anchored": anchor is not None and anchor.root == tree.root,
        }
