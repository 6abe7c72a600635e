"""The serving centre's credit line per home, from its chain index (a double of its few queries) and its store.

The real index and chain are in tests/test_credit_limit.py; here each answer the index can give
is set by hand: free collateral, a pending withdrawal, epochs settled or not, anchors on time or late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest

from gateway.node.credit import FRESH_FOR, CreditDesk
from gateway.store import Store
from gateway.store.credit import Owed
from ledger.ids import centre_id
from ledger.index.rows import CollateralInfo
from tests.test_store import REQ, _h, signer
from tests.test_store_credit import pay

ME = centre_id("cloud-b")


@dataclass
class Member:
    account: str
    active: bool = True
    name: str = "hpc-a"


@dataclass
class Anchor:
    late: bool = False
    late_settled: bool = False


@dataclass
class Index:
    """The index as the desk reads it."""

    known: dict[str, Member] = field(
        default_factory=lambda: {"hpc-a": Member("0xA"), "cloud-b": Member("0xB", name="cloud-b")}
    )
    collateral_of: dict[str, CollateralInfo] = field(
        default_factory=lambda: {"0xA": CollateralInfo("0xA", balance=1000, locked=100, pending=0, unlock_epoch=0)}
    )
    settled: set[int] = field(default_factory=set)
    anchors: dict[int, Anchor] = field(default_factory=dict)
    unpaid: dict[bytes, int] = field(default_factory=dict)

    def member(self, name_or_id: str | bytes) -> Member | None:
        if isinstance(name_or_id, bytes):
            return next((m for name, m in self.known.items() if centre_id(name) == name_or_id), None)
        return self.known.get(name_or_id)

    def members(self) -> list[Member]:
        return [m for m in self.known.values() if m.active]

    def shortfalls_by_debtor(self) -> dict[bytes, int]:
        return self.unpaid

    def collateral(self, account: str) -> CollateralInfo:
        return self.collateral_of[account]

    def settlement(self, epoch: int) -> object | None:
        return object() if epoch in self.settled else None

    def anchor(self, centre: bytes, epoch: int) -> Anchor | None:
        assert centre == ME
        return self.anchors.get(epoch)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.sqlite")
    for _ in range(3):  # epochs 1-3 closed, 4 open
        s.close_open_epoch(lambda epoch, rows: {})
    yield s
    s.close()


def test_the_line_is_the_free_collateral_times_the_share(store: Store) -> None:
    index = Index()
    assert CreditDesk("cloud-b", index, store).line("hpc-a").limit == 900  # bonds locked are not free
    assert CreditDesk("cloud-b", index, store, Fraction(1, 2)).line("hpc-a").limit == 450
    index.collateral_of["0xA"] = CollateralInfo("0xA", balance=1000, locked=100, pending=600, unlock_epoch=9)
    assert CreditDesk("cloud-b", index, store).line("hpc-a").limit == 300  # what it asked to withdraw is not lent on


def test_a_home_that_is_no_active_member_gets_no_credit_and_the_centre_itself_needs_none(store: Store) -> None:
    index = Index(known={"hpc-a": Member("0xA", active=False)})
    desk = CreditDesk("cloud-b", index, store)
    assert desk.line("hpc-a").limit == 0 and desk.line("nowhere").limit == 0
    assert desk.line("cloud-b") is None


@pytest.mark.parametrize("share", [Fraction(0), Fraction(-1, 2), Fraction(3, 2)])
def test_a_share_outside_0_to_1_is_refused(store: Store, share: Fraction) -> None:
    with pytest.raises(ValueError, match="a credit share is above 0 and at most 1"):
        CreditDesk("cloud-b", Index(), store, share)


def test_an_epoch_is_paid_once_settled_with_this_centres_anchor_on_time_or_paid_late(store: Store) -> None:
    index, clock = Index(), Clock()
    desk = CreditDesk("cloud-b", index, store, clock=clock)
    assert desk.unpaid_from() == 1
    index.settled = {1, 2, 3}
    index.anchors = {1: Anchor(), 2: Anchor(late=True), 3: Anchor()}
    clock.now += FRESH_FOR
    assert desk.unpaid_from() == 2  # epoch 2's anchor was late: settleLate has not paid it yet
    index.anchors[2] = Anchor(late=True, late_settled=True)
    assert desk.unpaid_from() == 2  # looked at no sooner than FRESH_FOR after the last look
    clock.now += FRESH_FOR
    assert desk.unpaid_from() == 4  # the open epoch is never paid
    assert desk.line("hpc-a").unpaid_from == 4


def test_an_epoch_settled_without_this_centres_anchor_is_not_paid(store: Store) -> None:
    index = Index(settled={1}, anchors={})
    assert CreditDesk("cloud-b", index, store).unpaid_from() == 1


def test_what_a_home_owes_is_counted_from_the_first_unpaid_epoch(tmp_path: Path) -> None:
    store = Store(tmp_path / "books.sqlite")
    for n, price in enumerate((30, 20), start=1):  # a record of hpc-a in epoch 1, another in epoch 2
        made, _ = store.create_job("alice@hpc-a", "hpc-a", REQ | {"n": n}, "cloud-b", payment=pay(n, 100))
        store.complete_job(made.id, "succeeded", 0, "", "", record=signer(made.id, price=price))
        store.close_open_epoch(lambda epoch, rows: {rows[0].home_centre: (_h("root", epoch), 1, 0)})
    try:
        index = Index(settled={1}, anchors={1: Anchor()})
        assert CreditDesk("cloud-b", index, store).owed("hpc-a") == Owed(0, 20)
        assert CreditDesk("cloud-b", Index(), store).owed("hpc-a") == Owed(0, 50)
    finally:
        store.close()


def test_by_default_every_other_member_may_lend_on_an_equal_part_of_the_collateral(store: Store) -> None:
    index, clock = Index(), Clock()
    desk = CreditDesk("cloud-b", index, store, clock=clock)
    assert desk.share() == 1 and desk.line("hpc-a").limit == 900  # two members: cloud-b alone serves hpc-a
    index.known |= {"ai-c": Member("0xC", name="ai-c"), "edge-d": Member("0xD", name="edge-d")}
    clock.now += FRESH_FOR
    assert desk.share() == Fraction(1, 3) and desk.line("hpc-a").limit == 300  # 900 among three serving centres
    index.known["edge-d"] = Member("0xD", active=False, name="edge-d")  # removed: it serves nobody
    clock.now += FRESH_FOR
    assert desk.share() == Fraction(1, 2) and desk.line("hpc-a").limit == 450
    assert CreditDesk("cloud-b", index, store, Fraction(1)).line("hpc-a").limit == 900  # as configured


def test_what_a_home_left_unpaid_at_settlements_is_never_lent_on_again(store: Store) -> None:
    index, clock = Index(), Clock()
    desk = CreditDesk("cloud-b", index, store, clock=clock)
    index.unpaid = {centre_id("hpc-a"): 250, centre_id("ai-c"): 999}
    clock.now += FRESH_FOR
    assert desk.line("hpc-a").limit == 900 - 250
    index.unpaid = {centre_id("hpc-a"): 5_000}
    clock.now += FRESH_FOR
    assert desk.line("hpc-a").limit == 0
    index.collateral_of["0xA"] = CollateralInfo("0xA", balance=10_000, locked=0, pending=0, unlock_epoch=0)
    assert desk.line("hpc-a").limit == 5_000  # a deposit buys its credit back, less what it owes from before
    (view,) = desk.lines()
    assert (view.home, view.limit, view.free_collateral, view.defaulted) == ("hpc-a", 5_000, 10_000, 5_000)
