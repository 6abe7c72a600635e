"""`xcentre audit report`: one epoch's books, verified against the chain, as files a person can keep.

The figures are those of `xcentre audit verify` (gateway.books.auditor: every centre's payment
evidence from its gateway, checked by ledger.audit.verify_epoch against the chain, every chain
read pinned to one block), written to `OUT/epoch-N/`:

- report.json: the verdict, the findings and notes, per centre what its records and the chain
  say (records, amounts, claims per home, anchored roots, voided claims), the recomputed net
  positions and transfers beside the nets the chain's EpochSettled event recorded, shortfalls;
- positions.csv: one row per centre (its net position, recomputed and on chain, and what makes it);
- claims.csv: one row per anchored claim (serving centre, home, count, total, root, voided, and
  what the supplied records add up to);
- settlement.html: the net positions as a bar chart (inline SVG) and the transfers, one
  self-contained file (no script, no stylesheet or font from anywhere).

With `--gateway URL`, that gateway's own view of the epoch (`GET /v1/audit/epochs/{e}`, from its
chain index) is compared with the chain too: each figure it shows differently is a finding.
Exit status as `audit verify`: 0 verified, 3 on a finding (the files are written all the same),
2 when no report can be made (an epoch never anchored, a chain or gateway that does not answer).
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.books.auditor import collect_evidence
from gateway.client.http import BadAnswer, GatewayClient, GatewayRefused, GatewayUnreachable
from ledger.audit import AuditReport, label, settlement_of, verify_epoch
from ledger.chain import Chain, ChainError
from ledger.deploy import Deployment, bind
from ledger.evidence import RecordEvidence

UNIT = "credits (smallest unit)"


class ReportUnusable(ValueError):
    """No report can be made: the epoch is not one the chain knows, or a chain or gateway does not answer."""


@dataclass
class EpochReport:
    """An epoch's audit, the block it was read at, and what the chain's settlement event recorded."""

    epoch: int
    chain_id: int
    block: int
    audit: AuditReport
    settled_on_chain: dict[str, int]  # centre -> net, from EpochSettled, in the order netted
    gateway: str | None = None
    gateway_findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.audit.ok and not self.gateway_findings

    @property
    def findings(self) -> list[str]:
        return self.audit.findings + self.gateway_findings

    def to_dict(self) -> dict[str, Any]:
        """report.json."""
        audit = self.audit
        return {
            "epoch": self.epoch,
            "verified": self.ok,
            "chain_id": self.chain_id,
            "block": self.block,
            "settled": audit.settled,
            "unit": UNIT,
            "findings": self.findings,
            "notes": audit.notes,
            "centres": {name: _centre(t) for name, t in audit.totals.items()},
            "net_positions": audit.net,
            "net_positions_on_chain": self.settled_on_chain,
            "transfers": [{"from": d, "to": c, "amount": a} for d, c, a in audit.transfers],
            "shortfalls": audit.shortfalls,
            "gateway": self.gateway,
        }


def _centre(t: Any) -> dict[str, Any]:
    return {
        "records": t.records,
        "amount": t.amount,
        "claims": t.claims,
        "anchored": t.anchored,
        "anchored_count": t.anchored_count,
        "anchored_claims": t.anchored_claims,
        "anchored_roots": t.anchored_roots,
        "voided": t.voided,
        "net_on_chain": t.net,
    }


def build_report(
    chain: Chain,
    deployment: Deployment,
    epoch: int,
    *,
    evidence: Mapping[bytes, Sequence[RecordEvidence]] | None = None,
    gateway: str | None = None,
) -> EpochReport:
    """The audit of `epoch` at the chain's latest block; ReportUnusable when none can be made.

    `evidence` is fetched from every centre's gateway (as `audit verify` does) unless given.
    """
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch < 2**64:
        raise ReportUnusable(f"epochs count from 1, got {epoch!r}")
    try:
        block = chain.block_number()
        contracts = bind(chain, deployment, named=True)
        settled = settlement_of(contracts, deployment, epoch, block)
        ledger = contracts.usage_ledger.functions
        members = [bytes(c) for c in chain.call(contracts.consortium.functions.memberIds(), block)]
        anchored = any(chain.call(ledger.anchorOf(c, epoch), block)[0] for c in dict.fromkeys(members + list(settled)))
        if not anchored and not settled:
            raise ReportUnusable(f"no centre has anchored epoch {epoch} on this chain: there is nothing to report yet")
        problems: list[str] = []
        if evidence is None:
            fetched, problems = collect_evidence(chain, deployment, epoch)
            evidence = fetched
        audit = verify_epoch(epoch, evidence, chain, deployment, block=block)
        chain_id = chain.chain_id
    except ChainError as exc:
        raise ReportUnusable(f"the chain does not answer: {exc}") from None
    if problems:
        audit.findings[:0] = problems
        audit.ok = False
    report = EpochReport(epoch, chain_id, block, audit, {label(c): n for c, n in settled.items()})
    if gateway is not None:
        report.gateway = gateway
        report.gateway_findings = gateway_findings(report, _gateway_view(gateway, epoch))
    return report


def _gateway_view(url: str, epoch: int) -> dict[str, Any]:
    try:
        with GatewayClient(url) as client:
            view = client.audit_epoch(epoch)
    except (GatewayUnreachable, BadAnswer) as exc:
        raise ReportUnusable(f"the gateway at {url} could not be asked for epoch {epoch}: {exc}") from None
    except GatewayRefused as exc:
        raise ReportUnusable(f"the gateway at {url} refused to show epoch {epoch}: {exc}") from None
    if not isinstance(view, dict) or view.get("epoch") != epoch or not isinstance(view.get("anchors"), dict):
        raise ReportUnusable(f"the gateway at {url} answered no view of epoch {epoch}")
    return view


def gateway_findings(report: EpochReport, view: Mapping[str, Any]) -> list[str]:
    """Each figure a gateway's view of the epoch shows differently from the chain."""
    where = f"gateway {report.gateway}"
    out: list[str] = []
    anchors = view.get("anchors") or {}
    for name, t in report.audit.totals.items():
        shown = anchors.get(name)
        if not t.anchored:
            if shown is not None:
                out.append(f"{where}: shows an anchor of {name} for epoch {report.epoch}; the chain has none")
            continue
        if not isinstance(shown, dict):
            out.append(f"{where}: shows no anchor of {name}; the chain has one of {t.anchored_count} records")
            continue
        if shown.get("record_count") != t.anchored_count:
            out.append(
                f"{where}: {name} anchored {shown.get('record_count')!r} records; the chain says {t.anchored_count}"
            )
        homes: dict[str, Any] = shown["homes"] if isinstance(shown.get("homes"), dict) else {}
        for home, total in t.anchored_claims.items():
            claim: dict[str, Any] = homes[home] if isinstance(homes.get(home), dict) else {}
            seen = (claim.get("root"), claim.get("total"), bool(claim.get("voided")))
            chain = (t.anchored_roots[home], total, home in t.voided)
            if seen != chain:
                out.append(
                    f"{where}: {name}'s claim on {home} shows root {seen[0]!r}, total {seen[1]!r}, voided {seen[2]};"
                    f" the chain has root {chain[0]}, total {chain[1]}, voided {chain[2]}"
                )
    if bool(view.get("settled")) != report.audit.settled:
        out.append(
            f"{where}: shows the epoch {'settled' if view.get('settled') else 'not settled'}; the chain does not"
        )
    elif report.audit.settled and view.get("net_positions") != report.settled_on_chain:
        out.append(
            f"{where}: shows net positions {view.get('net_positions')!r}; the chain's settlement moved"
            f" {report.settled_on_chain}"
        )
    return out


# --- the files ------------------------------------------------------------------------------------


def positions_rows(report: EpochReport) -> list[dict[str, Any]]:
    """positions.csv: per centre, what it claims and owes (standing claims), its net recomputed and on chain."""
    audit = report.audit
    owed: dict[str, int] = {}
    for name, t in audit.totals.items():
        for home, total in t.anchored_claims.items():
            if home != name and home not in t.voided:
                owed[home] = owed.get(home, 0) + total
    rows = []
    for name, t in audit.totals.items():
        claims = sum(total for home, total in t.anchored_claims.items() if home != name and home not in t.voided)
        rows.append(
            {
                "centre": name,
                "anchored": t.anchored,
                "records": t.records,
                "anchored_records": "" if t.anchored_count is None else t.anchored_count,
                "claims_on_others": claims,
                "claimed_by_others": owed.get(name, 0),
                "net_recomputed": audit.net.get(name, ""),
                "net_on_chain": report.settled_on_chain.get(name, ""),
                "shortfall": audit.shortfalls.get(name, 0),
            }
        )
    return rows


def claims_rows(report: EpochReport) -> list[dict[str, Any]]:
    """claims.csv: per anchored claim, the chain's figures beside what the supplied records add up to."""
    rows = []
    for name, t in report.audit.totals.items():
        for home, total in t.anchored_claims.items():
            rows.append(
                {
                    "centre": name,
                    "home": home,
                    "anchored_total": total,
                    "records_total": t.claims.get(home, "") if home != name else "",
                    "root": t.anchored_roots[home],
                    "voided": home in t.voided,
                }
            )
    return rows


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def chart_html(report: EpochReport) -> str:
    """settlement.html: net positions as horizontal bars around zero (inline SVG), then the transfers."""
    audit = report.audit
    nets = audit.net or {name: 0 for name in audit.totals}
    esc = html.escape
    width, bar_h, gap, left, right = 720, 26, 10, 150, 140
    height = 40 + len(nets) * (bar_h + gap)
    span = max((abs(v) for v in nets.values()), default=0) or 1
    mid = left + (width - left - right) / 2
    scale = (width - left - right) / 2 / span
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="net positions of epoch {report.epoch}">'
        ),
        f'<line x1="{mid}" y1="10" x2="{mid}" y2="{height - 10}" stroke="#444"/>',
    ]
    for i, (name, value) in enumerate(nets.items()):
        y = 20 + i * (bar_h + gap)
        w = abs(value) * scale
        x = mid if value >= 0 else mid - w
        colour = "#2e7d32" if value >= 0 else "#c62828"
        parts += [
            f'<text x="{left - 8}" y="{y + bar_h * 0.7}" text-anchor="end" font-size="14">{esc(name)}</text>',
            f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" fill="{colour}"/>',
            f'<text x="{width - right + 8}" y="{y + bar_h * 0.7}" font-size="14">{value:+,}</text>',
        ]
    parts.append("</svg>")
    transfers = (
        "".join(f"<tr><td>{esc(d)}</td><td>{esc(c)}</td><td>{a:,}</td></tr>" for d, c, a in audit.transfers)
        or '<tr><td colspan="3">none</td></tr>'
    )
    verdict = "verified against the chain" if report.ok else f"NOT verified ({len(report.findings)} findings)"
    state = "settled" if audit.settled else "not settled yet: the positions are what settling would move"
    findings = "".join(f"<li>{esc(f)}</li>" for f in report.findings)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xcentre epoch {report.epoch} settlement</title></head>
<body style="font-family: sans-serif; max-width: 760px">
<h1>Epoch {report.epoch}: settlement</h1>
<p>{esc(verdict)}; {esc(state)}. Chain {report.chain_id}, read at block {report.block}.</p>
<p>Net position of each centre in {esc(UNIT)}: positive, it is paid; negative, it pays.</p>
{"".join(parts)}
<h2>Transfers</h2>
<table border="1" cellpadding="4"><tr><th>from</th><th>to</th><th>amount</th></tr>{transfers}</table>
{f"<h2>Findings</h2><ul>{findings}</ul>" if findings else ""}
</body></html>
"""


POSITION_COLUMNS = [
    "centre",
    "anchored",
    "records",
    "anchored_records",
    "claims_on_others",
    "claimed_by_others",
    "net_recomputed",
    "net_on_chain",
    "shortfall",
]
CLAIM_COLUMNS = ["centre", "home", "anchored_total", "records_total", "root", "voided"]


def write_report(report: EpochReport, out: Path) -> list[Path]:
    """The four files in `out`/epoch-N/, each written whole (a temporary file renamed) or not at all."""
    folder = out / f"epoch-{report.epoch}"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "report.json": json.dumps(report.to_dict(), indent=2) + "\n",
        "positions.csv": _csv(positions_rows(report), POSITION_COLUMNS),
        "claims.csv": _csv(claims_rows(report), CLAIM_COLUMNS),
        "settlement.html": chart_html(report),
    }
    written = []
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(folder / name)
    return written


# --- the command ------------------------------------------------------------------------------------


def register(actions: argparse._SubParsersAction) -> None:
    """`xcentre audit report` under the `audit` command's actions."""
    report = actions.add_parser(
        "report",
        help="verify an epoch against the chain and write report.json, positions.csv, claims.csv and "
        "settlement.html to OUT/epoch-N (exit 3 on a finding, 2 when no report can be made)",
    )
    report.add_argument("--epoch", type=int, required=True)
    report.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    report.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    report.add_argument("--out", type=Path, required=True, help="the folder the epoch's files go in")
    report.add_argument("--gateway", help="also check this gateway's view of the epoch against the chain")
    report.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ledger.chain import connect

    try:
        deployment = Deployment.from_json(args.deployment.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: the deployment file {args.deployment}: {exc}", file=sys.stderr)
        return 2
    try:
        chain = connect(args.chain)
        report = build_report(chain, deployment, args.epoch, gateway=args.gateway)
    except (ReportUnusable, ChainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        files = write_report(report, args.out)
    except OSError as exc:
        print(f"error: the report could not be written to {args.out}: {exc}", file=sys.stderr)
        return 2
    for finding in report.findings:
        print(f"MISMATCH {finding}")
    for path in files:
        print(f"wrote {path}")
    print(f"epoch {args.epoch}: {'verified' if report.ok else 'NOT verified'} against the chain")
    return 0 if report.ok else 3
