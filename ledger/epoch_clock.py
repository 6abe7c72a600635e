"""Epochs on the chain's clock (`UsageLedger.epochLength`): when each one ends, which one a moment falls in,
and how long an epoch (or a close schedule) may be for the booking delay.

With a clock, epoch e runs from origin + (e - 1) x length to origin + e x length for every
centre alike, so no member can number its epochs ahead of the others, and an epoch's anchor
window starts when it ends, not when enough members have anchored it.
"""

from __future__ import annotations

from dataclasses import dataclass

ANCHOR_MARGIN = 60
"""Seconds an anchor sent at close may take to be mined: the outbox sends it at once and housekeeping
retries it every second, so a minute covers retries and a few blocks of a public chain."""

LATE_CLOSE = 900
"""Seconds a scheduled close may run after its boundary, or a record be stored after its job ended, without a
record lapsing (with a booking delay of at least an hour; a quarter of a shorter one): a gateway down across a
boundary for a few minutes, a Slurm controller the executor waits through (`UNREACHABLE_TIMEOUT_S`, 5 minutes),
the close of a ten-million-record epoch, a chain clock minutes ahead of this one."""


def anchor_margin(booking_delay: int) -> int:
    """Seconds a close leaves its anchor to be mined: ANCHOR_MARGIN, or half a shorter booking delay."""
    return min(ANCHOR_MARGIN, booking_delay // 2)


def late_close(booking_delay: int) -> int:
    """Seconds a close may run late: LATE_CLOSE, or a quarter of a shorter booking delay."""
    return min(LATE_CLOSE, booking_delay // 4)


def longest_epoch(booking_delay: int) -> int:
    """The longest epoch (or close schedule) whose every record is anchored within the booking delay.

    A job that ends at its order's deadline just after a close is in the next epoch, anchored when
    it ends, a close's lateness and an anchor's margin later; the chain must hold the claim by the
    deadline + the booking delay, or the record is unanswerable (`UsageLedger.answer`: Late).
    """
    return booking_delay - anchor_margin(booking_delay) - late_close(booking_delay)


@dataclass(frozen=True)
class EpochClock:
    """`UsageLedger.epochLength` and `epochOrigin` (the start of epoch 1, a multiple of the length)."""

    length: int
    origin: int

    def __post_init__(self) -> None:
        if self.length <= 0 or self.origin < 0:
            raise ValueError(f"an epoch clock needs a positive length and an origin >= 0, got {self}")

    def end(self, epoch: int) -> int:
        """When `epoch` ends: it may be anchored from then (`UsageLedger.epochEnd`)."""
        return self.origin + epoch * self.length

    def epoch_at(self, when: float) -> int:
        """The epoch running at `when` (1 before the origin)."""
        return max(1, int(when - self.origin) // self.length + 1)
