"""An auditor's check of one epoch: records from every centre, figures from the chain.

The records come from each centre's gateway (the URL is the one on chain); every
figure they are checked against is read from the chain itself, so no single
centre, not even the one asked, has to be trusted.
"""

from __future__ import annotations

import httpx

from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable
from ledger.audit import AuditReport, verify_epoch
from ledger.chain import Chain
from ledger.deploy import Deployment, bind
from ledger.primitives.hex import from_hex
from ledger.records import UsageRecord


def collect_records(chain: Chain, deployment: Deployment, epoch: int) -> tuple[dict[bytes, list], list[str]]:
    """The signed records of `epoch` from every centre it concerns, and the centres that could not be asked.

    Those are today's members and the centres the epoch was settled over: a centre
    removed since still answers for the records it anchored.
    """
    contracts = bind(chain, deployment, named=True)
    consortium = contracts.consortium
    concerned = list(consortium.functions.memberIds().call())
    for centre in contracts.settlement.functions.settledCentres(epoch).call():
        if centre not in concerned:
            concerned.append(centre)
    records: dict[bytes, list[tuple[UsageRecord, bytes]]] = {}
    problems: list[str] = []
    for centre in concerned:
        member = consortium.functions.member(centre).call()
        name, url = member.name, member.gatewayUrl
        try:
            with GatewayClient(url, timeout=30) as client:
                rows = client.epoch_records(epoch)
        except (httpx.HTTPError, GatewayRefused, GatewayUnreachable) as exc:
            problems.append(f"{name}: records unavailable from {url} ({exc})")
            continue
        try:
            records[centre] = _parse(rows)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{name}: records unreadable from {url} ({type(exc).__name__}: {str(exc)[:200]})")
    return records, problems


def _parse(rows: object) -> list[tuple[UsageRecord, bytes]]:
    """A gateway's answer as (record, signature) pairs; raises on anything else, whatever a centre sends."""
    if not isinstance(rows, list):
        raise TypeError(f"expected a list of records, got {type(rows).__name__}")
    return [(UsageRecord.from_json(r["record"]), from_hex(r["signature"], what="signature")) for r in rows]


def audit_epoch(chain: Chain, deployment: Deployment, epoch: int) -> AuditReport:
    records, problems = collect_records(chain, deployment, epoch)
    report = verify_epoch(epoch, records, chain, deployment)
    if problems:
        report.findings[:0] = problems
        report.ok = False
    return report
