"""Refusals as HTTP answers: the status of each kind, one body for all, the statuses a route declares.

Every refusal has one body, `ErrorBody`; `responses(...)` declares a route's refusals
in the OpenAPI, so that the API says every status it can answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from gateway.api.limits import MAX_BODY_BYTES, MAX_HEAD_BYTES
from gateway.node.errors import (
    Conflict,
    DiskFull,
    Forbidden,
    Invalid,
    Misdirected,
    NotFound,
    PaymentRequired,
    Refusal,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)

#: The HTTP status of each kind of refusal.
STATUS: dict[type[Refusal], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    PaymentRequired: 402,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Misdirected: 421,
    TooManyRequests: 429,
    Unavailable: 503,
    DiskFull: 507,
}


def status_of(refusal: Refusal) -> int:
    """The status a refusal is answered with (its nearest kind's; a plain Refusal is a 400)."""
    return next((STATUS[kind] for kind in type(refusal).__mro__ if kind in STATUS), 400)


class ErrorBody(BaseModel):
    """The body of every refusal."""

    error: str = Field(description="what went wrong, in words a person can act on")
    reasons: list[str] = Field(description="the details: one per invalid field, or per centre that refused")
    decision: str | None = Field(
        default=None,
        description="only when the centre's policy refused: the id of that decision's entry in the centre's "
        "decision log (GET /v1/decisions/{id}), the refused user's proof",
    )
    entry: dict[str, Any] | None = Field(
        default=None, description="only when the centre's policy refused: that decision's entry in the decision log"
    )
    signature: str | None = Field(
        default=None,
        description="only when the centre's policy refused: the centre's EIP-712 signature of Decision(keccak256 of "
        "the entry's canonical JSON) with its chain key, in the deployment's domain (ledger.signed_decisions)",
    )


#: What each status means at a gateway (the OpenAPI's description of it).
MEANINGS = {
    400: "bad input the schema cannot express, or a body nested too deeply; nothing was stored",
    401: "no session token or operator key, or one that is not valid here; or wrong credentials",
    402: "the payment does not cover it: a maximum price or a hold below what it may cost; nothing was stored",
    403: "authenticated, but refused: the policy, a revoked enrolment, or not allowed for this sign-on",
    404: "no such thing here, or not yours",
    409: "conflicts with what was done before (an idempotency key reused for another request, a chain revert)",
    413: f"the request body is larger than {MAX_BODY_BYTES} bytes",
    421: "meant for another centre: sign on and send it there",
    422: "the request does not match its schema (each field's problem is one reason); nothing was stored",
    429: "asked too often: nothing was evaluated or stored; try again after `Retry-After` seconds",
    431: f"the request's target and headers are longer than {MAX_HEAD_BYTES} bytes",
    503: "a dependency is unavailable (directory, chain) or a bound was reached: the same request may succeed later",
    507: "the centre's data disk is full (reason `disk-full`): nothing was stored; the same request may succeed "
    "once its operator frees space",
}

#: What any route may answer: the request limits refuse before a route runs; a full data disk refuses any write.
ALWAYS = (400, 413, 431, 507)


def responses(*statuses: int, descriptions: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that may refuse with `statuses` (plus ALWAYS), each with ErrorBody.

    Give 422 for every route that takes a body, a path or a header parameter:
    FastAPI's own 422 declares a body this gateway never sends. `descriptions` says
    what a status means at this route, where MEANINGS is too general.
    """
    described = dict(descriptions or {})
    unknown = sorted(set(statuses) - set(MEANINGS) - set(described))
    if unknown:
        raise ValueError(f"no meaning written for status {unknown}: add it to MEANINGS or give a description")
    return {
        status: {"model": ErrorBody, "description": described.get(status, MEANINGS.get(status))}
        for status in sorted({*statuses, *described, *ALWAYS})
    }
