"""The verifier's memory of its open sign-on requests: each nonce answers once.

A proof is bound to its request's nonce, so remembering which nonces were already
answered is what stops a captured presentation from being replayed. Entries are
kept until their request expired plus `retention` seconds (so a late answer is
told "request_expired" rather than "unknown"); after that a replay cannot pass
anyway, because the request it would need is gone. When full, the oldest entries
are dropped: that can only turn a pending request into "unknown_request", never
make a used nonce usable again.

The store lives in memory only, by choice. Within a process a nonce answers
once. A restart forgets every request, answered or not; a presentation captured
before it still cannot be replayed after it, because its request is gone with
the rest ("unknown_request"), so nothing needs to be written to disk. The cost:
users with a request open during a restart ask for a new one. Each gateway
process has its own store, so the process that issued a request must be the one
that receives its answer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from .errors import PresentationError
from .presentation import NONCE, PresentationRequest


class NonceStore:
    """Thread-safe, in-memory, bounded store of issued requests by nonce.

    An entry takes about 0.5 KB, so the default capacity bounds the store near 50 MB.
    Anyone may ask for requests, so a flood evicts the oldest pending ones (their
    holders ask again); it never readmits a nonce.
    """

    def __init__(self, capacity: int = 100_000, retention: int = 60) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError("capacity must be a positive integer")
        if not isinstance(retention, int) or retention < 0:
            raise ValueError("retention must be a non-negative number of seconds")
        self.capacity = capacity
        self.retention = retention
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, list] = OrderedDict()  # nonce -> [request, consumed]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def issue(self, request: PresentationRequest, *, now: int | None = None) -> None:
        """Remember a request just sent to a holder."""
        if not isinstance(request, PresentationRequest):
            raise TypeError("issue needs a PresentationRequest")
        now = int(time.time()) if now is None else int(now)
        with self._lock:
            self._purge(now)
            if request.nonce in self._entries:
                raise ValueError("this nonce was already issued; make a new request")
            self._entries[request.nonce] = [request, False]
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def consume(self, nonce: str, *, now: int | None = None) -> PresentationRequest:
        """The request for `nonce`, marked answered; "replayed" the second time, "unknown_request" if never seen."""
        if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
            raise PresentationError("malformed", "the nonce must be 64 lowercase hex digits")
        now = int(time.time()) if now is None else int(now)
        with self._lock:
            self._purge(now)
            entry = self._entries.get(nonce)
            if entry is None or self._stale(entry[0], now):
                raise PresentationError("unknown_request", "this centre has no open sign-on request with that "
                                                           "nonce (never made, or long expired); ask for a new one")
            if entry[1]:
                raise PresentationError("replayed", "this sign-on request was already answered; a presentation "
                                                    "is good for one sign-on only")
            entry[1] = True
            return entry[0]

    def _stale(self, request: PresentationRequest, now: int) -> bool:
        return request.expires_at + self.retention < now

    def _purge(self, now: int) -> None:
        # Requests are mostly issued with the same ttl, so the oldest expire first.
        while self._entries:
            nonce, (request, _) = next(iter(self._entries.items()))
            if not self._stale(request, now):
                break
            del self._entries[nonce]
