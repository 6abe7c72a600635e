"""The serving centre's credit line per home, from its chain index (a double of its few queries) and its store.

The real index and chain are in tests/test_credit_limit.py; here each answer the index can give
is set by hand: free collateral, a pending withdrawal, epochs settled or not, anchors on time or late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest

from gateway.node.credit import PAID_EVERY, CreditDesk
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


@dataclass
class Anchor:
    late: bool = False
    late_settled: bool = False


@dataclass
class Index:
    """The index as the desk reads it."""

    members: dict[str, Member] = field(default_factory=lambda: {"hpc-a": Member("0xA")})
    collateral_of: dict[str, CollateralInfo] = field(
        default_factory=lambda: {"0xA": CollateralInfo("0xA", balance=1000, locked=100, pending=0, unlock_epoch=0)}
    )
    settled: set[int] = field(default_factory=set)
    anchors: dict[int, Anchor] = field(default_factory=dict)

    def member(self, name: str) -> Member | None:
        return self.members.get(name)

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
    index = Index(members={"hpc-a": Member("0xA", active=False)})
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
    clock.now += PAID_EVERY
    assert desk.unpaid_from() == 2  # epoch 2's anchor was late: settleLate has not paid it yet
    index.anchors[2] = Anchor(late=True, late_settled=True)
    assert desk.unpaid_from() == 2  # looked at no sooner than PAID_EVERY after the last look
    clock.now += PAID_EVERY
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
