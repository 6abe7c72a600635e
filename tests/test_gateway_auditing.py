"""The auditor trusts no centre: a gateway answering garbage is a finding, never a crash."""

from __future__ import annotations

import pytest

from gateway.books import auditor as auditing
from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from tests.fixtures.consortium import PASSWORDS


@pytest.fixture(scope="module")
def epoch(consortium) -> int:
    """An epoch of its own in which cloud-b served a job of alice@hpc-a, paid and receipted."""
    consortium.close_epoch_everywhere()
    keys = PaymentKeys()
    job = {"command": ["python3", "-c", "print(1)"], "walltime": 30}
    with GatewayClient(consortium.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        submission = submit_anywhere(consortium.url("hpc-a"), job, with_home_session(home), centre="cloud-b", keys=keys)
        assert finish(submission, keys).price > 0
    return consortium.close_epoch_everywhere()[0]["epoch"]


def test_an_honest_epoch_audits_clean(consortium, epoch):
    report = auditing.audit_epoch(consortium.chain, consortium.deployment, epoch)
    assert report.ok, report.findings


@pytest.mark.parametrize(
    "garbage",
    [{"not": "a list"}, [{"record": {}}], [{"nothing": 1}], ["x"], [{"record": {"epoch": 1}, "signature": "zz"}]],
)
def test_garbage_evidence_from_one_centre_is_a_finding(consortium, epoch, monkeypatch, garbage):
    honest = auditing.fetch_evidence
    liar = consortium.url("cloud-b")

    def fetch_evidence(url: str, epoch: int, home: str, count: int):
        return garbage if url == liar else honest(url, epoch, home, count)

    monkeypatch.setattr(auditing, "fetch_evidence", fetch_evidence)
    report = auditing.audit_epoch(consortium.chain, consortium.deployment, epoch)
    assert not report.ok
    assert any(f.startswith("cloud-b: evidence unreadable") for f in report.findings), report.findings
