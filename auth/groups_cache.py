"""A principal's directory groups kept for a short time, so a submission does not ask LDAP each time.

Asking the directory costs a connection, a bind and one or two searches (about 1–2 ms of
CPU, most of it ldap3 encoding in Python) on every submission. Keeping the answer for
`ttl` seconds trades that for staleness: a group removed in LDAP still counts up to
`ttl` seconds later. Only answers are kept: a call that raised leaves nothing behind.
The table is bounded (least recently used principals go first) and thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: The longest a principal's groups may be kept: what a centre can accept as the delay of a removal.
MAX_GROUPS_TTL = 3600.0
#: Principals kept at most (each a short tuple of cns: a few MB at most).
DEFAULT_MAX_PRINCIPALS = 10_000


def check_ttl(ttl: object) -> float:
    """`ttl` as seconds, or ValueError saying what it must be: a number from 0 to MAX_GROUPS_TTL."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= MAX_GROUPS_TTL:
        raise ValueError(f"groups_ttl must be a number of seconds from 0 to {MAX_GROUPS_TTL:g}, got {ttl!r:.80}")
    return float(ttl)


class KeptGroups:
    """principal -> groups, each kept `ttl` seconds from when its read began; 0 keeps nothing.

    `clock` is monotonic seconds (injected by tests). The read time is taken before the
    directory is asked, so an answer is never kept longer than `ttl` after the read started.
    Two threads missing the same principal at once both ask the directory (no waiting on
    each other's LDAP round trip); the answer of the read that began last is kept.
    """

    def __init__(
        self,
        ttl: float,
        max_principals: int = DEFAULT_MAX_PRINCIPALS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = check_ttl(ttl)
        if isinstance(max_principals, bool) or not isinstance(max_principals, int) or max_principals < 1:
            raise ValueError(f"max_principals must be a positive integer, got {max_principals!r:.80}")
        self.max_principals = max_principals
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def get(self, principal: str, read: Callable[[str], list[str]]) -> list[str]:
        """The kept groups of `principal` if still fresh, else `read(principal)` (kept if it returns)."""
        if self.ttl <= 0:
            return read(principal)
        now = self._clock()
        with self._lock:
            hit = self._kept.get(principal)
            if hit is not None and now - hit[0] < self.ttl:
                self._kept.move_to_end(principal)
                return list(hit[1])
        groups = read(principal)  # outside the lock: an LDAP round trip must not hold up other principals
        with self._lock:
            kept = self._kept.get(principal)
            if kept is None or kept[0] <= now:  # not over an answer read after this one began
                self._kept[principal] = (now, tuple(groups))
            self._kept.move_to_end(principal)
            while len(self._kept) > self.max_principals:
                self._kept.popitem(last=False)
        return list(groups)

    def forget(self, principal: str | None = None) -> None:
        """Drop one principal's kept groups, or (None) everyone's: the next call reads the directory."""
        with self._lock:
            if principal is None:
                self._kept.clear()
            else:
                self._kept.pop(principal, None)
