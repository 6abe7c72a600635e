"""A second attack on the fronts' shared rate limits (main at 2b5d55b): failed then, holds since each take follows
the file its path names."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from gateway.node.ratelimit import SharedRateLimit

BURST = 20
RATE = 1e-6  # no refill within a test


def _take_all_after_swap(path: str, ready: multiprocessing.Event, swapped: multiprocessing.Event, out) -> None:  # type: ignore[valid-type,no-untyped-def]
    """A running front: opened the file before it was replaced, takes its whole burst after."""
    limit = SharedRateLimit(Path(path), RATE, BURST, slots=64)
    ready.set()
    swapped.wait(30)
    out.put(sum(limit.take("principal") is None for _ in range(BURST)))
    limit.close()


def test_a_limits_file_replaced_under_a_running_front_is_not_a_second_burst(tmp_path: Path) -> None:
    """The refusal says "remove it to start again"; a front (re)started after the file was removed makes a new
    file while the back and the other fronts keep the old one open: each side then admits a whole burst for one
    key. A take should notice its path names another file (or the opener should refuse), never split silently."""
    path = tmp_path / "decisions.slots"
    spawn = multiprocessing.get_context("spawn")
    ready, swapped, out = spawn.Event(), spawn.Event(), spawn.Queue()
    running = spawn.Process(target=_take_all_after_swap, args=(str(path), ready, swapped, out))
    running.start()
    try:
        assert ready.wait(30)
        path.unlink()  # what the operator is told to do with a file a restarting front refuses
        restarted = SharedRateLimit(path, RATE, BURST, slots=64)  # a front started again: makes the file afresh
        swapped.set()
        granted_new = sum(restarted.take("principal") is None for _ in range(BURST))
        granted_old = out.get(timeout=30)
        restarted.close()
    finally:
        running.join(30)
        if running.is_alive():
            running.kill()
    assert granted_new + granted_old <= BURST, (
        f"{granted_new} + {granted_old} takes granted for one key of burst {BURST}"
    )
