"""Epochs on the chain's clock (`UsageLedger.epochLength`): when each one ends, which one a moment falls in.

With a clock, epoch e runs from origin + (e - 1) x length to origin + e x length for every
centre alike, so no member can number its epochs ahead of the others, and an epoch's anchor
window starts when it ends, not when enough members have anchored it.
"""

from __future__ import annotations

from dataclasses import dataclass


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
