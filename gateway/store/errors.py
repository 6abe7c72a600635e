"""What the store refuses. Every error is a StoreError (a ValueError).

Requests are checked before they reach the store; the one refusal a valid request
can meet here, a reused idempotency key, the node answers as a Conflict.
"""

from __future__ import annotations

__all__ = [
    "DuplicateRecord",
    "EpochClosed",
    "EpochError",
    "EpochMismatch",
    "IdempotencyConflict",
    "JobNotFound",
    "JobStateError",
    "ReplayedOrder",
    "StoreError",
]


class StoreError(ValueError):
    """Bad input to the store or an operation the stored state does not allow."""


class IdempotencyConflict(StoreError):
    """The idempotency key was already used by this principal for a different request."""


class ReplayedOrder(StoreError):
    """A job was already accepted under this order: an order pays for one job only."""


class JobNotFound(StoreError, LookupError):
    """No job with that id."""


class JobStateError(StoreError):
    """The job is not in a state that allows this (e.g. completing a finished job)."""


class DuplicateRecord(StoreError):
    """A usage record with this record id or leaf, or for this job, is already stored."""


class EpochError(StoreError):
    """An epoch operation that does not fit the epoch's state."""


class EpochClosed(EpochError):
    """The record names an epoch that is no longer open: re-sign it for the open epoch."""


class EpochMismatch(EpochError):
    """The closure's record count differs from the records stored in that epoch."""
