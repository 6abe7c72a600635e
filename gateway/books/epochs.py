"""Closing a centre's epoch: commit its usage records per home by Merkle sum tree, then settle.

One chain transaction per centre per epoch (the anchor: root, count and total
per payer home, and the root and count of the epoch's decision log), plus one
settlement per epoch once the dispute and answer windows have passed (and one
`settleLate` per late anchor of this centre's); never one per job. The evidence
behind every leaf is public (`evidence`), so a home can check each claim on it
before it stands.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.api.schemas import EVIDENCE_PAGE, MAX_SEQ, RECORDS_PAGE, EpochClosure, HomeClaim
from gateway.books.kept_trees import BLOCK, KeptTree, KeptTrees, TreeBusy, TreeMismatch, keep
from gateway.node.errors import Conflict, Invalid, Unavailable
from gateway.store import ClosedEpoch, HomeClosure, PaidRecord, Store, StoredRecord
from gateway.store.base import PAGE
from ledger.chain import ChainUnavailable
from ledger.epoch_clock import EpochClock, anchor_margin, late_close, longest_epoch
from ledger.ids import centre_id, centre_name
from ledger.index import EventIndex
from ledger.outbox import Outbox
from ledger.primitives.hex import to_hex
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import SumProof, SumTreeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochState:
    """Where a centre's books stand (for /metrics): 0 for none yet."""

    open: int
    last_anchored: int
    last_settled: int


MAX_EPOCH = 2**63 - 1
"""Epochs are uint64 on chain, but the gateway's SQLite files hold signed 64-bit integers."""
_RECORD_ID = re.compile(r"(0x)?[0-9a-fA-F]{64}")
CLOSE_RATE = 10_000
"""Records a second a close is counted to parse, hash and fold into its trees (~16,800 here): its cutoff for
lapsing is judged at the time the close will have built them, so no record it keeps is anchored too late."""


CATCH_UP = 64
"""Epochs the chain's clock has ended that one housekeeping round closes (empty ones after a gateway was down)."""

MAX_AHEAD = 16
"""`Settlement.MAX_AHEAD`: how far past the oldest unsettled epoch the chain settles one."""


AUDIT_SYNC_EVERY = 1.0
"""Seconds an epoch's audit view may be behind the chain: its requests sync the index at most this often."""


def lapse_before(now: int, booking_delay: int) -> int:
    """Records whose order's deadline is before this lapse at a close at `now`.

    The contract answers a dispute of a leaf only if its claim was anchored by the order's
    deadline + the booking delay; a claim with one unanswerable leaf is void, all of it. So a
    record lapses unless deadline + delay >= now + margin, the margin being ANCHOR_MARGIN or
    half the booking delay when that is shorter (the demo's seconds): a record whose deadline
    has not passed yet never lapses.
    """
    return max(0, now + anchor_margin(booking_delay) - booking_delay)


def check_schedule(every: int, booking_delay: int, setting: str = "[epochs] every") -> int:
    """`every`, if epochs closed that far apart never let a record lapse; ValueError, saying why (in the words of
    the `setting` it came from), otherwise.

    A job that ends at its order's deadline just after a close is in the next epoch, anchored at the
    next close: at the latest deadline + every + the lateness of that close + the margin. The claim
    must be on chain by deadline + the booking delay, or the record lapses and nobody pays for the
    work. The lateness allowed is LATE_CLOSE, or a quarter of a shorter booking delay.
    """
    margin, late = anchor_margin(booking_delay), late_close(booking_delay)
    longest = longest_epoch(booking_delay)
    if every > longest:
        raise ValueError(
            f"{setting} = {every} s closes epochs too far apart for the consortium's booking delay of "
            f"{booking_delay} s: a job that ends at its order's deadline just after a close would have its record "
            f"anchored too late to bill (it lapses, unpaid); set {setting} to at most {longest} s (the booking delay "
            f"less {late} s for the close to run late and {margin} s to anchor)"
        )
    return every


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
    def __init__(
        self,
        name: str,
        store: Store,
        outbox: Outbox,
        index: EventIndex,
        domain: Domain,
        settleable: Callable[[int], bool],
        booking_delay: int | None = None,
        every: int = 0,
        clock: Callable[[], float] = time.time,
        dispute_window: int | None = None,
        proof_block: int = BLOCK,
        epoch_clock: EpochClock | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.outbox = outbox
        self.index = index
        self.domain = domain
        # UsageLedger.settleable, judged from the index: both windows (disputes, then answers) passed since the
        # last on-time anchor, and every member anchored or the anchor deadline passed (silent ones left out)
        self.settleable = settleable
        # UsageLedger.disputeWindow: a late anchor is paid 2 windows after it; None: sent each round, the chain judges
        self.dispute_window = dispute_window
        self.booking_delay = booking_delay  # UsageLedger.bookingDelay; None: no record ever lapses
        self.every = every  # seconds between scheduled closes; 0: closed only when an operator asks
        self.epoch_clock = epoch_clock  # the chain's (UsageLedger.epochLength): epochs close when it ends them
        self.clock = clock
        self.rounds: tuple[Callable[[], object], ...] = ()  # housekeeping's other rounds: disputes, answers
        self._oldest_unsettled = 1
        self._closing = threading.Lock()  # one close at a time, so a named epoch is checked and closed as one
        self._sending = threading.Lock()  # at most one send started by a close waits on the chain
        self._chain_down = False  # logged once per outage, not every round
        self.proof_block = proof_block  # leaves a usage proof hashes again (`kept_trees.BLOCK`)
        self.trees = KeptTrees(self._load_kept, self._build_kept)  # closed epochs' sum trees, for proofs
        self._closed_trees: tuple[int, dict[str, KeptTree]] | None = None  # made by the close under way

    def close(self, epoch: int | None = None) -> EpochClosure:
        """Close the open epoch: durable closure, its anchor queued in the outbox; nothing waits on the chain.

        The closure is committed and the anchor queued before the answer, which never waits
        for the chain: the anchor is sent on a helper thread at once and by housekeeping
        after (anchored=False until the index shows it), so a chain node that is down or hung
        holds no caller. Naming the `epoch` makes a retry safe: an epoch already closed
        answers its closure (anchored once it is) instead of closing the next one.
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
            self._check_over()
            cutoff = None if self.booking_delay is None else lapse_before(self._built_by(), self.booking_delay)
            closure = self.store.close_open_epoch(self._commit, lapse_before=cutoff)
            self._keep_closed(closure.epoch)
            self._log_lapsed(closure.epoch)
            self._enqueue_anchor(closure)
        self._send_soon()
        return self._closure(closure)

    def _check_over(self) -> None:
        """Refuse to close an epoch the chain's clock has not ended: the chain would refuse its anchor."""
        if self.epoch_clock is None:
            return
        epoch = self.store.open_epoch()
        end = self.epoch_clock.end(epoch)
        if self.clock() < end:
            raise Conflict(
                f"epoch {epoch} runs until {end} on the chain's clock (epochs of {self.epoch_clock.length} s): "
                f"it closes then, on its own",
                reasons=["epoch-not-over"],
            )

    def start_on_clock(self) -> None:
        """A store that never closed an epoch opens at the chain's epoch running now, not at 1: by the last block
        seen (a clock of this machine's ahead of the chain's would open it ahead, for good), or by this machine's
        clock before any."""
        if self.epoch_clock is not None:
            self.store.start_epochs_at(self.epoch_clock.epoch_at(self.index.chain_time or self.clock()))

    def _built_by(self) -> int:
        """When a close starting now will have built its trees: now + the open epoch's records at CLOSE_RATE. A
        record it keeps is anchored from then on, so its cutoff for lapsing is judged then, not now."""
        count = self.store.record_count(self.store.open_epoch())
        return self.index.now() + -(-count // CLOSE_RATE)

    def _send_soon(self) -> None:
        """Send the outbox now on a helper thread (housekeeping sends it otherwise, within its interval)."""
        if not self._sending.acquire(blocking=False):
            return  # a send is under way (or stuck on the chain): housekeeping follows it up

        def send() -> None:
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the chain may be unreachable: housekeeping retries
                log.info("%s: the outbox waits for the chain: %s", self.name, exc)
            finally:
                self._sending.release()

        threading.Thread(target=send, name=f"{self.name}-epoch-send", daemon=True).start()

    def due(self, now: float | None = None) -> bool:
        """Whether the schedule closes the open epoch now: the chain's clock has ended it, or, without one, a
        boundary of `every` seconds (counted from 1970, so every centre on one schedule closes together) has
        passed since the epoch opened."""
        at = int(self.clock() if now is None else now)
        if self.epoch_clock is not None:
            epoch = self.store.open_epoch()
            return at >= self.epoch_clock.end(epoch) and not self._ahead_of_chain(epoch)
        if self.every <= 0:
            return False
        opened = self.store.open_epoch_opened_at()
        return opened is not None and at - at % self.every > opened

    def _ahead_of_chain(self, epoch: int) -> bool:
        """Whether closing `epoch` could run this centre's epochs ahead of the chain's: the last block seen here is
        before its end, and the anchor of the epoch closed before it is still waiting in the outbox (refused as
        early, or not sent yet). So a clock stepped ahead closes one epoch too soon, not as many as it jumped, and
        a chain node that is down holds closes at one (later records join the open epoch until it is back); an
        anchor the outbox gave up on (a revert) holds nothing."""
        assert self.epoch_clock is not None
        if self.index.chain_time >= self.epoch_clock.end(epoch) or epoch <= self.store.first_epoch():
            return False
        if self.index.anchor(centre_id(self.name), epoch - 1) is not None:
            return False
        waiting = self.outbox.item_by_key(f"anchor:{epoch - 1}")
        return waiting is not None and waiting.status == "pending"

    def close_if_due(self) -> EpochClosure | None:
        """Housekeeping's scheduled close (the same close as an operator's: the anchor through the outbox); on the
        chain's clock, every epoch it has ended, up to CATCH_UP a round (a gateway that was down catches up)."""
        closure = None
        for _ in range(CATCH_UP):
            if not self.due():
                break
            closure = self.close()
            log.info("%s: epoch %d closed on schedule (every %d s)", self.name, closure.epoch, self.every)
        return closure

    def housekeeping(self) -> None:
        """One round: a scheduled close if due (needs no chain), then send, follow and settle.

        A chain node that does not answer is logged once when it goes and once when it is
        back; the closes and queued writes wait in the outbox meanwhile.
        """
        self.close_if_due()
        try:
            self.flush()
        except ChainUnavailable as exc:
            if not self._chain_down:
                log.warning("%s: %s; writes wait in the outbox, the index serves what it has", self.name, exc)
            self._chain_down = True
            return
        if self._chain_down:
            log.warning("%s: the chain node answers again; the index and the outbox catch up", self.name)
        self._chain_down = False
        self.catch_up()

    def state(self) -> EpochState:
        """The open epoch, the last epoch this centre anchored and the last settled, as the index shows them."""
        me = centre_id(self.name)
        last_anchored = last_settled = 0
        for closure in reversed(self.store.closures()):
            if not last_anchored and self.index.anchor(me, closure.epoch) is not None:
                last_anchored = closure.epoch
            if not last_settled and self.index.settlement(closure.epoch) is not None:
                last_settled = closure.epoch
            if last_anchored and last_settled:
                break
        return EpochState(self.store.open_epoch(), last_anchored, last_settled)

    def _log_lapsed(self, epoch: int) -> None:
        lapsed = self.store.lapsed_records(epoch)
        if lapsed:
            log.warning(
                "%s: epoch %d closed without %d record(s) too late to anchor by their order's deadline + the "
                "booking delay (%d s): unbilled, kept as lapsed: %s",
                self.name,
                epoch,
                len(lapsed),
                self.booking_delay,
                ", ".join(r.record_id for r in lapsed),
            )

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
        homes = {h: c for h, c in closure.homes.items() if c.root is not None}  # epochs before sum trees: none
        if len(homes) != len(closure.homes):
            return
        payload: dict[str, object] = {
            "epoch": closure.epoch,
            "homes": ["0x" + h for h in homes],
            "roots": ["0x" + str(c.root) for c in homes.values()],
            "counts": [c.count for c in homes.values()],
            "totals": [c.total for c in homes.values()],
        }
        if closure.decision_count:
            # The epoch's decision log, committed with its claims. An empty log is left out, so an anchor
            # queued before decision logs existed is the same write when it is queued again at a start.
            payload |= {"decision_root": to_hex(closure.decision_root), "decision_count": closure.decision_count}
        self.outbox.enqueue("anchor", f"anchor:{closure.epoch}", payload)

    def _commit(self, epoch: int, rows: list[StoredRecord]) -> dict[str, tuple[bytes, int, int]]:
        """Per home (own users' included, for the audit), the sum tree of its records in store order, made as
        proofs keep it (`kept_trees.keep`: the same root, count and total), to be kept once the close commits."""
        leaves: dict[str, list[tuple[int, bytes, int]]] = defaultdict(list)
        for row in rows:
            leaves[row.home_centre].append((row.seq, *self._leaf(row)))
        trees = {home: keep(triples, self.proof_block) for home, triples in leaves.items()}
        self._closed_trees = (epoch, trees)
        return {home: (t.root, t.count, t.total) for home, t in sorted(trees.items())}

    def _keep_closed(self, epoch: int) -> None:
        """Keep the trees the close of `epoch` made, in memory and in the store: no proof of it rebuilds them."""
        made, self._closed_trees = self._closed_trees, None
        if made is None or made[0] != epoch:
            return
        for home, kept in made[1].items():  # every one in memory before any is stored: no proof meanwhile builds
            self.trees.put(epoch, home, kept)
        for home, kept in made[1].items():
            try:
                self.store.keep_tree(epoch, home, kept.width, *kept.to_blobs())
            except Exception as exc:  # noqa: BLE001 - the close is committed; the first proof stores it instead
                log.warning("%s: epoch %d's sum tree for %s is not stored: %s", self.name, epoch, _name(home), exc)

    def flush(self) -> None:
        """Send what the outbox holds and bring the local index up to date."""
        self.outbox.drain()
        self.index.sync()

    def catch_up(self) -> None:
        """Run the dispute rounds, settle closed epochs once they may be (every anchor in or the
        anchor deadline passed, both windows passed), then have this centre's late anchors paid."""
        for round_ in self.rounds:
            try:
                round_()
            except Exception as exc:  # noqa: BLE001 - one round failing must not stop the others
                log.warning("%s: %s failed: %s", self.name, getattr(round_, "__qualname__", round_), exc)
        for epoch in self._unsettled():
            if self.index.settlement(epoch) is None:
                self._settle_if_ready(epoch)
            if self.index.settlement(epoch) is not None and epoch == self._oldest_unsettled:
                self._oldest_unsettled += 1
        self._settle_late()

    def _unsettled(self) -> list[int]:
        """The epochs this centre settles when they may be: those it closed from the oldest unsettled on; on the
        chain's clock also those before its first, up to MAX_AHEAD past the oldest, which nobody may have anchored
        (every gateway down, or none started yet): withdrawals wait for every epoch before theirs to settle."""
        closed = self.store.closed_epochs(since=self._oldest_unsettled)
        if self.epoch_clock is None or not closed:
            return closed
        before = range(self._oldest_unsettled, min(closed[0], self._oldest_unsettled + MAX_AHEAD))
        return [*before, *closed]

    def _settle_late(self) -> None:
        """Queue `settleLate` for each of this centre's late anchors whose epoch is settled and whose
        answer window has passed, until the index shows it paid (once: LateAlreadySettled is done)."""
        queued = False
        for anchor in self.index.late_anchors(centre_id(self.name), unsettled=True):
            if self.index.settlement(anchor.epoch) is None:
                continue  # settleLate waits for the epoch's own settlement (the rounds above send it)
            if self.dispute_window is not None and self.index.now() <= anchor.anchored_at + 2 * self.dispute_window:
                continue  # its records may still be disputed or answered
            item = self.outbox.enqueue("settle_late", f"settle_late:{anchor.epoch}", {"epoch": anchor.epoch})
            # one that reverted earlier (a block too soon, say) is asked again; a done one waits for the index
            queued |= self.outbox.retry(item).status == "pending"
        if queued:
            self.flush()

    def _settle_if_ready(self, epoch: int) -> None:
        if self.index.settlement(epoch) is None and self.settleable(epoch):
            item = self.outbox.enqueue("settle", f"settle:{epoch}", {"epoch": epoch})
            self.outbox.retry(item)  # a settle that reverted earlier (say, a block too soon) is asked again
            self.flush()

    def _closure(self, closure: ClosedEpoch) -> EpochClosure:
        epoch = closure.epoch
        me = centre_id(self.name).hex()
        return EpochClosure(
            centre=self.name,
            epoch=epoch,
            record_count=closure.count,
            homes={_name(h): _home_view(c) for h, c in closure.homes.items()},
            claims={_name(h): c.total for h, c in closure.homes.items() if h != me},
            anchored=self.index.anchor(centre_id(self.name), epoch) is not None,
            settled=self.index.settlement(epoch) is not None,
            decision_root=to_hex(closure.decision_root),
            decision_count=closure.decision_count,
        )

    def audit_view(self, epoch: int) -> dict:
        """What the chain says of `epoch`, from the local index: claims per home, disputes, nets."""
        check_epoch(epoch)
        if self.index.reachable is False:  # known down: answer at once, not after a timeout per request
            raise ChainUnavailable(f"the last sync could not reach it (index at block {self.index.last_block})")
        self.index.sync(unless_within=AUDIT_SYNC_EVERY)  # public: a flood asks the chain once a second at most
        anchors = {
            centre_name(a.centre): {
                "record_count": a.record_count,
                "anchored_at": a.anchored_at,
                "homes": {
                    centre_name(h): {"root": to_hex(c.root), "count": c.count, "total": c.total, "voided": c.voided}
                    for h, c in a.homes.items()
                },
                "claims": {centre_name(d): amount for d, amount in a.claims.items()},
                "decision_root": to_hex(a.decision_root),
                "decision_count": a.decision_count,
                "tx": a.tx_hash,
                "late": a.late,  # after the anchor deadline or the settlement: not netted, paid by settleLate
                "late_settled": a.late_settled,
            }
            for a in self.index.anchors(epoch)
        }
        settlement = self.index.settlement(epoch)
        return {
            "epoch": epoch,
            "anchors": anchors,
            "disputes": [
                {
                    "id": d.id,
                    "centre": centre_name(d.centre),
                    "home": centre_name(d.home),
                    "index": d.index,
                    "need_key": d.need_key,
                    "status": d.status,
                }
                for d in self.index.disputes(epoch=epoch)
            ],
            "settled": settlement is not None,
            "net_positions": {centre_name(c): n for c, n in settlement.net.items()} if settlement else {},
            "transfers": [
                {"from": centre_name(f), "to": centre_name(t), "amount": a} for f, t, a in settlement.transfers
            ]
            if settlement
            else [],
            "shortfalls": {centre_name(d): u for d, u in self.index.shortfalls(epoch).items()},
            "late_settlements": [  # each late anchor's own settlement, beside the epoch's
                {
                    "centre": centre_name(late.centre),
                    "net_positions": {centre_name(c): n for c, n in late.net.items()},
                    "transfers": [
                        {"from": centre_name(f), "to": centre_name(t), "amount": a} for f, t, a in late.transfers
                    ],
                    "shortfalls": {centre_name(d): u for d, u in late.shortfalls.items()},
                    "tx": late.tx_hash,
                }
                for late in self.index.late_settlements(epoch)
            ],
        }

    def records(self, epoch: int, after: int = 0, limit: int = RECORDS_PAGE) -> dict:
        """A page of this centre's usage records of `epoch` (lapsed ones left out: they are no leaves): up to
        `limit` stored after `after` (0, then the page before's `next`, a store seq), in store order, with `next`
        (None on the last page). One indexed query a page, never the epoch whole (public: a million records are
        hundreds of MB). A closed epoch's pages make its records; an open epoch's grow until it closes."""
        check_epoch(epoch)
        if not _is_int(limit) or not 1 <= limit <= RECORDS_PAGE:
            raise Invalid(f"limit must be from 1 to {RECORDS_PAGE} records, got {limit!r:.20}")
        if not _is_int(after) or not 0 <= after <= MAX_SEQ:
            raise Invalid(f"after must be 0 (the first page) or a page's `next`, got {after!r:.20}")
        page = self.store.records_page(epoch, after, limit + 1)  # one more: is there a next page?
        return {
            "records": [{"record": row.data, "signature": "0x" + row.signature} for _, row in page[:limit]],
            "next": page[limit - 1][0] if len(page) > limit else None,
        }

    def proof(self, record_id: str) -> dict | None:
        """A usage record, its signature and its sum-tree proof against its home's anchored claim.

        The tree of a closed epoch is kept (`self.trees`: its close kept it, in memory and in the store):
        a proof hashes again only its own block of records. A record of the open epoch has no proof
        yet: its home's tree is made when the epoch closes."""
        row = self.store.record(check_record_id(record_id))
        if row is None:
            return None
        shown = {
            "record": row.data,
            "signature": "0x" + row.signature,
            "epoch": row.epoch,
            "home": to_hex(bytes.fromhex(row.home_centre)),
        }
        if row.lapsed_at is not None:
            return shown | {
                "lapsed": True,
                "anchored": False,
                "detail": f"left out of epoch {row.epoch}'s claims at its close (too late to anchor): unbilled",
            }
        if self.store.closure(row.epoch) is None:
            return shown | {
                "digest": to_hex(self._leaf(row)[0]),
                "lapsed": False,
                "anchored": False,
                "detail": f"epoch {row.epoch} is still open at {self.name}: its sum trees are built when it "
                "closes; ask again then",
            }
        kept = self._kept(row.epoch, row.home_centre)
        try:
            index, proof = self._prove(kept, row)
        except TreeMismatch:
            self.trees.forget(row.epoch, row.home_centre)  # the next asker reads it back
            raise
        anchor = self.index.anchor(centre_id(self.name), row.epoch)
        claim = anchor.homes.get(bytes.fromhex(row.home_centre)) if anchor else None
        ours = (kept.root, kept.count, kept.total)
        return shown | {
            "digest": to_hex(self._leaf(row)[0]),
            "index": index,
            "proof": proof.to_dict(),
            "anchored_root": to_hex(claim.root) if claim else None,
            "lapsed": False,
            "anchored": claim is not None and (claim.root, claim.count, claim.total) == ours,
        }

    def _prove(self, kept: KeptTree, row: StoredRecord) -> tuple[int, SumProof]:
        """The record's leaf index in the kept tree and its proof, from one page: the records of its block."""
        index = kept.index(row.seq)
        if index is None:
            raise TreeMismatch(f"record {row.record_id} is no leaf of epoch {row.epoch}'s tree kept for its home")
        after, size = kept.block(index)
        page = self.store.records_page(row.epoch, after, size, row.home_centre)
        first = index - index % kept.width
        if [at for at, _ in page] != list(kept.seqs[first : first + size]):
            raise TreeMismatch(f"epoch {row.epoch}'s records of home {row.home_centre} are not the kept tree's")
        return index, kept.proof(index, [self._leaf(r) for _, r in page])

    def _kept(self, epoch: int, home: str) -> KeptTree:
        """The kept tree of a closed epoch's home; Unavailable (503) while another asker builds one from records."""
        try:
            return self.trees.get(epoch, home)
        except TreeBusy as exc:
            raise Unavailable(str(exc)) from None

    def _load_kept(self, epoch: int, home: str) -> KeptTree | None:
        """A closed epoch's tree of one home as its close stored it (`KeptTrees`' load), if it is the closure's (same
        root, count and total); None when none is stored or the stored one is damaged (then it is built again)."""
        stored, closure = self.store.kept_tree(epoch, home), self.store.closure(epoch)
        claim = None if closure is None else closure.homes.get(home)
        if stored is None or claim is None:
            return None
        try:
            kept = KeptTree.from_blobs(*stored)
        except SumTreeError as exc:
            log.warning("%s: epoch %d's stored sum tree for %s is damaged: %s", self.name, epoch, _name(home), exc)
            return None
        if (kept.root.hex(), kept.count, kept.total) != (claim.root, claim.count, claim.total):
            log.warning("%s: epoch %d's stored sum tree for %s is not its closure's", self.name, epoch, _name(home))
            return None
        return kept

    def _build_kept(self, epoch: int, home: str) -> KeptTree:
        """A closed epoch's tree of one home built from its records, a page at a time (`KeptTrees`' build), and
        stored in place of a missing or damaged one: TreeMismatch when the records no longer make the closure's."""
        kept = self._tree_of_records(epoch, home)
        closure = self.store.closure(epoch)
        claim = None if closure is None else closure.homes.get(home)
        if claim is None or (kept.root.hex(), kept.count, kept.total) != (claim.root, claim.count, claim.total):
            raise TreeMismatch(f"epoch {epoch}'s records of home {home} no longer make the tree its close fixed")
        try:
            self.store.keep_tree(epoch, home, kept.width, *kept.to_blobs())
        except Exception as exc:  # noqa: BLE001 - kept in memory all the same
            log.warning("%s: epoch %d's sum tree for %s is not stored: %s", self.name, epoch, _name(home), exc)
        return kept

    def _tree_of_records(self, epoch: int, home: str) -> KeptTree:
        """The kept tree of a closed epoch's records of one home, read a page at a time."""

        def leaves() -> Iterator[tuple[int, bytes, int]]:
            after = 0
            while True:
                page = self.store.records_page(epoch, after, PAGE, home)
                for seq, row in page:
                    yield (seq, *self._leaf(row))
                if len(page) < PAGE:
                    return
                after = page[-1][0]

        return keep(leaves(), self.proof_block)

    def evidence(self, epoch: int, home: str, after: int = 0, limit: int = EVIDENCE_PAGE) -> dict:
        """A page of the evidence of this centre's claim on `home` for a closed epoch: up to `limit` of the records
        of `home`'s users stored after `after` (0, then the page before's `next`, a store seq), in leaf order, each
        with its leaf index, the order, grant and receipt it is paid under and its sum proof; `next` is None on the
        last page.

        Public: the payer's home checks each leaf of the claim on it against its own holds, and anyone may dispute
        a leaf; the key k is never shown (a receipt, or a reveal on chain, releases it). A page is one indexed
        query, and its proofs come from the home's kept tree (`self.trees`, kept by the close): a page
        hashes its own records (and at most two blocks at its edges), never the home's whole epoch per request.
        """
        check_epoch(epoch)
        if not _is_int(limit) or not 1 <= limit <= EVIDENCE_PAGE:
            raise Invalid(f"limit must be from 1 to {EVIDENCE_PAGE} records, got {limit!r:.20}")
        if not _is_int(after) or not 0 <= after <= MAX_SEQ:
            raise Invalid(f"after must be 0 (the first page) or a page's `next`, got {after!r:.20}")
        try:
            home_id = centre_id(home)
        except ValueError:
            raise Invalid(f"{home[:40]!r} is not a centre name") from None
        if self.store.closure(epoch) is None:
            raise Conflict(f"epoch {epoch} is not closed at {self.name}: its trees are not fixed yet")
        page = self.store.paid_records_page(epoch, home_id, after, limit + 1)  # one more: is there a next page?
        if not page:
            return {"records": [], "next": None}  # nothing claimed on that home (or after the last page)
        following = page[limit - 1][0] if len(page) > limit else None
        page = page[:limit]
        kept = self._kept(epoch, home_id.hex())
        try:
            first, proofs = self._page_proofs(kept, epoch, home_id.hex(), page)
        except TreeMismatch:
            self.trees.forget(epoch, home_id.hex())  # the next asker reads it back
            raise
        return {
            "records": [
                _evidence(first + i, row, proof) for i, ((_, row), proof) in enumerate(zip(page, proofs, strict=True))
            ],
            "next": following,
        }

    def _page_proofs(
        self, kept: KeptTree, epoch: int, home: str, page: list[tuple[int, PaidRecord]]
    ) -> tuple[int, list[SumProof]]:
        """The leaf index of a page's first record and each record's proof, each block the page touches hashed
        once: from the page's own records, or for a block the page covers only in part, from that block read
        whole (one `records_page`). TreeMismatch when the records are not the kept tree's."""
        seqs = [seq for seq, _ in page]
        first = kept.index(seqs[0])
        if first is None or list(kept.seqs[first : first + len(seqs)]) != seqs:
            raise TreeMismatch(f"epoch {epoch}'s records of home {home} are not the kept tree's")
        end = first + len(page)
        leaves = [self._leaf(row.record) for _, row in page]
        proofs: list[SumProof] = []
        for start in range(first - first % kept.width, end, kept.width):
            before, size = kept.block(start)
            if first <= start and start + size <= end:
                pairs = leaves[start - first : start + size - first]
            else:
                block = self.store.records_page(epoch, before, size, home)
                if [seq for seq, _ in block] != list(kept.seqs[start : start + size]):
                    raise TreeMismatch(f"epoch {epoch}'s records of home {home} are not the kept tree's")
                pairs = [self._leaf(row) for _, row in block]
            proofs += kept.proofs(start, pairs)[max(first, start) - start : min(end, start + size) - start]
        return first, proofs

    def _leaf(self, row: StoredRecord) -> tuple[bytes, int]:
        record = UsageRecord.from_json(row.record)
        return record_digest(record, self.domain), record.price


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(home_hex: str) -> str:
    return centre_name(bytes.fromhex(home_hex))


def _home_view(claim: HomeClosure) -> HomeClaim:
    return HomeClaim(root=None if claim.root is None else "0x" + claim.root, count=claim.count, total=claim.total)


def _evidence(index: int, row: PaidRecord, proof: SumProof) -> dict:
    def hex_or_none(value: str | None) -> str | None:
        return None if value is None else "0x" + value

    return {
        "index": index,
        "record": row.record.data,
        "signature": "0x" + row.record.signature,
        "order": None if row.order is None else json.loads(row.order),
        "order_signature": hex_or_none(row.order_signature),
        "grant": None if row.grant is None else json.loads(row.grant),
        "grant_signature": hex_or_none(row.grant_signature),
        "receipt_signature": hex_or_none(row.receipt_signature),
        "proof": proof.to_dict(),
    }
