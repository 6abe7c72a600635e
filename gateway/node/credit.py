"""The serving centre's credit line per home: what a home may owe it before it takes no more of its users' jobs.

A grant is the home's promise; what pays it is the home's collateral in
Settlement, when the epoch of the job's record settles. So a serving centre
takes a home's job only while what that home owes it (gateway.store.credit:
what its jobs not finished may bill, its records of epochs not paid yet) plus
what the new job may bill stays within the line: the home's free collateral on
chain (its balance less bonds and any pending withdrawal: a home that asks to
withdraw gets no credit on what it is taking away) times the share, less what
the home ever left unpaid at a settlement (`Shortfall`: the chain carries no
debt forward, so a home that defaulted gets that much less credit for good,
unless it deposits more). The share is `credit_share`, by default
1 / (active members - 1): every other member may serve the home's users at
once, and together they are owed no more than the collateral pays. The home's
own users' jobs are not on credit (the home pays them from its holds).

An epoch of this centre is paid once it is settled on chain and this centre's
anchor of it was on time or, late, was paid by `settleLate`; an epoch may wait
for its late payment while later ones settle, so each is looked at on its own
(from the oldest not paid on: those before it are paid for good). What the
chain says of epochs, members and shortfalls is read again at most once a
`FRESH_FOR` seconds: settlements come minutes apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from gateway.store import Store
from gateway.store.credit import CreditLine, Owed, home_key
from ledger.ids import centre_id

__all__ = ["FRESH_FOR", "CreditDesk", "HomeCredit"]

FRESH_FOR = 1.0
"""Seconds the paid epochs, the members' count and the shortfalls read from the index are used for."""


@dataclass(frozen=True)
class HomeCredit:
    """One home's line here and what it owes, for the operator."""

    home: str
    limit: int
    free_collateral: int
    share: Fraction
    defaulted: int
    """What the home left unpaid at settlements: taken off its line."""
    owed: Owed
    unpaid_from: int


@dataclass(frozen=True)
class _Chain:
    """What the lines are computed from, as the index showed it at `at`."""

    at: float
    paid_through: int
    paid: frozenset[int]
    """Epochs after `paid_through` paid already."""
    members: int
    defaulted: dict[bytes, int]


class CreditDesk:
    """This centre's credit lines, read from the chain index and its own store."""

    def __init__(
        self,
        name: str,
        index: Any,
        store: Store,
        share: Fraction | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`share`: the part of a home's free collateral it may owe here; None: 1 / (active members - 1)."""
        if share is not None and not 0 < share <= 1:
            raise ValueError(f"a credit share is above 0 and at most 1; got {share}")
        self.name = name
        self._share = share
        self._index = index
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._chain = _Chain(float("-inf"), 0, frozenset(), 0, {})

    def line(self, home: str) -> CreditLine | None:
        """The line of `home`, None for this centre's own users; a home that is no active member has none
        (limit 0: its grants are refused before this, as not its member account's)."""
        chain = self._fresh()
        credit = self._credit(home, chain)
        return None if credit is None else CreditLine(home, credit.limit, credit.unpaid_from, chain.paid)

    def lines(self) -> list[HomeCredit]:
        """Every other active member's line and what it owes now, and every former member that still owes
        (limit 0): GET /v1/credit, for the operator."""
        names = [m.name for m in self._index.members()]
        for home_id in self._store.owing_homes():
            member = self._index.member(bytes.fromhex(home_id))
            if member is not None and member.name not in names:
                names.append(member.name)
        chain = self._fresh()
        credits = [c for name in names if (c := self._credit(name, chain, owed=True)) is not None]
        return [c for c in credits if c.owed.total or self._active(c.home)]

    def owed(self, home: str) -> Owed:
        """What `home` owes this centre now."""
        chain = self._fresh()
        return self._store.owed(home_key(home), chain.paid_through + 1, chain.paid)

    def unpaid_from(self) -> int:
        """The oldest epoch of this centre not paid yet."""
        return self._fresh().paid_through + 1

    def share(self, chain: _Chain | None = None) -> Fraction:
        """The part of a home's free collateral it may owe here now."""
        return self._share or Fraction(1, max(1, (chain or self._fresh()).members - 1))

    def _credit(self, home: str, chain: _Chain, *, owed: bool = False) -> HomeCredit | None:
        if home == self.name:
            return None
        member = self._index.member(home)
        free = 0 if member is None or not member.active else int(self._index.collateral(member.account).free)
        share = self.share(chain)
        defaulted = chain.defaulted.get(centre_id(home), 0) if member is not None else 0
        limit = max(0, int(free * share) - defaulted)
        unpaid_from = chain.paid_through + 1
        now = self._store.owed(home_key(home), unpaid_from, chain.paid) if owed else Owed(0, 0)
        return HomeCredit(home, limit, free, share, defaulted, now, unpaid_from)

    def _active(self, home: str) -> bool:
        member = self._index.member(home)
        return member is not None and member.active

    def _fresh(self) -> _Chain:
        with self._lock:
            chain = self._chain
            now = self._clock()
            if now - chain.at < FRESH_FOR:
                return chain
            # a store opened at the chain's epoch (epochs on its clock) has nothing owed before its first
            through, paid = max(chain.paid_through, self._store.first_epoch() - 1), set(chain.paid)
            for epoch in self._store.closed_epochs(since=through + 1):
                if epoch not in paid and self._paid(epoch):
                    paid.add(epoch)  # paid for good: never looked at again
            while through + 1 in paid:
                through += 1
                paid.discard(through)
            self._chain = _Chain(
                now, through, frozenset(paid), len(self._index.members()), self._index.shortfalls_by_debtor()
            )
            return self._chain

    def _paid(self, epoch: int) -> bool:
        if self._index.settlement(epoch) is None:
            return False
        anchor = self._index.anchor(centre_id(self.name), epoch)
        return anchor is not None and (not anchor.late or anchor.late_settled)
