"""Forwarding to a peer gateway that misbehaves: slow, broken, or hostile answers.

The peer is an httpx mock transport, so each test decides exactly what the other
centre answers. What matters is what the forwarding centre does next: move on to
another centre only when the job certainly did not start at this one, and never
answer its own user with a 500.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import PeerUnavailable
from gateway.forwarding import PeerDenied, Peers

BODY = {"command": ["true"], "walltime": 30, "centre": "cloud-b"}


def peers(handler) -> Peers:
    return Peers(lambda centre: "http://cloud-b.example", transport=httpx.MockTransport(handler))


def answer(status: int, payload: object):
    return lambda request: httpx.Response(status, json=payload)


def test_a_job_the_peer_accepted_gets_its_absolute_url():
    view = peers(answer(202, {"id": "job-1", "status": "queued"})).submit("cloud-b", "tok", BODY, "k1")
    assert view["url"] == "http://cloud-b.example/v1/jobs/job-1"


def test_no_answer_after_sending_is_not_a_refusal():
    """The peer may have started the job: trying another centre could run it twice."""

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(PeerUnavailable) as caught:
        peers(slow).submit("cloud-b", "tok", BODY, "k1")
    assert caught.value.status == 502
    assert "cloud-b" in caught.value.message and "may have started" in caught.value.message


def test_a_peer_that_cannot_be_reached_is_a_refusal_naming_it():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PeerDenied) as caught:
        peers(down).submit("cloud-b", "tok", BODY, None)
    assert caught.value.reasons == ["cloud-b: gateway unreachable (ConnectError)"]


@pytest.mark.parametrize("payload", [{"status": "queued"}, {"id": "../../v1/audit"}, {"id": 7}, {"id": "a/b"}, ["x"]])
def test_an_accepted_job_without_a_usable_id_is_a_bad_gateway(payload):
    with pytest.raises(PeerUnavailable) as caught:
        peers(answer(202, payload)).submit("cloud-b", "tok", BODY, None)
    assert caught.value.status == 502 and "cloud-b" in caught.value.message


@pytest.mark.parametrize("status", [500, 503])
def test_a_peer_server_error_is_a_bad_gateway_not_ours(status):
    with pytest.raises(PeerUnavailable) as caught:
        peers(answer(status, {"error": "boom"})).submit("cloud-b", "tok", BODY, None)
    assert caught.value.status == 502 and "boom" in caught.value.message


def test_a_peer_client_error_is_passed_on_with_its_status():
    with pytest.raises(Exception) as caught:
        peers(answer(409, {"error": "idempotency key reused", "reasons": []})).submit("cloud-b", "tok", BODY, "k")
    assert caught.value.status == 409 and "cloud-b: idempotency key reused" in caught.value.message


@pytest.mark.parametrize("reasons", ["a string", [1, {"x": 2}], None, [""]])
def test_a_refusal_with_odd_reasons_becomes_a_list_of_text(reasons):
    with pytest.raises(PeerDenied) as caught:
        peers(answer(403, {"error": "no", "reasons": reasons})).submit("cloud-b", "tok", BODY, None)
    assert caught.value.reasons and all(isinstance(r, str) and r for r in caught.value.reasons)
