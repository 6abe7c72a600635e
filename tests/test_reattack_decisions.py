"""Attack the fixes of issue 9's decision log (user, member, outsider): what still works.

Each test asserts the safe behaviour and fails on the code as it stands.

- Counting the nesting of a body (`ledger.primitives.bounded.json_depth`, used by the gateway's
  RequestLimits on every request and by every client on every answer) strips strings with a regex that
  rescans to the end from every quote when a string never closes: a body of one quote and escaped
  quotes takes quadratic time, holding the GIL. One unauthenticated 1 MiB POST froze a gateway (the
  middleware runs in the event loop) for hours; a member's 4 MiB answer hung a client past its deadline.
- The per-principal rate limit keys a presented sign-on by its session pseudonym, fresh at every
  presentation: one credential holder signs on again and gets a full burst each time.
- `xcentre audit decision` takes the epoch an entry is in from the centre's gateway: a centre that
  dropped a signed refusal from its log names an epoch it will never reach, and the check says
  "not anchored yet" (exit 0) forever. An answer that is not a JSON object crashes the check.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gateway.client.http import GatewayClient
from gateway.client.wallet import Wallet
from gateway.node.policies import CLIENT_DECISION_BURST, CLIENT_DECISIONS_PER_SECOND, DECISION_BURST
from gateway.node.ratelimit import RateLimit
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.test_audit_decisions_cli import anchored

ROOT = Path(__file__).resolve().parents[1]
LONG = {"command": ["true"], "walltime": 7200, "centre": "hpc-a"}  # students: at most 1 hour at hpc-a


def _in_time(script: str, seconds: float) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter, killed after `seconds` (a regex holding the GIL cannot be stopped)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=seconds, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {seconds:g} s")


# -- nesting counted in quadratic time -------------------------------------------------------------

UNCLOSED = "b'\"' + b'\\\\\"' * {n}"  # '"' then n times '\"': a string that never closes


def test_counting_the_nesting_of_an_unclosed_string_is_linear():
    """300,000 escaped quotes (600 kB): json_depth took ~40 minutes here (32 kB: 7 s, 16 kB: 1.6 s)."""
    body = UNCLOSED.format(n=300_000)
    done = _in_time(f"from ledger.primitives.bounded import json_depth\nprint(json_depth({body}))", 20)
    assert done.returncode == 0, done.stderr[-500:]


BODY_LIMITS = """
import asyncio
from gateway.api.limits import RequestLimits

async def app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

body = BODY
sent = []

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    sent.append(message)

length = [(b"content-length", str(len(body)).encode())]
scope = {"type": "http", "method": "POST", "path": "/v1/placement", "headers": length}
asyncio.run(RequestLimits(app)(scope, receive, send))
print(sent[0]["status"])
"""


def test_one_unauthenticated_request_does_not_freeze_a_gateway():
    """A 1 MiB body (the most a gateway reads) of one quote and escaped quotes, to any route, even unsigned:
    the middleware counted its nesting in the event loop, holding the GIL, for hours."""
    script = BODY_LIMITS.replace("BODY", UNCLOSED.format(n=2**19 - 1))
    done = _in_time(script, 20)
    assert done.returncode == 0, done.stderr[-500:]


CLIENT = """
import httpx
from gateway.client.http import GatewayClient, UnreadableAnswer
body = BODY
wire = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
client = GatewayClient("http://gateway.example", timeout=2.0, transport=wire)
try:
    client.policy()
except Exception as exc:
    print(type(exc).__name__)
"""


def test_a_members_answer_cannot_hold_a_client_past_its_deadline():
    """3 MiB of escaped quotes (under the 4 MiB a call reads): the answer arrives at once, then its nesting is
    counted in the caller's thread, after the deadline's thread is done, for longer than any deadline."""
    done = _in_time(CLIENT.replace("BODY", UNCLOSED.format(n=3 * 2**19)), 20)
    assert done.returncode == 0, done.stderr[-500:]


# -- the rate limit, one sign-on at a time ---------------------------------------------------------


def test_one_credential_holder_cannot_multiply_the_decision_rate_by_signing_on_again(consortium):
    """Each sign-on is a fresh pseudonym, so a fresh bucket of its own: the presented sessions of one network
    address share one more, which bounds them all."""
    desk = consortium.centres["hpc-a"].node.parts.decisions
    with GatewayClient(consortium.url("hpc-a")) as home:
        wallet = Wallet.from_issuance(consortium.url("hpc-a"), home.credential("bob", PASSWORDS["bob"]))
    sessions, evaluated, started = 4, 0, time.monotonic()
    try:
        for _ in range(sessions):
            with GatewayClient(consortium.url("hpc-a")) as signing:
                token = signing.sign_on(wallet, "hpc-a")["token"]  # a fresh pseudonym, a fresh bucket
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=consortium.url("hpc-a"), headers=headers) as client:
                for _ in range(DECISION_BURST + 1):
                    answer = client.post("/v1/jobs/quote", json=LONG, timeout=30)
                    if answer.status_code == 429:
                        assert int(answer.headers["Retry-After"]) >= 1
                        assert "presented sessions of one network address" in answer.json()["error"]
                        break
                    assert answer.status_code == 403
                    evaluated += 1
        allowed = CLIENT_DECISION_BURST + CLIENT_DECISIONS_PER_SECOND * (time.monotonic() - started) + 1
        assert evaluated <= allowed, (
            f"bob, one credential, {sessions} sign-ons: {evaluated} decisions logged in "
            f"{time.monotonic() - started:.1f} s, where one address's presented sessions get at most {allowed:.0f}"
        )
    finally:  # every test runs from this address: leave its bucket full for them
        desk.client_limit = RateLimit(desk.client_limit.rate, desk.client_limit.burst)


# -- xcentre audit decision believes the gateway's epoch ---------------------------------------------


class _Lying(BaseHTTPRequestHandler):
    answer: object = None

    def do_GET(self) -> None:
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _lying_gateway(answer: object) -> tuple[str, ThreadingHTTPServer]:
    handler = type("Answer", (_Lying,), {"answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture(scope="module")
def dropped_refusal(consortium):
    """bob's refusal at hpc-a (its 403: entry and signature), dropped from hpc-a's log, then the epoch it was in
    closed and anchored without it."""
    token = consortium.login("bob", "hpc-a")
    answer = eventually(
        lambda: (
            r
            if (
                r := httpx.post(
                    f"{consortium.url('hpc-a')}/v1/jobs/quote",
                    json=LONG,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
            ).status_code
            != 429
            else None
        )
    )
    assert answer.status_code == 403, answer.text
    store = consortium.store("hpc-a")
    with sqlite3.connect(store.path) as db:  # the operator, in its own database, before the close
        db.execute("DELETE FROM decisions WHERE id = ?", (answer.json()["decision"].removeprefix("0x"),))
    (epoch,) = {c["epoch"] for c in consortium.close_epoch_everywhere()}
    eventually(lambda: anchored(consortium, "hpc-a", epoch))
    return answer.json(), epoch


def _check(consortium, url: str, entry_id: str, **held):
    from gateway.client.decision_check import check_decision

    return check_decision(consortium.chain, consortium.deployment, "hpc-a", entry_id, gateway=url, **held)


def test_a_refusal_named_in_an_epoch_the_centre_never_reaches_is_reported(consortium, dropped_refusal):
    body, epoch = dropped_refusal
    future = epoch + 1_000_000  # hpc-a dropped the entry from its anchored log; it names an epoch far ahead
    url, server = _lying_gateway(
        {
            "entry": body["entry"],
            "digest": None,
            "epoch": future,
            "closed": False,
            "proof": None,
            "root": None,
            "anchored_root": None,
            "anchored": False,
        }
    )
    try:
        checked = _check(consortium, url, body["decision"], held=body["entry"], signature=body["signature"])
    finally:
        server.shutdown()
    assert checked.signed
    assert not checked.ok, (
        f"hpc-a anchored epoch {epoch}, the one open when it refused, without the entry, and its gateway says "
        f"the entry is in epoch {future}: the check finds nothing wrong (not anchored yet, exit 0)"
    )


@pytest.mark.parametrize("answer", [[1], "x", []])
def test_an_answer_that_is_no_object_is_a_clear_error(consortium, dropped_refusal, answer):
    from gateway.client.decision_check import DecisionUncheckable

    body, _ = dropped_refusal
    url, server = _lying_gateway(answer)
    try:
        with pytest.raises(DecisionUncheckable):
            _check(consortium, url, body["decision"])
    finally:
        server.shutdown()
