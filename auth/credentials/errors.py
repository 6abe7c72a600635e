"""The errors of the credentials package.

Issuers and holders get ``CredentialError`` (their own input is wrong: fix and
retry). Verifiers get ``PresentationError`` with a stable ``code`` the gateway can
map to a status and a ``reason`` a person can act on.
"""

from __future__ import annotations

#: Every code a PresentationError may carry.
CODES = frozenset(
    {
        "malformed",
        "unknown_request",
        "replayed",
        "wrong_verifier",
        "request_expired",
        "missing_attributes",
        "unknown_issuer",
        "key_not_valid",
        "bad_proof",
        "credential_expired",
        "revoked",
        "wrong_issuer",
        "busy",
    }
)


class CredentialError(ValueError):
    """A schema, attribute value, key or credential handed to us is not usable."""


class SchemaError(CredentialError):
    """The credential schema (consortium configuration) is invalid."""


class PresentationError(ValueError):
    """A presentation (or its request) was refused; ``code`` is one of CODES."""

    def __init__(self, code: str, reason: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown presentation error code {code!r}")
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"PresentationError({self.code!r}, {self.reason!r})"
