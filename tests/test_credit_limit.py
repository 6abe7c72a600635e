"""A serving centre's credit to a home, over HTTP on real parts (slapd per centre, anvil, gateways).

cloud-b runs hpc-a's users' jobs on hpc-a's grants and is paid from hpc-a's
collateral when their epoch settles. A home that grants more than its collateral
covers (here: grants signed with hpc-a's member key directly, as a home that
ignores its own books would) must find the serving centre refusing past what
the collateral pays: what hpc-a owes cloud-b (what its jobs not finished may
bill, its records not settled) stays within its line. The demo's collateral
covers thousands of jobs, so most tests here give cloud-b a line a job or two
wide (`tight`), set through the desk's share as an operator sets it.
"""

from __future__ import annotations

import json
from fractions import Fraction

import httpx
import pytest

from gateway.client.cli import main
from gateway.client.dispatch import NoCentreAccepts, SignOn, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.credit import cost, granted, post, room, tighten
from tests.fixtures.payment import home_grant

SLOW = {"command": ["python3", "-c", "import time; time.sleep(6)"], "walltime": 30, "resources": {"cores": 1}}
QUICK = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


def wait(consortium, centre: str, job_id: str, token: str) -> dict:
    with GatewayClient(consortium.url(centre), token=token) as client:
        return client.wait(job_id)


@pytest.fixture
def token(consortium) -> str:
    return consortium.login("alice", "hpc-a", at="cloud-b")


@pytest.fixture
def tight(consortium, monkeypatch):
    """cloud-b lends hpc-a, beyond what it owes now, room for a job and a half as costly as SLOW. Returns SLOW's
    cost."""
    slow = cost(consortium, SLOW)
    tighten(consortium, monkeypatch, slow * 3 // 2)
    limit, owed = room(consortium)
    assert limit - owed in range(slow * 3 // 2 - 1, slow * 3 // 2 + 1)
    return slow


def test_the_line_is_a_share_of_the_homes_free_collateral_on_chain(consortium):
    node = consortium.centres["cloud-b"].node
    free = node.parts.index.collateral(node.parts.index.member("hpc-a").account).free
    assert free > 0 and node.credit.share() == Fraction(1, 2)  # three members: cloud-b and ai-c serve hpc-a
    assert node.credit.line("hpc-a").limit == free // 2
    assert node.credit.line("cloud-b") is None  # its own users are paid from their holds, not on credit


def test_a_job_that_may_bill_past_the_line_is_refused_and_nothing_stored(consortium, token, tight):
    limit = room(consortium)[0]
    big = dict(SLOW, walltime=SLOW["walltime"] * 2)  # may bill twice SLOW's cost: past the room of 1.5
    before = (consortium.job_count(), consortium.record_count())
    response = post(consortium, big, "cloud-b", granted(consortium, big, "cloud-b", cost(consortium, big)), token)
    assert response.status_code == 402, response.text
    body = response.json()
    assert "cloud-b takes hpc-a's jobs while what hpc-a owes it stays within a credit of" in body["error"]
    assert "another centre" in body["error"] and "does not fit" in body["error"]
    assert body["reasons"] == ["credit-limit", f"limit: {limit}", f"this job may bill: {cost(consortium, big)}"]
    assert (consortium.job_count(), consortium.record_count()) == before


def test_a_job_is_owed_for_what_it_may_bill_until_its_record_replaces_it(consortium, token, tight):
    slow = tight
    owed = room(consortium)[1]
    first = granted(consortium, SLOW, "cloud-b", 10**12)  # a grant far past the line: it bills at most its cost
    accepted = post(consortium, SLOW, "cloud-b", first, token, key="credit-first")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert room(consortium)[1] == owed + slow  # while it runs, the most it may bill is owed

    second = granted(consortium, SLOW, "cloud-b", slow)  # another as costly: 2 x cost is past 1.5
    refused = post(consortium, SLOW, "cloud-b", second, token)
    assert refused.status_code == 402, refused.text
    again = post(consortium, SLOW, "cloud-b", first, token, key="credit-first")  # a retry is never refused
    assert again.status_code in (200, 202) and again.json()["id"] == job_id

    view = wait(consortium, "cloud-b", job_id, token)
    assert view["status"] == "succeeded", view
    assert room(consortium)[1] == owed + view["usage"]["price"]  # its record's price is owed now
    taken = post(consortium, SLOW, "cloud-b", second, token)
    assert taken.status_code == 202, taken.text
    assert wait(consortium, "cloud-b", taken.json()["id"], token)["status"] == "succeeded"


def test_a_homes_own_users_are_not_on_credit(consortium, tight):
    token = consortium.login("alice", "hpc-a")
    big = dict(SLOW, walltime=SLOW["walltime"] * 4)
    response = post(consortium, big, "hpc-a", granted(consortium, big, "hpc-a", cost(consortium, big, "hpc-a")), token)
    assert response.status_code == 202, response.text
    assert wait(consortium, "hpc-a", response.json()["id"], token)["status"] == "succeeded"


def test_the_operator_reads_each_homes_line_and_what_it_owes_and_nobody_else_does(consortium, token, tight):
    limit, owed = room(consortium)
    response = post(consortium, SLOW, "cloud-b", granted(consortium, SLOW, "cloud-b", 10**9), token)
    assert response.status_code == 202, response.text
    url = consortium.url("cloud-b") + "/v1/credit"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"X-Operator-Key": "not it"}).status_code == 401
    lines = httpx.get(url, headers={"X-Operator-Key": consortium.operator_key("cloud-b")}).json()
    hpc_a = next(line for line in lines if line["home"] == "hpc-a")
    assert {line["home"] for line in lines} == {"hpc-a", "ai-c"}
    assert hpc_a["limit"] == limit and hpc_a["owed_in_flight"] + hpc_a["owed_billed"] == owed + cost(consortium, SLOW)
    assert hpc_a["defaulted"] == 0 and hpc_a["free_collateral"] > 0 and "/" in hpc_a["share"]
    assert "xcentre_credit" not in httpx.get(consortium.url("cloud-b") + "/metrics").text  # public: no figures
    wait(consortium, "cloud-b", response.json()["id"], token)


def test_a_client_placing_the_job_goes_on_to_another_centre_and_one_naming_the_centre_is_told_to_wait(
    consortium, token, tight
):
    """cloud-b, with hpc-a's line taken up by a job running there, is as good as unavailable to hpc-a's users."""
    hog = post(consortium, SLOW, "cloud-b", granted(consortium, SLOW, "cloud-b", cost(consortium, SLOW)), token)
    assert hog.status_code == 202, hog.text
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    alice = SignOn(home.url, with_home_session(home).at, home_grant(consortium, "hpc-a"))
    try:
        with pytest.raises(NoCentreAccepts) as waiting:
            submit_anywhere(consortium.url("hpc-a"), SLOW, alice, centre="cloud-b")
        assert waiting.value.status == 503 and "cloud-b takes hpc-a's jobs while" in waiting.value.reasons[0]
        placed = submit_anywhere(consortium.url("cloud-b"), QUICK | {"walltime": SLOW["walltime"]}, alice)
        try:
            assert placed.centre != "cloud-b"
            assert placed.client.wait(placed.view["id"])["status"] == "succeeded"
        finally:
            placed.client.close()
        wait(consortium, "cloud-b", hog.json()["id"], token)
    finally:
        home.close()


def test_the_operator_reads_the_lines_from_the_command_line(consortium, tmp_path, capsys):
    key = tmp_path / "operator.key"
    key.write_text(consortium.operator_key("cloud-b") + "\n")
    assert main(["credit", "--gateway", consortium.url("cloud-b"), "--operator-key-file", str(key)]) == 0
    lines = {line["home"]: line for line in json.loads(capsys.readouterr().out)}
    assert set(lines) == {"hpc-a", "ai-c"} and lines["hpc-a"]["limit"] == room(consortium)[0]
    key.write_text("not the key\n")
    assert main(["credit", "--gateway", consortium.url("cloud-b"), "--operator-key-file", str(key)]) != 0


def test_the_quote_says_so_before_the_home_holds_anything(consortium, token, tight):
    slow = tight
    quoted = httpx.post(
        consortium.url("cloud-b") + "/v1/jobs/quote",
        json=SLOW | {"centre": "cloud-b"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert quoted.status_code == 200 and quoted.json()["max_price"] == slow
    hog = post(consortium, SLOW, "cloud-b", granted(consortium, SLOW, "cloud-b", slow), token)
    assert hog.status_code == 202, hog.text
    refused = httpx.post(
        consortium.url("cloud-b") + "/v1/jobs/quote",
        json=SLOW | {"centre": "cloud-b"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert refused.status_code == 402 and refused.json()["reasons"][0] == "credit-limit", refused.text
    wait(consortium, "cloud-b", hog.json()["id"], token)
