"""A token bucket per key: how often one principal may have the policy decide for it.

Every evaluation is a durable decision-log entry, so a session that asks in a
loop would otherwise grow the log (and the auditors' work) as fast as the gateway
answers. Buckets are kept for at most `max_keys` principals, the least recently
seen forgotten first: a forgotten principal starts again with a full bucket,
which is what a new one gets anyway.

Buckets of network addresses are keyed by `network_key`: one IPv6 host is given a
whole /64 (2^64 addresses), so a /64 shares one bucket, as one IPv4 address does.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimit:
    """At most `burst` takes at once per key, refilled at `rate` per second."""

    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError(
                f"a rate limit needs rate > 0, burst >= 1 and max_keys >= 1, got {rate}, {burst}, {max_keys}"
            )
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Take one token for `key`: None when there was one, else the seconds until there is."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            taken = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if taken else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return None if taken else (1.0 - tokens) / self.rate


#: The IPv6 prefix one site or host is given: every address in it is one client to a bound by address.
IPV6_PREFIX = 64


def network_key(address: str) -> str:
    """The bucket of a client's network address: the address for IPv4 (an IPv4-mapped IPv6 address too), its /64
    for IPv6; anything that is no IP address (a test client's name) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)
