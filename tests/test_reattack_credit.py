"""Second attack round on the serving centre's credit line per home (commits ebae428..d60a2aa, after the fixes
pinned in tests/test_attack_credit.py), as a hostile home member, a hostile user and a hostile outsider.

Tests marked FINDING failed on d60a2aa and pass since the fixes: each says the attack and the safe behaviour
expected. Tests marked REGRESSION passed there too: the attack failed, and they pin a property the line relies on.
(One more finding is a limit of the design, not fixed here: a user whose job may bill most of the home's line at
a centre keeps the home's other users out there while it runs; see docs/ARCHITECTURE.md, "Known limits".)
"""

from __future__ import annotations

import random
import sqlite3
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

from gateway.client.dispatch import NoCentreAccepts, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.jobs.execution import Execution
from gateway.jobs.pricing import cap_to_limits, max_price, price
from gateway.node.credit import CreditDesk
from gateway.store import Store
from gateway.store.credit import Owed, home_key
from ledger.deploy import Prices
from ledger.index.rows import CollateralInfo
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.credit import cost, granted, post, tighten, wait_done
from tests.test_credit_desk import Anchor, Index, Member
from tests.test_store import REQ, _h, signer
from tests.test_store_credit import pay

HOME = home_key("hpc-a")
SLOW = {"command": ["python3", "-c", "import time; time.sleep(6)"], "walltime": 30, "resources": {"cores": 1}}
QUICK = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def _records_in_epochs(store: Store, prices: tuple[int, ...]) -> None:
    """One record of hpc-a per epoch, epochs 1..len(prices) closed."""
    for n, amount in enumerate(prices, start=1):
        made, _ = store.create_job("alice@hpc-a", "hpc-a", REQ | {"n": n}, "cloud-b", payment=pay(n, 1000))
        store.complete_job(made.id, "succeeded", 0, "", "", record=signer(made.id, price=amount))
        store.close_open_epoch(lambda epoch, rows: {rows[0].home_centre: (_h("root", epoch), 1, 0)})


# ----------------------------------------------------------------------------- FINDING 1 (medium)


def test_finding_one_epoch_never_paid_keeps_every_later_paid_epoch_owed_for_ever(store: Store) -> None:
    """FINDING (medium: denial of service on every home at this centre, permanent in the worst case).

    Attack/path: CreditDesk._fresh advances `paid_through` only over a run of paid epochs from the oldest
    ("its own epochs settle in order") and stops at the first epoch not paid. But an epoch of this centre
    can stay unpaid while later ones settle and pay:
    - its anchor can never land: UsageLedger._storeClaims reverts UnknownHome for a home that is no
      longer a member, and the close puts in the claims every record of the epoch, including those of
      jobs of a home that governance removed while they ran here (or between the close and the anchor;
      nothing drops them), so that anchor is retried and reverts for ever;
    - it was anchored late (a gateway or chain outage past the anchor deadline): it waits for
      `settleLate`, two dispute windows after it, while the next epochs settle on time.
    Every record of every home in every later epoch then stays counted as owed although settlement paid
    it: in the permanent case, each home's line at this centre fills up and never frees again; this
    centre refuses all grants of all homes (402 credit-limit) for good.

    Safe behaviour: an epoch settled with this centre's anchor on time (or paid late) no longer counts,
    whatever an earlier epoch's state; only the epochs not paid are owed.
    """
    _records_in_epochs(store, (30, 20, 10))  # epochs 1, 2, 3; epoch 4 open
    index = Index(settled={1, 2, 3}, anchors={2: Anchor(), 3: Anchor()})  # epoch 1's anchor never landed
    desk = CreditDesk("cloud-b", index, store)
    assert desk.owed("hpc-a") == Owed(0, 30), (
        f"epochs 2 and 3 are settled and paid, yet hpc-a owes {desk.owed('hpc-a')} counting them "
        f"(unpaid from epoch {desk.unpaid_from()})"
    )


# ----------------------------------------------------------------------------- FINDING 2 (low-medium)


def test_finding_a_credit_limit_refusal_leaves_the_users_hold_at_home(consortium, monkeypatch):
    """FINDING (low-medium: allocation and home collateral locked for nothing; the client's retry-next-centre
    makes it worse).

    Attack/path: cloud-b's line for hpc-a is taken (here by another job of hpc-a; a hostile user can keep
    it so, see FINDING 3). The client asks cloud-b's quote (POST /v1/jobs/quote checks no credit), then
    hpc-a's grant desk holds the order's maximum price against the user's project allocation and hpc-a's
    free collateral, and only then does cloud-b refuse (402 credit-limit). Nothing releases that hold: it
    stays `held` until the order's deadline plus the booking delay (up to a week and more for a long job).
    submit_anywhere goes on to the next centre and leaves one such hold per refusing centre, so an honest
    user's allocation (and, summed over users, hpc-a's collateral check `CollateralCommitted`) is eaten by
    jobs that never ran.

    Safe behaviour: a centre past a home's line says so before the home grants anything (the quote
    refuses with `credit-limit` when the job at its limits does not fit now), or the refused order's hold
    is released at once; in any case no hold stays held for an order no centre took.
    """
    slow = cost(consortium, SLOW)
    tighten(consortium, monkeypatch, slow * 3 // 2)
    token = consortium.login("alice", "hpc-a", at="cloud-b")
    hog = post(consortium, SLOW, "cloud-b", granted(consortium, SLOW, "cloud-b", slow), token)
    assert hog.status_code == 202, hog.text
    book = consortium.centres["hpc-a"].node.parts.payer.book
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    try:
        before = {h.grant_digest for h in book.holds_in_status("held")}
        with pytest.raises(NoCentreAccepts) as refused:
            submit_anywhere(consortium.url("hpc-a"), SLOW, with_home_session(home), centre="cloud-b")
        assert "credit" in " ".join(refused.value.reasons)
        left = [h for h in book.holds_in_status("held") if h.grant_digest not in before]
        assert not left, (
            f"cloud-b refused the job for credit, yet hpc-a holds {[(h.centre, h.amount) for h in left]} of "
            f"alice's allocation for it until its deadline {[h.deadline for h in left]}"
        )
    finally:
        home.close()
        wait_done(consortium, "cloud-b", hog.json()["id"])


# ----------------------------------------------------------------------------- FINDING 4 (low)


def test_finding_the_operators_view_drops_a_removed_home_that_still_owes(store: Store) -> None:
    """FINDING (low: the operator is told wrong, not the line).

    Path: GET /v1/credit lists CreditDesk.lines(), which walks `index.members()`: active members only.
    A home removed by vote while its jobs run here (or with records in epochs not settled) still owes
    this centre; it is simply gone from the operator's view, which is the only place these figures are
    shown, just when the operator most needs them (its claims on a former member are dropped at
    settlement: Settlement.settleWithout).

    Safe behaviour: every home that owes this centre something (a `credit` row not paid) is listed, a
    removed one with limit 0.
    """
    store.create_job("alice@hpc-a", "hpc-a", REQ, "cloud-b", payment=pay(1, 700), bills_at_most=700)
    index = Index(known={"hpc-a": Member("0xA", active=False), "cloud-b": Member("0xB", name="cloud-b")})
    views = {c.home: c for c in CreditDesk("cloud-b", index, store).lines()}
    assert "hpc-a" in views and views["hpc-a"].owed.in_flight == 700 and views["hpc-a"].limit == 0, views


# ----------------------------------------------------------------------------- REGRESSIONS (attack failed)


@pytest.mark.parametrize("seed", range(3))
def test_regression_no_record_bills_above_what_its_job_is_counted_for(seed: int) -> None:
    """REGRESSION (attack failed): a record is priced at price(cap_to_limits(meters)) at the job's own rates
    version (immutable on chain), then capped at the grant; price() rounds each term up, and is monotone in
    every meter, so for any meters at all, extreme and zero limits, prices of 0 or 1 or huge, it never
    exceeds max_price at the limits: what the job is counted for in flight (min(grant, max_price))."""
    rnd = random.Random(seed)
    edges = [0, 1, 2, 999, 1000, 1001, 3_599_999, 10**6, 2**63 - 1, 10**30]
    for _ in range(3000):
        walltime, cores, mem, gpus = (rnd.choice([0, 1, 7, 604_800, 10**9, rnd.randrange(10**6)]) for _ in range(4))
        prices = Prices(*(rnd.choice([0, 1, 3, 10**9, 10**24, rnd.randrange(10**12)]) for _ in range(3)))
        execution = Execution(
            exit_code=0,
            timed_out=False,
            cpu_millis=rnd.choice([*edges, rnd.randrange(10**15)]),
            wall_millis=rnd.choice([*edges, rnd.randrange(10**12)]),
            max_rss_kib=rnd.choice([*edges, rnd.randrange(10**9)]),
            gpu_millis=rnd.choice([*edges, rnd.randrange(10**12)]),
        )
        grant = rnd.choice([0, 1, 10**40, rnd.randrange(10**20)])
        at_limits = max_price(walltime, cores, mem, gpus, prices)
        billed = min(price(cap_to_limits(execution, walltime, cores, mem, gpus), prices), grant)
        assert billed <= min(grant, at_limits)


def test_regression_a_line_on_a_uint256_collateral_is_exact(store: Store) -> None:
    """REGRESSION (attack failed): Fraction arithmetic, no float: a free collateral of 2**256 - 1 with a share
    of 1/3 (or a `credit_share` given as 0.1) is lent on exactly, never rounded up."""
    free = 2**256 - 1
    known = {n: Member("0x" + n, name=n) for n in ("hpc-a", "cloud-b", "ai-c", "edge-d")}
    index = Index(known=known, collateral_of={"0xhpc-a": CollateralInfo("0xhpc-a", free, 0, 0, 0)})
    assert CreditDesk("cloud-b", index, store).line("hpc-a").limit == free // 3
    assert CreditDesk("cloud-b", index, store, Fraction(str(0.1))).line("hpc-a").limit == free // 10


def test_regression_migration_12_counts_an_old_files_jobs_and_records(tmp_path: Path) -> None:
    """REGRESSION (attack failed): a file written before migration 12, with a job running on a grant, one
    queued without payment, a billed record and a lapsed-free epoch, is counted on opening: in flight the
    running job's whole grant (more than it may bill: on the safe side), billed the record's price."""
    path = tmp_path / "old.sqlite"
    s = Store(path)
    running, _ = s.create_job("alice@hpc-a", "hpc-a", REQ | {"n": 1}, "cloud-b", payment=pay(1, 500), bills_at_most=80)
    s.update_job(running.id, status="running")
    s.create_job("bob@hpc-a", "hpc-a", REQ | {"n": 2}, "cloud-b")
    done, _ = s.create_job("carol@hpc-a", "hpc-a", REQ | {"n": 3}, "cloud-b", payment=pay(3, 90))
    s.complete_job(done.id, "succeeded", 0, "", "", record=signer(done.id, price=40))
    s.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE credit; ALTER TABLE jobs DROP COLUMN credit; PRAGMA user_version = 11;")
    db.close()
    s = Store(path)
    try:
        assert s.owed(HOME, 1) == Owed(500, 40)
        s.complete_job(running.id, "succeeded", 0, "", "", record=signer(running.id, price=70))
        assert s.owed(HOME, 1) == Owed(0, 110)
    finally:
        s.close()


def test_regression_the_credit_view_answers_an_outsider_as_any_operator_route_does(consortium):
    """REGRESSION (attack failed): without the operator key, GET /v1/credit answers 401 with the same body
    as another operator route, whatever key is sent (no figures, no home names)."""
    url = consortium.url("cloud-b")
    for headers in ({}, {"X-Operator-Key": "x"}, {"X-Operator-Key": "x" * 4096}):
        got = httpx.get(url + "/v1/credit", headers=headers)
        assert got.status_code == 401, got.text
        assert "hpc-a" not in got.text and "limit" not in got.text
