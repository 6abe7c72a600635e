"""A small HTTP client for a gateway, used by the CLI, the demo and auditors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from gateway.api.schemas import (
    AUDIT_PAGE,
    AUDIT_SIGNATURE_HEADER,
    JOB_SIGNATURE_HEADER,
    audit_message,
    complaint_message,
    job_message,
)
from gateway.client.wallet import Wallet
from ledger.primitives.bounded import Collected, OverLimit

FINAL = {"succeeded", "failed", "timed_out"}

MAX_ANSWER_BYTES = 4 * 2**20
"""The largest answer read of a call but the audit's: a policy text, a job's view or a quote is kilobytes."""

MAX_AUDIT_ANSWER_BYTES = 64 * 2**20
"""The largest page of a decision log (AUDIT_PAGE entries: ~10 MB) or of an epoch's usage records read."""

T = TypeVar("T")


class GatewayRefused(Exception):
    """The gateway answered with an error; `status`, `error` and `reasons` say why.

    `decision`: for a refusal by the centre's policy, the id of its entry in the centre's decision log.
    """

    def __init__(self, status: int, error: str, reasons: list[str], decision: str | None = None) -> None:
        super().__init__(f"{status}: {error}" + "".join(f"\n  - {r}" for r in reasons))
        self.status = status
        self.error = error
        self.reasons = reasons
        self.decision = decision


class GatewayUnreachable(ConnectionError):
    """The gateway did not answer at all (refused connection, timeout, broken connection).

    `sent` is False when the request certainly never reached the gateway (no
    connection was made), so nothing can have happened there.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class UnreadableAnswer(GatewayUnreachable):
    """The gateway's answer was not taken: not whole within the client's deadline, larger than the call reads, or
    nested deeper than any answer of the API. Nothing of it is used: as if the gateway had not answered."""


class AnchorPending(TimeoutError):
    """An epoch was closed but its anchor did not reach the chain in the time waited: it waits in the outbox."""


class BadAnswer(ValueError):
    """The gateway answered, but not as its API says: pages of a decision log that do not make one log."""


class WrongCentre(Exception):
    """A gateway answered as another centre than the one the client meant to reach (a relayed
    challenge, say): the client sent it nothing of value and goes no further with it."""


#: Failures before a request reaches the gateway: nothing can have happened there.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)


class GatewayClient:
    """The gateway's API as calls. Whatever the gateway answers, a call ends within `timeout` seconds (the whole
    answer, not each read: a gateway dripping a byte at a time is cut off) and reads at most MAX_ANSWER_BYTES
    (MAX_AUDIT_ANSWER_BYTES for the audit's pages) nested no deeper than `ledger.primitives.bounded.MAX_DEPTH`;
    an answer past any of them is an UnreadableAnswer."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.timeout = timeout
        self.url = url.rstrip("/")
        self.token = token
        self.home: str | None = None  # the user's home, once logged in there with a password
        self.principal: str | None = None  # uid@home, once logged in there with a password
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

    def _call(self, method: str, path: str, *, max_bytes: int = MAX_ANSWER_BYTES, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        asked = f"gateway {self.url} ({method} {path})"
        try:
            response, answer = _within(self.timeout, self._exchange, method, path, max_bytes, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(
                f"gateway {self.url} did not answer ({type(exc).__name__}: {exc})", sent=not isinstance(exc, _NOT_SENT)
            ) from None
        except TimeoutError:
            raise UnreadableAnswer(f"{asked} did not answer within the {self.timeout:g} s deadline") from None
        except (OverLimit, httpx.DecodingError) as exc:
            raise UnreadableAnswer(f"{asked} sent an answer refused unread: {exc}") from None
        try:
            payload = answer.json()
        except OverLimit as exc:
            raise UnreadableAnswer(f"{asked} sent an answer refused unread: {exc}") from None
        except ValueError:  # not JSON (a proxy's error page, say): its text is the error
            payload = {"error": answer.body.decode("utf-8", "replace")[:1000]}
        if response.is_error:
            body = payload if isinstance(payload, dict) else {}
            decision = body.get("decision")
            raise GatewayRefused(
                response.status_code,
                body.get("error", response.reason_phrase),
                body.get("reasons", []),
                decision if isinstance(decision, str) else None,
            )
        return payload

    def _exchange(self, method: str, path: str, max_bytes: int, **kwargs: Any) -> tuple[httpx.Response, Collected]:
        """The request and its answer's body, read as it comes: given up once over `max_bytes` or past the deadline
        (which, checked at each chunk, ends this read even when `_within` has stopped waiting for it)."""
        deadline = time.monotonic() + self.timeout
        with self._http.stream(method, path, **kwargs) as response:
            answer = Collected(max_bytes)
            answer.declared(response.headers.get("content-length"))
            for chunk in response.iter_bytes():  # decoded: a compressed answer counts as what it becomes
                answer.add(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError
        return response, answer

    def login(self, username: str, password: str) -> dict:
        """Password sign-on at home; keeps the session token, good at home only."""
        session = self._call("POST", "/v1/login", json={"username": username, "password": password})
        self.token, self.home, self.principal = session["token"], session["home"], session["principal"]
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

    def credit(self, operator_key: str) -> list[dict]:
        """Each other member's credit line at this centre and what it owes now (the operator's)."""
        answer: list[dict] = self._call("GET", "/v1/credit", headers={"X-Operator-Key": operator_key})
        return answer

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

    def group_join(self, join_request: dict) -> dict:
        """At home, signed on with a password: a blind group credential over the tracing key the request
        proves (`auth.group.credential.JoinRequest.to_dict()`), with the supervisors' key."""
        return self._call("POST", "/v1/groups/join", json=join_request)

    def supervision(self, home: str, expires_at: int | None = None) -> dict:
        """The supervisors' key, committee and threshold, this gateway's clock, and `home`'s issuer key and
        revocation epoch of the week a group credential expiring at `expires_at` (else one issued now) was issued
        in, as this gateway reads the chain: what a home's answer to a join must agree with."""
        params: dict[str, str | int] = {"home": home}
        if expires_at is not None:
            params["expires_at"] = expires_at
        return self._call("GET", "/v1/supervision", params=params)

    def anonymous_quote(self, request: dict, group_signature: str) -> dict:
        """A quote for `request` (its `centre` this one) asked under a group signature over the request's digest."""
        return self._call("POST", "/v1/anonymous/quote", json={"request": request, "group_signature": group_signature})

    def anonymous_grant(self, order: dict, order_signature: str, group_signature: str) -> dict:
        """At home, with no session: the hold for an order a member of one of its projects signed (group
        signature over the order's digest); the answer is a grant as POST /v1/grants gives."""
        body = {"order": order, "order_signature": order_signature, "group_signature": group_signature}
        return self._call("POST", "/v1/anonymous/grants", json=body)

    def anonymous_submit(self, job: dict, group_signature: str, idempotency_key: str | None = None) -> dict:
        """Submit a paid job (the fields of POST /v1/jobs) under a group signature over its order's digest."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = job | {"group_signature": group_signature}
        return self._call("POST", "/v1/anonymous/jobs", json=body, headers=headers)

    def anonymous_signature(self, signature_hash: str) -> dict:
        """A group signature this centre keeps (a job it ran, or at a home an anonymous grant's), by its hash, with the
        order digest it signs and the job's record digest (null for a grant): unchecked."""
        return self._call("GET", f"/v1/anonymous/signatures/{signature_hash}")

    def identify(self, opening: int, operator_key: str) -> dict:
        """At the opening's home (operator): map the opened tracing key to its member and put that on the record."""
        return self._call("POST", f"/v1/supervision/identify/{int(opening)}", headers={"X-Operator-Key": operator_key})

    def balance(self, project: str | None = None) -> dict:
        """At home, signed on with a password: the project's allocation, held, spent; the user's holds."""
        return self._call("GET", "/v1/balance", params={"project": project} if project else None)

    def complain(self, record: dict) -> dict:
        """At home, signed on with a password: the user got no key for this record; home disputes it on chain."""
        return self._call("POST", "/v1/complaints", json={"record": record})

    def anonymous_complain(self, record: dict, digest: str, account: LocalAccount, home: str) -> dict:
        """At an anonymous job's home `home`, with no session: the order's `account` got no key for the record with
        this digest; home disputes it on chain."""
        at = int(time.time())
        signed = account.sign_message(encode_defunct(text=complaint_message(home, digest.lower(), at)))
        body = {"record": record, "at": at, "signature": "0x" + bytes(signed.signature).hex()}
        return self._call("POST", "/v1/anonymous/complaints", json=body)

    def revealed_key(self, lock_hash: str) -> dict:
        """At home: a result key a serving centre revealed on chain to answer a dispute (404 until then)."""
        return self._call("GET", f"/v1/keys/{lock_hash}")

    def receipt(self, job_id: str, signature: str) -> dict:
        """The payer's receipt of a job's record, for the key its outputs are sealed under."""
        return self._call(
            "POST", f"/v1/jobs/{job_id}/receipt", json={"signature": signature}, headers=self._job_headers(job_id)
        )

    def policy(self, version: int | None = None) -> dict:
        """The centre's policy text and schema as it serves them (the latest, or a past `version`):
        unchecked, so check it against the chain (ledger.policies.check_latest, verify_text)."""
        return self._call("GET", "/v1/policy" if version is None else f"/v1/policy/{int(version)}")

    def decision(self, entry_id: str) -> dict:
        """One entry of the centre's decision log by its id (from a quote, a job or a refusal), with its
        Merkle proof once its epoch is closed: check it with ledger.decisions.verify_entry."""
        return self._call("GET", f"/v1/decisions/{entry_id}")

    def audit_decisions_page(
        self, epoch: int, account: LocalAccount, centre: str, after: int = 0, limit: int | None = None
    ) -> dict:
        """One page of `centre`'s decision log of a closed epoch: its entries stored after `after` (the `next`
        of the page before), asked as `account`, one of the centre's auditors, with a fresh signature."""
        params = {"after": int(after)} | ({} if limit is None else {"limit": int(limit)})
        headers = audit_headers(account, centre, epoch)
        path = f"/v1/audit/decisions/{int(epoch)}"
        return self._call("GET", path, params=params, headers=headers, max_bytes=MAX_AUDIT_ANSWER_BYTES)

    def audit_decision(self, digest: bytes, account: LocalAccount, centre: str) -> dict:
        """The entry of `centre`'s decision log with this digest (what a usage record names), its epoch and its
        Merkle proof, asked as `account`, one of the centre's auditors, signing for this digest alone: check the
        proof against the root anchored for that epoch."""
        name = "0x" + bytes(digest).hex()
        headers = audit_headers(account, centre, name)
        return self._call("GET", f"/v1/audit/decisions/by-digest/{name}", headers=headers)

    def audit_decisions(self, epoch: int, account: LocalAccount, centre: str, page: int = AUDIT_PAGE) -> dict:
        """`centre`'s whole decision log of a closed epoch, `page` entries a request, as one
        `{"centre", "epoch", "root", "count", "entries"}`; BadAnswer when the pages do not make one log."""
        head: dict | None = None
        entries: list = []
        after = 0
        while True:
            answer = self.audit_decisions_page(epoch, account, centre, after, page)
            if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
                raise BadAnswer(f"gateway {self.url} answered no page of a decision log (a JSON object with 'entries')")
            this = {k: answer.get(k) for k in ("centre", "epoch", "root", "count")}
            head = this if head is None else head
            if this != head:
                raise BadAnswer(f"gateway {self.url} changed its log's centre, epoch, root or count between pages")
            count, following = head["count"], answer.get("next")
            entries += answer["entries"]
            if not _is_int(count) or len(entries) > count:
                raise BadAnswer(f"gateway {self.url} served {len(entries)} entries of a log it counts {count!r:.20}")
            if following is None:
                return head | {"entries": entries}
            if not _is_int(following) or following <= after or not answer["entries"]:
                raise BadAnswer(f"gateway {self.url} named a next page ({following!r:.20}) that does not move on")
            after = following

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

    def close_epoch(
        self,
        operator_key: str,
        epoch: int | None = None,
        wait: bool = True,
        *,
        anchor_timeout: float = 300.0,
        poll: float = 0.1,
    ) -> dict:
        """Close the open epoch; naming `epoch` makes the call safe to retry.

        The gateway answers at once (202) with the closure, its anchor queued. With `wait`
        this asks again, naming the epoch, until the closure shows `anchored` (the chain has
        it), and raises AnchorPending past `anchor_timeout` seconds; without, it returns the
        first answer (`anchored` false while the anchor waits in the outbox).
        """
        closure = self._close(operator_key, epoch)
        deadline = time.monotonic() + anchor_timeout
        while wait and not closure.get("anchored"):
            if time.monotonic() > deadline:
                raise AnchorPending(
                    f"epoch {closure.get('epoch')} is closed at {self.url} but its anchor is not on chain after "
                    f"{anchor_timeout:g} s: it waits in the gateway's outbox (is its chain node up?)"
                )
            time.sleep(poll)
            try:
                closure = self._close(operator_key, int(closure["epoch"]))
            except GatewayRefused as exc:
                if exc.status != 503:
                    raise  # a chain node briefly down answers 503: keep waiting for the anchor
        return closure

    def _close(self, operator_key: str, epoch: int | None) -> dict:
        body = {"epoch": epoch} if epoch is not None else None
        return self._call("POST", "/v1/epochs/close", json=body, headers={"X-Operator-Key": operator_key})

    def audit_epoch(self, epoch: int) -> dict:
        return self._call("GET", f"/v1/audit/epochs/{epoch}")

    def epoch_records_page(self, epoch: int, after: int = 0, limit: int | None = None) -> dict:
        """One page of the centre's signed usage records of `epoch`: `{"records": [...], "next": seq | null}`, the
        records stored after `after` (0, then the `next` of the page before), unchecked: follow `next` until it
        is null (`auditing.fetch_decision_log` does, bounded by the count anchored on chain)."""
        params = {"after": int(after)} | ({} if limit is None else {"limit": int(limit)})
        path = f"/v1/audit/epochs/{int(epoch)}/records"
        return self._call("GET", path, params=params, max_bytes=MAX_AUDIT_ANSWER_BYTES)

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


def _within(seconds: float, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)`, or TimeoutError when it is not done within `seconds`.

    httpx's timeouts bound each read, never a whole answer, and a blocked read cannot be cut short from its own
    thread: so the work runs in a thread of its own, which is left behind when late (a daemon: it ends with its
    connection, and never holds a process at exit)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work(*args, **kwargs)))
        except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name="gateway-answer", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        raise TimeoutError(f"not done within {seconds:g} s")
    done, value = outcome[0]
    if not done:
        raise value
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def audit_headers(account: LocalAccount, centre: str, epoch: int | str, at: int | None = None) -> dict[str, str]:
    """The header that opens `centre`'s decision log of `epoch` (or the one entry whose 0x digest `epoch` is) to
    `account` (one of its auditors' chain keys): its EIP-191 signature of `xcentre-audit:<centre>:<epoch>:<at>`,
    good for a few minutes after `at` (now)."""
    at = int(time.time()) if at is None else at
    signed = account.sign_message(encode_defunct(text=audit_message(centre, epoch, at)))
    return {AUDIT_SIGNATURE_HEADER: f"{at}:0x{bytes(signed.signature).hex()}"}
