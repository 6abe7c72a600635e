"""Where a job may run: the member centres ranked by free capacity, then by what the job would cost at most.

Pure: ranking only decides the order in which the client tries centres; each
centre still authorises the job itself when the client signs on and submits there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.jobs.pricing import max_price


class Priced(Protocol):
    name: str
    gateway_url: str
    prices: object


class Sized(Protocol):
    """What a placement request says of the job (JobRequest and PlacementRequest both do)."""

    walltime: int

    @property
    def resources(self) -> object: ...


@dataclass(frozen=True)
class Candidate:
    """One centre a client may try, in ranking order."""

    centre: str
    gateway_url: str
    max_price: int
    free_cpus: int | None
    """Free CPUs the centre reported just now, or None when it did not answer."""

    @property
    def has_room(self) -> bool:
        return self.free_cpus is not None and self.free_cpus > 0


def rank_centres(
    members: Iterable[Priced], request: Sized, here: str, free_cpus: Mapping[str, int | None]
) -> list[Candidate]:
    """Every member, best first: those with room for the job's cores (cheapest first), then those
    short of room, then those that did not say; `here` first on ties, then by name."""
    res = request.resources

    def candidate(m: Priced) -> Candidate:
        cost = max_price(request.walltime, res.cores, res.memory_mib, res.gpus, m.prices)  # type: ignore[attr-defined]
        return Candidate(m.name, m.gateway_url, cost, free_cpus.get(m.name))

    def rank(c: Candidate) -> tuple[int, int, bool, str]:
        room = 2 if c.free_cpus is None else (0 if c.free_cpus >= res.cores else 1)  # type: ignore[attr-defined]
        return (room, c.max_price, c.centre != here, c.centre)

    return sorted((candidate(m) for m in members), key=rank)
