"""The payer home's side of an epoch: check every claim on it before it stands, then close its holds.

For each anchor naming this home (count > 0) within the dispute window, the
watcher fetches the evidence from the serving centre's gateway, rebuilds the
sum tree and checks every record (`ledger.evidence.check_evidence`) against the
home's own hold book: a grant it did not issue, or one already paid, is bad.
The first bad leaf is disputed (leaf 0 when the evidence is unavailable or does
not rebuild the anchored root, count and total): unanswerable, it voids the
whole claim. A record without a receipt, or one a user complained of, is
disputed with needKey: only a key reveal on chain answers it, and the user then
reads k from the chain. Once an epoch is settled, its holds are paid (claim
standing) or refunded (claim voided). Disputes and nothing else go on chain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from gateway.node.payer import Payer
from ledger.evidence import EvidenceError, RecordEvidence, check_evidence
from ledger.ids import centre_id
from ledger.index import ClaimInfo, EventIndex
from ledger.outbox import Outbox
from ledger.payment import InvalidSignature, Receipt, grant_digest, recover
from ledger.primitives.hex import to_hex
from ledger.records import Domain, record_digest
from ledger.sumtree import SumTree

log = logging.getLogger(__name__)

Fetch = Callable[[str, int, str], Any]
"""(gateway URL, epoch, home name) -> the evidence endpoint's JSON; raises when it cannot be had."""


def fetch_evidence(url: str, epoch: int, home: str, timeout: float = 30.0) -> Any:
    """The serving centre's evidence for its claim on `home` (GET /v1/epochs/{epoch}/evidence?home=)."""
    response = httpx.get(f"{url.rstrip('/')}/v1/epochs/{epoch}/evidence", params={"home": home}, timeout=timeout)
    response.raise_for_status()
    return response.json()


class Watcher:
    def __init__(
        self,
        *,
        name: str,
        index: EventIndex,
        outbox: Outbox,
        payer: Payer,
        domain: Domain,
        dispute_window: int,
        booking_delay: int,
        fetch: Fetch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.me = centre_id(name)
        self.index = index
        self.outbox = outbox
        self.payer = payer
        self.domain = domain
        self.dispute_window = dispute_window
        self.booking_delay = booking_delay
        self.fetch = fetch
        self.clock = clock
        self._checked: set[tuple[bytes, int]] = set()
        self._leaves: dict[str, tuple[ClaimInfo, int]] = {}  # record digest (hex) -> its claim and leaf, in window
        self._closed: set[int] = set()

    def round(self) -> None:
        """One pass: check new claims on this home, close the holds of newly settled epochs."""
        self.check_claims()
        self.close_holds()

    # -- before settlement ----------------------------------------------------------

    def check_claims(self) -> list[tuple[ClaimInfo, int, bool]]:
        """Dispute what is wrong in every claim on this home still in its window; returns the disputes queued."""
        now = max(int(self.clock()), self.index.chain_time)
        queued: list[tuple[ClaimInfo, int, bool]] = []
        for claim in self.index.claims_on(self.me):
            key = (claim.centre, claim.epoch)
            if key in self._checked or claim.voided or claim.count == 0:
                continue
            if now <= claim.anchored_at + self.dispute_window:  # later, settlement decides
                for index, need_key in self.findings(claim):
                    self._dispute(claim, index, need_key)
                    queued.append((claim, index, need_key))
            self._checked.add(key)  # once its disputes are queued: a round that failed checks it again
        queued += self._answer_complaints(now)
        return queued

    def _answer_complaints(self, now: int) -> list[tuple[ClaimInfo, int, bool]]:
        """A complaint about a leaf already checked, its claim still in its window: a needKey dispute of it."""
        self._leaves = {d: (c, i) for d, (c, i) in self._leaves.items() if now <= c.anchored_at + self.dispute_window}
        queued = []
        for complaint in self.payer.book.complaints("open"):
            found = self._leaves.get(complaint.record_digest)
            if found is not None:
                claim, index = found
                self._dispute(claim, index, True)
                queued.append((claim, index, True))
        return queued

    def findings(self, claim: ClaimInfo) -> list[tuple[int, bool]]:
        """The leaves of `claim` to dispute: [(first bad leaf, False)], or the needKey ones, or none."""
        bundles = self._evidence(claim)
        if bundles is None:
            return [(0, False)]
        complained = {c.record_digest for c in self.payer.book.complaints("open")}
        account = self.index.member(self.me)
        grants: set[bytes] = set()
        need_key: list[tuple[int, bool]] = []
        for i, ev in enumerate(bundles):
            rates = self.index.rates(claim.centre, ev.record.rates_version)
            # rules 1-6 (record, proof, order, grant, price, time); asked as a needKey dispute without the key,
            # rule 7 adds exactly one finding, the last: delivery is judged below, by the receipt
            findings = check_evidence(
                ev,
                domain=self.domain,
                home_account=account.account if account else "",
                rates=rates.prices if rates else None,
                anchored_at=claim.anchored_at,
                booking_delay=self.booking_delay,
                claim=claim,
                need_key=True,
            )[:-1]
            grant = grant_digest(ev.grant, self.domain)
            hold = self.payer.book.hold(grant)
            if findings or hold is None or hold.status == "paid" or grant in grants:
                log.warning(
                    "%s: leaf %d of %s's claim for epoch %d is bad: %s",
                    self.name,
                    i,
                    claim.centre.rstrip(b"\0").decode(errors="replace"),
                    claim.epoch,
                    findings or ("a grant this home did not issue, or paid already"),
                )
                return [(i, False)]
            grants.add(grant)
            digest = record_digest(ev.record, self.domain)
            self._leaves[digest.hex()] = (claim, i)
            if digest.hex() in complained or not _receipted(ev, digest, self.domain):
                need_key.append((i, True))
        return need_key

    def _evidence(self, claim: ClaimInfo) -> list[RecordEvidence] | None:
        """The claim's evidence, if it can be had and rebuilds the anchored root, count and total."""
        member = self.index.member(claim.centre)
        if member is None:
            return None
        try:
            rows = self.fetch(member.gateway_url, claim.epoch, self.name)
            if not isinstance(rows, list):
                raise EvidenceError("the evidence must be a list")
            bundles = [RecordEvidence.from_dict(r) for r in rows]
        except Exception as exc:  # noqa: BLE001 - whatever a centre sends or fails with: unavailable evidence
            log.warning("%s: evidence for epoch %d unavailable from %s: %s", self.name, claim.epoch, member.name, exc)
            return None
        if not bundles:
            return None  # a claim with leaves and no evidence for them
        tree = SumTree((record_digest(ev.record, self.domain), ev.record.price) for ev in bundles)
        if (tree.root, tree.count, tree.total) != (claim.root, claim.count, claim.total):
            return None
        return bundles

    def _dispute(self, claim: ClaimInfo, index: int, need_key: bool) -> None:
        """Queue the dispute (once: the outbox key names the leaf); a complaint about that leaf is then disputed."""
        if need_key:
            for digest, (leaf_claim, leaf) in self._leaves.items():
                if (leaf_claim.centre, leaf_claim.epoch, leaf) == (claim.centre, claim.epoch, index):
                    self.payer.book.mark_disputed(digest)
        self.outbox.enqueue(
            "dispute",
            f"dispute:{to_hex(claim.centre)}:{claim.epoch}:{index}:{int(need_key)}",
            {
                "centre": to_hex(claim.centre),
                "epoch": claim.epoch,
                "home": to_hex(self.me),
                "index": index,
                "need_key": need_key,
            },
        )

    # -- after settlement -------------------------------------------------------------

    def close_holds(self) -> None:
        """Holds of settled epochs: paid at their records' prices, or refunded when the claim was voided."""
        for claim in self.index.claims_on(self.me):
            if claim.epoch in self._closed or self.index.settlement(claim.epoch) is None:
                continue
            self._close_epoch_holds(claim.epoch)
            self._closed.add(claim.epoch)
        self.payer.expire(max(int(self.clock()), self.index.chain_time), self.booking_delay)

    def _close_epoch_holds(self, epoch: int) -> None:
        for claim in self.index.claims_on(self.me, epoch):
            bundles = self._evidence(claim) if claim.count else []
            if bundles is None:
                continue  # a claim that stood without evidence here: the chain paid it; audit says more
            paid = [(grant_digest(ev.grant, self.domain), ev.record.price) for ev in bundles]
            if not claim.voided:
                self.payer.settle_holds(paid)
                continue
            for grant, _ in paid:
                try:
                    self.payer.refund(grant)
                except (LookupError, ValueError) as exc:  # a grant never issued here, or paid elsewhere
                    log.info("%s: no refund for grant %s: %s", self.name, to_hex(grant), exc)


def _receipted(ev: RecordEvidence, digest: bytes, domain: Domain) -> bool:
    """Whether the record carries the order account's receipt: the user got the key."""
    if ev.receipt_signature is None:
        return False
    try:
        return recover(Receipt(record=digest), domain, ev.receipt_signature) == ev.grant.account
    except InvalidSignature:
        return False
