"""An auditor's check of one epoch: evidence from every centre, figures from the chain.

The evidence (each record with the order, grant and receipt it rests on and its sum
proof) comes from each centre's gateway, per home it claimed on (the URL and the homes
are the ones on chain); every figure it is checked against is read from the chain itself,
so no single centre, not even the one asked, has to be trusted.
"""

from __future__ import annotations

from gateway.books.watcher import EvidenceUnavailable, fetch_evidence
from ledger.audit import AuditReport, anchored_homes, settlement_of, verify_epoch
from ledger.audit_scale import Signatures
from ledger.chain import Chain
from ledger.deploy import Deployment, bind
from ledger.evidence import EvidenceError, RecordEvidence
from ledger.ids import centre_name


def collect_evidence(
    chain: Chain, deployment: Deployment, epoch: int
) -> tuple[dict[bytes, list[RecordEvidence]], list[str]]:
    """The evidence of `epoch` from every centre it concerns, and the centres that could not be asked.

    Those are today's members and the centres the epoch was settled over: a centre
    removed since still answers for the claims it anchored. A claim voided on chain is
    not asked for: it moved nothing (the audit notes it).
    """
    contracts = bind(chain, deployment, named=True)
    consortium, ledger = contracts.consortium.functions, contracts.usage_ledger.functions
    concerned = list(consortium.memberIds().call())
    for centre in settlement_of(contracts, deployment, epoch):
        if centre not in concerned:
            concerned.append(centre)
    evidence: dict[bytes, list[RecordEvidence]] = {}
    problems: list[str] = []
    for centre in concerned:
        member = consortium.member(centre).call()
        name, url = member.name, member.gatewayUrl
        bundles: list[RecordEvidence] = []
        for home in anchored_homes(contracts, deployment, epoch, centre):  # removed members' included
            claim = ledger.claimOf(epoch, centre, home).call()
            if claim.voided or not claim.count:  # stands for nothing, or no leaves: nothing to evidence
                continue
            try:
                rows = fetch_evidence(url, epoch, centre_name(home), claim.count)  # every page, bounded by the count
            except EvidenceUnavailable as exc:  # no answer, an error status, too slow, too large, not JSON, no claim's
                problems.append(f"{name}: evidence unavailable from {url} ({exc})")
                break
            try:
                bundles += _parse(rows)
            except EvidenceError as exc:
                problems.append(f"{name}: evidence unreadable from {url} ({str(exc)[:200]})")
                break
        else:
            evidence[centre] = bundles
    return evidence, problems


def _parse(rows: object) -> list[RecordEvidence]:
    """A gateway's answer as evidence bundles; EvidenceError on anything else, whatever a centre sends."""
    if not isinstance(rows, list):
        raise EvidenceError(f"expected a list of records, got {type(rows).__name__}")
    return [RecordEvidence.from_dict(r) for r in rows]


def audit_epoch(chain: Chain, deployment: Deployment, epoch: int, signatures: Signatures = "all") -> AuditReport:
    evidence, problems = collect_evidence(chain, deployment, epoch)
    report = verify_epoch(epoch, evidence, chain, deployment, signatures=signatures)
    if problems:
        report.findings[:0] = problems
        report.ok = False
    return report
