"""The nonces a verifier has seen answered: each challenge is good for one sign-on.

Only a nonce whose presentation verified is added, so filling the set takes valid
proofs, which cost the sender a credential and the verifier a BBS verification
each (a gateway process verifies about 200 a second). An entry is kept until its
challenge expires; after that a replay is refused as expired anyway, so the entry is
dropped. The set is bounded: when it is full of unexpired entries it refuses new
sign-ons ("busy") rather than forget one, because forgetting would let a captured
presentation be replayed.

Clocks may step backwards. The set remembers the latest time it has been told (its
horizon) and purges only entries that expired before it; `forgotten` tells the
caller which expiries that covers, so an answer to a purged nonce is refused
as expired whatever clock the caller reads.
"""

from __future__ import annotations

import heapq
import threading

from .errors import PresentationError

DEFAULT_CAPACITY = 100_000
"""About 30 MB at most; a full minute of sign-ons at 1,600 a second, eight times what one process verifies."""


class UsedNonces:
    """Thread-safe, bounded set of answered nonces, each forgotten once its challenge expired."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError("capacity must be a positive integer")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._expiry: dict[str, int] = {}
        self._queue: list[tuple[int, str]] = []  # (expires_at, nonce), a min-heap: the next to forget first
        self._horizon = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def __contains__(self, nonce: object) -> bool:
        with self._lock:
            return nonce in self._expiry

    def forgotten(self, expires_at: int) -> bool:
        """Whether a nonce expiring at `expires_at` may have been purged (and must be refused as expired)."""
        with self._lock:
            return expires_at < self._horizon

    def spend(self, nonce: str, expires_at: int, *, now: int, replayed: str = "this nonce was already used") -> None:
        """Add `nonce`, atomically: PresentationError "replayed" if it is there, "busy" if the set is full.

        `expires_at` is when its challenge expires, `now` the caller's clock (UTC seconds).
        """
        with self._lock:
            self._horizon = max(self._horizon, int(now))
            while self._queue and self._queue[0][0] < self._horizon:
                del self._expiry[heapq.heappop(self._queue)[1]]
            if expires_at < self._horizon:
                raise PresentationError(
                    "request_expired", f"the sign-on request expired at {expires_at}; ask for a new one"
                )
            if nonce in self._expiry:
                raise PresentationError("replayed", replayed)
            if len(self._expiry) >= self.capacity:
                raise PresentationError(
                    "busy",
                    "this centre has taken as many sign-ons as it can check for replays "
                    "in the last minute; try again in a minute",
                )
            self._expiry[nonce] = expires_at
            heapq.heappush(self._queue, (expires_at, nonce))
