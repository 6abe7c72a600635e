"""The auditor trusts no centre: a gateway answering garbage is a finding, never a crash."""

from __future__ import annotations

import pytest

from gateway.books import auditor as auditing
from gateway.client.http import GatewayClient


@pytest.mark.parametrize(
    "garbage",
    [{"not": "a list"}, [{"record": {}}], [{"nothing": 1}], ["x"], [{"record": {"epoch": 1}, "signature": "zz"}]],
)
def test_garbage_records_from_one_centre_are_a_finding(consortium, monkeypatch, garbage):
    honest = GatewayClient.epoch_records
    liar = consortium.url("cloud-b")

    def epoch_records(client: GatewayClient, epoch: int):
        return garbage if client.url == liar else honest(client, epoch)

    monkeypatch.setattr(GatewayClient, "epoch_records", epoch_records)
    report = auditing.audit_epoch(consortium.chain, consortium.deployment, 1)
    assert not report.ok
    assert any(f.startswith("cloud-b: records unreadable") for f in report.findings), report.findings
