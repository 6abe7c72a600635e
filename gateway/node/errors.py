"""What a centre's services refuse with: a message a person can act on, and its reasons.

The services (the node, sign-on, epochs) speak of what went wrong, not of HTTP;
gateway.api.errors maps each kind to its status.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request the centre will not carry out as asked; nothing was stored."""

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reasons = reasons or []


class Invalid(Refusal):
    """The request cannot be carried out as given (input the request schema cannot express)."""


class Unauthenticated(Refusal):
    """No valid session, credentials or operator key for this centre."""


class PaymentRequired(Refusal):
    """The payment terms do not cover the request: a maximum price or a hold below what it may cost."""


class Forbidden(Refusal):
    """Who asked is known, and not allowed: a policy, a revoked enrolment, the kind of sign-on."""


class NotFound(Refusal):
    """No such thing here, or not the asker's."""


class Conflict(Refusal):
    """Conflicts with what was done before: a reused idempotency key, a chain that refused a write."""


class Misdirected(Refusal):
    """Meant for another centre: a gateway serves only its own centre and never carries a user's authority elsewhere."""


class TooManyRequests(Refusal):
    """The asker asked too often: refused before anything is evaluated or stored; `retry_after` seconds on."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(Refusal):
    """The centre cannot do it now (its directory or chain is unreachable, a bound was reached); later it may."""


class DiskFull(Refusal):
    """The centre's data disk is full: nothing was written (the transaction rolled back); 507."""


class DiskReadOnly(Unavailable):
    """The centre's data disk is read-only: nothing was written; 503, as any unavailability."""


class DiskFailed(Unavailable):
    """The centre's data disk failed a read or write (an I/O error: a failing device, or a file system that an
    error made read-only): nothing was written; 503, as any unavailability."""


#: The words SQLite uses for a full disk and for a file it may not write.
_FULL = ("database or disk is full",)
_READ_ONLY = ("attempt to write a readonly database", "readonly database")
_ERRNO_FULL = (28, 122)  # ENOSPC, EDQUOT
_ERRNO_READ_ONLY = (30,)  # EROFS
_IO_ERROR = "disk i/o error"  # SQLITE_IOERR and its extended codes
_ERRNO_IO = (5,)  # EIO


def disk_refusal(exc: BaseException) -> Refusal | None:
    """DiskFull, DiskReadOnly or DiskFailed for an error of the data disk (SQLite's or the OS's), else None.

    So that a full, read-only or failing disk is answered as such (507 `disk-full`, 503 `disk-read-only`
    or `disk-error`), never as a bare server error; the caller's transaction has rolled back.
    """
    if isinstance(exc, DiskFull | DiskReadOnly):
        return exc
    text = str(exc).lower()
    number = getattr(exc, "errno", None)
    code = getattr(exc, "sqlite_errorcode", None)
    if number in _ERRNO_FULL or code == 13 or any(words in text for words in _FULL):  # SQLITE_FULL
        return DiskFull(f"the centre's data disk is full: {exc}; nothing was stored", reasons=["disk-full"])
    if number in _ERRNO_READ_ONLY or code == 8 or any(words in text for words in _READ_ONLY):  # SQLITE_READONLY
        return DiskReadOnly(
            f"the centre's data disk is read-only: {exc}; nothing was stored, try again later",
            reasons=["disk-read-only"],
        )
    if number in _ERRNO_IO or (code is not None and code & 0xFF == 10) or _IO_ERROR in text:  # SQLITE_IOERR
        return DiskFailed(
            f"the centre's data disk failed: {exc}; nothing was stored, try again later", reasons=["disk-error"]
        )
    return None
