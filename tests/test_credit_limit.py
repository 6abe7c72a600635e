"""A serving centre's credit to a home, over HTTP on real parts (slapd per centre, anvil, gateways).

cloud-b runs hpc-a's users' jobs on hpc-a's grants and is paid from hpc-a's
collateral when their epoch settles. A home that grants more than its collateral
covers (here: grants signed with hpc-a's member key directly, as a home that
ignores its own books would) must find the serving centre refusing past what
the collateral pays: what hpc-a owes cloud-b, jobs not finished and records not
settled, stays within hpc-a's free collateral.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.client.dispatch import NoCentreAccepts, SignOn, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.payment import home_grant, paid
from tests.test_metrics import scrape

SLOW = {"command": ["python3", "-c", "import time; time.sleep(6)"], "walltime": 30, "resources": {"cores": 1}}
QUICK = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


def post(consortium, job: dict, centre: str, payment, token: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} | ({"Idempotency-Key": key} if key else {})
    return httpx.post(
        f"{consortium.url(centre)}/v1/jobs",
        json=job | {"centre": centre} | payment.fields(),
        headers=headers,
        timeout=30,
    )


def granted(consortium, job: dict, centre: str, amount: int):
    """An order of `job` at `centre` and hpc-a's grant of it, both for `amount`."""
    return paid(consortium, job, centre, order_change={"max_price": amount}, grant_change={"amount": amount})


def room(consortium, home: str = "hpc-a", at: str = "cloud-b") -> tuple[int, int]:
    """(the line `at` gives `home` now, what `home` owes `at` now)."""
    desk = consortium.centres[at].node.credit
    return desk.line(home).limit, desk.owed(home).total


def wait(consortium, centre: str, job_id: str, token: str) -> dict:
    with GatewayClient(consortium.url(centre), token=token) as client:
        return client.wait(job_id)


@pytest.fixture
def token(consortium) -> str:
    return consortium.login("alice", "hpc-a", at="cloud-b")


def test_the_line_is_the_homes_free_collateral_on_chain(consortium):
    node = consortium.centres["cloud-b"].node
    account = node.parts.index.member("hpc-a").account
    free = node.parts.index.collateral(account).free
    assert free > 0 and node.credit.line("hpc-a").limit == free
    assert node.credit.line("cloud-b") is None  # its own users are paid from their holds, not on credit


def test_a_grant_past_the_homes_free_collateral_is_refused_and_nothing_stored(consortium, token):
    limit, owed = room(consortium)
    before = (consortium.job_count(), consortium.record_count())
    response = post(consortium, QUICK, "cloud-b", granted(consortium, QUICK, "cloud-b", limit - owed + 1), token)
    assert response.status_code == 402, response.text
    body = response.json()
    assert "cloud-b gives hpc-a credit up to" in body["error"] and "another centre" in body["error"]
    assert f"limit: {limit}" in body["reasons"] and f"grant: {limit - owed + 1}" in body["reasons"]
    assert (consortium.job_count(), consortium.record_count()) == before


def test_jobs_not_finished_count_until_their_record_replaces_their_grant(consortium, token):
    limit, owed = room(consortium)
    cost = 1_000_000  # above what either job may cost at cloud-b at its limits
    first = granted(consortium, SLOW, "cloud-b", limit - owed - cost + 1)
    accepted = post(consortium, SLOW, "cloud-b", first, token, key="credit-first")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert room(consortium)[1] == limit - cost + 1  # its whole grant is owed while it runs

    second = granted(consortium, QUICK, "cloud-b", cost)
    refused = post(consortium, QUICK, "cloud-b", second, token)
    assert refused.status_code == 402, refused.text
    in_flight = consortium.centres["cloud-b"].node.credit.owed("hpc-a").in_flight
    assert in_flight >= first.grant["amount"]
    assert f"owed for jobs not finished: {in_flight}" in refused.json()["reasons"]
    again = post(consortium, SLOW, "cloud-b", first, token, key="credit-first")  # a retry is never refused
    assert again.status_code in (200, 202) and again.json()["id"] == job_id

    view = wait(consortium, "cloud-b", job_id, token)
    assert view["status"] == "succeeded", view
    price = view["usage"]["price"]
    assert room(consortium)[1] == owed + price  # the record's price is owed now, not the grant
    taken = post(consortium, QUICK, "cloud-b", second, token)
    assert taken.status_code == 202, taken.text
    assert wait(consortium, "cloud-b", taken.json()["id"], token)["status"] == "succeeded"


def test_a_homes_own_users_are_not_on_credit(consortium):
    token = consortium.login("alice", "hpc-a")
    limit = consortium.centres["cloud-b"].node.credit.line("hpc-a").limit
    response = post(consortium, QUICK, "hpc-a", granted(consortium, QUICK, "hpc-a", 10 * limit), token)
    assert response.status_code == 202, response.text
    assert wait(consortium, "hpc-a", response.json()["id"], token)["status"] == "succeeded"


def test_the_operator_sees_each_homes_line_and_what_it_owes(consortium, token):
    limit, owed = room(consortium)
    response = post(consortium, SLOW, "cloud-b", granted(consortium, SLOW, "cloud-b", 2_000_000), token)
    assert response.status_code == 202, response.text
    samples = scrape(consortium.url("cloud-b"))
    assert samples["xcentre_credit_limit"] == {
        (("home", "ai-c"),): room(consortium, "ai-c")[0],
        (("home", "hpc-a"),): limit,
    }
    assert samples["xcentre_credit_owed"][(("home", "hpc-a"),)] == owed + 2_000_000
    wait(consortium, "cloud-b", response.json()["id"], token)


def test_a_client_placing_the_job_goes_on_to_another_centre_and_one_naming_the_centre_is_told_to_wait(
    consortium, token
):
    """cloud-b, past hpc-a's line while a large grant runs there, is as good as unavailable to hpc-a's users."""
    limit, owed = room(consortium)
    hog = post(consortium, SLOW, "cloud-b", granted(consortium, SLOW, "cloud-b", limit - owed), token)
    assert hog.status_code == 202, hog.text
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    alice = SignOn(home.url, with_home_session(home).at, home_grant(consortium, "hpc-a"))
    with pytest.raises(NoCentreAccepts) as waiting:
        submit_anywhere(consortium.url("hpc-a"), QUICK, alice, centre="cloud-b")
    assert waiting.value.status == 503 and "cloud-b gives hpc-a credit up to" in waiting.value.reasons[0]
    placed = submit_anywhere(consortium.url("cloud-b"), QUICK, alice, centre="auto")
    try:
        assert placed.centre != "cloud-b"
        assert placed.client.wait(placed.view["id"])["status"] == "succeeded"
    finally:
        placed.client.close()
    wait(consortium, "cloud-b", hog.json()["id"], token)
    wait(consortium, "cloud-b", hog.json()["id"], token)
    home.close()
