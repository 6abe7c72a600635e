"""Epochs on the chain's clock, as the gateway's closer and the settle rule see them.

With `UsageLedger.epochLength` every centre numbers and ends its epochs alike: a fresh gateway opens at the
chain's epoch running now (`start_on_clock`), an epoch closes only once the clock has ended it (`due`, `close`),
a gateway that was down closes every epoch the clock ended meanwhile (`close_if_due`), and an epoch nobody
anchored still settles after its end + the anchor window (`settleable`, `_unsettled`), so withdrawals that wait
for every earlier epoch are never stuck. Without a clock the old behaviour stands. Each test here fails if that
part of the feature is taken out.

The closes run the real store (SQLite file) and the real EpochCloser with the stand-in index and outbox of
tests/fixtures/closing.py; no chain is needed. No timed assertions: clocks are set, never measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.books import epochs as closing
from gateway.books.epochs import MAX_AHEAD, EpochCloser
from gateway.node.assemble import settleable
from gateway.node.errors import Conflict
from gateway.store import Store, StoreError
from ledger.epoch_clock import EpochClock
from tests.fixtures.closing import CLOCK, StandInIndex, clocked_closer
from tests.test_audit_record_pages import run
from tests.test_store_decisions import decision

LENGTH, ORIGIN = CLOCK.length, CLOCK.origin  # 600 s epochs; epoch 1 starts at 6,000
IN_11 = ORIGIN + 10 * LENGTH + 5  # a moment in epoch 11 (CLOCK.epoch_at(IN_11) == 11)
DISPUTE = 100  # UsageLedger.disputeWindow
ANCHOR_WINDOW = 300  # UsageLedger.anchorWindow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gateway.db")
    yield s
    s.close()


def closer(store: Store, at: int, epoch_clock: EpochClock | None = CLOCK, every: int = 0) -> EpochCloser:
    """A closer of `store` whose clock (and index's) reads `at` until a test moves `closer.index.at`."""
    return clocked_closer(store, StandInIndex(at), epoch_clock=epoch_clock, every=every)


def set_clock(epochs: EpochCloser, at: int) -> None:
    epochs.index.at = at  # type: ignore[attr-defined]


def queued(epochs: EpochCloser) -> dict[str, int]:
    return epochs.outbox.queued  # type: ignore[attr-defined]


# -- a fresh store starts at the chain's epoch -------------------------------------------------------------


def test_a_fresh_store_opens_at_the_chains_epoch_running_now(store: Store) -> None:
    assert store.open_epoch() == 1
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    assert store.open_epoch() == CLOCK.epoch_at(IN_11) == 11


def test_starting_again_with_an_earlier_clock_never_numbers_backwards(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    set_clock(epochs, IN_11 - 5 * LENGTH)  # a restart whose clock reads epoch 6
    epochs.start_on_clock()
    assert store.open_epoch() == 11
    set_clock(epochs, IN_11 + 2 * LENGTH)  # still empty: a later start moves it on, to epoch 13
    epochs.start_on_clock()
    assert store.open_epoch() == 13


def test_a_record_in_the_open_epoch_fixes_its_number(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    run(store, 1)  # stored in the open epoch, 11
    assert [r.epoch for r in store.records_for_epoch(11)] == [11]
    set_clock(epochs, IN_11 + 3 * LENGTH)
    epochs.start_on_clock()
    assert store.open_epoch() == 11  # its record stays in the epoch it was stored in; closes catch up
    assert store.start_epochs_at(20) == 11


def test_a_decision_in_the_open_epoch_fixes_its_number(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    store.log_decision(decision(1))
    set_clock(epochs, IN_11 + 3 * LENGTH)
    epochs.start_on_clock()
    assert store.open_epoch() == 11


def test_a_store_that_closed_an_epoch_is_never_renumbered(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    set_clock(epochs, CLOCK.end(11))
    epochs.close()
    assert store.open_epoch() == 12  # empty, but an epoch was closed
    set_clock(epochs, IN_11 + 9 * LENGTH)  # epoch 20 on the clock
    epochs.start_on_clock()
    assert store.open_epoch() == 12
    assert store.start_epochs_at(20) == 12


def test_a_start_without_a_clock_leaves_epoch_1(store: Store) -> None:
    closer(store, IN_11, epoch_clock=None).start_on_clock()
    assert store.open_epoch() == 1


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_start_epochs_at_refuses_what_is_no_epoch(store: Store, bad: Any) -> None:
    with pytest.raises(StoreError):
        store.start_epochs_at(bad)
    assert store.open_epoch() == 1


# -- an epoch closes when the clock ends it ------------------------------------------------------------------


def test_an_epoch_is_due_exactly_when_the_clock_ends_it(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    end = CLOCK.end(11)
    assert not epochs.due()
    assert not epochs.due(now=end - 1)
    assert epochs.due(now=end)
    set_clock(epochs, end)
    assert epochs.due()


def test_closing_before_the_clock_ends_the_epoch_is_a_conflict_naming_its_end(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    end = CLOCK.end(11)
    set_clock(epochs, end - 1)
    with pytest.raises(Conflict, match=rf"\b{end}\b"):
        epochs.close()
    with pytest.raises(Conflict, match=rf"\b{end}\b") as refusal:
        epochs.close(11)  # named: the same refusal
    assert refusal.value.reasons == ["epoch-not-over"]  # for a client to tell it from other conflicts
    assert store.open_epoch() == 11 and store.closed_epochs() == []
    assert queued(epochs) == {}
    set_clock(epochs, end)
    closure = epochs.close()
    assert closure.epoch == 11
    assert store.open_epoch() == 12
    assert "anchor:11" in queued(epochs)


def test_a_gateway_back_after_five_epochs_closes_all_five_in_one_round(store: Store) -> None:
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    set_clock(epochs, CLOCK.end(15) + 7)  # epochs 11..15 ended; 16 is running
    closure = epochs.close_if_due()
    assert closure is not None and closure.epoch == 15
    assert store.open_epoch() == 16
    assert store.closed_epochs() == [11, 12, 13, 14, 15]
    assert sorted(k for k in queued(epochs) if k.startswith("anchor:")) == [f"anchor:{e}" for e in range(11, 16)]
    assert epochs.close_if_due() is None  # 16 has not ended
    assert store.open_epoch() == 16


def test_one_round_closes_at_most_catch_up_epochs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(closing, "CATCH_UP", 3)
    epochs = closer(store, IN_11)
    epochs.start_on_clock()
    set_clock(epochs, CLOCK.end(20))  # 10 ended
    epochs.close_if_due()
    assert store.open_epoch() == 14
    epochs.close_if_due()
    assert store.open_epoch() == 17


# -- without a clock, as before --------------------------------------------------------------------------


def test_without_a_clock_the_schedule_still_follows_every(store: Store) -> None:
    every = 100
    opened = store.open_epoch_opened_at()
    assert opened is not None
    boundary = (opened // every + 1) * every  # the first boundary after the epoch opened
    epochs = closer(store, boundary - 1, epoch_clock=None, every=every)
    assert not epochs.due()
    set_clock(epochs, boundary)
    assert epochs.due()
    assert closer(store, boundary + 10 * every, epoch_clock=None, every=0).due() is False  # no schedule
    set_clock(epochs, 0)  # and an operator's close is never held by a clock
    assert epochs.close().epoch == 1
    assert store.open_epoch() == 2


# -- settling: an epoch nobody anchored settles on the clock -------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    centre: bytes
    anchored_at: int


@dataclass(frozen=True)
class Member:
    id: bytes


@dataclass
class SettleIndex:
    """What `settleable` reads of the index: anchors by epoch, the members, the clock."""

    at: int
    member_ids: tuple[bytes, ...] = (b"a" * 20, b"b" * 20)
    shown: dict[int, list[Anchor]] = field(default_factory=dict)

    def anchors(self, epoch: int) -> list[Anchor]:
        return self.shown.get(epoch, [])

    def members(self) -> list[Member]:
        return [Member(m) for m in self.member_ids]

    def now(self) -> int:
        return self.at


def may_settle(index: SettleIndex, epoch: int, epoch_clock: EpochClock | None = CLOCK) -> bool:
    return settleable(index, epoch, DISPUTE, ANCHOR_WINDOW, epoch_clock)  # type: ignore[arg-type]


def test_without_a_clock_an_epoch_nobody_anchored_never_settles() -> None:
    index = SettleIndex(at=CLOCK.end(11) + 100 * ANCHOR_WINDOW)
    assert not may_settle(index, 11, epoch_clock=None)


def test_on_the_clock_an_epoch_nobody_anchored_settles_after_its_end_and_the_anchor_window() -> None:
    deadline = CLOCK.end(11) + ANCHOR_WINDOW
    index = SettleIndex(at=CLOCK.end(11))
    assert not may_settle(index, 11)
    index.at = deadline
    assert not may_settle(index, 11)  # the chain's deadline is passed strictly after it
    index.at = deadline + 1
    assert may_settle(index, 11)


def test_an_on_time_anchor_keeps_the_epoch_open_for_two_dispute_windows() -> None:
    end = CLOCK.end(11)
    deadline = end + ANCHOR_WINDOW
    anchored = deadline - 10  # on time, by a member; the other member stays silent
    index = SettleIndex(at=deadline + 1, shown={11: [Anchor(b"a" * 20, anchored)]})
    assert not may_settle(index, 11)
    index.at = anchored + 2 * DISPUTE
    assert not may_settle(index, 11)
    index.at = anchored + 2 * DISPUTE + 1
    assert may_settle(index, 11)


def test_a_late_anchor_does_not_hold_the_epochs_settlement() -> None:
    deadline = CLOCK.end(11) + ANCHOR_WINDOW
    index = SettleIndex(at=deadline + 2, shown={11: [Anchor(b"a" * 20, deadline + 1)]})  # late: paid by settleLate
    assert may_settle(index, 11)


# -- which epochs a centre tries to settle --------------------------------------------------------------------


def test_on_the_clock_epochs_before_the_first_closed_are_settled_too_up_to_max_ahead(store: Store) -> None:
    epochs = closer(store, ORIGIN + 29 * LENGTH + 5)  # epoch 30
    epochs.start_on_clock()
    assert store.open_epoch() == 30
    set_clock(epochs, CLOCK.end(30))
    epochs.close()
    assert epochs._unsettled() == [*range(1, 1 + MAX_AHEAD), 30]
    assert MAX_AHEAD == 16
    epochs._oldest_unsettled = 20
    assert epochs._unsettled() == [*range(20, 30), 30]


def test_without_a_clock_only_closed_epochs_are_settled(store: Store) -> None:
    epochs = closer(store, 0, epoch_clock=None)
    assert store.start_epochs_at(30) == 30  # as a store renumbered by hand
    epochs.close()
    assert epochs._unsettled() == [30]


# -- this machine's clock ahead of the chain's ------------------------------------------------------------


def test_with_the_chain_behind_only_the_first_epoch_closes_until_the_chain_takes_its_anchor(store: Store) -> None:
    """A clock stepped ahead closes one epoch the chain would refuse, not every epoch it jumped; the next one
    closes once the chain has taken the anchor before it (or its own blocks show the epoch ended)."""
    epochs = closer(store, ORIGIN + 5)  # a store at epoch 1, its first: nothing closed before it
    epochs.index.at = CLOCK.end(1) - 100  # type: ignore[attr-defined]  # the last block seen: in epoch 1
    ahead = CLOCK.end(3) + 5  # this machine's clock, two epochs past the chain's
    epochs.clock = lambda: ahead
    assert epochs.close_if_due() is not None and store.closed_epochs() == [1]
    assert not epochs.due() and epochs.close_if_due() is None  # the anchor of 1 is not on chain: 2 waits
    epochs.index.anchors[1] = object()  # type: ignore[attr-defined]  # the chain took it
    assert epochs.due() and epochs.close_if_due() is not None and store.open_epoch() == 3
    epochs.index.at = CLOCK.end(3)  # type: ignore[attr-defined]  # a block at the end of epoch 3
    assert epochs.close_if_due() is not None and store.open_epoch() == 4
