"""A small HTTP client for a gateway, used by the CLI, the demo and auditors."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "timed_out"}


class GatewayRefused(Exception):
    """The gateway answered with an error; `status`, `error` and `reasons` say why."""

    def __init__(self, status: int, error: str, reasons: list[str]) -> None:
        super().__init__(f"{status}: {error}" + "".join(f"\n  - {r}" for r in reasons))
        self.status = status
        self.error = error
        self.reasons = reasons


class GatewayClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = self._http.request(method, path, headers=headers, **kwargs)
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text}
        if response.is_error:
            body = payload if isinstance(payload, dict) else {}
            raise GatewayRefused(response.status_code, body.get("error", response.reason_phrase), body.get("reasons", []))
        return payload

    def login(self, username: str, password: str) -> dict:
        session = self._call("POST", "/v1/login", json={"username": username, "password": password})
        self.token = session["token"]
        return session

    def submit(self, job: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/jobs", json=job, headers=headers)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 120.0, interval: float = 0.05) -> dict:
        """Poll until the job (or, for a forwarded job, its remote run) is final."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            effective = view.get("remote") or view
            if effective["status"] in FINAL:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {effective['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def close_epoch(self, operator_key: str) -> dict:
        return self._call("POST", "/v1/epochs/close", headers={"X-Operator-Key": operator_key})

    def audit_epoch(self, epoch: int) -> dict:
        return self._call("GET", f"/v1/audit/epochs/{epoch}")

    def epoch_records(self, epoch: int) -> list[dict]:
        return self._call("GET", f"/v1/audit/epochs/{epoch}/records")

    def usage(self, record_id: str) -> dict:
        return self._call("GET", f"/v1/audit/usage/{record_id}")
