"""The payer home's side of an epoch: check every claim on it before it stands, then close its holds.

For each anchor naming this home (count > 0) within the dispute window, the
watcher fetches the evidence from the serving centre's gateway, rebuilds the
sum tree and checks every record's terms (`ledger.evidence.check_evidence`,
rules 1-6) against the home's own hold book. What it disputes:

- evidence that cannot be had, or does not rebuild the anchored root, count and
  total: fetched again a few times over the first half of the window (one try
  per housekeeping round that is due, never a wait, each within a deadline and a
  size cap), then leaves 0 .. min(count, H + 1) - 1 are disputed, H being this
  home's grants that claim could bill: every leaf when count <= H. A cheat
  cannot answer one genuine leaf and keep a padded claim: each leaf's evidence
  must go on chain, and a grant answers for one leaf only;
- a record whose terms are wrong, that names a grant this home did not issue, or
  one already paid or refunded (a voided claim's, billed again): that leaf (an
  index dispute);
- a grant billed twice by the same centre (twice in the claim, or in this and
  an earlier epoch's claim): `disputeDuplicate` with both leaves and their
  proofs, which voids the claim at once, with nothing for the claimant to answer;
- a record without the user's receipt, or one a user complained of: a needKey
  dispute, which only a key reveal on chain answers (the user reads k there).

Once an epoch is settled, its holds are paid (claim standing) or refunded
(claim voided). Disputes and nothing else go on chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.api.schemas import EVIDENCE_PAGE
from gateway.node.payer import Payer
from ledger.evidence import EvidenceError, RecordEvidence, check_evidence
from ledger.ids import centre_id
from ledger.index import ClaimInfo, EventIndex
from ledger.outbox import Outbox
from ledger.payment import MAX_DEADLINE_AHEAD, InvalidSignature, Receipt, grant_digest, recover
from ledger.primitives.bounded import Collected
from ledger.primitives.hex import to_hex
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import SumProof, SumTree, depth

log = logging.getLogger(__name__)

Fetch = Callable[[str, int, str, int], Any]
"""(gateway URL, epoch, home name, the claim's anchored count) -> the claim's evidence, every page's records in one
list; raises when it cannot be had."""


MAX_EVIDENCE_BYTES = 64 * 1024 * 1024
"""The largest page of evidence read (a page of EVIDENCE_PAGE records is ~3.5 MB: a record's evidence, with a
17-level proof, is ~3.4 kB of JSON)."""

RECORD_BYTES = 4096
"""The most bytes of one record's evidence besides its proof: the record, order and grant (fixed-size fields: ids,
addresses, integers) and three signatures are ~2.5 kB of JSON at most."""

PROOF_LEVEL_BYTES = 160
"""The most bytes of one level of a sum proof: a 0x-hex hash and a sum (at most 78 digits)."""

RECORD_VALUES = 96
"""The most JSON values (objects, arrays and scalars) one record's evidence holds besides its proof: an honest one
holds ~50 (the record's 18 fields, the order's and grant's, three signatures). What is read is held parsed until
the claim's last page: values, not bytes, are what a page of small ones (`[]`: 3 bytes read, 64 held) costs."""

PAGE_BYTES = 1024
"""The bytes of a page besides its records (`{"records": [...], "next": ...}`)."""

EVIDENCE_DEADLINE = 30.0
"""Seconds a claim's evidence may take besides EVIDENCE_SECONDS_PER_RECORD a record (and the limit of each read)."""

EVIDENCE_SECONDS_PER_RECORD = 0.002
"""Seconds a claim's evidence may take per record anchored: 100,000 records took 26-30 s to serve and read here
(loopback, two cores shared by both gateways), so a claim of that size is due within 230 s: room for a gateway and
a network ~8 times slower."""

MAX_EVIDENCE_RECORDS = 500_000
"""The largest claim whose evidence is read: a claim is a centre's records of one home's users in one epoch, each
billing a grant of the home. The watcher holds a claim's evidence whole while it checks it (~13 kB a record: 1.3 GB
for 100,000 here), so 500,000 records are ~6.5 GB, due within ~17 minutes. Past it, the count (the claimant's word,
up to 2**64 - 1) would make the home read and hold without end: unavailable evidence."""


class EvidenceUnavailable(Exception):
    """The evidence could not be had: no answer, an error status, too slow, too large, too deeply nested, not JSON,
    or pages that are not a claim's (more records than it has, or a next page that does not move on)."""


def evidence_budget(count: int, limit: int, base: float = EVIDENCE_DEADLINE) -> tuple[float, int]:
    """The seconds (`base` and more a record) and bytes the evidence of a claim of `count` records may take in pages
    of `limit`: in proportion to the count anchored on chain, which the claimant fixed before it could know what the
    reading costs."""
    pages = count // limit + 1
    return (
        base + count * EVIDENCE_SECONDS_PER_RECORD,
        count * (RECORD_BYTES + PROOF_LEVEL_BYTES * depth(count)) + pages * PAGE_BYTES,
    )


def fetch_evidence(
    url: str,
    epoch: int,
    home: str,
    count: int,
    timeout: float | None = None,
    max_bytes: int = MAX_EVIDENCE_BYTES,
    limit: int | None = None,
) -> list:
    """The serving centre's evidence for its claim of `count` records on `home`: every page of
    GET /v1/epochs/{epoch}/evidence?home=&after=&limit=, their records in one list (unchecked: the caller parses them).

    The centre is the party checked, so it must not choose how long or how much the home reads: the claim's pages
    are due within `timeout` seconds (EVIDENCE_DEADLINE when None) plus EVIDENCE_SECONDS_PER_RECORD a record of
    `count` (httpx's own timeout, `timeout`, bounds each read, which a centre dripping a byte at a time never
    trips), together within the bytes `evidence_budget` allows, each at most `max_bytes` long and nested no deeper
    than `ledger.primitives.bounded.MAX_DEPTH` (deeper JSON would crash the parser, not raise). A page of more than
    `limit` records (EVIDENCE_PAGE when None), a next page that does not move on, or more records than `count`
    end the reading: unavailable evidence. A claim past MAX_EVIDENCE_RECORDS is not read at all.
    """
    per_read = EVIDENCE_DEADLINE if timeout is None else timeout
    limit = EVIDENCE_PAGE if limit is None else limit
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_EVIDENCE_RECORDS:
        raise EvidenceUnavailable(
            f"a claim of {count!r:.24} records is not read: its evidence is read for claims of 1 to "
            f"{MAX_EVIDENCE_RECORDS} records"
        )
    seconds, budget = evidence_budget(count, limit, per_read)
    try:
        return asyncio.run(
            asyncio.wait_for(_pages(url, epoch, home, count, limit, per_read, max_bytes, budget), seconds)
        )
    except TimeoutError:
        raise EvidenceUnavailable(
            f"{url} did not send its evidence of {count} records within the {seconds:g} s deadline"
        ) from None
    except httpx.HTTPError as exc:
        raise EvidenceUnavailable(f"{url}: {exc}") from None
    except ValueError as exc:  # too large, too deep (OverLimit), or not JSON
        raise EvidenceUnavailable(f"{url} sent evidence that cannot be read: {exc}") from None


async def _pages(
    url: str, epoch: int, home: str, count: int, limit: int, per_read: float, max_bytes: int, budget: int
) -> list:
    """Every page of the claim's evidence, in order, within the byte `budget` (ValueError or EvidenceUnavailable
    for what is not a claim's)."""
    rows: list = []
    after, number = 0, 0
    async with httpx.AsyncClient(timeout=per_read) as client:
        endpoint = f"{url.rstrip('/')}/v1/epochs/{epoch}/evidence"
        while True:
            number += 1
            params = {"home": home, "after": after, "limit": limit}
            answer = await _read(client, endpoint, params, min(max_bytes, budget))
            budget -= len(answer.body)
            page = answer.json()
            if not isinstance(page, dict) or not isinstance(page.get("records"), list):
                raise EvidenceUnavailable(f"{url} answered no page of evidence (a JSON object with 'records')")
            _check_values(page, url, number, RECORD_VALUES + 2 * depth(count) + 2)
            records, following = page["records"], page.get("next")
            if len(records) > limit:
                raise EvidenceUnavailable(
                    f"{url} answered {len(records)} records in page {number} of its evidence, asked for at most {limit}"
                )
            rows += records
            if len(rows) > count:
                raise EvidenceUnavailable(f"{url} served more than the {count} records its claim anchored")
            if following is None:
                return rows
            moves_on = isinstance(following, int) and not isinstance(following, bool) and following > after
            if not moves_on or not records or len(rows) == count:
                raise EvidenceUnavailable(
                    f"{url} named a next page ({following!r:.20}) after page {number} (after {after}, "
                    f"{len(rows)} of {count} records) that does not move on or is past its claim's records"
                )
            after = following


def _check_values(page: dict, url: str, number: int, per_record: int) -> None:
    """EvidenceUnavailable when the page holds more JSON values than `per_record` for each record it has."""
    most = 8 + per_record * len(page["records"])
    stack, seen = [page], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > most:
            raise EvidenceUnavailable(
                f"{url} sent a page of evidence (page {number}) holding more than {most} JSON values: at most "
                f"{per_record} a record"
            )
        if isinstance(value, dict):
            stack += value.values()
        elif isinstance(value, list):
            stack += value


async def _read(client: httpx.AsyncClient, endpoint: str, params: dict, max_bytes: int) -> Collected:
    async with client.stream("GET", endpoint, params=params) as response:
        response.raise_for_status()
        answer = Collected(max_bytes)
        answer.declared(response.headers.get("content-length"))
        async for chunk in response.aiter_bytes():  # decoded: a compressed bomb counts as what it becomes
            answer.add(chunk)
    return answer


EVIDENCE_ATTEMPTS = 3
"""Tries at a claim's evidence, spread over the first half of its dispute window, before its leaves are disputed."""

CLOCK_SKEW = 300
"""Seconds the home's clock (a hold's creation) may be ahead of the chain's (an anchor's time)."""


@dataclass(frozen=True)
class Leaf:
    """One leaf of a claim whose evidence rebuilt the anchored tree: what `disputeDuplicate` proves it with."""

    epoch: int
    index: int
    record: UsageRecord
    proof: SumProof
    anchored_at: int = 0

    def payload(self) -> dict:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "record": self.record.to_dict(),
            "hashes": [to_hex(h) for h in self.proof.hashes],
            "sums": list(self.proof.sums),
        }


@dataclass(frozen=True)
class LeafDispute:
    """Dispute one leaf (index) of the claim; need_key: only a key reveal answers it."""

    index: int
    need_key: bool = False


@dataclass(frozen=True)
class DuplicateDispute:
    """The claim bills a grant that `first` (same or earlier epoch, same centre) bills already."""

    first: Leaf
    second: Leaf


Finding = LeafDispute | DuplicateDispute


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
        self._tries: dict[tuple[bytes, int], tuple[int, int]] = {}  # claim -> (failed fetches, next try at)
        self._leaves: dict[str, tuple[ClaimInfo, int]] = {}  # record digest (hex) -> its claim and leaf, in window
        self._granted: dict[tuple[bytes, bytes], Leaf] = {}  # (centre, grant digest) -> the first leaf billing it
        self._indexed: set[tuple[bytes, int]] = set()  # claims whose leaves are in _granted
        self._closed: set[int] = set()

    def round(self) -> None:
        """One pass: check new claims on this home, close the holds of newly settled epochs."""
        self.check_claims()
        self.close_holds()

    # -- before settlement ----------------------------------------------------------

    def check_claims(self) -> list[tuple[ClaimInfo, Finding]]:
        """Dispute what is wrong in every claim on this home still in its window; returns the disputes queued."""
        now = self._now()
        queued: list[tuple[ClaimInfo, Finding]] = []
        for claim in self.index.claims_on(self.me):
            key = (claim.centre, claim.epoch)
            if key in self._checked or claim.voided or claim.count == 0:
                continue
            if now <= claim.anchored_at + self.dispute_window:  # later, settlement decides
                found = self.review(claim, now)
                if found is None:
                    continue  # its evidence is due again in a later round
                for finding in found:
                    self._dispute(claim, finding)
                    queued.append((claim, finding))
            self._checked.add(key)  # once its disputes are queued: a round that failed checks it again
            self._tries.pop(key, None)
        queued += self._answer_complaints(now)
        return queued

    def review(self, claim: ClaimInfo, now: int) -> list[Finding] | None:
        """What to dispute in `claim`, or None while its missing evidence is still worth asking for again."""
        key = (claim.centre, claim.epoch)
        failures, due = self._tries.get(key, (0, 0))
        if now < due:
            return None
        bundles = self._evidence(claim)
        if bundles is not None:
            return self.findings(claim, bundles)
        failures += 1
        spacing = max(1, self.dispute_window // (2 * (EVIDENCE_ATTEMPTS - 1)))
        if failures < EVIDENCE_ATTEMPTS and now + spacing <= claim.anchored_at + self.dispute_window // 2:
            self._tries[key] = (failures, now + spacing)
            return None
        leaves = self.leaves_to_dispute(claim)
        log.warning(
            "%s: %s's evidence for its claim of epoch %d is still unavailable or wrong: disputing %d of its %d leaves",
            self.name,
            _centre(claim.centre),
            claim.epoch,
            leaves,
            claim.count,
        )
        return [LeafDispute(i) for i in range(leaves)]

    def leaves_to_dispute(self, claim: ClaimInfo) -> int:
        """How many leaves (0, 1, ...) of a claim without evidence to dispute so that one is sure to stand unanswered.

        The count is the centre's word (up to 2**64 - 1), so it does not size the disputes. An answer needs a grant
        signed by this home, for that centre, whose deadline + booking delay the anchor did not pass, and the
        contract lets a grant answer ONE leaf (GrantAlreadyAnswered): at most H leaves can be answered, H being this
        home's grants the claim could bill (held, paid or refunded: the chain does not know the book). Disputing
        min(count, H + 1) leaves therefore leaves one unanswerable when count > H (and the claim is void), and
        disputes every leaf when count <= H.
        """
        billable = self.payer.book.billable(_centre(claim.centre), claim.anchored_at, self.booking_delay, claim.count)
        return min(claim.count, billable + 1)

    def _answer_complaints(self, now: int) -> list[tuple[ClaimInfo, Finding]]:
        """A complaint about a leaf already checked, its claim still in its window: a needKey dispute of it."""
        self._leaves = {d: (c, i) for d, (c, i) in self._leaves.items() if now <= c.anchored_at + self.dispute_window}
        queued: list[tuple[ClaimInfo, Finding]] = []
        for complaint in self.payer.book.complaints("open"):
            found = self._leaves.get(complaint.record_digest)
            if found is not None:
                claim, index = found
                self._dispute(claim, LeafDispute(index, True))
                queued.append((claim, LeafDispute(index, True)))
        return queued

    def findings(self, claim: ClaimInfo, bundles: list[RecordEvidence]) -> list[Finding]:
        """The disputes of a claim whose evidence rebuilt it: a duplicate grant (which voids it at once, so alone),
        else every bad leaf, and the leaves whose user has no key (needKey)."""
        complained = {c.record_digest for c in self.payer.book.complaints("open")}
        account = self.index.member(self.me)
        self._index_earlier(claim, bundles)
        bad: list[Finding] = []
        need_key: list[Finding] = []
        seen: dict[bytes, Leaf] = {}
        for i, ev in enumerate(bundles):
            rates = self.index.rates(claim.centre, ev.record.rates_version)
            findings = check_evidence(
                ev,
                domain=self.domain,
                home_account=account.account if account else "",
                rates=rates.prices if rates else None,
                anchored_at=claim.anchored_at,
                booking_delay=self.booking_delay,
                claim=claim,
                delivery=False,  # judged below, from the receipt and the user's complaints
            )
            grant = grant_digest(ev.grant, self.domain)
            leaf = Leaf(claim.epoch, i, ev.record, ev.proof, claim.anchored_at)
            first = seen.get(grant) or self._granted.get((claim.centre, grant))
            if not findings and first is not None and (first.epoch, first.index) < (claim.epoch, i):
                log.warning("%s: %s bills grant %s twice", self.name, _centre(claim.centre), to_hex(grant))
                return [DuplicateDispute(first, leaf)]
            hold = self.payer.book.hold(grant)
            if findings or hold is None or hold.status != "held":
                log.warning(
                    "%s: leaf %d of %s's claim for epoch %d is bad: %s",
                    self.name,
                    i,
                    _centre(claim.centre),
                    claim.epoch,
                    findings
                    or "a grant this home did not issue, or paid or refunded (its claim voided) in a claim not found",
                )
                bad.append(LeafDispute(i))
                continue
            seen[grant] = leaf
            digest = record_digest(ev.record, self.domain)
            self._leaves[digest.hex()] = (claim, i)
            if digest.hex() in complained or not _receipted(ev, digest, self.domain):
                need_key.append(LeafDispute(i, True))
        for grant, leaf in seen.items():
            self._granted.setdefault((claim.centre, grant), leaf)
        self._indexed.add((claim.centre, claim.epoch))
        return bad + need_key

    def _index_earlier(self, claim: ClaimInfo, bundles: list[RecordEvidence]) -> None:
        """Learn the grants billed in the centre's earlier claims on this home that may hold this claim's grants
        (anchored after the oldest of their holds): a duplicate is then proven with both leaves."""
        # A grant's two leaves are anchored at most its deadline (<= a week after the grant, before the first
        # anchor) plus the booking delay apart (rule 6): older leaves cannot be billed again.
        horizon = claim.anchored_at - MAX_DEADLINE_AHEAD - self.booking_delay
        self._granted = {k: leaf for k, leaf in self._granted.items() if leaf.anchored_at >= horizon}
        holds = [self.payer.book.hold(grant_digest(ev.grant, self.domain)) for ev in bundles]
        since = min((h.created_at for h in holds if h is not None), default=None)
        if since is None:
            return
        for other in self.index.claims_on(self.me):
            key = (other.centre, other.epoch)
            if (
                other.centre != claim.centre
                or other.epoch >= claim.epoch
                or other.count == 0
                or key in self._indexed
                or other.anchored_at < since - CLOCK_SKEW
            ):
                continue
            earlier = self._evidence(other)
            if earlier is None:
                continue  # withheld: a grant it paid is disputed as a bad leaf instead
            for i, ev in enumerate(earlier):
                leaf = Leaf(other.epoch, i, ev.record, ev.proof, other.anchored_at)
                self._granted.setdefault((other.centre, grant_digest(ev.grant, self.domain)), leaf)
            self._indexed.add(key)

    def _evidence(self, claim: ClaimInfo) -> list[RecordEvidence] | None:
        """The claim's evidence, if it can be had and rebuilds the anchored root, count and total."""
        member = self.index.member(claim.centre)
        if member is None:
            return None
        try:
            rows = self.fetch(member.gateway_url, claim.epoch, self.name, claim.count)
            if not isinstance(rows, list):
                raise EvidenceError("the evidence must be a list")
            bundles = [RecordEvidence.from_dict(r) for r in rows]
        except Exception as exc:  # noqa: BLE001 - whatever a centre sends or fails with: unavailable evidence
            log.info(
                "%s: evidence for epoch %d unavailable from %s: %s",
                self.name,
                claim.epoch,
                member.name,
                str(exc).splitlines()[0],
            )
            return None
        if not bundles:
            return None  # a claim with leaves and no evidence for them
        tree = SumTree((record_digest(ev.record, self.domain), ev.record.price) for ev in bundles)
        if (tree.root, tree.count, tree.total) != (claim.root, claim.count, claim.total):
            log.warning(
                "%s: %s's evidence for epoch %d does not rebuild its claim", self.name, member.name, claim.epoch
            )
            return None
        return bundles

    def _dispute(self, claim: ClaimInfo, finding: Finding) -> None:
        """Queue the dispute (once: the outbox key names the leaf); a complaint about that leaf is then disputed."""
        centre, home = to_hex(claim.centre), to_hex(self.me)
        if isinstance(finding, DuplicateDispute):
            self.outbox.enqueue(
                "duplicate",
                f"duplicate:{centre}:{claim.epoch}",
                {"centre": centre, "home": home, "a": finding.first.payload(), "b": finding.second.payload()},
            )
            return
        if finding.need_key:
            for digest, (leaf_claim, leaf) in self._leaves.items():
                if (leaf_claim.centre, leaf_claim.epoch, leaf) == (claim.centre, claim.epoch, finding.index):
                    self.payer.book.mark_disputed(digest)
        self.outbox.enqueue(
            "dispute",
            f"dispute:{centre}:{claim.epoch}:{finding.index}:{int(finding.need_key)}",
            {
                "centre": centre,
                "epoch": claim.epoch,
                "home": home,
                "index": finding.index,
                "need_key": finding.need_key,
            },
        )

    def _now(self) -> int:
        return max(int(self.clock()), self.index.chain_time)

    # -- after settlement -------------------------------------------------------------

    def close_holds(self) -> None:
        """Holds of settled epochs: paid at their records' prices, or refunded when the claim was voided."""
        for claim in self.index.claims_on(self.me):
            if claim.epoch in self._closed or self.index.settlement(claim.epoch) is None:
                continue
            self._close_epoch_holds(claim.epoch)
            self._closed.add(claim.epoch)
        # A hold is released a dispute window after no claim can bill it any more (deadline + booking delay):
        # a claim anchored in time is reviewed within its window, so it never finds its hold refunded by expiry,
        # and a refunded hold a claim bills is one whose earlier claim was voided (a bad leaf).
        self.payer.expire(max(0, self._now() - self.dispute_window), self.booking_delay)

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


def _centre(centre: bytes) -> str:
    return centre.rstrip(b"\0").decode(errors="replace")


def _receipted(ev: RecordEvidence, digest: bytes, domain: Domain) -> bool:
    """Whether the record carries the order account's receipt: the user got the key."""
    if ev.receipt_signature is None:
        return False
    try:
        return recover(Receipt(record=digest), domain, ev.receipt_signature) == ev.grant.account
    except InvalidSignature:
        return False
