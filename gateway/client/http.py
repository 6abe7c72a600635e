"""A small HTTP client for a gateway, used by the CLI, the demo and auditors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from gateway.api.schemas import JOB_SIGNATURE_HEADER, job_message
from gateway.client.wallet import Wallet

FINAL = {"succeeded", "failed", "timed_out"}


class GatewayRefused(Exception):
    """The gateway answered with an error; `status`, `error` and `reasons` say why."""

    def __init__(self, status: int, error: str, reasons: list[str]) -> None:
        super().__init__(f"{status}: {error}" + "".join(f"\n  - {r}" for r in reasons))
        self.status = status
        self.error = error
        self.reasons = reasons


class GatewayUnreachable(ConnectionError):
    """The gateway did not answer at all (refused connection, timeout, broken connection).

    `sent` is False when the request certainly never reached the gateway (no
    connection was made), so nothing can have happened there.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class WrongCentre(Exception):
    """A gateway answered as another centre than the one the client meant to reach (a relayed
    challenge, say): the client sent it nothing of value and goes no further with it."""


#: Failures before a request reaches the gateway: nothing can have happened there.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)


class GatewayClient:
    def __init__(
        self, url: str, token: str | None = None, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.home: str | None = None  # the user's home, once logged in there with a password
        self.job_signer: Callable[[str], str] | None = None  # job id -> X-Job-Signature, instead of a session
        try:
            self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        except httpx.InvalidURL as exc:  # a member registers whatever URL it likes on chain
            raise GatewayUnreachable(f"gateway URL {url!r:.80} is not usable: {exc}", sent=False) from None

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(
                f"gateway {self.url} did not answer ({type(exc).__name__}: {exc})", sent=not isinstance(exc, _NOT_SENT)
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text}
        if response.is_error:
            body = payload if isinstance(payload, dict) else {}
            raise GatewayRefused(
                response.status_code, body.get("error", response.reason_phrase), body.get("reasons", [])
            )
        return payload

    def login(self, username: str, password: str) -> dict:
        """Password sign-on at home; keeps the session token, good at home only."""
        session = self._call("POST", "/v1/login", json={"username": username, "password": password})
        self.token, self.home = session["token"], session["home"]
        return session

    def exchange(self, audience: str) -> dict:
        """At home, signed on with a password: a token for another member centre."""
        return self._call("POST", "/v1/tokens", json={"audience": audience})

    def credential(self, username: str, password: str) -> dict:
        """At the home centre: a BBS credential over the user's directory attributes."""
        return self._call("POST", "/v1/credentials", json={"username": username, "password": password})

    def sign_on(self, wallet: Wallet, centre: str | None = None) -> dict:
        """Answer this gateway's presentation request from the wallet; keeps the session token.

        With `centre` (the member this client means to reach), a request made by any other
        centre is refused (WrongCentre) before the wallet proves anything: a gateway that
        relays another centre's challenge would otherwise get a proof good for a session there.
        """
        request = self._call("GET", "/v1/auth/request")
        verifier = request.get("verifier") if isinstance(request, dict) else None
        if centre is not None and verifier != centre:
            raise WrongCentre(
                f"the gateway at {self.url} asked for a sign-on at {verifier!r:.40}, not at {centre!r}: "
                "no proof was sent"
            )
        session = self._call("POST", "/v1/auth/present", json={"presentation": wallet.present(request)})
        self.token = session["token"]
        return session

    def revoke(self, username: str, operator_key: str) -> dict:
        return self._call(
            "POST", "/v1/enrolments/revoke", json={"username": username}, headers={"X-Operator-Key": operator_key}
        )

    def submit(self, job: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/jobs", json=job, headers=headers)

    def quote(self, job: dict) -> dict:
        """Whether this centre takes the job, at which rates version and maximum price: what an order for it names."""
        return self._call("POST", "/v1/jobs/quote", json=job)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}", headers=self._job_headers(job_id))

    def _job_headers(self, job_id: str) -> dict[str, str]:
        """The order's account's signature for the job, when this client acts as that account."""
        return {JOB_SIGNATURE_HEADER: self.job_signer(job_id)} if self.job_signer else {}

    def placement(self, walltime: int, resources: dict) -> list[dict]:
        """Every member centre ranked for such a job, best first (room, then price)."""
        return self._call("POST", "/v1/placement", json={"walltime": walltime, "resources": resources})["candidates"]

    def members(self) -> dict[str, str]:
        """Every member centre's gateway URL, by name, as this gateway's chain index has them."""
        return {m["centre"]: m["gateway_url"] for m in self.consortium()["members"]}

    def consortium(self) -> dict:
        """Every member (gateway URL, chain account) and the domain orders are signed in: ask the user's home."""
        return self._call("GET", "/v1/members")

    def grant(self, order: dict, order_signature: str, project: str | None = None) -> dict:
        """At home, signed on with a password: the home holds the order's maximum price and signs a Grant."""
        body = {"order": order, "order_signature": order_signature} | ({"project": project} if project else {})
        return self._call("POST", "/v1/grants", json=body)

    def balance(self, project: str | None = None) -> dict:
        """At home, signed on with a password: the project's allocation, held, spent; the user's holds."""
        return self._call("GET", "/v1/balance", params={"project": project} if project else None)

    def complain(self, record: dict) -> dict:
        """At home, signed on with a password: the user got no key for this record; home disputes it on chain."""
        return self._call("POST", "/v1/complaints", json={"record": record})

    def revealed_key(self, lock_hash: str) -> dict:
        """At home: a result key a serving centre revealed on chain to answer a dispute (404 until then)."""
        return self._call("GET", f"/v1/keys/{lock_hash}")

    def receipt(self, job_id: str, signature: str) -> dict:
        """The payer's receipt of a job's record, for the key its outputs are sealed under."""
        return self._call(
            "POST", f"/v1/jobs/{job_id}/receipt", json={"signature": signature}, headers=self._job_headers(job_id)
        )

    def capacity(self) -> dict:
        return self._call("GET", "/v1/capacity")

    def wait(self, job_id: str, timeout: float = 120.0, interval: float = 0.05) -> dict:
        """Poll until the job is final."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if view["status"] in FINAL:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {view['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def close_epoch(self, operator_key: str, epoch: int | None = None) -> dict:
        """Close the open epoch; naming `epoch` makes the call safe to retry."""
        body = {"epoch": epoch} if epoch is not None else None
        return self._call("POST", "/v1/epochs/close", json=body, headers={"X-Operator-Key": operator_key})

    def audit_epoch(self, epoch: int) -> dict:
        return self._call("GET", f"/v1/audit/epochs/{epoch}")

    def epoch_records(self, epoch: int) -> list[dict]:
        return self._call("GET", f"/v1/audit/epochs/{epoch}/records")

    def usage(self, record_id: str) -> dict:
        return self._call("GET", f"/v1/audit/usage/{record_id}")


def job_signer(centre: str, account: LocalAccount, clock: Callable[[], float] = time.time) -> Callable[[str], str]:
    """Sign for a job at `centre` as its order's payment account (GatewayClient.job_signer): unlike a session, the
    account's key stays in the wallet until the job's result is opened."""

    def sign(job_id: str) -> str:
        at = int(clock())
        signed = account.sign_message(encode_defunct(text=job_message(centre, job_id, at)))
        return f"{at}:0x{bytes(signed.signature).hex()}"

    return sign
