"""Talking to the other member centres' gateways on a user's behalf.

The user's own session token travels with the request: the serving centre
authorises the job itself and trusts nothing the forwarding centre says.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from gateway.errors import GatewayError, PeerUnavailable


class PeerDenied(Exception):
    """The peer refused the job by policy; placement may try another centre."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class Peers:
    def __init__(self, url_of: Callable[[str], str | None], timeout: float = 30.0) -> None:
        self._url_of = url_of
        self._http = httpx.Client(timeout=timeout)

    def submit(self, centre: str, token: str, body: dict, idempotency_key: str | None) -> dict:
        """POST the job to `centre`; returns its job view plus the job's absolute `url`."""
        base = self._url_of(centre)
        if not base:
            raise PeerUnavailable(f"centre {centre} has no gateway URL on chain")
        headers = {"Authorization": f"Bearer {token}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = self._http.post(f"{base.rstrip('/')}/v1/jobs", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PeerDenied([f"gateway unreachable ({type(exc).__name__})"]) from None
        payload = _json(response)
        if response.status_code == 403:
            raise PeerDenied(payload.get("reasons") or [payload.get("error", "refused")])
        if response.is_error:
            error = GatewayError(f"{centre}: {payload.get('error', response.text)}", reasons=payload.get("reasons"))
            error.status = response.status_code
            raise error
        payload["url"] = f"{base.rstrip('/')}/v1/jobs/{payload['id']}"
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


def _json(response: httpx.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return payload if isinstance(payload, dict) else {"error": str(payload)[:200]}
