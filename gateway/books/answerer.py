"""The serving centre's side of a dispute: answer every open dispute on its own claims from its store.

A dispute names a leaf (centre, epoch, home, index) of an anchored claim. The
centre answers with the evidence it kept with the job: the record, the order
and grant the payer signed, the leaf's sum proof, and the payer's receipt when
it holds one and the dispute does not ask for the key, else the key k itself
(which the user then reads from the chain). Unanswered, the whole claim is void
at settlement, so answering is queued through the outbox, which survives restarts.
"""

from __future__ import annotations

import json
import logging

from gateway.store import PaidRecord, Store
from ledger.ids import centre_id
from ledger.index import DisputeInfo, EventIndex
from ledger.outbox import Outbox
from ledger.primitives.hex import to_hex
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import SumTree

log = logging.getLogger(__name__)

ZERO_KEY = "0x" + "00" * 32


class Answerer:
    def __init__(self, name: str, store: Store, outbox: Outbox, index: EventIndex, domain: Domain) -> None:
        self.name = name
        self.store = store
        self.outbox = outbox
        self.index = index
        self.domain = domain
        self._unanswerable: set[int] = set()  # said once each, not every round

    def answer_open(self) -> int:
        """Queue an answer to every open dispute on this centre's claims; returns how many were queued."""
        queued = 0
        for dispute in self.index.open_disputes(centre=centre_id(self.name)):
            payload = self.answer(dispute)
            if payload is None:
                if dispute.id not in self._unanswerable:
                    self._unanswerable.add(dispute.id)
                    log.warning("%s: dispute %d names a leaf this centre cannot evidence", self.name, dispute.id)
                continue
            self.outbox.enqueue("answer", f"answer:{dispute.id}", payload)
            queued += 1
        return queued

    def answer(self, dispute: DisputeInfo) -> dict | None:
        """The `answer` payload for a dispute (UsageLedger.answer's Evidence), or None without evidence."""
        rows = self.store.paid_records(dispute.epoch, dispute.home)
        if not 0 <= dispute.index < len(rows):
            return None
        row = rows[dispute.index]
        if row.order is None or row.grant is None or row.key is None:
            return None  # a job accepted before payment: nothing the contract would take
        tree = SumTree(_leaf(r, self.domain) for r in rows)
        proof = tree.proof(dispute.index)
        by_receipt = row.receipt_signature is not None and not dispute.need_key
        return {
            "id": dispute.id,
            "record": row.record.data,
            "order": json.loads(row.order),
            "order_signature": "0x" + str(row.order_signature),
            "grant": json.loads(row.grant),
            "grant_signature": "0x" + str(row.grant_signature),
            "receipt_signature": "0x" + str(row.receipt_signature) if by_receipt else "0x",
            "key": ZERO_KEY if by_receipt else "0x" + row.key,
            "hashes": [to_hex(h) for h in proof.hashes],
            "sums": list(proof.sums),
        }


def _leaf(row: PaidRecord, domain: Domain) -> tuple[bytes, int]:
    record = UsageRecord.from_json(row.record.record)
    return record_digest(record, domain), record.price
