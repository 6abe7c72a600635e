"""Attacks on the anonymous path by a hostile user: a member of a project escaping accountability.

Each test here reproduces a finding and fails on the code it was written against; every part is real (slapd,
anvil with the Supervision contract and its DKG, the three gateways over HTTP), as in tests/test_groups_gateway.py.
"""

from __future__ import annotations

import secrets

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak

from auth.group.credential import GroupCredential, join_request, new_member_secret
from auth.group.points import g1_from_raw
from auth.group.signature import order_message, sign
from gateway.client.supervising import SupervisionUnusable, find_signature
from ledger.ids import centre_id
from ledger.payment import Order, order_digest, sign_typed
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import domain_for
from tests.fixtures.consortium import start_consortium

HOME, SERVING = "hpc-a", "cloud-b"


@pytest.fixture(scope="module")
def running(slapd_factory, anvil_url, tmp_path_factory):
    """A consortium of this module's own: its tests exhaust a project's allocation at hpc-a."""
    consortium = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("attack-user-anonymous"))
    try:
        yield consortium
    finally:
        consortium.stop()


def session(running, uid: str) -> dict:
    return {"Authorization": f"Bearer {running.login(uid, HOME)}"}


class Member:
    """A member of physics at hpc-a who joined over HTTP, as `xcentre group join` does."""

    def __init__(self, running, uid: str) -> None:
        self.sk = new_member_secret()
        body = join_request(self.sk, home=HOME, project="physics", member=uid).to_dict()
        with httpx.Client(base_url=running.url(HOME), timeout=60) as http:
            answer = http.post("/v1/groups/join", json=body, headers=session(running, uid))
        assert answer.status_code == 200, answer.text
        self.credential = GroupCredential.from_dict(answer.json()["credential"])
        self.issuer_pk = from_hex(answer.json()["issuer_pk"])
        self.key = g1_from_raw(from_hex(answer.json()["supervision_key"], size=96))

    def sign(self, message: bytes) -> bytes:
        return sign(self.credential, self.sk, self.issuer_pk, self.key, message)


def order(running, max_price: int) -> tuple[dict, str, bytes]:
    """An order for a job at cloud-b, signed by a fresh payment account: (order, its signature, its digest)."""
    domain = domain_for(running.deployment)
    made = Order(
        request=keccak(text=secrets.token_hex(8)),
        centre=centre_id(SERVING),
        rates_version=1,
        max_price=max_price,
        deadline=int(running.centres[HOME].node.parts.index.now()) + 6 * 24 * 3600,
        nonce=secrets.randbits(256),
    )
    return made.to_dict(), to_hex(sign_typed(made, domain, Account.create().key)), order_digest(made, domain)


def available(running, uid: str) -> int:
    with httpx.Client(base_url=running.url(HOME), timeout=60) as http:
        answer = http.get("/v1/balance", params={"project": "physics"}, headers=session(running, uid))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["project"]["available"])


# -- finding 1: an anonymous grant is a transaction nobody can ever open ------------------------------------------


def test_an_anonymous_grant_that_locks_the_projects_budget_can_be_opened_by_the_supervisors(running):
    """alice, a member of physics, asks hpc-a anonymously to hold the project's whole available allocation for an
    order she never submits. bob, the other member, is then refused every grant for days (until the order's
    deadline). That hold is a transaction of the anonymous path like any job, yet the group signature that
    authorised it is kept nowhere: no centre serves it, so the supervisors can never open it and alice is never
    accountable. (Signed on, the hold would name her: its principal is her uid.)"""
    alice = Member(running, "alice")
    everything = available(running, "bob")
    assert everything > 0
    placed, placed_signature, digest = order(running, everything)
    group_signature = alice.sign(order_message(digest))
    body = {"order": placed, "order_signature": placed_signature, "group_signature": to_hex(group_signature)}
    with httpx.Client(base_url=running.url(HOME), timeout=60) as http:
        held = http.post("/v1/anonymous/grants", json=body)
        assert held.status_code == 200, held.text
        # the harm: bob, a member in good standing, gets nothing any more
        other, other_signature, _ = order(running, 1_000)
        bob = http.post(
            "/v1/grants", json={"order": other, "order_signature": other_signature}, headers=session(running, "bob")
        )
    assert bob.status_code == 402, bob.text
    assert available(running, "bob") == 0
    # the accountability the issue promises: the supervisors can fetch what they would open, as for a job
    try:
        seen = find_signature(running.chain, running.deployment, keccak(group_signature))
    except SupervisionUnusable as exc:
        pytest.fail(f"the group signature behind an anonymous hold of the whole allocation is not kept: {exc}")
    assert seen.signature == group_signature and seen.signed.home == HOME
