"""Re-attacks on this round's settlement fixes, as a hostile member.

A member that alone reaches `Consortium.anchorQuorum` (two members, quorum two: one short of
all) anchors an epoch far ahead of everyone's and settles it after its anchor window. The
withdrawal rule waits for the epoch two past the highest settled one *and every epoch before
it* (`settledThrough`): with the far epoch settled, no withdrawal requested after it could ever
complete. Settlement must not run so far ahead of the epochs settled in order.
"""

from __future__ import annotations

from ledger.ids import centre_id
from ledger.payment import MAX_DEADLINE_AHEAD
from tests.test_contracts import INITIAL, advance, anchor_all, make_consortium, now, reverts, until_unlocked

WINDOW = 100  # the anchor window (s)
FAR = 10**6  # an epoch nobody else will reach for a century of hourly epochs


def test_a_lone_member_cannot_freeze_withdrawals_by_settling_a_far_epoch():
    k = make_consortium(["hpc-a", "hpc-b"], quorum=2, anchor_window=WINDOW, anchor_bond=100)
    s, ul = k.c.settlement.functions, k.c.usage_ledger.functions
    assert k.c.consortium.functions.anchorQuorum().call() == 1  # one short of all: a silent member blocks nobody
    # hpc-a anchors the far epoch alone; its clock starts at once (anchorQuorum is 1)
    anchor_all(k, FAR, {}, skip=("hpc-b",))
    advance(k.chain, ul.anchorDeadline(FAR).call() + 1 - now(k))
    try:
        k.tx(s.settle(FAR), "hpc-a")
    except Exception:  # noqa: BLE001 - refusing it is one way to keep withdrawals live
        pass
    # the honest epochs go on, each anchored by both and settled
    for epoch in (1, 2):
        anchor_all(k, epoch, {})
        k.tx(s.settle(epoch), "hpc-b")
    b = k.accounts["hpc-b"].address
    k.tx(s.requestWithdrawal(300), "hpc-b")
    unlock = s.collateralOf(b).call()[3]
    for epoch in range(3, 7):
        anchor_all(k, epoch, {})
        k.tx(s.settle(epoch), "hpc-b")
    assert unlock <= 6, unlock  # not an epoch that cannot be reached
    until_unlocked(k, "hpc-b")
    k.tx(s.withdraw(), "hpc-b")
    assert k.c.credit.functions.balanceOf(b).call() == 300
    assert s.collateralOf(b).call()[0] == INITIAL - 300


def test_settling_ahead_of_the_settled_epochs_is_refused_but_waits_only_for_them():
    k = make_consortium(["hpc-a", "hpc-b"], quorum=2, anchor_window=WINDOW)
    s = k.c.settlement.functions
    anchor_all(k, FAR, {}, skip=("hpc-b",))
    advance(k.chain, 2 * WINDOW)
    err = reverts("NotSettleable", k.tx, s.settle(FAR), "hpc-a")
    assert err.error_args == (FAR,)
    assert k.c.usage_ledger.functions.highestSettled().call() == 0


# -- the auditor's shortfalls of an epoch's own settlement ---------------------------------


def test_the_audit_keeps_only_the_settlements_shortfalls_when_a_late_settlement_shares_its_transaction():
    """settle and settleLate are open to anyone: one contract may call settle(E) and then
    settleLate(E, d) in one transaction. Both emit Shortfall(E, debtor); only those before the
    EpochSettled are the epoch's own (the index tells them apart by log order too)."""
    from types import SimpleNamespace

    from ledger.audit import _ChainReader

    tx, b = b"\x01" * 32, b"\x0b" * 32

    def log(index: int, **args: object) -> SimpleNamespace:
        return SimpleNamespace(transactionHash=tx, logIndex=index, args=SimpleNamespace(**args))

    logs = {
        "EpochSettled": [log(5, epoch=1)],
        "Shortfall": [log(2, epoch=1, debtor=b, unpaid=50), log(8, epoch=1, debtor=b, unpaid=30)],
    }
    reader = object.__new__(_ChainReader)
    events = SimpleNamespace(EpochSettled="EpochSettled", Shortfall="Shortfall")
    reader.k = SimpleNamespace(settlement=SimpleNamespace(events=events))
    reader._logs = lambda event, **filters: logs[event]  # type: ignore[method-assign]
    assert reader.shortfalls(1) == {b: 50}


# -- a chain URL's credentials, in answers and in the operator's log --------------------------

SECRET_URL = "https://rpc-user:s3cr@t-pw@chain.example:8545/v1/KEY"  # an '@' in the password


def test_a_password_with_an_at_sign_is_left_out_of_log_lines_and_answers_whole():
    from gateway.api.app import _no_url_secrets
    from gateway.node.logs import without_credentials

    line = f"chain down: HTTPConnectionPool for url: {SECRET_URL} (timed out)"
    for cleaned in (without_credentials(line), _no_url_secrets(line)):
        assert "s3cr" not in cleaned and "t-pw" not in cleaned and "rpc-user" not in cleaned, cleaned
        assert "chain.example" in cleaned, cleaned
    assert _no_url_secrets(line) == "chain down: HTTPConnectionPool for url: https://chain.example:8545 (timed out)"
    assert without_credentials(line).endswith("https://chain.example:8545/v1/KEY (timed out)")


def test_text_logs_of_a_served_gateway_leave_out_url_credentials_in_uvicorns_lines_too(monkeypatch, capfd):
    """`xcentre gateway` configures the log, then serves: uvicorn's own lines (the traceback of an
    error no handler answered) must go through the same formatter, in text as in JSON."""
    import logging

    from gateway.api import server
    from gateway.node.logs import configure

    root = logging.getLogger()
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in ("uvicorn", "uvicorn.access")
    }
    saved_root = root.handlers[:]
    monkeypatch.setattr(server, "run_until_stopped", lambda config: None)  # the Config set its logging up; no server
    try:
        configure("text")
        server.serve(object(), "127.0.0.1", 0, log_format="text")  # type: ignore[arg-type]
        capfd.readouterr()
        logging.getLogger("uvicorn.error").error("Exception in ASGI application: %s", SECRET_URL)
        err = capfd.readouterr().err
    finally:
        root.handlers[:] = saved_root
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
    assert "Exception in ASGI application" in err
    assert "s3cr" not in err and "rpc-user" not in err, err


# -- /metrics: a scrape that waited for a slow count of the jobs reuses it -------------------


def test_a_scrape_that_waited_for_a_slow_job_count_reuses_it(monkeypatch):
    """GET /metrics is public. A count that takes longer than JOB_COUNTS_FRESH_FOR (a large store)
    must not be stale the moment it ends: every scrape queued behind it would scan again, one
    after another, each under the store's lock."""
    from types import SimpleNamespace

    from gateway.api import metrics

    clock = [100.0]
    scans = []

    def jobs_by_status() -> dict[str, int]:
        scans.append(clock[0])
        clock[0] += 1.5 * metrics.JOB_COUNTS_FRESH_FOR  # a slow scan
        return {"done": 7}

    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    node = SimpleNamespace(parts=SimpleNamespace(store=SimpleNamespace(jobs_by_status=jobs_by_status)))
    collector = metrics.NodeCollector(node)  # type: ignore[arg-type]
    assert collector._job_counts() == {"done": 7}
    assert collector._job_counts() == {"done": 7}  # the scrape that waited on the lock: no second scan
    assert len(scans) == 1
    clock[0] += metrics.JOB_COUNTS_FRESH_FOR
    collector._job_counts()
    assert len(scans) == 2  # a second later it counts again


# -- two members: one alone runs the epoch numbers ahead and leaves before paying ------------


def test_a_member_of_two_cannot_settle_ahead_and_withdraw_before_the_others_claims_of_the_epoch():
    # With anchorQuorum 1 one member starts every epoch's clock alone, and epoch numbers are each centre's own
    # counter: hpc-a settles its epochs 1..3 before hpc-b closes its epoch 1. What hpc-a's users ordered at hpc-b
    # before hpc-a asked to withdraw is due within a week (gateways refuse later deadlines), so hpc-b's claim for
    # it is anchored within a week + the booking delay; the withdrawal waits for that and for its payment.
    booking_delay, dispute_window = 3_600, 30
    k = make_consortium(
        ["hpc-a", "hpc-b"],
        quorum=2,
        anchor_window=WINDOW,
        anchor_bond=100,
        booking_delay=booking_delay,
        dispute_window=dispute_window,
    )
    s, ul = k.c.settlement.functions, k.c.usage_ledger.functions
    a = k.accounts["hpc-a"].address
    week = s.MAX_ORDER_AHEAD().call()
    assert week == MAX_DEADLINE_AHEAD  # what gateways refuse beyond
    assert s.withdrawalDelay().call() == week + booking_delay + 2 * dispute_window + WINDOW + 3_600
    for epoch in (1, 2, 3):  # hpc-a closes its epochs at once, each anchored empty and settled alone
        anchor_all(k, epoch, {}, skip=("hpc-b",))
        advance(k.chain, ul.anchorDeadline(epoch).call() + 1 - now(k))
        k.tx(s.settle(epoch), "hpc-a")
        if epoch == 1:
            k.tx(s.requestWithdrawal(s.freeOf(a).call()), "hpc-a")  # unlock: epoch 3, and a time
            asked = now(k)
    unlock_time = s.collateralOf(a).call()[4]
    assert unlock_time == asked + s.withdrawalDelay().call()
    err = reverts("WithdrawalLocked", k.tx, s.withdraw(), "hpc-a")  # epoch 3 is settled: the time is not up
    assert err.error_args == (3, unlock_time)
    # hpc-b closes its epoch 1 as late as an honest centre may: a job ordered just before hpc-a asked, due a
    # week later, anchored at its deadline + the booking delay (hpc-a's users ran 500 of jobs on it)
    advance(k.chain, asked + week + booking_delay - now(k))
    reverts("WithdrawalLocked", k.tx, s.withdraw(), "hpc-a")
    anchor_all(k, 1, {("hpc-b", "hpc-a"): 500}, skip=("hpc-a",))
    assert ul.lateOf(centre_id("hpc-b"), 1).call() == [True, False]
    advance(k.chain, 2 * dispute_window + 1)  # the late claim stood its windows
    reverts("WithdrawalLocked", k.tx, s.withdraw(), "hpc-a")
    before = s.collateralOf(k.accounts["hpc-b"].address).call()[0]
    k.tx(s.settleLate(1, centre_id("hpc-b")), "hpc-b")
    assert s.collateralOf(k.accounts["hpc-b"].address).call()[0] - before == 500
    # and then what is left of hpc-a's collateral may go
    advance(k.chain, unlock_time - now(k))
    free = s.collateralOf(a).call()[2]
    k.tx(s.withdraw(), "hpc-a")
    assert k.c.credit.functions.balanceOf(a).call() == free - 500
