"""Independent audit of one epoch's books against the chain.

An auditor holds the usage records each serving centre published for an epoch and
checks them against what is on the chain, read directly with contract calls (never
through a centre's event index: an auditor trusts no single centre):

- every record is signed (EIP-712) by the serving centre's on-chain account, names
  that centre as serving centre and belongs to the epoch; no record id repeats;
- every record's price is its meters x the serving centre's rates version the record
  names (ledger.pricing, the formula the centre priced with), that version read from
  the Consortium contract; a version the centre never published is a finding, and so
  is one that took effect after the job started (a job is priced at the version in
  force when it was accepted, before it started), give or take CLOCK_LEEWAY;
- each centre's records hash to the Merkle root it anchored, and their number is the
  anchored record count;
- summing record prices per home centre (a centre's own users excluded) gives
  exactly the claims the centre anchored on each debtor;
- netting the anchored claims (ledger.netting, the contract's algorithm) gives the
  net positions the Settlement contract stored, if the epoch is settled.

Every discrepancy becomes one human-readable finding naming the centre and record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from web3.types import BlockIdentifier

from ledger.chain import Chain, ChainRevert
from ledger.deploy import Deployment, Prices, bind
from ledger.ids import InvalidName, centre_id, centre_name
from ledger.merkle import MerkleTree
from ledger.netting import net_positions, transfers
from ledger.pricing import price
from ledger.primitives.hex import to_hex
from ledger.records import Domain, InvalidSignature, UsageRecord, record_leaf, recover_signer

Signed = tuple[UsageRecord, bytes]
# Each serving centre by bytes32 id or by name (a Mapping's key type is invariant, hence the union).
RecordsByCentre = (
    Mapping[bytes, Sequence[Signed]] | Mapping[str, Sequence[Signed]] | Mapping[bytes | str, Sequence[Signed]]
)

CLOCK_LEEWAY = 300
"""Seconds a chain's clock may run ahead of a centre's: a gateway judges which rates are in
force by the later of the two (eth-tester and busy anvil nodes stamp blocks a second apart,
ahead of real time), but stamps a job's start with its own."""


@dataclass
class CentreTotals:
    """What the records and the chain say about one serving centre in the epoch."""

    centre: str
    records: int = 0  # records supplied
    amount: int = 0  # sum of their prices, own users included
    claims: dict[str, int] = field(default_factory=dict)  # debtor -> sum, from the records
    anchored: bool = False
    anchored_root: str | None = None
    anchored_count: int | None = None
    anchored_claims: dict[str, int] = field(default_factory=dict)  # debtor -> amount, on chain
    net: int | None = None  # the Settlement contract's net position, if settled


@dataclass
class AuditReport:
    """Outcome of verify_epoch: ok exactly when there are no findings."""

    epoch: int
    ok: bool
    findings: list[str]
    totals: dict[str, CentreTotals]
    settled: bool
    net: dict[str, int] = field(default_factory=dict)  # recomputed from anchored claims
    transfers: list[tuple[str, str, int]] = field(default_factory=list)  # recomputed
    notes: list[str] = field(default_factory=list)  # facts that are not discrepancies

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for `xcentre audit` and GET /audit)."""
        data = asdict(self)
        data["transfers"] = [list(t) for t in self.transfers]
        return data


def label(centre: bytes) -> str:
    """A centre's name, or its hex id when the bytes32 is not a valid name."""
    try:
        return centre_name(centre)
    except InvalidName:
        return to_hex(centre)


def _key(centre: bytes | str) -> bytes:
    if isinstance(centre, str):
        return centre_id(centre)
    if isinstance(centre, (bytes, bytearray)) and len(centre) == 32:
        return bytes(centre)
    raise ValueError(f"records must be keyed by centre name or bytes32 id, got {centre!r}")


def verify_epoch(
    epoch: int,
    records_by_centre: RecordsByCentre,
    chain: Chain,
    deployment: Deployment,
    domain: Domain | None = None,
    *,
    block: BlockIdentifier = "latest",
) -> AuditReport:
    """Checks the records of `epoch` against the chain; see the module docstring.

    `records_by_centre` maps each serving centre (bytes32 id or name) to the list of
    (record, 65-byte signature) it published. `domain` defaults to the deployment's.
    `block` pins every chain read to one block, so a report is reproducible.
    """
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**64:
        raise ValueError(f"epoch must be a uint64, got {epoch!r}")
    supplied: dict[bytes, list[Signed]] = {}
    for centre, items in records_by_centre.items():
        key = _key(centre)
        if key in supplied:
            raise ValueError(f"records of {label(key)} are given twice")
        supplied[key] = list(items)
    domain = domain or Domain.for_deployment(deployment)
    k = bind(chain, deployment, named=True)
    consortium, ledger, settlement = (k.consortium.functions, k.usage_ledger.functions, k.settlement.functions)

    def call(fn: Any) -> Any:
        return chain.call(fn, block)

    findings: list[str] = []
    notes: list[str] = []
    active = [bytes(c) for c in call(consortium.memberIds())]
    is_settled = bool(call(settlement.settled(epoch)))
    # Membership may have changed since: the netting is checked over the centres it used.
    netted = [bytes(c) for c in call(settlement.settledCentres(epoch))] if is_settled else []
    centres = list(dict.fromkeys(active + netted + list(supplied)))

    accounts: dict[bytes, str | None] = {}
    for c in centres:
        try:
            accounts[c] = call(consortium.member(c)).account
        except ChainRevert:
            accounts[c] = None  # never admitted

    totals: dict[str, CentreTotals] = {}
    onchain_claims: dict[tuple[bytes, bytes], int] = {}
    seen_ids: dict[bytes, bytes] = {}
    rates: dict[tuple[bytes, int], tuple[int, Prices] | None] = {}

    def rates_of(centre: bytes, version: int) -> tuple[int, Prices] | None:
        """A centre's published rates version (effective from, prices), from the chain; None if never published."""
        if (centre, version) not in rates:
            try:
                published = call(consortium.rates(centre, version))
                rates[(centre, version)] = int(published.effectiveFrom), Prices.from_chain(published.prices)
            except ChainRevert:
                rates[(centre, version)] = None
        return rates[(centre, version)]

    for c in centres:
        name = label(c)
        t = totals[name] = CentreTotals(centre=name)
        anchor = call(ledger.anchorOf(c, epoch))
        root, count, is_anchored = anchor.root, anchor.recordCount, anchor.anchored
        if is_anchored:
            t.anchored, t.anchored_root, t.anchored_count = True, to_hex(root), int(count)
            claims = call(ledger.claimsOf(epoch, c))
            for debtor, amount in zip(claims.debtors, claims.amounts, strict=True):
                onchain_claims[(c, bytes(debtor))] = int(amount)
                t.anchored_claims[label(bytes(debtor))] = int(amount)

        if accounts[c] is None:
            findings.append(f"{name}: not a member of the consortium, yet records are supplied for it")
        records = supplied.get(c)
        if records is None:
            if is_anchored and int(count) > 0:
                findings.append(f"{name}: anchored {int(count)} records for epoch {epoch}, but none were supplied")
                continue
            if not is_anchored:
                notes.append(f"{name} has not anchored epoch {epoch}")
                continue
            records = []  # anchored no records: its root and claims must still be those of none
        if not is_anchored:
            findings.append(f"{name}: {len(records)} records supplied, but epoch {epoch} is not anchored")

        sums: dict[bytes, int] = defaultdict(int)
        leaves: set[bytes] = set()
        for rec, sig in records:
            rid = to_hex(rec.record_id)
            if rec.record_id in seen_ids:
                where = label(seen_ids[rec.record_id])
                findings.append(f"{name}: record {rid} appears more than once (also under {where})")
            else:
                seen_ids[rec.record_id] = c
            if rec.serving_centre != c:
                findings.append(f"{name}: record {rid} names {label(rec.serving_centre)} as serving centre")
            if rec.epoch != epoch:
                findings.append(f"{name}: record {rid} is for epoch {rec.epoch}, not {epoch}")
            findings.extend(_signature_finding(name, rid, rec, sig, domain, accounts[c]))
            if accounts[c] is not None:
                findings.extend(_price_finding(name, rid, rec, rates_of(c, rec.rates_version)))
            leaves.add(record_leaf(rec, domain))
            t.records += 1
            t.amount += rec.price
            if rec.home_centre != c:
                sums[rec.home_centre] += rec.price
        t.claims = {label(d): v for d, v in sums.items()}

        if is_anchored:
            ours = MerkleTree(leaves).root
            if t.records != int(count):
                findings.append(f"{name}: {t.records} records supplied, {int(count)} anchored")
            if ours != bytes(root):
                findings.append(
                    f"{name}: Merkle root of the supplied records {to_hex(ours)} differs from the "
                    f"anchored root {to_hex(root)}"
                )
            anchored_here = {d: a for (cr, d), a in onchain_claims.items() if cr == c}
            for debtor in sorted(set(sums) | set(anchored_here)):
                by_records, on_chain = sums.get(debtor, 0), anchored_here.get(debtor, 0)
                if by_records != on_chain:
                    findings.append(
                        f"{name}: claim on {label(debtor)} is {by_records} by the records but {on_chain} anchored"
                    )

    net: dict[bytes, int] = {}
    plan: list[tuple[bytes, bytes, int]] = []
    if is_settled:
        net = net_positions(onchain_claims, netted)
        for c in netted:
            stored = int(call(settlement.netPosition(epoch, c)))
            totals[label(c)].net = stored
            if stored != net[c]:
                findings.append(
                    f"{label(c)}: settled net position is {stored}, netting the anchored claims gives {net[c]}"
                )
        plan = transfers(net, netted)
    else:
        notes.append(f"epoch {epoch} is not settled")

    return AuditReport(
        epoch=epoch,
        ok=not findings,
        findings=findings,
        totals=totals,
        settled=is_settled,
        net={label(c): v for c, v in net.items()},
        transfers=[(label(d), label(c), a) for d, c, a in plan],
        notes=notes,
    )


def _price_finding(name: str, rid: str, rec: UsageRecord, rates: tuple[int, Prices] | None) -> list[str]:
    if rates is None:
        return [f"{name}: record {rid} names rates version {rec.rates_version}, which {name} never published"]
    effective_from, prices = rates
    if effective_from > rec.started_at + CLOCK_LEEWAY:
        return [
            (
                f"{name}: record {rid} names rates version {rec.rates_version}, in force only from {effective_from}, "
                f"but its job started at {rec.started_at}"
            )
        ]
    expected = price(rec, prices)
    if rec.price != expected:
        return [
            (
                f"{name}: record {rid} is priced {rec.price}, but its meters at {name}'s rates version "
                f"{rec.rates_version} cost {expected}"
            )
        ]
    return []


def _signature_finding(
    name: str, rid: str, rec: UsageRecord, sig: bytes, domain: Domain, account: str | None
) -> list[str]:
    if account is None:
        return []  # already reported: the centre has no account to check against
    try:
        signer = recover_signer(rec, domain, sig)
    except InvalidSignature as exc:
        return [f"{name}: record {rid} has a malformed signature ({exc})"]
    if signer.lower() != account.lower():
        return [f"{name}: record {rid} signature does not recover to {name}'s account (recovers to {signer})"]
    return []
