"""Independent audit of one epoch's books against the chain.

An auditor holds the payment evidence each serving centre serves for an epoch
(`GET /v1/epochs/{e}/evidence?home=H`: ledger.evidence.RecordEvidence, one per record)
and checks it against what is on the chain, read directly with contract calls (never
through a centre's event index: an auditor trusts no single centre):

- every record is signed (EIP-712) by the serving centre's on-chain account (with
  signatures="unbound", only records no matching anchored root binds: ledger.audit_scale
  says why), names that centre as serving centre and belongs to the epoch; no record id repeats;
- each home's records, in the order of their indices, build the Merkle sum tree whose
  root, count and total the centre anchored as its claim on that home;
- every record is evidenced as UsageLedger.answer would require (ledger.evidence): the
  order signed by the granted account, the grant signed by the home's on-chain member
  account, the price = meters x the rates version the order pins (read from the
  Consortium contract) capped at the grant, the deadlines, and the user's receipt or
  the key the centre revealed on chain;
- a claim voided on chain (a dispute the centre did not answer, or a duplicate) stands
  for nothing: its records' flaws are notes, remedied already, not findings;
- if the epoch is settled: netting the standing claims and paying from collateral
  (ledger.netting.settle_from_collateral, the contract's rule, with the shortfalls it
  reported) gives the net the Settlement contract moved.

Every discrepancy becomes one human-readable finding naming the centre, home and record.
The per-record work (digests, sum trees, signatures, evidence checks) runs on every core for
a large epoch (ledger.audit_scale); the findings are the same, in the same order, either way.
`verify_records` makes the first two checks alone, on records without their payment
evidence (`GET /v1/audit/epochs/{e}/records`): for audits that need only the records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from web3.types import BlockIdentifier

from ledger.audit_scale import (
    BLOCK,
    PARALLEL_FROM,
    SIGNATURE_MODES,
    Signatures,
    check_signatures,
    cores,
    label,
    run_blocks,
    scan,
)
from ledger.chain import Chain, ChainRevert
from ledger.deploy import Contracts, Deployment, Prices, bind
from ledger.evidence import RecordEvidence, check_evidence
from ledger.ids import centre_id
from ledger.index.rows import ClaimInfo
from ledger.netting import net_positions, settle_from_collateral
from ledger.primitives.hex import to_hex
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import Node

# Each serving centre by bytes32 id or by name (a Mapping's key type is invariant, hence the union).
EvidenceByCentre = (
    Mapping[bytes, Sequence[RecordEvidence]]
    | Mapping[str, Sequence[RecordEvidence]]
    | Mapping[bytes | str, Sequence[RecordEvidence]]
)


@dataclass
class CentreTotals:
    """What the evidence and the chain say about one serving centre in the epoch."""

    centre: str
    records: int = 0  # records supplied
    amount: int = 0  # sum of their prices, own users included
    claims: dict[str, int] = field(default_factory=dict)  # home -> sum, from the records (own users excluded)
    anchored: bool = False
    anchored_count: int | None = None
    anchored_claims: dict[str, int] = field(default_factory=dict)  # home -> total on chain (own users included)
    anchored_roots: dict[str, str] = field(default_factory=dict)  # home -> sum tree root on chain
    voided: list[str] = field(default_factory=list)  # homes whose claim the chain voided
    net: int | None = None  # what the Settlement contract moved, if settled


@dataclass
class AuditReport:
    """Outcome of verify_epoch: ok exactly when there are no findings."""

    epoch: int
    ok: bool
    findings: list[str]
    totals: dict[str, CentreTotals]
    settled: bool
    net: dict[str, int] = field(default_factory=dict)  # recomputed: what settlement moves
    transfers: list[tuple[str, str, int]] = field(default_factory=list)  # recomputed
    shortfalls: dict[str, int] = field(default_factory=dict)  # debtor -> unpaid, as reported on chain
    notes: list[str] = field(default_factory=list)  # facts that are not discrepancies

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `xcentre audit` and GET /audit)."""
        data = asdict(self)
        data["transfers"] = [list(t) for t in self.transfers]
        return data


def _key(centre: bytes | str) -> bytes:
    if isinstance(centre, str):
        return centre_id(centre)
    if isinstance(centre, (bytes, bytearray)) and len(centre) == 32:
        return bytes(centre)
    raise ValueError(f"evidence must be keyed by centre name or bytes32 id, got {centre!r}")


def _supplied(evidence_by_centre: EvidenceByCentre) -> dict[bytes, list[RecordEvidence]]:
    supplied: dict[bytes, list[RecordEvidence]] = {}
    for centre, items in evidence_by_centre.items():
        key = _key(centre)
        if key in supplied:
            raise ValueError(f"evidence of {label(key)} is given twice")
        supplied[key] = list(items)
        for ev in supplied[key]:
            if not isinstance(ev, RecordEvidence):
                raise ValueError(f"evidence of {label(key)} must be RecordEvidence, got {type(ev).__name__}")
    return supplied


def verify_epoch(
    epoch: int,
    evidence_by_centre: EvidenceByCentre,
    chain: Chain,
    deployment: Deployment,
    domain: Domain | None = None,
    *,
    block: BlockIdentifier = "latest",
    signatures: Signatures = "all",
    workers: int | None = None,
) -> AuditReport:
    """Checks the evidence of `epoch` against the chain; see the module docstring.

    `evidence_by_centre` maps each serving centre (bytes32 id or name) to its records'
    evidence for the epoch, all homes together. `domain` defaults to the deployment's.
    `block` pins every chain read to one block, so a report is reproducible. `signatures`
    says whose record signatures are recovered: "all", or "unbound" (only records no
    matching anchored root binds: ledger.audit_scale says why that is enough). `workers`
    is how many processes share the per-record work (default: every core for a large epoch).
    """
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**64:
        raise ValueError(f"epoch must be a uint64, got {epoch!r}")
    _mode(signatures)
    supplied = _supplied(evidence_by_centre)
    domain = domain or Domain.for_deployment(deployment)
    reader = _ChainReader(chain, deployment, block)
    findings: list[str] = []
    notes: list[str] = []
    is_settled = reader.settled(epoch)
    # Membership may have changed since: the netting is checked over the centres it used.
    netted = reader.settled_centres(epoch) if is_settled else []
    active = reader.member_ids()
    centres = list(dict.fromkeys(active + netted + list(supplied)))
    keys = reader.revealed_keys()
    booking_delay = reader.booking_delay()

    totals: dict[str, CentreTotals] = {}
    standing: dict[tuple[bytes, bytes], int] = {}
    seen_ids: dict[bytes, bytes] = {}
    for c in centres:
        name = label(c)
        t = totals[name] = CentreTotals(centre=name)
        account = reader.account(c)
        if account is None:
            findings.append(f"{name}: not a member of the consortium, yet evidence is supplied for it")
        anchored, anchored_at, count = reader.anchor(c, epoch)
        claims = {home: reader.claim(epoch, c, home) for home in reader.homes(epoch, c)} if anchored else {}
        late = anchored and reader.late(c, epoch)  # after the anchor deadline: paid by settleLate, not netted
        if late:
            notes.append(f"{name}: anchored epoch {epoch} late: its claims are paid on their own (settleLate)")
        for home, claim in claims.items():
            t.anchored_claims[label(home)] = claim.total
            t.anchored_roots[label(home)] = to_hex(claim.root)
            if claim.voided:
                t.voided.append(label(home))
                notes.append(f"{name}: its claim on {label(home)} for epoch {epoch} was voided on chain")
            elif home != c and not late:
                standing[(c, home)] = claim.total
        t.anchored, t.anchored_count = anchored, (count if anchored else None)

        items = supplied.get(c)
        if items is None:
            if anchored and count > 0:
                findings.append(f"{name}: anchored {count} records for epoch {epoch}, but no evidence was supplied")
            elif not anchored:
                notes.append(f"{name} has not anchored epoch {epoch}")
            continue
        if not anchored and items:
            findings.append(f"{name}: {len(items)} records supplied, but epoch {epoch} is not anchored")

        records = [ev.record for ev in items]
        by_home: dict[bytes, list[int]] = defaultdict(list)  # home -> positions in `items`, then in index order
        for i, record in enumerate(records):
            by_home[record.home_centre].append(i)
        broken: dict[bytes, str] = {}
        for home, positions in by_home.items():
            indices = sorted(items[i].index for i in positions)
            if indices != list(range(len(positions))):
                where = f"{name} on {label(home)}"
                broken[home] = f"{where}: record indices are {indices[:10]}, not 0..{len(positions) - 1} each once"
            positions.sort(key=lambda i: items[i].index)
        checked = _check_records(
            c, epoch, records, [ev.signature for ev in items], by_home, broken, claims,
            domain, account, seen_ids, signatures, workers,
        )  # fmt: skip
        findings.extend(checked.records)
        t.records = len(items)
        t.amount = sum(record.price for record in records)
        t.claims = {label(h): sum(records[i].price for i in pos) for h, pos in by_home.items() if h != c}

        context = _Context(domain, reader, anchored_at, booking_delay, keys, workers)
        for home, problems in checked.trees.items():
            if home not in claims:
                findings.extend(problems)
                continue
            # a voided claim stands for nothing: its flaws are remedied already, so they are notes
            out = notes if claims[home].voided else findings
            out.extend(problems)
            evs = [items[i] for i in by_home.get(home, [])]
            out.extend(_evidence_findings(f"{name} on {label(home)}", claims[home], evs, context))

    report = AuditReport(epoch=epoch, ok=False, findings=findings, totals=totals, settled=is_settled, notes=notes)
    if is_settled:
        findings.extend(_settlement_findings(report, reader, epoch, netted, standing))
    else:
        notes.append(f"epoch {epoch} is not settled")
    report.ok = not findings
    return report


def verify_records(
    centre: bytes | str,
    epoch: int,
    records: Sequence[tuple[UsageRecord, bytes]],
    chain: Chain,
    deployment: Deployment,
    domain: Domain | None = None,
    *,
    block: BlockIdentifier = "latest",
    signatures: Signatures = "all",
    workers: int | None = None,
) -> list[str]:
    """Findings unless `records` (each with its signature, in store order, as `GET /v1/audit/epochs/{e}/records`
    serves them) are exactly the ones `centre` anchored for `epoch`: each signed by its on-chain account, naming it
    and the epoch, no id twice, and each home's, in the order given, the leaves of the sum tree of the claim
    anchored on that home (root, count and total; a voided claim's tree included: it was committed all the same).

    What a check of anything the records say rests on (the decision audit: which allow admitted each job): a
    record the centre serves proves nothing unless it is one the centre committed. `signatures` and `workers`
    as verify_epoch's.
    """
    _mode(signatures)
    key = _key(centre)
    name = label(key)
    domain = domain or Domain.for_deployment(deployment)
    reader = _ChainReader(chain, deployment, block)
    account = reader.account(key)
    if account is None:
        return [f"{name}: not a member of the consortium, yet its records are supplied"]
    if not reader.anchor(key, epoch)[0]:
        return [f"{name}: {len(records)} records supplied, but epoch {epoch} is not anchored"] if records else []
    recs = [record for record, _ in records]
    by_home: dict[bytes, list[int]] = defaultdict(list)
    for i, record in enumerate(recs):
        by_home[record.home_centre].append(i)
    claims = {home: reader.claim(epoch, key, home) for home in reader.homes(epoch, key)}
    checked = _check_records(
        key, epoch, recs, [sig for _, sig in records], by_home, {}, claims, domain, account, {}, signatures, workers
    )
    return checked.records + [f for problems in checked.trees.values() for f in problems]


def _mode(signatures: object) -> None:
    if signatures not in SIGNATURE_MODES:
        raise ValueError(f"signatures must be one of {', '.join(SIGNATURE_MODES)}, got {signatures!r}")


@dataclass
class _Checked:
    """One centre's records against its anchored claims."""

    records: list[str]  # findings on single records, in the order the records were supplied
    trees: dict[bytes, list[str]]  # home -> findings on its claim's tree (claims first, then homes without one)


def _check_records(
    centre: bytes,
    epoch: int,
    records: list[UsageRecord],
    signatures: list[bytes],
    leaf_order: dict[bytes, list[int]],
    broken: dict[bytes, str],
    claims: dict[bytes, ClaimInfo],
    domain: Domain,
    account: str | None,
    seen_ids: dict[bytes, bytes],
    mode: Signatures,
    workers: int | None,
) -> _Checked:
    """Every record as `centre`'s of `epoch` (id not seen before, serving centre, epoch, signature) and each
    home's records, in `leaf_order`, against the claim anchored on it (unless its order is `broken`, a finding
    given). In mode "unbound", signatures are checked only on the records of homes whose tree did not match."""
    name = label(centre)
    scanned = scan(
        centre, epoch, records, signatures, leaf_order, domain, account,
        check_signatures=mode == "all", workers=workers,
    )  # fmt: skip
    trees: dict[bytes, list[str]] = {}
    for home in list(claims) + [h for h in leaf_order if h not in claims]:
        where, n = f"{name} on {label(home)}", len(leaf_order.get(home, []))
        if home not in claims:
            trees[home] = [f"{where}: {n} records supplied, but no claim on {label(home)} is anchored"]
        elif home in broken:
            trees[home] = [broken[home]]
        else:
            trees[home] = _claim_findings(where, claims[home], n, scanned.roots.get(home))
    per_record = scanned.findings
    if mode == "unbound":
        loose = [home for home, problems in trees.items() if problems and home in leaf_order]
        positions = [p for home in loose for p in leaf_order[home]]
        signed = check_signatures(centre, epoch, records, signatures, positions, domain, account, workers=workers)
        for pos, problems in signed.items():
            per_record.setdefault(pos, []).extend(problems)
    repeated: dict[int, str] = {}
    ids = [record.record_id for record in records]
    unique = set(ids)
    if len(unique) == len(ids) and seen_ids.keys().isdisjoint(unique):  # the usual case, at C speed
        seen_ids.update(dict.fromkeys(ids, centre))
    else:
        for i, rid in enumerate(ids):
            if rid in seen_ids:
                repeated[i] = f"{name}: record {to_hex(rid)} appears more than once (also under {label(seen_ids[rid])})"
            else:
                seen_ids[rid] = centre
    out: list[str] = []
    for pos in sorted(set(repeated) | set(per_record)):
        if pos in repeated:
            out.append(repeated[pos])
        out.extend(per_record.get(pos, []))
    return _Checked(out, trees)


def _claim_findings(where: str, claim: ClaimInfo, count: int, built: Node | None) -> list[str]:
    """`count` records whose sum tree is `built` (None: no records) against the claim anchored: count, root, total."""
    if count != claim.count:
        return [f"{where}: {count} records supplied, {claim.count} anchored"]
    if built is None:
        return []  # an empty claim, and no records for it
    if built[1] < 0:
        return [f"{where}: the supplied records' prices add up past a uint256: no claim can be built of them"]
    if built != (claim.root, claim.total):
        ours, theirs = (
            f"root {to_hex(built[0])}, total {built[1]}",
            f"root {to_hex(claim.root)}, total {claim.total}",
        )
        return [f"{where}: sum tree of the supplied records ({ours}) differs from the anchored claim ({theirs})"]
    return []


@dataclass(frozen=True)
class _Context:
    """What every record's evidence check of one claim needs besides the evidence."""

    domain: Domain
    reader: _ChainReader
    anchored_at: int
    booking_delay: int
    keys: dict[bytes, bytes]
    workers: int | None


def _evidence_findings(where: str, claim: ClaimInfo, evs: list[RecordEvidence], ctx: _Context) -> list[str]:
    """check_evidence on each record of a claim (`evs` in index order), as the contract would judge a dispute of
    it; the chain is read first (rates, the home's account), the records are checked on every core."""
    home_account = ctx.reader.account(claim.home)
    if home_account is None:
        return [f"{where}: {len(evs)} records are billed to a home that is not a member"]
    rates = {v: ctx.reader.rates(claim.centre, v) for v in sorted({ev.record.rates_version for ev in evs})}
    spans = [(i, min(i + BLOCK, len(evs))) for i in range(0, len(evs), BLOCK)]

    def check(span: tuple[int, int]) -> list[str]:
        out: list[str] = []
        for ev in evs[span[0] : span[1]]:
            problems = check_evidence(
                ev,
                domain=ctx.domain,
                home_account=home_account,
                rates=rates[ev.record.rates_version],
                anchored_at=ctx.anchored_at,
                booking_delay=ctx.booking_delay,
                claim=claim,
                key=ctx.keys.get(record_digest(ev.record, ctx.domain)) if ctx.keys else None,
            )
            out.extend(f"{where}: record {to_hex(ev.record.record_id)}: {p}" for p in problems)
        return out

    workers = ctx.workers if ctx.workers is not None else (cores() if len(evs) >= PARALLEL_FROM else 1)
    return [line for part in run_blocks(check, spans, workers) for line in part]


def _settlement_findings(
    report: AuditReport, reader: _ChainReader, epoch: int, netted: list[bytes], standing: dict[tuple[bytes, bytes], int]
) -> list[str]:
    """Recomputes what settle moved from the standing claims and the shortfalls the chain reported."""
    net = net_positions(standing, netted)
    unpaid = reader.shortfalls(epoch)
    # a debtor that fell short paid debt - unpaid (all its free collateral); any other paid its debt
    free = {m: -net[m] - unpaid.get(m, 0) for m in netted if net[m] < 0}
    moved, plan, short = settle_from_collateral(net, free, netted)
    out: list[str] = []
    for debtor, amount in short:
        if unpaid.get(debtor) != amount:
            out.append(f"{label(debtor)}: shortfall of {amount} expected, the chain reported {unpaid.get(debtor, 0)}")
    for c in netted:
        stored = reader.net_position(epoch, c)
        report.totals[label(c)].net = stored
        if stored != moved[c]:
            out.append(f"{label(c)}: settlement moved {stored}, the standing claims and collateral give {moved[c]}")
    report.net = {label(c): v for c, v in moved.items()}
    report.transfers = [(label(d), label(c), a) for d, c, a in plan]
    report.shortfalls = {label(d): a for d, a in unpaid.items()}
    return out


def settlement_of(
    contracts: Contracts, deployment: Deployment, epoch: int, to_block: BlockIdentifier = "latest"
) -> dict[bytes, int]:
    """Centre -> what moved for it when `epoch` settled, in the order netted; empty before.

    The chain keeps no view of it: its EpochSettled event is the record, and the set it
    netted matters as membership changes after settlement.
    """
    logs = contracts.settlement.events.EpochSettled.get_logs(
        from_block=deployment.start_block, to_block=to_block, argument_filters={"epoch": epoch}
    )
    if not logs:
        return {}
    return {bytes(c): int(n) for c, n in zip(logs[0].args.centres, logs[0].args.net, strict=True)}


def anchored_homes(
    contracts: Contracts, deployment: Deployment, epoch: int, centre: bytes, to_block: BlockIdentifier = "latest"
) -> list[bytes]:
    """The homes `centre` anchored claims on for `epoch`, former members included.

    From its EpochAnchored event: UsageLedger.homesOf lists only today's members, so a
    claim on a centre removed since would drop out of the audit.
    """
    logs = contracts.usage_ledger.events.EpochAnchored.get_logs(
        from_block=deployment.start_block, to_block=to_block, argument_filters={"centre": centre, "epoch": epoch}
    )
    return [bytes(h) for h in logs[0].args.homes] if logs else []


class _ChainReader:
    """Every chain read of an audit, pinned to one block, cached."""

    def __init__(self, chain: Chain, deployment: Deployment, block: BlockIdentifier) -> None:
        self.chain, self.deployment, self.block = chain, deployment, block
        k = bind(chain, deployment, named=True)
        self.k = k
        self.consortium, self.ledger, self.settlement = (
            k.consortium.functions,
            k.usage_ledger.functions,
            k.settlement.functions,
        )
        self._accounts: dict[bytes, str | None] = {}
        self._rates: dict[tuple[bytes, int], Prices | None] = {}
        self._settlements: dict[int, dict[bytes, int]] = {}

    def call(self, fn: Any) -> Any:
        return self.chain.call(fn, self.block)

    def member_ids(self) -> list[bytes]:
        return [bytes(c) for c in self.call(self.consortium.memberIds())]

    def settled(self, epoch: int) -> bool:
        return bool(self.call(self.settlement.settled(epoch)))

    def settled_centres(self, epoch: int) -> list[bytes]:
        """The centres `epoch` was netted over, in order."""
        return list(self._settlement(epoch))

    def _settlement(self, epoch: int) -> dict[bytes, int]:
        if epoch not in self._settlements:
            self._settlements[epoch] = settlement_of(self.k, self.deployment, epoch, self._to_block)
        return self._settlements[epoch]

    def booking_delay(self) -> int:
        return int(self.call(self.ledger.bookingDelay()))

    def account(self, centre: bytes) -> str | None:
        """The member's chain account; None if it was never admitted."""
        if centre not in self._accounts:
            try:
                self._accounts[centre] = self.call(self.consortium.member(centre)).account
            except ChainRevert:
                self._accounts[centre] = None
        return self._accounts[centre]

    def rates(self, centre: bytes, version: int) -> Prices | None:
        """A centre's published rates version, None if never published."""
        if (centre, version) not in self._rates:
            try:
                self._rates[(centre, version)] = Prices.from_chain(
                    self.call(self.consortium.rates(centre, version)).prices
                )
            except ChainRevert:
                self._rates[(centre, version)] = None
        return self._rates[(centre, version)]

    def anchor(self, centre: bytes, epoch: int) -> tuple[bool, int, int]:
        a = self.call(self.ledger.anchorOf(centre, epoch))
        return bool(a.anchored), int(a.anchoredAt), int(a.recordCount)

    def late(self, centre: bytes, epoch: int) -> bool:
        """Whether the centre's anchor came after the epoch's anchor deadline or settlement."""
        return bool(self.call(self.ledger.lateOf(centre, epoch)).late)

    def homes(self, epoch: int, centre: bytes) -> list[bytes]:
        return anchored_homes(self.k, self.deployment, epoch, centre, self._to_block)

    def claim(self, epoch: int, centre: bytes, home: bytes) -> ClaimInfo:
        c = self.call(self.ledger.claimOf(epoch, centre, home))
        return ClaimInfo(centre, epoch, home, bytes(c.root), int(c.count), int(c.total), bool(c.voided))

    def net_position(self, epoch: int, centre: bytes) -> int:
        return self._settlement(epoch).get(centre, 0)

    @property
    def _to_block(self) -> BlockIdentifier:
        return self.block if isinstance(self.block, int) else "latest"

    def _logs(self, event: Any, **filters: Any) -> list[Any]:
        return list(
            event.get_logs(from_block=self.deployment.start_block, to_block=self._to_block, argument_filters=filters)
        )

    def revealed_keys(self) -> dict[bytes, bytes]:
        """Record digest -> the key its centre revealed on chain to answer a dispute."""
        logs = self._logs(self.k.usage_ledger.events.DisputeAnswered)
        return {bytes(e.args.recordDigest): bytes(e.args.key) for e in logs if any(e.args.key)}

    def shortfalls(self, epoch: int) -> dict[bytes, int]:
        """Debtor -> what it could not pay at the epoch's settlement: the Shortfall events of the transaction
        that emitted its EpochSettled, before it (a settleLate of a late anchor reports shortfalls of its own, after
        the EpochSettled when one contract calls both in one transaction)."""
        settled = self._logs(self.k.settlement.events.EpochSettled, epoch=epoch)
        if not settled:
            return {}
        tx, at = settled[0].transactionHash, settled[0].logIndex
        logs = self._logs(self.k.settlement.events.Shortfall, epoch=epoch)
        return {bytes(e.args.debtor): int(e.args.unpaid) for e in logs if e.transactionHash == tx and e.logIndex < at}
