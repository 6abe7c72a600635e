"""Re-attack of the gateway's epochs on the chain's clock (258b7a1): each test asserts the right behaviour and
fails on the change as it stands; the comment above each says what goes wrong and what it costs.

Real store (SQLite), real EpochCloser / CreditDesk, stand-ins for the index and outbox (tests/fixtures/closing.py),
as tests/test_epoch_clock_closer.py does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.node.credit import CreditDesk
from gateway.store import Store
from tests.fixtures.closing import CLOCK, PaidIndex, SkewedIndex, StandInIndex, clocked_closer

LENGTH, ORIGIN = CLOCK.length, CLOCK.origin


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gateway.db")
    yield s
    s.close()


# -- the credit desk assumes this centre's epochs are numbered from 1 ----------------------------------------------
#
# On the chain's clock a gateway whose store never closed an epoch opens at the chain's epoch running now
# (`start_on_clock`), e.g. 1000, never at 1. CreditDesk._fresh starts `paid_through` at 0 and only advances it while
# `paid_through + 1` is a paid epoch of *this store*: epoch 1 never is, so `paid_through` stays 0 for good, every
# paid epoch piles up in `paid` (never discarded), every refresh (each second) walks every closed epoch since 1 and
# every submission's credit check reads every credit row of the home since epoch 1 and filters it by a set that grows
# by one per epoch, for ever (8,760 a year with hour-long epochs; the line the desk hands each job carries it).
# `unpaid_from` (shown to operators in GET /v1/credit) says epoch 1 is unpaid, which this centre never had.


def test_credit_desk_paid_through_advances_on_a_store_that_started_past_epoch_1(store: Store) -> None:
    start = ORIGIN + 999 * LENGTH + 5  # epoch 1000 on the clock
    epochs = clocked_closer(store, StandInIndex(start))
    epochs.start_on_clock()
    assert store.open_epoch() == 1000
    for e in range(1000, 1005):
        epochs.index.at = CLOCK.end(e)  # type: ignore[attr-defined]
        epochs.close()
    assert store.closed_epochs() == [1000, 1001, 1002, 1003, 1004]
    ticks = iter(range(0, 10_000, 10))
    desk = CreditDesk("hpc-a", PaidIndex(), store, clock=lambda: next(ticks))
    # every closed epoch is settled and this centre's anchors were on time: all of them are paid
    assert desk.unpaid_from() == 1005
    line = desk.line("cloud-b")
    assert line is not None and line.paid == frozenset()  # nothing kept aside: paid through 1004


# -- a deployment.json whose clock is not the chain's ----------------------------------------------------------------
#
# build_node takes the epoch clock from deployment.json alone (`deployment.epoch_clock()`) and never reads
# UsageLedger.epochLength / epochOrigin, though it reads the chain for other parameters a description may lack
# (`_or_chain`). A description without `epoch_length` (written by hand from an older template, or an older copy
# kept by a member) for a clocked UsageLedger makes that gateway number its epochs from 1 on its own schedule: every
# epoch it closes ended on the chain long ago, so every anchor is late (not netted with its epoch, paid only by
# settleLate) — or, with no `[epochs] every`, it never closes an epoch at all and nothing it serves is ever billed.
# An origin one length off closes every epoch a length early (anchors held in the outbox, EpochNotOver, while the
# records of the next epoch are numbered wrong) or a length late (every anchor sits one length into its window).
# The gateway can refuse such a description at build: two view calls.


@pytest.mark.parametrize("wrong", ["no clock", "origin one epoch off", "other length"])
def test_a_deployment_whose_clock_is_not_the_chains_is_refused_at_build(tmp_path: Path, wrong: str) -> None:
    import dataclasses

    from gateway.node.assemble import build_node
    from tests.test_epoch_clock_contract import HOUR, clocked

    k = clocked(["hpc-a", "cloud-b"], 1)
    good = k.deployment
    assert good.epoch_length == HOUR
    bad = {
        "no clock": dataclasses.replace(good, epoch_length=0, epoch_origin=0),
        "origin one epoch off": dataclasses.replace(good, epoch_origin=good.epoch_origin - HOUR),
        "other length": dataclasses.replace(good, epoch_length=HOUR // 2),
    }[wrong]
    parts: dict[str, Any] = dict.fromkeys(
        ("account", "token_key", "issuer_key", "schema", "signon_attributes", "directory", "policy_file",
         "operator_key")
    )  # fmt: skip
    with pytest.raises(ValueError, match="epoch"):
        build_node(name="hpc-a", chain=k.chain, deployment=bad, data_dir=tmp_path / "data", **parts)
    assert not (tmp_path / "data").exists()  # refused before anything is built


# -- a local clock that jumps ahead runs the epoch numbering ahead of the chain, and records lapse -------------------
#
# On the clock the closer's clock is index.now = max(this machine's clock, the chain's), and close_if_due closes
# every epoch that clock has ended, CATCH_UP (64) a round. A local clock stepped ahead by a bad NTP server or an
# operator's typo (here by ten epochs; a day is 144 ten-minute epochs, three rounds) closes those epochs at once:
# the chain refuses their anchors (EpochNotOver, kept in the outbox) but the store has moved on for good. Once the
# clock is set right, the open epoch is ten epochs ahead of the chain's: no close until the chain's clock reaches
# its end, every record of those ten epochs' worth of work is stored in it, and at its close every record whose
# order's deadline + the booking delay is before then lapses — unbilled work, for as long as the skew was. Without
# a clock (`every`) a jump closes one epoch and the schedule comes back. The chain's own time is what ends an epoch
# (its anchor is refused before); a gateway should close no epoch the chain's clock has not (nearly) ended.


def test_a_local_clock_jumping_ahead_does_not_run_epochs_ahead_of_the_chain_and_lapse_records(store: Store) -> None:
    from tests.test_audit_record_pages import run

    delay = 4 * LENGTH  # the booking delay: closes an epoch-length apart never let a record lapse
    chain_now = ORIGIN + 10 * LENGTH + 5  # epoch 11 on the chain's clock
    index = SkewedIndex(chain_now)
    epochs = clocked_closer(store, index, booking_delay=delay)
    epochs.start_on_clock()
    assert store.open_epoch() == 11
    index.local = chain_now + 10 * LENGTH  # this machine's clock steps ten epochs ahead for a moment
    epochs.close_if_due()
    index.local = chain_now  # and is set right
    assert store.open_epoch() <= CLOCK.epoch_at(index.at) + 1, "the store's epochs ran ahead of the chain's clock"

    # a job ending now, at its order's deadline: its record must be anchored by deadline + the booking delay
    rid = run(store, 1, deadline=chain_now)
    billed = store.record(rid).epoch
    index.at = index.local = CLOCK.end(billed)  # time passes until the chain's clock ends the record's epoch
    while epochs.close_if_due() is not None and store.open_epoch() <= billed:
        pass
    assert store.closure(billed) is not None
    assert store.lapsed_records(billed) == [], "a record was left unbilled because the epochs ran ahead"
