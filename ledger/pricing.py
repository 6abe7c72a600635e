"""What a usage record costs: its meters times one version of the serving centre's rates.

Pure integer arithmetic, each term rounded up to the smallest money unit. The
serving centre prices a record with it and an auditor recomputes the price with
it from the record's meters and the rates version the record names, read from
the chain, so both must get the same integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "KIB_MILLIS_PER_GIB_HOUR",
    "MILLIS_PER_SECOND",
    "Metered",
    "Meters",
    "Prices",
    "PricingError",
    "non_negative",
    "price",
]

MILLIS_PER_SECOND = 1000
KIB_MILLIS_PER_GIB_HOUR = 1024 * 1024 * 3_600_000
"""KiB x milliseconds in one GiB-hour."""


class Prices(Protocol):
    """A centre's rates (ledger.deploy.Prices has this shape): ints in the smallest money unit."""

    @property
    def per_cpu_second(self) -> int: ...

    @property
    def per_gpu_second(self) -> int: ...

    @property
    def per_gib_hour(self) -> int: ...


class Metered(Protocol):
    """The meters of a run (gateway.jobs.executor.Execution, a UsageRecord, or Meters)."""

    @property
    def cpu_millis(self) -> int: ...

    @property
    def gpu_millis(self) -> int: ...

    @property
    def max_rss_kib(self) -> int: ...

    @property
    def wall_millis(self) -> int: ...


@dataclass(frozen=True)
class Meters:
    """Bare meters, for pricing what did not run (a job's limits)."""

    cpu_millis: int
    gpu_millis: int
    max_rss_kib: int
    wall_millis: int


class PricingError(ValueError):
    """A meter, limit or price is not a non-negative int."""


def non_negative(name: str, value: object) -> int:
    """`value` if it is a non-negative int (bools are not), else PricingError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PricingError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def price(metered: Metered, prices: Prices) -> int:
    """Price of a run: cpu-seconds, gpu-seconds and peak-memory GiB-hours, each term rounded up.

    Memory is charged as peak RSS held for the whole wall time (what the
    centre had to reserve), not as an integral it cannot meter.
    """
    try:
        cpu_millis = non_negative("cpu_millis", metered.cpu_millis)
        gpu_millis = non_negative("gpu_millis", metered.gpu_millis)
        max_rss_kib = non_negative("max_rss_kib", metered.max_rss_kib)
        wall_millis = non_negative("wall_millis", metered.wall_millis)
    except AttributeError as exc:
        raise PricingError(f"not a metered execution: {exc}") from None
    try:
        cpu = non_negative("per_cpu_second", prices.per_cpu_second)
        gpu = non_negative("per_gpu_second", prices.per_gpu_second)
        mem = non_negative("per_gib_hour", prices.per_gib_hour)
    except AttributeError as exc:
        raise PricingError(f"not a price list: {exc}") from None
    return (
        _ceil_div(cpu_millis * cpu, MILLIS_PER_SECOND)
        + _ceil_div(gpu_millis * gpu, MILLIS_PER_SECOND)
        + _ceil_div(max_rss_kib * wall_millis * mem, KIB_MILLIS_PER_GIB_HOUR)
    )
