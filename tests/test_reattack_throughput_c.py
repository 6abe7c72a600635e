"""Hostile review C of the fixes made after the throughput round's first review (4ae71d2..HEAD):
the WAL restart of group commit (`_restart_log_if_large`) and the audit view's `sync(unless_within=)`.

Real SQLite files, real threads, the store's own public methods, a real anvil node; nothing injected.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eth_account import Account

from gateway.books.epochs import AUDIT_SYNC_EVERY
from gateway.store import NewRecord, Store
from ledger.chain import connect
from ledger.deploy import MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.index import EventIndex
from tests.fixtures.wal_load import wal_peak_under_load

REQ = {"argv": ["echo", "hi"], "walltime": 60, "cores": 1}
HOME = b"hpc-b".ljust(32, b"\0")
WAIT = 180  # seconds the whole load may take on a busy machine
# As review B: SQLite's own checkpoint keeps a WAL near 4 MB, the fix restarts it past 8 MiB (once a second at most).
WAL_BOUND = 16 * 1024 * 1024
NONE = bytes(32)


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _record(job_id: str, epoch: int) -> NewRecord:
    rid = _h("rid", job_id)
    return NewRecord(
        epoch=epoch,
        record_id=rid,
        home_centre=HOME,
        record={"record_id": "0x" + rid.hex(), "job_id": job_id, "epoch": epoch, "price": 10, "meter": "m" * 200},
        signature=_h("sig", job_id) + b"\x1b",
        leaf=_h("leaf", job_id),
    )


def test_public_reads_of_a_large_epochs_records_outlast_the_checkpoint_wait_so_the_wal_still_grows(
    tmp_path: Path,
) -> None:
    """`_restart_log_if_large` waits CHECKPOINT_WAIT_MS (200 ms) for the readers of older frames, then gives up
    for a second. GET /v1/audit/epochs/{e}/records is public and reads every record of the epoch in one
    snapshot (`records_for_epoch`); on a busy gateway (5,000 jobs in an epoch: 20 s at the measured 255/s) each
    such read holds its snapshot for a few hundred ms under load. A few of them kept in flight (no session, no
    money) leave a snapshot older than 200 ms open at every attempt: the TRUNCATE never completes, SQLite's own
    restart never happens either, and gateway.db-wal grows with every submission as before the fix, until the
    data disk is full and every write (billing included) is refused."""
    path = tmp_path / "gateway.db"
    store = Store(path)
    try:

        def finished_job(i: int) -> None:
            job, _ = store.create_job(f"u{i % 7}@hpc-b", "hpc-b", REQ, "hpc-a", f"seed-{i}")
            store.update_job(job.id, status="running")
            store.complete_job(job.id, "succeeded", 0, "", "", record=lambda epoch, j=job.id: _record(j, epoch))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(finished_job, range(5000)))
        store.close_open_epoch(lambda epoch, records: {HOME.hex(): (b"\x01" * 32, len(records), 10 * len(records))})
        assert len(store.records_for_epoch(1)) == 5000

        def auditor(written: list[str]) -> None:  # GET /v1/audit/epochs/1/records, again and again
            store.records_for_epoch(1)

        peak, written = wal_peak_under_load(store, auditor, writers=4, jobs=600, readers=4, wait=WAIT)
        assert written == 2400, f"only {written} of 2400 jobs written in {WAIT} s"
        assert peak <= WAL_BOUND, (
            f"gateway.db-wal reached {peak / 1e6:.1f} MB for {written} submissions while 4 public reads of a "
            f"5,000-record epoch were in flight: the restart past 8 MiB gives up after 200 ms each second "
            f"(bound {WAL_BOUND >> 20} MiB)"
        )
    finally:
        store.close()


def _spec(name: str, account, n: int) -> MemberSpec:
    return MemberSpec(name, account.address, f"https://{name}.example", bytes([n]) * 32, Prices(n, 10 * n, 100 * n))


def test_the_audit_views_sync_is_skipped_after_a_sync_that_began_before_the_anchor_it_was_asked_after(
    own_anvil_url: str, tmp_path: Path
) -> None:
    """`sync(unless_within=AUDIT_SYNC_EVERY)` (GET /v1/audit/epochs/{e}) returns 0 when a sync finished within
    the last second, "also one this call waited for". But a sync reads the head when it *starts*: one that took
    long (an index catching up after a restart, a slow RPC node: the follower's or start()'s sync) finishes
    with a head from long before. A request made well over AUDIT_SYNC_EVERY after an anchor was mined waits
    for that sync and then asks nothing: its answer lacks the anchor (`anchored` absent, no claims), however
    long ago it was mined. AUDIT_SYNC_EVERY promises a view at most a second behind the chain; before the
    change this request synced after the other and saw the anchor."""
    chain = connect(own_anvil_url)  # its own node: the backlog below moves the chain's clock
    accounts = [Account.create() for _ in range(2)]
    for acct in accounts:
        chain.fund(acct.address, 10**19)
    x, y = centre_id("rpc-x"), centre_id("rpc-y")
    specs = [_spec(n, a, i + 1) for i, (n, a) in enumerate(zip(("rpc-x", "rpc-y"), accounts, strict=True))]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 1, 1_000, dispute_window=1, anchor_bond=100)
    k = bind(chain, deployment)
    for _ in range(8):  # a backlog: blocks the index has not read yet (in steps: one call of all would time out)
        chain.w3.provider.make_request("anvil_mine", [500])

    index = EventIndex(tmp_path / "idx.sqlite", chain, deployment, window=1)
    catching_up = threading.Thread(target=index.sync, daemon=True)  # start()'s or the follower's sync
    catching_up.start()
    time.sleep(0.3)  # it has read the head and works through the backlog
    assert catching_up.is_alive(), "the backlog was read too fast to show anything: make it larger"
    chain.transact(k.usage_ledger.functions.anchor(1, [y], [b"\x01" * 32], [2], [11], NONE, 0), accounts[0])
    time.sleep(AUDIT_SYNC_EVERY + 0.5)  # the anchor is on chain for longer than the view may be behind
    assert catching_up.is_alive(), "the backlog was read too fast to show anything: make it larger"
    asked_at = time.monotonic()
    index.sync(unless_within=AUDIT_SYNC_EVERY)  # the audit view's call: waits for the running sync
    answered_at = time.monotonic()
    catching_up.join(60)
    assert index.anchor(x, 1) is not None, (
        f"GET /v1/audit/epochs/1 asked {AUDIT_SYNC_EVERY + 0.5:.1f} s after rpc-x's anchor was mined and answered "
        f"{answered_at - asked_at:.1f} s later without it: the sync it waited for had read the head before the "
        f"anchor, and its own was skipped"
    )
