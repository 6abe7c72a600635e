"""Talking to the other member centres' gateways on a user's behalf.

The user's own session token travels with the request: the serving centre
authorises the job itself and trusts nothing the forwarding centre says.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from gateway.errors import GatewayError, PeerUnavailable


class PeerDenied(Exception):
    """The peer refused the job by policy; placement may try another centre."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


#: What a peer's job id may look like: it becomes part of a URL this gateway calls with the user's token.
_JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

#: Failures that happen before the request reaches the peer: the job certainly did not start there.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)


class Peers:
    """The other members' gateways, at the URLs the chain gives for them."""

    def __init__(self, url_of: Callable[[str], str | None], timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._url_of = url_of
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def submit(self, centre: str, token: str, body: dict, idempotency_key: str | None) -> dict:
        """POST the job to `centre`; returns its job view plus the job's absolute `url`.

        PeerDenied means the job certainly does not run there (refused, or the
        gateway could not be reached), so placement may try another centre. When
        the request went out but no usable answer came back, the job may be running
        there: that is PeerUnavailable (502), never a reason to start it elsewhere.
        """
        base = self._url_of(centre)
        if not base:
            raise PeerUnavailable(f"centre {centre} has no gateway URL on chain")
        base = base.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = self._http.post(f"{base}/v1/jobs", json=body, headers=headers)
        except _NOT_SENT as exc:
            raise PeerDenied([f"{centre}: gateway unreachable ({type(exc).__name__})"]) from None
        except httpx.HTTPError as exc:
            again = "retry with the same Idempotency-Key" if idempotency_key else "look for it there before resubmitting"
            raise PeerUnavailable(
                f"{centre} did not answer ({type(exc).__name__}); the job may have started there: {again}"
            ) from None
        payload = _json(response)
        if response.status_code == 403:
            raise PeerDenied(_reasons(payload.get("reasons")) or [f"{centre}: {payload.get('error') or 'refused'}"])
        if response.status_code >= 500:
            raise PeerUnavailable(f"{centre} failed ({response.status_code}): {payload.get('error', '')}"[:500])
        if response.is_error:
            error = GatewayError(f"{centre}: {payload.get('error', '')}"[:500], reasons=_reasons(payload.get("reasons")))
            error.status = response.status_code
            raise error
        job_id = payload.get("id")
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise PeerUnavailable(f"{centre} accepted the job but answered no usable job id: {str(job_id)[:80]!r}")
        payload["url"] = f"{base}/v1/jobs/{job_id}"
        return payload

    def fetch(self, url: str, token: str) -> dict:
        try:
            response = self._http.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"serving gateway unreachable at {url} ({type(exc).__name__})") from None
        payload = _json(response)
        if response.is_error:
            raise PeerUnavailable(f"serving gateway answered {response.status_code}: {payload.get('error', '')}")
        return payload

    def close(self) -> None:
        self._http.close()


def _reasons(value: object) -> list[str]:
    """A peer's reasons as a list of short texts, whatever it sent."""
    items = value if isinstance(value, list) else [value] if value else []
    return [str(item)[:500] for item in items if item not in (None, "")]


def _json(response: httpx.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return payload if isinstance(payload, dict) else {"error": str(payload)[:200]}
