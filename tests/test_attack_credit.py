"""Attacks on the serving centre's credit line per home (commit ebae428: gateway/node/credit.py,
gateway/store/credit.py and their wiring), by a hostile member (a home that wants its users' work
done without paying) and by hostile users.

Each test says the attack and the safe behaviour. Tests marked FINDING failed on ebae428 and pass since
the fixes; tests marked REGRESSION passed there too (the attack failed) and pin a property the line relies on.

Real consortium tests use the session `consortium` fixture (slapd, anvil, three gateways); the
grants are signed with hpc-a's member key directly (tests/fixtures/payment.py), as a home's grant
desk signs them once it has held the amount.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from gateway.node.config import GatewayConfig
from gateway.node.credit import CreditDesk
from gateway.store import Store
from gateway.store.credit import CreditExceeded, CreditLine, Owed, home_key
from ledger.index.rows import CollateralInfo
from tests.fixtures.credit import cost, granted, post, room, wait_done
from tests.test_credit_desk import Index, Member
from tests.test_metrics import scrape
from tests.test_store import REQ, signer
from tests.test_store_credit import pay

HOME = home_key("hpc-a")

# A job that holds its grant in flight for a while, and a cheap one.
HOG = {"command": ["python3", "-c", "import time; time.sleep(8)"], "walltime": 30, "resources": {"cores": 1}}
QUICK = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


# ----------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------- FINDING 1 (medium)


def test_finding_a_user_with_an_inflated_grant_locks_every_other_user_of_the_home_out(consortium):
    """FINDING (medium, denial of service, worse than before the change).

    Attack: one user of hpc-a (it could as well be an anonymous member of a project: no one is
    accountable) signs an order for a cheap job (1 core, 30 s walltime; a real one: a `sleep` of up
    to MAX_WALLTIME, about a week) with a maximum price as large as cloud-b's whole line for hpc-a,
    which hpc-a grants (a project allocation easily exceeds one centre's share of the collateral).
    cloud-b counts the whole grant as owed while the job is queued or running, so every other
    user of hpc-a is refused with 402 at cloud-b for as long as the job lasts, while the job itself
    is billed a few cents. Before the change nobody could lock a home out of a centre like this.

    Safe behaviour: no record of a job can be priced above min(grant, what the job may cost at its
    limits at its rates version) (cap_to_limits, then capped at the grant), so that is all it
    should count while in flight; another user's job of normal size is then accepted.
    """
    alice = consortium.login("alice", "hpc-a", at="cloud-b")
    # the home's other user: a session of its own (bob is the shared consortium's student, whom its flow tests
    # find with no job anywhere; the line knows nobody's name anyway)
    other = consortium.login("alice", "hpc-a", at="cloud-b")
    limit, owed = room(consortium)
    hog_cost = cost(consortium, HOG, "cloud-b")
    quick_cost = cost(consortium, QUICK, "cloud-b")
    assert limit - owed > hog_cost + quick_cost  # the real exposure fits the line many times over
    hog = post(consortium, HOG, "cloud-b", granted(consortium, HOG, "cloud-b", limit - owed), alice)
    assert hog.status_code == 202, hog.text
    try:
        victim = post(consortium, QUICK, "cloud-b", granted(consortium, QUICK, "cloud-b", quick_cost), other)
        assert victim.status_code in (200, 201, 202), (
            f"the other user is refused ({victim.status_code}) although alice's job can cost at most {hog_cost} of the "
            f"{limit - owed} left: {victim.text}"
        )
        wait_done(consortium, "cloud-b", victim.json()["id"])
    finally:
        wait_done(consortium, "cloud-b", hog.json()["id"])


# ----------------------------------------------------------------------------- FINDING 2 (medium)


def test_finding_by_default_a_home_gets_its_whole_collateral_on_credit_at_every_serving_centre(consortium):
    """FINDING (medium, a hostile home over-grants by the number of serving centres).

    Attack: hpc-a (hostile) grants its users orders at cloud-b and at ai-c, each up to that centre's
    line. With the shipped default `credit_share = 1` (GatewayConfig, build_node, the demo and
    consortium deployments all keep it) each serving centre gives hpc-a credit for its *whole*
    free collateral, so hpc-a can owe (members - 1) times what it has; at settlement its creditors
    share it pro rata and the rest is a recorded shortfall: work done without paying, exactly what
    the change is meant to stop. The figure is also not net of other centres' standing claims on
    hpc-a anchored on chain and not settled yet (index.claims_on), which the index has.

    Safe behaviour: what all serving centres together give one home on credit stays within its free
    collateral by default (e.g. a default share of 1 / (active members - 1), or the free collateral
    less the standing claims of others on it).
    """
    index = consortium.centres["cloud-b"].node.parts.index
    free = index.collateral(index.member("hpc-a").account).free
    lines = {at: consortium.centres[at].node.credit.line("hpc-a").limit for at in ("cloud-b", "ai-c")}
    assert sum(lines.values()) <= free, f"hpc-a may owe {lines} on credit in all, with {free} of free collateral"


def test_finding_the_config_default_share_over_commits_a_homes_collateral(store) -> None:
    """FINDING (medium, same root as above, at the configuration): the default share was 1, so with
    three or more members the lines of all serving centres added up past a home's collateral.
    Safe behaviour: absent a `credit_share`, the share is 1 / (active members - 1)."""
    assert GatewayConfig.model_fields["credit_share"].default is None
    index = Index(known={n: Member("0x" + n, name=n) for n in ("hpc-a", "cloud-b", "ai-c", "edge-d")})
    index.collateral_of = {"0xhpc-a": CollateralInfo("0xhpc-a", 900, 0, 0, 0)}
    lines = [CreditDesk(at, index, store).line("hpc-a").limit for at in ("cloud-b", "ai-c", "edge-d")]
    assert lines == [300, 300, 300]


# ----------------------------------------------------------------------------- FINDING 3 (low)


def test_finding_anyone_reads_each_homes_live_debts_from_public_metrics(consortium):
    """FINDING (low, information leak to outsiders).

    Attack: an outsider with no session (GET /metrics takes no key) polls cloud-b's metrics and
    reads `xcentre_credit_owed{home="hpc-a"}`: each job an hpc-a user (anonymous ones included)
    submits or finishes at cloud-b moves it by that job's exact grant in real time, so the
    outsider learns when hpc-a's users compute at cloud-b and for how much, before any record is
    public and including jobs never billed.

    Safe behaviour: per-home credit figures are for the operator (behind the operator key), not on
    the public, unauthenticated /metrics.
    """
    samples = scrape(consortium.url("cloud-b"))  # no Authorization, no X-Operator-Key
    assert "xcentre_credit_owed" not in samples, samples.get("xcentre_credit_owed")


def test_finding_a_refused_order_resubmitted_reports_other_users_grants(consortium, monkeypatch):
    """FINDING (low, information leak between users of one home).

    Attack: alice of hpc-a keeps one order whose grant is past cloud-b's line for hpc-a. A refused
    submission writes nothing, so she can post it again and again: each 402 names what hpc-a owes
    cloud-b for jobs not finished, to the unit. Posting it before and after bob (or an anonymous
    member of her project) submits shows bob's grant exactly, i.e. that someone of her home just
    started a job at cloud-b, when, and how big.

    Safe behaviour: the 402 says the grant does not fit (and, at most, how much room is left for
    a grant), not the figures of other users' jobs in flight.
    """
    node = consortium.centres["cloud-b"].node
    c30 = cost(consortium, HOG, "cloud-b")
    free = node.parts.index.collateral(node.parts.index.member("hpc-a").account).free
    share = Fraction(node.credit.owed("hpc-a").total + 2 * c30, free)  # room for two of bob's, not one of alice's
    monkeypatch.setattr(node, "credit", CreditDesk("cloud-b", node.parts.index, node.parts.store, share))
    alice = consortium.login("alice", "hpc-a", at="cloud-b")
    other = consortium.login("alice", "hpc-a", at="cloud-b")  # another user's session (see FINDING 1 on bob)
    long = dict(QUICK, walltime=120)
    too_big = granted(consortium, long, "cloud-b", cost(consortium, long, "cloud-b"))
    first = post(consortium, long, "cloud-b", too_big, alice)
    assert first.status_code == 402, first.text
    bobs = post(consortium, HOG, "cloud-b", granted(consortium, HOG, "cloud-b", 4_242_424), other)
    assert bobs.status_code == 202, bobs.text
    try:
        again = post(consortium, long, "cloud-b", too_big, alice)
        assert again.status_code == 402, again.text
        assert again.json() == first.json()  # the same answer, whatever others of her home run meanwhile
        assert str(c30) not in again.text and "4242424" not in again.text
    finally:
        wait_done(consortium, "cloud-b", bobs.json()["id"])


# ----------------------------------------------------------------------------- FINDING 4 (low, latent)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def _job(store: Store, n: int, amount: int, line: CreditLine | None = None) -> str:
    made, _ = store.create_job("u@hpc-a", "hpc-a", REQ | {"n": n}, "cloud-b", payment=pay(n, amount), credit_line=line)
    return made.id


def test_finding_a_job_put_back_in_the_queue_is_released_twice(store: Store) -> None:
    """FINDING (low, latent: no caller in the gateway today, but update_job is the store's public way
    to change a status, and the clamp at 0 in credit.add hides the error).

    Attack/path: a finished job put back to queued (update_job(status="queued"), an operator's
    re-run) is not added back to what its home owes, though it runs again on its grant; its second
    completion takes its grant off a second time, eating the in-flight amount of other jobs of the
    home (clamped at 0, so nothing looks wrong), and the home gets credit it should not.

    Safe behaviour: a job that re-enters queued/running is owed for again (or update_job refuses
    to move a finished job back); in flight always equals the grants of the jobs queued or running.
    """
    first, _second = _job(store, 1, 700), _job(store, 2, 500)
    store.complete_job(first, "failed", None, "", "", detail="could not start")
    store.update_job(first, status="queued")  # runs again, on the same grant
    assert store.owed(HOME, 1).in_flight == 1200
    store.complete_job(first, "failed", None, "", "", detail="could not start, again")
    assert store.owed(HOME, 1).in_flight == 500  # `second` is still in flight


# ----------------------------------------------------------------------------- REGRESSIONS (attack failed)


def test_regression_a_record_never_replaces_a_grant_with_more_than_it(store: Store) -> None:
    """REGRESSION (attack failed): a job's grant huge, its record priced 0, then another job: what the
    home owes is the prices, never a negative or a leftover; the line counts again at once."""
    big = _job(store, 1, 10**30)
    with pytest.raises(CreditExceeded):
        _job(store, 2, 1, line=CreditLine("hpc-a", 10**30, 1))
    store.update_job(big, status="running")
    store.complete_job(big, "succeeded", 0, "", "", record=signer(big, price=0))
    assert store.owed(HOME, 1) == Owed(0, 0)
    _job(store, 3, 10**30, line=CreditLine("hpc-a", 10**30, 1))


def test_regression_a_retry_after_a_refusal_stores_nothing_and_a_replayed_order_is_not_counted_twice(
    store: Store,
) -> None:
    """REGRESSION (attack failed): the same order retried with the same key is the first job, owed
    once; a refused grant leaves no trace in what is owed."""
    line = CreditLine("hpc-a", 1000, 1)
    made, created = store.create_job(
        "u@hpc-a", "hpc-a", REQ, "cloud-b", payment=pay(1, 600), credit_line=line, idempotency_key="k"
    )
    again, created_again = store.create_job(
        "u@hpc-a", "hpc-a", REQ, "cloud-b", payment=pay(1, 600), credit_line=line, idempotency_key="k"
    )
    assert created and not created_again and again.id == made.id
    with pytest.raises(CreditExceeded):
        _job(store, 2, 401, line=line)
    assert store.owed(HOME, 1) == Owed(600, 0)


def test_regression_a_pending_withdrawal_or_locked_bonds_give_no_credit(store: Store) -> None:
    """REGRESSION (attack failed): a home that asked to withdraw, or whose collateral is locked in
    bonds, gets credit only on what is left free (Settlement.freeOf)."""
    index = Index(
        known={"hpc-a": Member("0xA")},
        collateral_of={"0xA": CollateralInfo("0xA", balance=1000, locked=300, pending=600, unlock_epoch=9)},
    )
    desk = CreditDesk("cloud-b", index, store, Fraction(1))
    assert desk.line("hpc-a").limit == 100
    index.collateral_of["0xA"] = CollateralInfo("0xA", balance=1000, locked=300, pending=900, unlock_epoch=9)
    assert desk.line("hpc-a").limit == 0


# ----------------------------------------------------------------------------- FINDING 5 (low)


def test_finding_a_home_that_fell_short_at_settlement_starts_afresh(tmp_path: Path) -> None:
    """FINDING (low-medium, epochs counted as paid while not: a defaulting home gets a clean slate).

    Attack: hpc-a (hostile) over-grants across centres (see the default share above) so that at
    the settlement of epoch 1 its collateral does not cover its debts: the chain records a
    `Shortfall` and cloud-b gets only part of what its on-time claim on hpc-a was. The desk counts
    epoch 1 as paid all the same (settled, anchor on time), so what hpc-a left unpaid vanishes from
    what it owes cloud-b; hpc-a deposits a little more and gets a full line again, as if it had
    paid, and can repeat.

    Safe behaviour: a settled epoch whose settlement recorded a shortfall of the home (index
    .shortfalls, and the late settlements' own) is not paid for that home: what it left unpaid
    stays owed (or the home gets no credit from this centre while it has an unpaid shortfall).
    """
    from ledger.ids import centre_id
    from tests.test_credit_desk import Anchor
    from tests.test_store import _h

    class DefaultedIndex(Index):
        def shortfalls_by_debtor(self) -> dict[bytes, int]:
            return {centre_id("hpc-a"): 30}  # epoch 1's settlement: hpc-a paid all but 30

    books = Store(tmp_path / "books.sqlite")
    try:
        made, _ = books.create_job("alice@hpc-a", "hpc-a", REQ, "cloud-b", payment=pay(1, 100))
        books.complete_job(made.id, "succeeded", 0, "", "", record=signer(made.id, price=30))
        books.close_open_epoch(lambda epoch, rows: {rows[0].home_centre: (_h("root", epoch), 1, 30)})
        index = DefaultedIndex(settled={1}, anchors={1: Anchor()})
        desk = CreditDesk("cloud-b", index, books)
        assert desk.line("hpc-a").limit <= 900 - 30, (
            f"hpc-a left 30 unpaid at epoch 1's settlement, yet owes {desk.owed('hpc-a')} with a line of "
            f"{desk.line('hpc-a').limit}"
        )
    finally:
        books.close()
