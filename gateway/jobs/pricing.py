"""What a job may cost: its price at its limits, and metered usage capped to them.

The price of metered usage is ledger.pricing's (the formula auditors recompute);
this module adds the job's limits. max_price() is the most a job within its
limits can cost, what placement ranks centres by; price() of the metered usage,
capped to the job's limits, never exceeds it. No funds are held before a job
runs: the home is billed afterwards, through the epoch's records.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from ledger.pricing import MILLIS_PER_SECOND, Metered, Meters, Prices, PricingError, non_negative, price

__all__ = ["PricingError", "cap_to_limits", "max_price", "price"]


def _limit_meters(walltime_s: int, cores: int, memory_mib: int, gpus: int) -> Meters:
    """The largest meters a job within its limits may bill."""
    walltime_s = non_negative("walltime_s", walltime_s)
    cores = non_negative("cores", cores)
    memory_mib = non_negative("memory_mib", memory_mib)
    gpus = non_negative("gpus", gpus)
    wall_millis = walltime_s * MILLIS_PER_SECOND
    return Meters(
        cpu_millis=cores * wall_millis,
        gpu_millis=gpus * wall_millis,
        max_rss_kib=memory_mib * 1024,
        wall_millis=wall_millis,
    )


def max_price(walltime_s: int, cores: int, memory_mib: int, gpus: int, prices: Prices) -> int:
    """The most a job can cost at its limits (what placement compares centres by).

    price() is monotone in every meter, so its value at the limits
    (cpu = cores x walltime, gpu = gpus x walltime, memory = memory_mib for
    the whole walltime) bounds the price of any run within them.
    """
    return price(_limit_meters(walltime_s, cores, memory_mib, gpus), prices)


E = TypeVar("E", bound=Metered)


def cap_to_limits(execution: E, walltime_s: int, cores: int, memory_mib: int, gpus: int) -> E:
    """A copy of execution (a dataclass) with each meter capped at the job's limits.

    The executor stops a job only after its walltime plus a grace period and
    does not confine cores or memory, so raw meters can exceed the limits;
    the user is billed at most for what they were granted, which keeps
    price(cap_to_limits(...)) <= max_price(...).
    """
    if not dataclasses.is_dataclass(execution) or isinstance(execution, type):
        raise PricingError("cap_to_limits needs a dataclass instance such as Execution")
    limit = _limit_meters(walltime_s, cores, memory_mib, gpus)
    return dataclasses.replace(
        execution,
        cpu_millis=min(non_negative("cpu_millis", execution.cpu_millis), limit.cpu_millis),
        gpu_millis=min(non_negative("gpu_millis", execution.gpu_millis), limit.gpu_millis),
        max_rss_kib=min(non_negative("max_rss_kib", execution.max_rss_kib), limit.max_rss_kib),
        wall_millis=min(non_negative("wall_millis", execution.wall_millis), limit.wall_millis),
    )
