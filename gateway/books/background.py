"""A housekeeping round that runs on a thread of its own, so that a slow one holds nothing else up.

The payer home's watcher reads a claimant's evidence for as long as the claim's anchored count allows
(minutes for a large claim, at a pace the claimant sets): run in line, it would hold the centre's own
scheduled close, its anchors and its settlements for as long.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundRound:
    """Calling it starts `round_` on its own thread unless the previous run is still going; it never waits."""

    def __init__(self, round_: Callable[[], object], name: str) -> None:
        self._round = round_
        self._name = name
        self._running = threading.Lock()

    def __call__(self) -> bool:
        """Start a run; False when the one before has not finished (this round is skipped, not queued)."""
        if not self._running.acquire(blocking=False):
            return False
        try:
            threading.Thread(target=self._run, name=self._name, daemon=True).start()
        except BaseException:
            self._running.release()
            raise
        return True

    @property
    def running(self) -> bool:
        return self._running.locked()

    def _run(self) -> None:
        try:
            self._round()
        except Exception as exc:  # noqa: BLE001 - like any housekeeping round: logged, tried again next time
            log.warning("%s failed: %s", self._name, exc)
        finally:
            self._running.release()
