"""An epoch whose records bill a home removed since still anchors, on real parts (slapd, anvil, gateways).

UsageLedger refuses an anchor that names a home which is no member (`UnknownHome`). A home removed by vote
while its users' jobs ran at a centre leaves records in that centre's open epoch: the anchor of that epoch must
go without the claim on the former member (settlement drops claims on it anyway, `settleWithout`), or the
centre's claims on every other home of that epoch are never anchored, never paid.
"""

from __future__ import annotations

import pytest

from ledger import governance as gov
from ledger.ids import centre_id
from tests.fixtures.consortium import court as consortium_court
from tests.fixtures.consortium import eventually
from tests.fixtures.payment import paid

JOB = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}


@pytest.fixture(scope="module")
def court(slapd_factory, anvil_url, tmp_path_factory):
    with consortium_court(slapd_factory, anvil_url, tmp_path_factory.mktemp("removed-home"), 4) as running:
        yield running


def run_at(court, user: str, home: str, centre: str) -> dict:
    token = court.login(user, home, at=centre)
    from gateway.client.http import GatewayClient

    with GatewayClient(court.url(centre), token=token) as client:
        view = client.submit(JOB | {"centre": centre} | paid(court, JOB, centre, home).fields())
        return client.wait(view["id"])


def test_an_epoch_with_records_of_a_removed_home_anchors_its_other_claims(court):
    assert run_at(court, "alice", "hpc-a", "cloud-b")["status"] == "succeeded"
    assert run_at(court, "dave", "ai-c", "cloud-b")["status"] == "succeeded"
    chain, deployment = court.chain, court.deployment
    proposed = gov.propose_remove(chain, deployment, court.centres["cloud-b"].account, "hpc-a")
    voted = gov.vote(chain, deployment, court.centres["ai-c"].account, proposed.proposal.id)
    assert voted.carried
    index = court.centres["cloud-b"].node.parts.index
    eventually(lambda: index.sync() is not None and not index.member("hpc-a").active)

    closed = court.centres["cloud-b"].node.close_epoch()
    anchor = eventually(lambda: index.sync() is not None and index.anchor(centre_id("cloud-b"), closed.epoch))
    assert set(anchor.homes) == {centre_id("ai-c")}  # the claim on the former member is left out
