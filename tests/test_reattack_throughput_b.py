"""Hostile review B of the throughput round (group commit, per-thread read connections): faults and load.

Real SQLite files, real threads, the store's own public methods; nothing injected.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store import Store
from tests.fixtures.wal_load import wal_peak_under_load

WAIT = 120  # seconds the whole load may take on a busy machine

# SQLite's automatic checkpoint runs at 1,000 pages of WAL (4 KiB pages): a WAL that is checkpointed and
# restarted stays around 4 MB however many writes go through. Four times that is generous.
WAL_BOUND = 16 * 1024 * 1024


def test_readers_polling_the_store_never_let_the_wal_restart_so_it_grows_until_the_disk_is_full(
    tmp_path: Path,
) -> None:
    """Per-thread read connections overlap one another, so the writer's checkpoint never catches up with
    every reader and the WAL is never restarted: gateway.db-wal grows by every write for as long as reads
    keep coming (SQLite's "checkpoint starvation"). Before this change reads ran on the writer's own
    connection under its lock, so each checkpoint completed and the WAL stayed at its ~4 MB.

    The reads are what anyone can make the gateway do: GET /metrics (epochs.state() reads every closure),
    GET /v1/decisions/{id} (closure of its epoch), GET /v1/jobs/{id} (get_job); the writes are submissions.
    A full data disk then refuses every write (507), billing included."""
    path = tmp_path / "gateway.db"
    store = Store(path)
    try:
        for _ in range(40):  # a gateway with a scheduled close has closed a few dozen epochs
            store.close_open_epoch(lambda epoch, records: {})

        def read(written: list[str]) -> None:
            if written:
                store.get_job(written[-1])
            store.closures()
            store.closure(1)

        peak, written = wal_peak_under_load(store, read, writers=4, jobs=500, readers=8, wait=WAIT)
        assert written == 2000, f"only {written} of 2000 jobs written in {WAIT} s"
        assert peak <= WAL_BOUND, (
            f"gateway.db-wal reached {peak / 1e6:.1f} MB for {written} jobs while readers polled: the "
            f"checkpoint never restarts it (bound {WAL_BOUND >> 20} MiB; ~4 MB without concurrent readers)"
        )
    finally:
        store.close()
