"""EventIndex: one deployment's chain events in a local SQLite file, kept current.

It is the queries (queries.py) over a file that a ChainSync (sync.py) fills; both
share one connection, guarded by one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ledger.chain import Chain
from ledger.deploy import Deployment
from ledger.index.queries import IndexQueries
from ledger.index.schema import open_index
from ledger.index.sync import ChainSync, Follower, LogReader

DEFAULT_WINDOW = 2_000


class EventIndex(IndexQueries):
    """SQLite index of one deployment's events; reads are safe from any thread."""

    def __init__(
        self,
        path: str | Path,
        chain: Chain,
        deployment: Deployment,
        *,
        window: int = DEFAULT_WINDOW,
        confirmations: int = 0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1 block")
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self.path = str(path)
        self.chain = chain
        self.deployment = deployment
        self.window = window
        self.confirmations = confirmations
        reader = LogReader(chain, deployment)
        super().__init__(open_index(self.path), threading.RLock())
        try:
            self._sync = ChainSync(
                self._db,
                self._lock,
                reader,
                deployment,
                path=self.path,
                window=window,
                confirmations=confirmations,
            )
        except BaseException:
            self._db.close()
            raise
        self._follower = Follower(self.sync, name="xcentre-index")

    @property
    def last_block(self) -> int:
        """The last block whose events are in the index (start_block - 1 before any sync)."""
        return self._sync.last_block

    @property
    def head_seen(self) -> int | None:
        """The chain's head at the last sync that reached the node (None before one did)."""
        return self._sync.head_seen

    @property
    def reachable(self) -> bool | None:
        """Whether the last sync reached the chain node (None before any sync was tried)."""
        return self._sync.reachable

    @property
    def lag(self) -> int | None:
        """Blocks the index is behind the head last seen (None before the node was ever reached)."""
        head = self._sync.head_seen
        return None if head is None else max(0, head - self.last_block)

    @property
    def last_error(self) -> BaseException | None:
        """What the last sync failed with (the follower's or a caller's); None after one that succeeded."""
        return self._sync.last_error

    def sync(self, *, unless_within: float | None = None) -> int:
        """Indexes every new event up to the head (minus confirmations); returns how many. With `unless_within`,
        none (0) if a sync that began at most that many seconds before the call has finished (`ChainSync.sync`)."""
        return self._sync.sync(unless_within=unless_within)

    def follow(self, interval: float = 1.0, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Syncs every `interval` seconds in a daemon thread until stop().

        Errors (node unreachable …) do not end the thread: they are kept in
        `last_error` and passed to `on_error`, and the next round tries again.
        """
        self._follower.start(interval, on_error)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stops the follower thread (a sync in progress finishes first)."""
        self._follower.stop(timeout)

    def close(self) -> None:
        """Stops following and closes the database."""
        self.stop()
        with self._lock:
            self._db.close()
