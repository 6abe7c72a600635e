"""Where a job may run: the member centres ranked by free capacity, then by what the job would cost at most.

Pure: ranking only decides the order in which the client tries centres; each
centre still authorises the job itself when the client signs on and submits there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.jobs.pricing import max_price
from ledger.pricing import Prices


class Priced(Protocol):
    """A member centre as placement sees it (MemberInfo)."""

    @property
    def name(self) -> str: ...
    @property
    def gateway_url(self) -> str: ...
    @property
    def prices(self) -> Prices | None:
        """None while no rates of the centre are in force."""

    @property
    def rates_version(self) -> int:
        """The number of the version in force (0 with prices None)."""


class Resources(Protocol):
    @property
    def cores(self) -> int: ...
    @property
    def memory_mib(self) -> int: ...
    @property
    def gpus(self) -> int: ...


class Sized(Protocol):
    """What a placement request says of the job (JobRequest and PlacementRequest both do)."""

    @property
    def walltime(self) -> int: ...
    @property
    def resources(self) -> Resources: ...


@dataclass(frozen=True)
class Candidate:
    """One centre a client may try, in ranking order."""

    centre: str
    gateway_url: str
    max_price: int
    free_cpus: int | None
    """Free CPUs the centre reported just now, or None when it did not answer."""
    rates_version: int
    """The centre's rates version in force: what an order for it names (and max_price is at)."""

    @property
    def has_room(self) -> bool:
        return self.free_cpus is not None and self.free_cpus > 0


def rank_centres(
    members: Iterable[Priced], request: Sized, here: str, free_cpus: Mapping[str, int | None]
) -> list[Candidate]:
    """Every member that has rates in force, best first: those with room for the job's cores (cheapest
    first), then those short of room, then those that did not say; `here` first on ties, then by name.

    A member without rates in force cannot price a job, so it would refuse it: it is not offered.
    """
    res = request.resources

    def candidate(m: Priced, prices: Prices) -> Candidate:
        cost = max_price(request.walltime, res.cores, res.memory_mib, res.gpus, prices)
        return Candidate(m.name, m.gateway_url, cost, free_cpus.get(m.name), m.rates_version)

    def rank(c: Candidate) -> tuple[int, int, bool, str]:
        room = 2 if c.free_cpus is None else (0 if c.free_cpus >= res.cores else 1)
        return (room, c.max_price, c.centre != here, c.centre)

    return sorted((candidate(m, m.prices) for m in members if m.prices is not None), key=rank)
