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
