"""The serving centre's credit line per home: what a home may owe it before it takes no more of its grants.

A grant is the home's promise; what pays it is the home's collateral in
Settlement, when the epoch of the job's record settles. So a serving centre
takes a home's grant only while what that home owes it (gateway.store.credit:
grants of its jobs not finished, records of epochs not paid yet) plus the
grant stays within the home's free collateral on chain (its balance less
bonds and any pending withdrawal: a home that asks to withdraw gets no more
credit on what it is taking away), times `share`. A share below 1 keeps room
for the other serving centres: with `share = 1 / (members - 1)` even a home
that grants every centre up to the line at once can pay all of them. The
home's own users' jobs are not on credit (the home pays them from its holds).

An epoch of this centre is paid once it is settled on chain and this centre's
anchor of it was on time or, late, was paid by `settleLate`. Its own epochs
settle in order, so the line counts from the oldest one not paid yet; that is
found from the index at most once a `PAID_EVERY` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from gateway.store import Store
from gateway.store.credit import CreditLine, Owed, home_key
from ledger.ids import centre_id

__all__ = ["PAID_EVERY", "CreditDesk"]

PAID_EVERY = 1.0
"""Seconds between looks at the chain index for epochs paid since: settlements come minutes apart."""


class CreditDesk:
    """This centre's credit lines, read from the chain index and its own store."""

    def __init__(
        self,
        name: str,
        index: Any,
        store: Store,
        share: Fraction = Fraction(1),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a credit share is above 0 and at most 1; got {share}")
        self.name = name
        self.share = share
        self._index = index
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._paid_through = 0
        self._looked_at = float("-inf")

    def line(self, home: str) -> CreditLine | None:
        """The line of `home`, None for this centre's own users; a home that is no active member has none
        (limit 0: its grants are refused before this, as not its member account's)."""
        if home == self.name:
            return None
        member = self._index.member(home)
        free = 0 if member is None or not member.active else self._index.collateral(member.account).free
        return CreditLine(home, int(free * self.share), self.unpaid_from())

    def lines(self) -> dict[str, tuple[int, Owed]]:
        """Each other active member's line and what it owes now, for the operator (GET /metrics)."""
        return {
            member.name: (line.limit, self._store.owed(home_key(member.name), line.unpaid_from))
            for member in self._index.members()
            if (line := self.line(member.name)) is not None
        }

    def owed(self, home: str) -> Owed:
        """What `home` owes this centre now."""
        return self._store.owed(home_key(home), self.unpaid_from())

    def unpaid_from(self) -> int:
        """The oldest epoch of this centre not paid yet."""
        with self._lock:
            now = self._clock()
            if now - self._looked_at >= PAID_EVERY:
                self._looked_at = now
                for closure in self._store.closures(since=self._paid_through + 1):
                    if not self._paid(closure.epoch):
                        break
                    self._paid_through = closure.epoch
            return self._paid_through + 1

    def _paid(self, epoch: int) -> bool:
        if self._index.settlement(epoch) is None:
            return False
        anchor = self._index.anchor(centre_id(self.name), epoch)
        return anchor is not None and (not anchor.late or anchor.late_settled)
