"""A member centre voted out by k of n: its sessions end everywhere, its past epochs still audit.

Runs on a consortium of its own (a fresh deployment on the session's anvil and a new
slapd per centre), because it removes a member.
"""

from __future__ import annotations

import pytest

from gateway.books.auditor import audit_epoch
from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.wallet import PaymentKeys
from ledger.deploy import bind
from ledger.ids import centre_id
from tests.fixtures.consortium import PASSWORDS, start_consortium
from tests.fixtures.payment import paid

REMOVE = 1


@pytest.fixture(scope="module")
def fresh(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("membership"))
    yield running
    running.stop()


def run(consortium, user: str, home: str, at: str) -> dict:
    """user@home runs a job at `at` as a client does: a token exchanged at home, an order home grants, the receipt."""
    keys = PaymentKeys()
    with GatewayClient(consortium.url(home)) as session:
        session.login(user, PASSWORDS[user])
        job = {"command": ["python3", "-c", "print(1)"], "walltime": 30}
        submission = submit_anywhere(consortium.url(home), job, with_home_session(session), centre=at, keys=keys)
    with submission.client:
        return finish(submission, keys, timeout=60).view


def paid_job(consortium, job: dict, home: str) -> dict:
    """`job` with an order for its centre and a grant of it by `home`: refused for its sign-on, not its payment."""
    return job | paid(consortium, job, job["centre"], home).fields()


def test_a_removed_centre_is_refused_everywhere_and_its_epochs_still_audit(fresh):
    run(fresh, "carol", "cloud-b", "ai-c")
    run(fresh, "dave", "ai-c", "hpc-a")
    closures = fresh.close_epoch_everywhere()
    epoch = closures[0]["epoch"]
    fresh.wait_settled(epoch)  # once its dispute and answer windows have passed
    dave = {centre: fresh.login("dave", "ai-c", at=centre) for centre in ("hpc-a", "cloud-b")}

    # hpc-a proposes to remove ai-c, cloud-b's vote makes the quorum of 2
    consortium = bind(fresh.chain, fresh.deployment).consortium
    member = consortium.functions.member(centre_id("ai-c")).call()
    fresh.chain.transact(consortium.functions.propose(REMOVE, member), fresh.centres["hpc-a"].account)
    proposal = consortium.functions.proposalCount().call()
    assert consortium.functions.isMember(centre_id("ai-c")).call()  # one vote is not enough
    fresh.chain.transact(consortium.functions.vote(proposal), fresh.centres["cloud-b"].account)
    assert not consortium.functions.isMember(centre_id("ai-c")).call()
    for running in fresh.centres.values():
        running.node.parts.index.sync()

    for centre in ("hpc-a", "cloud-b"):
        with GatewayClient(fresh.url(centre), token=dave[centre]) as client:
            with pytest.raises(GatewayRefused) as refused:
                client.submit(paid_job(fresh, {"command": ["true"], "walltime": 5, "centre": centre}, "ai-c"))
            assert refused.value.status == 401 and "ai-c" in refused.value.error
    with GatewayClient(fresh.url("hpc-a"), token=fresh.login("alice", "hpc-a")) as client:
        with pytest.raises(GatewayRefused) as refused:
            client.submit(paid_job(fresh, {"command": ["true"], "walltime": 5, "centre": "ai-c"}, "hpc-a"))
        assert refused.value.status == 421 and "unknown centre 'ai-c'" in refused.value.error

    # the epoch ai-c took part in still verifies, its records included
    report = audit_epoch(fresh.chain, fresh.deployment, epoch)
    assert report.ok, report.findings
    assert report.totals["ai-c"].records == 1
