"""How the demo prints: credit amounts with their unit, net positions in words, prose and tables that fit.

Everything the demo prints goes through here so that it reads well in an
80-column terminal: prose wraps under a hanging indent, table cells fold
instead of being cut, and amounts carry their unit. The chain counts credit in
micro-credits; the demo shows XCC, the consortium's credit.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

UNIT = "XCC"
MICRO = 1_000_000
"""Micro-credits per XCC: the chain's amounts (prices, grants, claims, collateral) are micro-credits."""

LEGEND = (
    f"Amounts are in {UNIT}, the consortium's credit (the chain counts micro-credits: {MICRO:,} to "
    f"an {UNIT}). Prices are per CPU-second, GPU-second or GiB-hour of memory."
)
NET_LEGEND = (
    "net = what the others owe a centre for the jobs it ran, less what it owes them for its users' "
    'jobs elsewhere. A centre that "is owed" (+) is paid that from the collateral of those that "owe" (-).'
)
CLOSING = (
    "Try next: `xcentre --help` lists the commands; `xcentre consortium up` starts a consortium like "
    'this one as separate processes (README, "Setting a consortium up"); the README\'s "Running a centre" '
    'and "Threat model" say how to run one centre and who can cheat whom.'
)


def amount(micro: int, *, places: int | None = None, signed: bool = False) -> str:
    """`micro` micro-credits in XCC, without the unit: exact, thousands separated, trailing zeros dropped
    unless `places` fixes the decimals (to align a column)."""
    sign = "-" if micro < 0 else ("+" if signed and micro > 0 else "")
    whole, fraction = divmod(abs(micro), MICRO)
    digits = f"{fraction:06d}"
    digits = digits.rstrip("0") if places is None else digits[:places].ljust(places, "0")
    if places is not None and int(f"{fraction:06d}"[places:] or 0):
        raise ValueError(f"{micro} micro-credits need more than {places} decimals")
    return f"{sign}{whole:,}" + (f".{digits}" if digits else "")


def xcc(micro: int, *, signed: bool = False) -> str:
    """`micro` micro-credits as XCC, with the unit."""
    return f"{amount(micro, signed=signed)} {UNIT}"


def column(values: Sequence[int], *, signed: bool = False) -> list[str]:
    """Amounts of one table column, with as many decimals as the most precise needs, so that they align."""
    needed = max((len(amount(v).partition(".")[2]) for v in values), default=0)
    return [amount(v, places=needed, signed=signed) for v in values]


def net(micro: int, shown: str | None = None) -> str:
    """A net position with its sign in words: + is owed, - owes."""
    figure = shown if shown is not None else amount(micro, signed=True)
    if micro > 0:
        return f"{figure} is owed"
    if micro < 0:
        return f"{figure} owes"
    return f"{figure} (square)"


def table(*headers: str, title: str, right: Sequence[str] = ()) -> Table:
    """A table whose cells wrap and fold long words rather than cut them; `right`: the columns of figures."""
    grid = Table(title=title)
    for header in headers:
        grid.add_column(header, overflow="fold", justify="right" if header in right else "left")
    return grid


def say(console: Console, text: str | Text, mark: str = "", indent: int = 0) -> None:
    """One line of prose, wrapped under a hanging indent: after `mark` (✓, ✗, !) or `indent` spaces."""
    line = Table.grid(padding=(0, 1, 0, 0))
    if indent:
        line.add_column(width=indent - 1)
    if mark:
        line.add_column(no_wrap=True)
    line.add_column(overflow="fold")
    line.add_row(*([""] if indent else []), *([mark] if mark else []), text)
    console.print(line)
