"""Where a job may run: the member centres ranked by what the job would cost at most.

Pure: the serving centre still authorises the job itself, so ranking only
decides the order in which centres are asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gateway.pricing import max_price
from gateway.schemas import JobRequest


class Priced(Protocol):
    name: str
    prices: object


def rank_centres(members: Iterable[Priced], request: JobRequest, here: str) -> list[str]:
    """Centres to try for `request`: the one asked for, or all by maximum price (here first on ties)."""
    members = list(members)
    names = {m.name for m in members}
    if request.centre != "auto":
        if request.centre not in names:
            raise LookupError(f"unknown centre {request.centre!r}; members are {', '.join(sorted(names))}")
        return [request.centre]
    res = request.resources

    def cost(m: Priced) -> tuple[int, int, str]:
        return (max_price(request.walltime, res.cores, res.memory_mib, res.gpus, m.prices), m.name != here, m.name)

    return [m.name for m in sorted(members, key=cost)]
