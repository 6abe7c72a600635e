"""What a job costs: metered usage times the serving centre's on-chain prices.

Pure integer arithmetic, rounding each term up to the smallest money unit, so
every centre and every auditor computes the same price from a usage record.
max_price() is the escrow hold taken before the job starts; price() of the
metered usage, capped to the job's limits, never exceeds it.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, TypeVar

__all__ = [
    "MILLIS_PER_SECOND",
    "KIB_MILLIS_PER_GIB_HOUR",
    "Prices",
    "Metered",
    "PricingError",
    "price",
    "max_price",
    "cap_to_limits",
]

MILLIS_PER_SECOND = 1000
KIB_MILLIS_PER_GIB_HOUR = 1024 * 1024 * 3_600_000
"""KiB x milliseconds in one GiB-hour."""


class Prices(Protocol):
    """A centre's price list (ledger.deploy.Prices has this shape): ints in the smallest money unit."""

    @property
    def per_cpu_second(self) -> int: ...

    @property
    def per_gpu_second(self) -> int: ...

    @property
    def per_gib_hour(self) -> int: ...


class Metered(Protocol):
    """The meters of a run (gateway.executor.Execution, or a usage record's fields)."""

    @property
    def cpu_millis(self) -> int: ...

    @property
    def gpu_millis(self) -> int: ...

    @property
    def max_rss_kib(self) -> int: ...

    @property
    def wall_millis(self) -> int: ...


class PricingError(ValueError):
    """A meter, limit or price is not a non-negative int."""


def _nat(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PricingError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _checked_prices(prices: Prices) -> tuple[int, int, int]:
    try:
        return (
            _nat("per_cpu_second", prices.per_cpu_second),
            _nat("per_gpu_second", prices.per_gpu_second),
            _nat("per_gib_hour", prices.per_gib_hour),
        )
    except AttributeError as exc:
        raise PricingError(f"not a price list: {exc}") from None


def _price(cpu_millis: int, gpu_millis: int, max_rss_kib: int, wall_millis: int, prices: Prices) -> int:
    cpu, gpu, mem = _checked_prices(prices)
    return (
        _ceil_div(cpu_millis * cpu, MILLIS_PER_SECOND)
        + _ceil_div(gpu_millis * gpu, MILLIS_PER_SECOND)
        + _ceil_div(max_rss_kib * wall_millis * mem, KIB_MILLIS_PER_GIB_HOUR)
    )


def price(execution: Metered, prices: Prices) -> int:
    """Price of a run: cpu-seconds, gpu-seconds and peak-memory GiB-hours, each term rounded up.

    Memory is charged as peak RSS held for the whole wall time (what the
    centre had to reserve), not as an integral it cannot meter.
    """
    try:
        meters = (
            _nat("cpu_millis", execution.cpu_millis),
            _nat("gpu_millis", execution.gpu_millis),
            _nat("max_rss_kib", execution.max_rss_kib),
            _nat("wall_millis", execution.wall_millis),
        )
    except AttributeError as exc:
        raise PricingError(f"not a metered execution: {exc}") from None
    return _price(*meters, prices)


def _limit_meters(walltime_s: int, cores: int, memory_mib: int, gpus: int) -> tuple[int, int, int, int]:
    """The largest (cpu_millis, gpu_millis, max_rss_kib, wall_millis) a job within its limits may bill."""
    walltime_s = _nat("walltime_s", walltime_s)
    cores = _nat("cores", cores)
    memory_mib = _nat("memory_mib", memory_mib)
    gpus = _nat("gpus", gpus)
    wall_millis = walltime_s * MILLIS_PER_SECOND
    return cores * wall_millis, gpus * wall_millis, memory_mib * 1024, wall_millis


def max_price(walltime_s: int, cores: int, memory_mib: int, gpus: int, prices: Prices) -> int:
    """The most a job can cost at its limits: the escrow hold before it runs.

    price() is monotone in every meter, so its value at the limits
    (cpu = cores x walltime, gpu = gpus x walltime, memory = memory_mib for
    the whole walltime) bounds the price of any run within them.
    """
    return _price(*_limit_meters(walltime_s, cores, memory_mib, gpus), prices)


E = TypeVar("E")


def cap_to_limits(execution: E, walltime_s: int, cores: int, memory_mib: int, gpus: int) -> E:
    """A copy of execution (a dataclass) with each meter capped at the job's limits.

    The executor stops a job only after its walltime plus a grace period and
    does not confine cores or memory, so raw meters can exceed the limits;
    the user is billed at most for what they were granted, which keeps
    price(cap_to_limits(...)) <= max_price(...) (the escrow hold).
    """
    if not dataclasses.is_dataclass(execution) or isinstance(execution, type):
        raise PricingError("cap_to_limits needs a dataclass instance such as Execution")
    cpu, gpu, rss, wall = _limit_meters(walltime_s, cores, memory_mib, gpus)
    return dataclasses.replace(
        execution,
        cpu_millis=min(_nat("cpu_millis", execution.cpu_millis), cpu),
        gpu_millis=min(_nat("gpu_millis", execution.gpu_millis), gpu),
        max_rss_kib=min(_nat("max_rss_kib", execution.max_rss_kib), rss),
        wall_millis=min(_nat("wall_millis", execution.wall_millis), wall),
    )
