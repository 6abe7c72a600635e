"""Re-attacks on the schedule guard: under the longest schedule it allows, no record of a job that ended by its
order's deadline lapses, and none a close keeps is anchored too late, when the close runs late (a large epoch's
build, a Slurm controller the executor waits through, a gateway restarted across a boundary).

The closes run the real store (SQLite file) and the real EpochCloser with the stand-in index and outbox of
tests/test_audit_record_pages.py; no chain is needed to close. No timed assertions: clocks are set, never measured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.books import epochs as closing
from gateway.books.epochs import EpochCloser, check_schedule
from gateway.jobs.slurm import UNREACHABLE_TIMEOUT_S
from gateway.store import Store
from ledger.epoch_clock import ANCHOR_MARGIN, LATE_CLOSE, anchor_margin
from tests.fixtures.closing import StandInIndex, StandInOutbox
from tests.test_audit_record_pages import DOMAIN, run

DELAY = 86_400  # the default booking delay: a day
EVERY = DELAY - ANCHOR_MARGIN - LATE_CLOSE  # 85,440 s: the longest schedule the guard allows (README)
C1 = (int(time.time()) // EVERY + 2) * EVERY  # a scheduled boundary after the store's epoch opened (its own clock)
C2 = C1 + EVERY  # the next one


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "gateway.db")
    yield s
    s.close()


def closer(store: Store, clock: StandInIndex) -> EpochCloser:
    every = check_schedule(EVERY, DELAY)  # allowed: the guard says this schedule never lets a record lapse
    return EpochCloser(
        "hpc-a",
        store,
        StandInOutbox(clock.now),  # type: ignore[arg-type]
        clock,  # type: ignore[arg-type]
        DOMAIN,
        settleable=lambda _: False,
        booking_delay=DELAY,
        every=every,
        clock=clock.now,
    )


# -- 19a5c65: records still lapse (or are anchored too late) under the longest allowed schedule ---------------


def test_a_close_of_a_large_epoch_queues_its_anchor_too_late_for_records_it_kept(store):
    """The cutoff of a close is read BEFORE its trees are built (EpochCloser.close: lapse_before(index.now()),
    then close_open_epoch builds them inside the transaction). Building costs ~60 us a record here
    (UsageRecord.from_json + record_digest: ~16,800 a second on this machine, before the SQLite read and the kept
    trees), so an epoch of 1.5 M records (17 jobs a second over a 86,280 s epoch; the gateway takes 250/s) is
    closed ~90 s after its cutoff was fixed. A record whose job ended at its deadline just after the previous close
    is kept in the tree (not lapsed), yet its anchor can only be mined after deadline + booking delay: the contract
    refuses to answer any dispute of it (`Late`), the home's watcher disputes it (ledger.evidence: anchored after
    deadline + delay), and the WHOLE claim on that home is voided at settlement, with the anchor bond. Worse than
    a lapse, which loses one record.

    The allowance of 19a5c65 (a minute "for the close to run late") is consumed by the close's own duration, which
    it does not count. Fix: fix the cutoff after the trees are built (lapse and rebuild when the build took long,
    or judge by the time the anchor is queued), and/or leave a lateness allowance that scales with the epoch
    (or a fixed 10-15 minutes: a period of 86,280 s against 85,500 s costs nothing)."""
    clock = StandInIndex(C1)
    epochs = closer(store, clock)
    tight = run(store, 1, deadline=C1 + 1)  # ended at its deadline, a second after the close at C1
    build = epochs._commit

    def large_epoch(epoch: int, rows: list) -> Any:
        made = build(epoch, rows)
        clock.at += 90  # the build of a 1.5 M-record epoch (the stand-in epoch has one record)
        return made

    epochs._commit = large_epoch  # type: ignore[method-assign]
    clock.at = C2  # the scheduled close, on time to the second
    assert epochs.due()
    closure = epochs.close()
    assert [r.record_id for r in store.lapsed_records(closure.epoch)] == []  # kept: it is in the anchored tree
    queued = epochs.outbox.queued[f"anchor:{closure.epoch}"]  # type: ignore[attr-defined]
    assert tight
    # its claim must be on chain by deadline + booking delay; the anchor queued now is mined up to the margin later
    assert queued + anchor_margin(DELAY) <= (C1 + 1) + DELAY, (
        f"anchor queued at C2 + {queued - C2} s, mined by C2 + {queued - C2 + anchor_margin(DELAY)} s; the kept "
        f"record's claim is payable only until C2 + {C1 + 1 + DELAY - C2} s"
    )


def test_a_record_stored_after_a_slurm_outage_the_executor_waits_through_lapses_under_an_allowed_schedule(store):
    """SlurmExecutor._wait rides out slurmctld being unreachable for up to UNREACHABLE_TIMEOUT_S (300 s: a
    controller restart or fail-over) and then stores the record. A job that ended at its deadline 200 s before a
    scheduled close, whose end the gateway learns 250 s later (within what the executor waits through), is stored
    after the close, in the next epoch, and lapses at that epoch's on-time close: the allowance of 19a5c65 gives
    "a record stored after its job ended" one minute, the executor itself five. Fix: an allowance at least the
    executor's longest wait for a job's end (UNREACHABLE_TIMEOUT_S + its poll), or assign a record to the epoch
    open when its job ended (a close then waits for the records of jobs still being collected)."""
    clock = StandInIndex(C1 - 200)
    epochs = closer(store, clock)
    deadline = C1 - 200  # the job ended at its deadline; slurmctld does not answer from then on
    lag = 250
    assert lag < UNREACHABLE_TIMEOUT_S  # the executor waits through it; the record is stored, not failed
    clock.at = C1  # the scheduled close at C1 finds the epoch without it
    assert epochs.due()
    epochs.close()
    clock.at = deadline + lag  # slurmctld answers: the job finished; its record joins the open epoch
    late = run(store, 2, deadline=deadline)
    clock.at = C2  # the next scheduled close, on time to the second
    assert epochs.due()
    closure = epochs.close()
    assert [r.record_id for r in store.lapsed_records(closure.epoch)] == [], (
        f"record {late[:12]}.. of a job that ended {lag} s before its record was stored lapsed unpaid"
    )


def test_a_gateway_restarted_across_a_boundary_lapses_records_under_an_allowed_schedule(store):
    """A gateway down from a second before a boundary to two minutes after it (an upgrade, a reboot) closes the
    epoch at its first housekeeping round (EpochCloser.due), 120 s late: a record whose job ended at its deadline
    just after the previous close lapses, unpaid (its claim was due on chain by deadline + the delay = the
    boundary + 121 s). The guard's minute covers no restart. Fix: a lateness allowance of several minutes (or a
    fraction of the delay), documented as the longest a gateway may be down across a boundary; or close ahead of
    a boundary when records of the open epoch near their deadline + delay - margin."""
    clock = StandInIndex(C1)
    epochs = closer(store, clock)
    clock.at = C1 + 1
    early = run(store, 3, deadline=C1 + 1)  # stored when its job ended, a second after the close at C1
    clock.at = C2 + 120  # the gateway was down from C2 - 1: housekeeping's first round after its start
    assert epochs.due()
    closure = epochs.close()
    assert [r.record_id for r in store.lapsed_records(closure.epoch)] == [], (
        f"record {early[:12]}.. lapsed at a close 120 s late, under the schedule the guard allowed"
    )


def test_a_close_whose_build_outlasts_every_allowance_lapses_what_it_could_not_anchor_in_time(store, monkeypatch):
    """Past what the allowance covers (here a close counted at a record a second), a record whose claim could not
    be on chain by its deadline + the booking delay once the trees are built lapses, instead of being kept in a
    claim whose every leaf a home may then dispute: one unanswerable leaf voids the whole claim."""
    monkeypatch.setattr(closing, "CLOSE_RATE", 1)
    clock = StandInIndex(C1)
    epochs = closer(store, clock)
    for n in range(100):  # 100 records: the close counts 100 s to build its trees
        run(store, 10 + n, deadline=C2 + 10 * DELAY)
    edge = run(store, 5, deadline=C2 + 60 - DELAY)  # its claim is due on chain by C2 + 60: before the build ends
    clock.at = C2
    closure = epochs.close()
    assert [r.record_id for r in store.lapsed_records(closure.epoch)] == [edge]
