"""An auditor's check of one centre's decision log for one epoch: the log from the centre, the rest from the chain.

The root and count the centre anchored, its policy versions (hashes and times) and
its gateway URL come from the chain; the log, the policy texts and the epoch's usage
records come from the centre's gateway and are believed only as far as they match
the chain: the log must rebuild the anchored root, each text must hash to its
version, the records must be signed by the centre's account and rebuild the sum
trees it anchored (`ledger.audit.verify_records`), an earlier epoch's entry a
record names must be proven against that epoch's anchored root, and every
decision is taken again with the published version (`ledger.decision_audit`).
Nothing the centre says is trusted on its own word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from gateway.api.schemas import AUDIT_PAGE, RECORDS_PAGE
from gateway.client.http import BadAnswer, GatewayClient, GatewayRefused, GatewayUnreachable
from ledger import policies
from ledger.audit import verify_records
from ledger.chain import Chain, ChainRevert
from ledger.decision_audit import DecisionAudit, Finding, audit_decisions
from ledger.decisions import DecisionLogError, check_entry, entry_digest, verify_entry
from ledger.deploy import Deployment, bind
from ledger.ids import InvalidName, centre_id
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.records import InvalidRecord, UsageRecord


class AuditUnusable(ValueError):
    """The audit cannot be made (an unknown centre, an epoch not anchored yet, a log the gateway does not give):
    nothing was checked, so nothing is found either."""


@dataclass(frozen=True)
class DecisionLog:
    """What an audit of `centre`'s `epoch` works from: the chain's figures and what its gateway served."""

    centre: str
    epoch: int
    gateway: str
    anchored_root: bytes
    anchored_count: int
    anchored_at: int
    versions: list[policies.PolicyVersion]
    entries: list[dict]
    texts: dict[int, tuple[str, str | None]]
    records: list[UsageRecord]
    earlier_entries: list[dict] = field(default_factory=list)
    """Entries of earlier epochs' logs that the records name, each proven to be in its epoch's anchored log."""
    problems: list[Finding] = field(default_factory=list)
    """Findings made while collecting (records missing): the audit reports them first."""


def fetch_decision_log(
    chain: Chain,
    deployment: Deployment,
    centre: str,
    epoch: int,
    auditor: LocalAccount,
    gateway: str | None = None,
    page: int = AUDIT_PAGE,
) -> DecisionLog:
    """Collect everything the audit of `centre`'s decisions of `epoch` needs; AuditUnusable when it cannot be.

    `auditor` is one of the centre's auditors' chain keys; the log comes `page` entries a request."""
    if not isinstance(epoch, int) or epoch < 1:
        raise AuditUnusable(f"epochs count from 1, got {epoch!r}")
    try:
        ident = centre_id(centre)
    except InvalidName as exc:
        raise AuditUnusable(str(exc)) from None
    contracts = bind(chain, deployment, named=True)
    consortium, usage = contracts.consortium.functions, contracts.usage_ledger.functions
    try:
        member = chain.call(consortium.member(ident))
    except ChainRevert as exc:
        if exc.reason != "NotMember":
            raise
        raise AuditUnusable(f"{centre} is not a member of this consortium, now or before") from None
    anchor = chain.call(usage.anchorOf(ident, epoch))
    if not anchor.anchored:
        raise AuditUnusable(f"{centre} has not anchored epoch {epoch} yet: there is no decision log to check it by")
    anchored = chain.call(usage.decisionsOf(ident, epoch))
    anchored_root, anchored_count = bytes(anchored.root), int(anchored.count)
    versions = policies.history(chain, deployment, centre)
    url = gateway or member.gatewayUrl
    problems: list[Finding] = []
    with GatewayClient(url) as client:
        answer = _ask(
            client, f"{centre}'s decision log of epoch {epoch}", client.audit_decisions, epoch, auditor, centre, page
        )
        entries = _entries(answer, centre, epoch, url)
        texts = _texts(client, centre, _versions_named(entries))
        served, too_many = _records(client, centre, epoch, url, int(anchor.recordCount))
        problems += too_many
        records = [record for record, _ in served]
        problems += [
            Finding("record", "", f"the usage records served are not the ones {centre} anchored: {problem}")
            for problem in verify_records(centre, epoch, served, chain, deployment)
        ]
        here = {entry_digest(e) for e in entries if _shaped(e)}
        wanted = {r.decision for r in records} - here
        earlier = _earlier_entries(chain, usage, client, auditor, centre, epoch, wanted)
    return DecisionLog(
        centre=centre,
        epoch=epoch,
        gateway=url,
        anchored_root=anchored_root,
        anchored_count=anchored_count,
        anchored_at=int(anchor.anchoredAt),
        versions=versions,
        entries=entries,
        texts=texts,
        records=records,
        earlier_entries=earlier,
        problems=problems,
    )


def audit_log(log: DecisionLog, grace: int = 60) -> DecisionAudit:
    """Check the log against the chain and take every decision again (ledger.decision_audit)."""
    audit = audit_decisions(
        log.entries,
        log.anchored_root,
        log.anchored_count,
        log.versions,
        log.texts,
        log.records,
        grace=grace,
        earlier_entries=log.earlier_entries,
        anchored_at=log.anchored_at,
        centre=log.centre,
    )
    return dataclasses.replace(audit, findings=(*log.problems, *audit.findings))


def _ask(client: GatewayClient, what: str, call: Callable[..., object], *args: object) -> object:
    """A gateway's answer, or AuditUnusable saying why there is none."""
    try:
        return call(*args)
    except GatewayRefused as exc:
        raise AuditUnusable(f"the gateway at {client.url} refused {what}: {exc}") from None
    except (GatewayUnreachable, BadAnswer) as exc:
        raise AuditUnusable(f"{what} could not be fetched: {exc}") from None


def _entries(answer: object, centre: str, epoch: int, url: str) -> list[dict]:
    if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
        raise AuditUnusable(f"the gateway at {url} answered no decision log (a JSON object with 'entries')")
    if answer.get("centre") != centre or answer.get("epoch") != epoch:
        raise AuditUnusable(
            f"the gateway at {url} answered the log of {answer.get('centre')!r:.40} for epoch "
            f"{answer.get('epoch')!r:.20}, not {centre}'s of epoch {epoch}"
        )
    return answer["entries"]


def _shaped(entry: object) -> bool:
    try:
        check_entry(entry)
    except DecisionLogError:
        return False
    return True


def _versions_named(entries: Iterable[object]) -> set[int]:
    return {e["policy_version"] for e in entries if _shaped(e)}  # type: ignore[index]


def _texts(client: GatewayClient, centre: str, versions: set[int]) -> dict[int, tuple[str, str | None]]:
    """Each version's policy and schema text as the gateway serves them, unchecked: the audit checks them against
    the chain, and reports a version whose text is missing here (not served, or not a text)."""
    texts: dict[int, tuple[str, str | None]] = {}
    for version in sorted(versions):
        try:
            served = client.policy(version)
        except GatewayRefused:
            continue
        except GatewayUnreachable as exc:
            raise AuditUnusable(f"{centre}'s policy version {version} could not be fetched: {exc}") from None
        text = served.get("policy") if isinstance(served, dict) else None
        schema = served.get("schema") if isinstance(served, dict) else None
        if isinstance(text, str) and (schema is None or isinstance(schema, str)):
            texts[version] = (text, schema)
    return texts


MAX_AUDITED_RECORDS = 4_000_000
"""Usage records of one epoch an audit reads at most: they are held in memory while checked (a 1,000,000-record
epoch audits in seconds, `docs/PERFORMANCE.md`)."""


def _records(
    client: GatewayClient,
    centre: str,
    epoch: int,
    url: str,
    anchored: int,
    limit: int = RECORDS_PAGE,
    most: int = MAX_AUDITED_RECORDS,
) -> tuple[list[tuple[UsageRecord, bytes]], list[Finding]]:
    """The epoch's usage records and signatures as the gateway serves them, page after page, unchecked:
    `verify_records` holds them to the anchored claims (a signature that is not hex is kept as no bytes, to be
    reported as malformed).

    A page that is not one, larger than `limit`, shorter than `limit` yet naming a next page (an honest gateway
    names one only after a full page), or whose `next` does not move on is AuditUnusable; so is an epoch of more
    than `most` records (the centre's own anchored count is no bound: it may anchor any count on its own users).
    A gateway that names a page after the `anchored` count is not followed further, and that is a finding."""
    what = f"{centre}'s usage records of epoch {epoch}"
    if anchored > most:
        raise AuditUnusable(
            f"{centre} anchored {anchored} usage records for epoch {epoch}, more than the {most} an audit reads"
        )
    rows: list[tuple[UsageRecord, bytes]] = []  # each page parsed as it comes: only what a record holds is kept
    after, page_number = 0, 0
    while True:
        answer = _ask(client, what, client.epoch_records_page, epoch, after, limit)
        page_number += 1
        if not isinstance(answer, dict) or not isinstance(answer.get("records"), list):
            raise AuditUnusable(
                f"the gateway at {url} answered no page of usage records (a JSON object with 'records')"
            )
        page, following = answer["records"], answer.get("next")
        if len(page) > limit:
            raise AuditUnusable(
                f"the gateway at {url} answered {len(page)} usage records in page {page_number} of {what}, asked for "
                f"at most {limit}"
            )
        rows += _parsed(page, url)
        if following is None:
            break
        if len(page) < limit:
            raise AuditUnusable(
                f"the gateway at {url} named a next page of {what} after page {page_number}, which held "
                f"{len(page)} records of the {limit} asked for: a page is followed only when full"
            )
        if not _is_int(following) or following <= after:
            raise AuditUnusable(
                f"the gateway at {url} named a next page ({following!r:.20}) of {what} after page {page_number} "
                f"(after {after}) that does not move on"
            )
        if len(rows) >= anchored:
            return rows, [
                Finding(
                    "record",
                    "",
                    f"the gateway at {url} serves more usage records of epoch {epoch} than the {anchored} {centre} "
                    f"anchored: it named another page after {len(rows)}, not read",
                )
            ]
        after = following
    return rows, []


def _parsed(rows: list, url: str) -> list[tuple[UsageRecord, bytes]]:
    try:
        return [(UsageRecord.from_dict(row["record"]), _signature(row.get("signature"))) for row in rows]
    except (InvalidRecord, KeyError, TypeError, AttributeError) as exc:
        raise AuditUnusable(f"the gateway at {url} served a usage record that is not one: {exc}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _signature(value: object) -> bytes:
    try:
        return from_hex(value) if isinstance(value, str) else b""
    except HexError:
        return b""


def _earlier_entries(
    chain: Chain,
    usage: Any,
    client: GatewayClient,
    auditor: LocalAccount,
    centre: str,
    epoch: int,
    wanted: set[bytes],
) -> list[dict]:
    """The entries of earlier epochs among `wanted` (what the records name that this log lacks): each asked of the
    gateway by its digest, one request and one chain read each, never a walk back through epochs, and believed only
    with a proof against the root the centre anchored for the entry's epoch. One not found or not proven is left
    out: its record is reported. Whether an entry admitted its record is the audit's to say."""
    ident = centre_id(centre)
    found: list[dict] = []
    for digest in sorted(wanted):
        try:
            answer = client.audit_decision(digest, auditor, centre)
        except GatewayRefused:
            continue  # no such entry (404), or its epoch still open (409): nothing on record admitted the job
        except (GatewayUnreachable, BadAnswer) as exc:
            raise AuditUnusable(f"{centre}'s decision {to_hex(digest)} could not be fetched: {exc}") from None
        proven = _proof_of(answer, digest, epoch)
        if proven is None:
            continue
        earlier, entry, proof = proven
        root, count = chain.call(usage.decisionsOf(ident, earlier))
        if count and verify_entry(bytes(root), entry, proof):
            found.append(entry)
    return found


def _proof_of(answer: object, digest: bytes, epoch: int) -> tuple[int, dict, list[bytes]] | None:
    """The earlier epoch, the entry and its proof that a by-digest answer gives, if it gives them for this digest."""
    if not isinstance(answer, dict) or not _shaped(answer.get("entry")):
        return None
    entry, earlier, proof = answer["entry"], answer.get("epoch"), answer.get("proof")
    if entry_digest(entry) != digest or not isinstance(earlier, int) or not 1 <= earlier < epoch:
        return None  # another entry, or one of this epoch (then it would be in this log)
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        return None
    try:
        return earlier, entry, [from_hex(p, size=32) for p in proof]
    except HexError:
        return None


def report_lines(log: DecisionLog, audit: DecisionAudit) -> list[str]:
    """The figures, one `name: value` a line, each finding, then the verdict."""
    versions = sorted({e["policy_version"] for e in log.entries if _shaped(e)})
    lines = [
        f"centre: {log.centre}",
        f"epoch: {log.epoch}",
        f"gateway: {log.gateway}",
        f"root: {to_hex(log.anchored_root)} (anchored on chain)",
        f"entries: {audit.entries}",
        f"allows: {audit.allows}",
        f"denies: {audit.denies}",
        f"re-evaluated: {audit.reevaluated}"
        + (f" (policy version {', '.join(map(str, versions))})" if versions else ""),
        f"seconds: {audit.seconds:.3f}",
        f"records: {len(log.records)}",
    ]
    lines += [f"FINDING [{f.kind}] {f.message}" for f in audit.findings]
    what = f"{log.centre}'s decisions of epoch {log.epoch}"
    if audit.ok:
        lines.append(f"{what}: verified against the chain and the published policy")
    else:
        lines.append(f"{what}: NOT verified ({len(audit.findings)} findings)")
    return lines
