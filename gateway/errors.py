"""Errors a gateway answers with: each carries its HTTP status and a message a person can act on."""

from __future__ import annotations


class GatewayError(Exception):
    status = 400

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reasons = reasons or []


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class NotFound(GatewayError):
    status = 404


class Conflict(GatewayError):
    status = 409


class PeerUnavailable(GatewayError):
    status = 502
