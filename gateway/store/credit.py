"""What each home owes this serving centre, kept as jobs are accepted, billed and finished.

A serving centre runs a home's users' jobs on that home's grant and is paid
when the epoch of their records settles, from the home's collateral on chain.
Until then it gives the home credit. The `credit` table keeps, per home, what
its jobs accepted and not finished may bill at most (epoch 0: each job's grant,
or its price at its limits when less, kept in `jobs.credit`) and the prices of
its records per epoch; `owed` adds them up from an epoch on, and `check`
refuses a new job, in the transaction that stores it, when it would take what
the home owes past the line the node allows it (gateway.node.credit). Records
that lapse at a close are taken off their epoch: nobody is billed for them.

Amounts are decimal text: a grant is a uint256, and SQLite's integers stop at
64 bits. Every change runs in its caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from gateway.store import checks
from gateway.store.errors import StoreError
from ledger.ids import centre_id

__all__ = ["IN_FLIGHT", "CreditExceeded", "CreditLine", "Owed", "add", "check", "home_key", "homes", "owed"]

IN_FLIGHT = 0
"""The `credit` row of what a home's jobs accepted and not finished may bill (epochs are numbered from 1)."""


@dataclass(frozen=True)
class CreditLine:
    """How much a home may owe this centre now, and from which of this centre's epochs it is not paid yet."""

    home: str
    """The home's name, as jobs name it."""
    limit: int
    unpaid_from: int
    """The oldest epoch of this centre whose claims are not paid yet: what earlier epochs billed is settled."""
    paid: frozenset[int] = frozenset()
    """Later epochs paid already (an epoch may wait for a late payment while the next ones settle)."""

    def __post_init__(self) -> None:
        checks.text("home", self.home, max_len=512)
        checks.natural("limit", self.limit)
        checks.positive_int("unpaid_from", self.unpaid_from)
        if not isinstance(self.paid, frozenset) or not all(isinstance(e, int) for e in self.paid):
            raise StoreError("paid must be a frozenset of epoch numbers")


@dataclass(frozen=True)
class Owed:
    """What a home owes this centre: what its jobs not finished may bill, and its records in epochs not paid yet."""

    in_flight: int
    billed: int

    @property
    def total(self) -> int:
        return self.in_flight + self.billed


class CreditExceeded(StoreError):
    """The job would take what its home owes this centre past the home's credit line."""

    def __init__(self, line: CreditLine, owed: Owed, amount: int) -> None:
        self.line, self.owed, self.amount = line, owed, amount
        super().__init__(
            f"{line.home} may owe this centre {line.limit} now, and owes {owed.total} (jobs not finished "
            f"{owed.in_flight}, billed and not settled {owed.billed}): a job that may bill {amount} would take it "
            "past that"
        )


def home_key(home: str) -> str:
    """A home's row key: its centre id in hex, as usage records name homes."""
    return centre_id(home).hex()


def add(db: sqlite3.Connection, home_id: str, epoch: int, amount: int) -> None:
    """Add `amount` (negative: take it off) to a home's row of `epoch` (IN_FLIGHT for accepted jobs); never
    below 0."""
    if not amount:
        return
    row = db.execute("SELECT amount FROM credit WHERE home = ? AND epoch = ?", (home_id, epoch)).fetchone()
    total = max(0, (int(row[0]) if row else 0) + amount)
    db.execute(
        "INSERT INTO credit (home, epoch, amount) VALUES (?, ?, ?)"
        " ON CONFLICT (home, epoch) DO UPDATE SET amount = excluded.amount",
        (home_id, epoch, str(total)),
    )


def owed(db: sqlite3.Connection, home_id: str, unpaid_from: int, paid: frozenset[int] = frozenset()) -> Owed:
    """What the home owes: its jobs in flight, and its records from epoch `unpaid_from` on, but in epochs `paid`."""
    rows = db.execute(
        "SELECT epoch, amount FROM credit WHERE home = ? AND (epoch = ? OR epoch >= ?)",
        (home_id, IN_FLIGHT, unpaid_from),
    ).fetchall()
    in_flight = sum(int(amount) for epoch, amount in rows if epoch == IN_FLIGHT)
    return Owed(in_flight, sum(int(amount) for epoch, amount in rows if epoch != IN_FLIGHT and epoch not in paid))


def homes(db: sqlite3.Connection) -> list[str]:
    """The ids of the homes with a row not zero: every home that may owe this centre something."""
    return [r[0] for r in db.execute("SELECT DISTINCT home FROM credit WHERE amount != '0' ORDER BY home")]


def check(db: sqlite3.Connection, line: CreditLine, amount: int) -> None:
    """Raise CreditExceeded if a job that may bill `amount` would take what the line's home owes past its limit."""
    now = owed(db, home_key(line.home), line.unpaid_from, line.paid)
    if now.total + amount > line.limit:
        raise CreditExceeded(line, now, amount)


def grant_amount(grant_json: str | None) -> int:
    """The amount of a job's grant as stored (0 for a job accepted without one)."""
    return 0 if grant_json is None else int(json.loads(grant_json)["amount"])


def record_price(record_json: str) -> int:
    """The price of a usage record as stored."""
    return int(json.loads(record_json)["price"])


def backfill(db: sqlite3.Connection) -> None:
    """Build the table from the jobs and records of a file written before it existed: a job in flight is owed
    for its whole grant."""
    for job_id, home, grant in db.execute(
        "SELECT id, home, pay_grant FROM jobs WHERE status IN ('queued', 'running') AND pay_grant IS NOT NULL"
    ).fetchall():
        amount = grant_amount(grant)
        db.execute("UPDATE jobs SET credit = ? WHERE id = ?", (str(amount), job_id))
        add(db, home_key(home), IN_FLIGHT, amount)
    for home_id, epoch, record in db.execute(
        "SELECT home_centre, epoch, record FROM usage_records WHERE lapsed_at IS NULL"
    ).fetchall():
        add(db, home_id, epoch, record_price(record))
