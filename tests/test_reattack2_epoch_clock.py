"""Second re-attack of the gateway's epochs on the chain's clock, against the fixes of cba2695..HEAD:
`longest_epoch` (deploy's bound), `EpochCloser._ahead_of_chain` (the hold while the chain is behind), the credit
desk counting from the store's first epoch, and `_chains_clock` (a deployment.json naming another clock refused).

A test that fails now asserts the right behaviour and says in its comment what goes wrong and what it costs; the
others are attacks that the fixes resisted, kept so they stay resisted. Real store (SQLite), real EpochCloser /
CreditDesk (and a real Outbox where its states matter), stand-ins for the index (tests/fixtures/closing.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from web3.exceptions import BadFunctionCallOutput

from gateway.books.epochs import EpochCloser, check_schedule
from gateway.node.credit import CreditDesk
from gateway.store import Store
from ledger.chain import ChainRevert, ChainUnavailable
from ledger.deploy import Deployment
from ledger.epoch_clock import EpochClock, anchor_margin, late_close, longest_epoch
from ledger.outbox import Outbox
from tests.fixtures.closing import CLOCK, DOMAIN, PaidIndex, SkewedIndex, StandInIndex, StandInOutbox, clocked_closer
from tests.test_audit_record_pages import run

LENGTH, ORIGIN = CLOCK.length, CLOCK.origin
DELAY = 4 * LENGTH  # a booking delay for which closes an epoch-length apart never let a record lapse


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gateway.db")
    yield s
    s.close()


def closer(store: Store, index: StandInIndex, outbox: Any = None, **settings: Any) -> EpochCloser:
    return clocked_closer(store, index, outbox, booking_delay=DELAY, **settings)


def at_end_of_11(store: Store) -> tuple[SkewedIndex, EpochCloser]:
    """A fresh store opened in epoch 11, both clocks at that epoch's end: its first close is due."""
    index = SkewedIndex(ORIGIN + 10 * LENGTH + 5)
    epochs = closer(store, index)
    epochs.start_on_clock()
    index.at = index.local = CLOCK.end(11)
    return index, epochs


def close_through(epochs: EpochCloser, epoch: int) -> None:
    """Housekeeping rounds until `epoch` is closed or nothing more is due."""
    while epochs.store.open_epoch() <= epoch and epochs.close_if_due() is not None:
        pass


# =====================================================================================================================
# FINDINGS (fail now)
# =====================================================================================================================

# -- 1. start_on_clock numbers a fresh store by this machine's clock, skew and all ---------------------------------
#
# The hold (`_ahead_of_chain`) bounds what a clock stepped ahead does *after* the store has its first epoch: one
# epoch closed too soon, not as many as it jumped. But the first start numbers the store by `self.clock()` =
# max(this machine's clock, the chain's), and `start_on_clock` runs right after the index synced (CentreNode.start),
# so the chain's own time is known there and ignored. A new centre whose machine's clock is ten epochs ahead
# when its gateway first starts (a VM without NTP, a typo in `date -s`) opens at the chain's epoch + 10, for good
# (a store is renumbered only before anything is in it). The first epoch is exempt from the hold
# (`epoch <= first_epoch()`), and once the clock is set right nothing closes until the chain's clock reaches the
# end of that epoch: ten epochs of work all stored in it, and at its close every record whose order's deadline +
# the booking delay is already past lapses — billed to nobody. The same skew a minute later costs one epoch.


def test_a_first_start_with_this_machines_clock_ahead_does_not_number_the_store_ahead_of_the_chain(
    store: Store,
) -> None:
    chain_now = ORIGIN + 10 * LENGTH + 5  # epoch 11 on the chain's clock; the index has synced up to now
    index = SkewedIndex(chain_now)
    index.local = chain_now + 10 * LENGTH  # this machine's clock is ten epochs ahead at the first start
    epochs = closer(store, index)
    epochs.start_on_clock()
    index.local = chain_now  # and is set right soon after
    assert store.open_epoch() <= CLOCK.epoch_at(index.at) + 1, "the store's first epoch is ahead of the chain's"

    # a job ending now, at its order's deadline: its record must be anchored by deadline + the booking delay
    rid = run(store, 1, deadline=chain_now)
    billed = store.record(rid).epoch
    index.at = index.local = CLOCK.end(billed)  # time passes (the chain making its blocks) until its epoch ends
    close_through(epochs, billed)
    assert store.closure(billed) is not None
    assert store.lapsed_records(billed) == [], "a record was left unbilled because the first epoch ran ahead"


# -- 2. the hold waits for an anchor the outbox has given up on ------------------------------------------------------
#
# `_ahead_of_chain` holds the close of epoch e while the last block indexed is before e's end and the index does not
# show this centre's anchor of e - 1. It never asks whether that anchor can still come: a revert other than
# ANCHOR_LATER marks the outbox item "failed" for good (ledger/outbox.py), and neither `resend_anchors` (enqueue is
# idempotent on the key: a failed item stays failed) nor anything else sends it again. On a chain that makes blocks
# on its own the last block soon passes e's end and the hold lets go; on one whose blocks come only from
# transactions (anvil's automine, as `xcentre consortium up` runs it) and with nobody else transacting (a
# one-centre chain, the other members' gateways stopped), the chain's time stays at its last transaction, and the
# close of e waits for an unrelated one — at worst this gateway's own settle of e - 1, an anchor window after its
# end (120 s in examples/consortium.toml with a booking delay of 60 s; a day in DEFAULTs). Meanwhile every record
# joins e, and at its late close those past deadline + booking delay lapse, unbilled though e's anchor would have
# gone through. Here: a centre whose gateway ran its first epoch before the vote admitting it (`NotMember`, failed
# for good), admitted during the next one. The hold buys nothing once the item failed: no anchor of e - 1 will
# ever show; the close should not wait past the lateness the epoch bound allows for (`late_close`).


def test_a_previous_anchor_refused_for_good_does_not_hold_the_close_on_a_chain_idle_between_transactions(
    tmp_path: Path, store: Store
) -> None:
    first_at = ORIGIN + 10 * LENGTH + 5  # epoch 11
    index = SkewedIndex(first_at)
    outbox = Outbox(tmp_path / "outbox.db")

    def anchor(payload: dict) -> str:
        if payload["epoch"] == 11:
            raise ChainRevert("NotMember")  # not admitted yet: the outbox marks it failed, for good
        return "0x" + "ab" * 32

    outbox.register("anchor", anchor)
    epochs = closer(store, index, outbox)
    epochs.start_on_clock()
    assert store.open_epoch() == 11
    index.at = CLOCK.end(11) + 2  # the last block: another member's anchor of 11
    index.local = CLOCK.end(11) + 3
    assert epochs.close_if_due() is not None and store.open_epoch() == 12
    epochs.flush()  # the helper thread's send, or housekeeping's: the anchor of 11 reverts
    assert [i.key for i in outbox.failed("anchor")] == ["anchor:11"]
    epochs.resend_anchors()  # a restart queues it again: still failed
    assert [i.key for i in outbox.failed("anchor")] == ["anchor:11"]

    index.at = CLOCK.end(11) + 100  # the vote admitting this centre: the chain's last transaction for a while
    rid = run(store, 1, deadline=CLOCK.end(12) - 10)  # a job ending near the end of 12, at its order's deadline
    assert store.record(rid).epoch == 12
    index.local = CLOCK.end(12) + late_close(DELAY)  # as late as a close may run without a record lapsing
    close_through(epochs, 12)
    assert store.closure(12) is not None, "epoch 12 waits on an anchor of 11 the outbox gave up on"
    assert store.lapsed_records(12) == []
    outbox.close()


# =====================================================================================================================
# RESISTED (pass now)
# =====================================================================================================================

# -- the hold -------------------------------------------------------------------------------------------------------


def test_the_hold_lets_go_as_soon_as_a_block_past_the_epochs_end_is_indexed_with_the_anchor_still_waiting(
    store: Store,
) -> None:
    """A chain that makes blocks on its own (or other members anchoring): an anchor still waiting costs a block."""
    index, epochs = at_end_of_11(store)
    assert epochs.close_if_due() is not None  # the first epoch: exempt
    index.local = CLOCK.end(12) + 1  # the anchor of 11 never shows; the last block is before 12's end
    assert not epochs.due()
    index.at = CLOCK.end(12)  # the next block
    assert epochs.due() and epochs.close_if_due() is not None and store.open_epoch() == 13


def test_a_chain_node_down_holds_closes_at_one_and_the_records_join_the_open_epoch_until_it_is_back(
    store: Store,
) -> None:
    index, epochs = at_end_of_11(store)
    epochs.close_if_due()
    index.anchors[11] = object()
    index.at = CLOCK.end(12) - 30  # the last block before the node went down
    index.local = CLOCK.end(12) + 1
    assert epochs.close_if_due() is not None and store.open_epoch() == 13  # 11's anchor shows: 12 closes
    index.local = CLOCK.end(16) + 1  # four epochs with the node down: 13 does not close, nothing runs ahead
    assert epochs.close_if_due() is None and store.open_epoch() == 13
    index.at = index.local  # back: its blocks show time passed
    close_through(epochs, 15)
    assert store.open_epoch() == 17  # caught up to the chain's epoch, not past it


def test_a_restart_after_a_crash_between_a_close_and_its_anchor_resends_it_and_the_hold_follows_the_index(
    store: Store,
) -> None:
    """resend_anchors queues the anchor a crash lost; the next close waits for it only while the chain is behind."""
    index = SkewedIndex(ORIGIN + 10 * LENGTH + 5)
    lost = StandInOutbox(index.now)
    epochs = closer(store, index, lost)
    epochs.start_on_clock()
    index.at = index.local = CLOCK.end(11)
    epochs.close_if_due()
    index.anchors[11] = object()
    index.at = index.local = CLOCK.end(12)
    epochs.close_if_due()  # 12 closed ...
    lost.queued.clear()  # ... and its anchor lost in a crash
    outbox = StandInOutbox(index.now)
    again = closer(store, index, outbox)  # the restart
    again.start_on_clock()
    again.resend_anchors()
    assert "anchor:12" in outbox.queued and "anchor:11" not in outbox.queued
    assert store.open_epoch() == 13  # never renumbered
    index.local = CLOCK.end(13) + 1
    assert not again.due()  # chain behind, 12's anchor not shown yet
    index.anchors[12] = object()
    assert again.due()


def test_the_first_epoch_of_a_renumbered_store_is_the_one_it_opened_at_and_the_next_is_held(store: Store) -> None:
    index = SkewedIndex(ORIGIN + 999 * LENGTH + 5)
    epochs = closer(store, index)
    epochs.start_on_clock()
    assert store.first_epoch() == 1000
    index.local = CLOCK.end(1001) + 1  # this machine ahead, the chain at the middle of 1000
    assert epochs.close_if_due() is not None and store.closed_epochs() == [1000]  # one too soon, not two
    assert store.first_epoch() == 1000 and not epochs.due()


def test_without_a_clock_the_schedule_ignores_the_chain_and_its_anchors(store: Store) -> None:
    """The no-clock path is unchanged: `every` closes whatever the index shows."""
    import time

    index = StandInIndex(10_000)  # the chain's time far behind, no anchor ever shown
    now = [int(time.time()) + 120]
    epochs = EpochCloser(
        "hpc-a", store, StandInOutbox(), index, DOMAIN, settleable=lambda _: False,  # type: ignore[arg-type]
        booking_delay=DELAY, every=60, clock=lambda: now[0],
    )  # fmt: skip
    assert store.first_epoch() == 1
    epochs.start_on_clock()
    assert store.open_epoch() == 1
    for _ in range(3):
        assert epochs.due()
        epochs.close()
        now[0] += 120
    assert store.closed_epochs() == [1, 2, 3]  # no anchor of 1 or 2 ever shown, the chain's time far behind


# -- the credit desk -----------------------------------------------------------------------------------------------


def desk(store: Store, index: PaidIndex) -> CreditDesk:
    ticks = iter(range(0, 100_000, 10))
    return CreditDesk("hpc-a", index, store, clock=lambda: next(ticks))  # type: ignore[arg-type]


def test_a_store_at_epoch_1_without_a_clock_counts_unpaid_from_1(store: Store) -> None:
    assert desk(store, PaidIndex(set())).unpaid_from() == 1
    epochs = EpochCloser(
        "hpc-a", store, StandInOutbox(), StandInIndex(), DOMAIN, settleable=lambda _: False,  # type: ignore[arg-type]
    )  # fmt: skip
    epochs.close()
    epochs.close()
    assert desk(store, PaidIndex({2})).unpaid_from() == 1  # 1 unpaid: 2 paid is kept aside
    assert desk(store, PaidIndex({1, 2})).unpaid_from() == 3


def test_a_renumbered_store_never_skips_an_unpaid_epoch_of_its_own(store: Store) -> None:
    index = SkewedIndex(ORIGIN + 999 * LENGTH + 5)
    epochs = closer(store, index)
    epochs.start_on_clock()
    for e in range(1000, 1004):
        index.at = index.local = CLOCK.end(e)
        epochs.close()
    everything = {1000, 1001, 1002, 1003}
    assert desk(store, PaidIndex(everything, missing={1001})).unpaid_from() == 1001  # its anchor never landed
    assert desk(store, PaidIndex(everything - {1000})).unpaid_from() == 1000  # not settled yet
    credit = desk(store, PaidIndex(everything, missing={1001})).line("cloud-b")
    assert credit is not None and credit.paid == frozenset({1002, 1003})


# -- deploy's bound --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [1, 2, 3, 4, 59, 60, 61, 3_600, 86_400])
def test_longest_epoch_is_the_schedules_bound_and_leaves_the_lateness_and_the_margin(delay: int) -> None:
    longest = longest_epoch(delay)
    assert longest == delay - anchor_margin(delay) - late_close(delay) and longest >= 0
    if longest:
        assert check_schedule(longest, delay) == longest
    with pytest.raises(ValueError):
        check_schedule(longest + 1, delay)


# -- the clock checked at build (_chains_clock) --------------------------------------------------------------------


class StandInChain:
    """What `_chains_clock` reads of a chain: whether it ever answered, and each view's call."""

    def __init__(self, answered: bool = True) -> None:
        self.answered = answered

    def known_chain_id(self) -> int | None:
        return 31337 if self.answered else None

    def call(self, fn: Any) -> Any:
        return fn()


def ledger_views(length: Any, origin: Any) -> SimpleNamespace:
    def view(value: Any) -> Any:
        def fn() -> int:
            if isinstance(value, BaseException):
                raise value
            return value

        return lambda: fn

    return SimpleNamespace(epochLength=view(length), epochOrigin=view(origin))


def description(length: int = 0, origin: int = 0) -> Deployment:
    return Deployment(
        chain_id=31337, consortium="0x" + "01" * 20, usage_ledger="0x" + "02" * 20, settlement="0x" + "03" * 20,
        credit="0x" + "04" * 20, start_block=0, identity_registry="0x" + "05" * 20, epoch_length=length,
        epoch_origin=origin,
    )  # fmt: skip


@pytest.mark.parametrize(
    "why",
    [ChainRevert("reverted without reason"), ChainRevert(""), BadFunctionCallOutput("no such view")],
    ids=["revert", "empty revert", "undecodable"],
)
def test_an_old_usage_ledger_without_the_clock_views_takes_a_description_without_a_clock(why: Exception) -> None:
    from gateway.node.assemble import _chains_clock

    assert _chains_clock(StandInChain(), description(), ledger_views(why, why)) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch"):  # but not one naming a clock the chain has not
        _chains_clock(StandInChain(), description(3_600, 7_200), ledger_views(why, why))  # type: ignore[arg-type]


@pytest.mark.parametrize("answered", [False, True], ids=["never answered", "down since"])
def test_a_chain_node_down_at_build_leaves_the_description_trusted_and_the_start_goes_on(answered: bool) -> None:
    from gateway.node.assemble import _chains_clock

    down = ChainUnavailable("connection refused")
    got = _chains_clock(StandInChain(answered), description(3_600, 7_200), ledger_views(down, down))  # type: ignore[arg-type]
    assert got == EpochClock(3_600, 7_200)


def test_the_same_clock_and_no_clock_on_a_new_ledger_are_taken() -> None:
    from gateway.node.assemble import _chains_clock

    assert _chains_clock(StandInChain(), description(), ledger_views(0, 0)) is None  # type: ignore[arg-type]
    got = _chains_clock(StandInChain(), description(3_600, 7_200), ledger_views(3_600, 7_200))  # type: ignore[arg-type]
    assert got == EpochClock(3_600, 7_200)
