"""`xcentre audit report`: the epoch's files say what the chain says, and a report that cannot be made says why.

On the embedded chain with the audit's own books (tests.test_audit: a voided claim, a key
revealed for a missing receipt, a shortfall in epoch 2); one run of the command on the session's
real consortium (anvil, slapd, gateways), as `audit verify` is tested.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import sys

import pytest

from gateway.client.audit_report import (
    ReportUnusable,
    build_report,
    gateway_findings,
    write_report,
)
from gateway.client.cli import main
from ledger.audit import settlement_of
from ledger.records import sign_record
from tests.test_audit import A, books, centre_name_of, copy  # noqa: F401 - books: the fixture

# -- on the embedded chain ---------------------------------------------------------------------------


def report_of(books, epoch, evidence=None):  # noqa: F811
    given = books.evidence[epoch] if evidence is None else evidence
    return build_report(books.k.chain, books.k.deployment, epoch, evidence=given)


def on_chain(books, epoch) -> dict[str, int]:  # noqa: F811
    """The nets the Settlement contract's EpochSettled event recorded, by centre name."""
    return {centre_name_of(c): n for c, n in settlement_of(books.k.c, books.k.deployment, epoch).items()}


def rows(path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_the_files_carry_the_chains_settlement(books, tmp_path):  # noqa: F811
    report = report_of(books, 1)
    files = write_report(report, tmp_path)
    assert [f.name for f in files] == ["report.json", "positions.csv", "claims.csv", "settlement.html"]
    assert all(f.parent == tmp_path / "epoch-1" for f in files)
    settled = on_chain(books, 1)
    assert settled == {"hpc-a": 38, "hpc-b": -13, "hpc-c": -25}

    data = json.loads((tmp_path / "epoch-1" / "report.json").read_text())
    assert data["epoch"] == 1 and data["verified"] and data["settled"] and data["findings"] == []
    assert data["net_positions_on_chain"] == settled == data["net_positions"]
    assert data["transfers"] == [
        {"from": "hpc-b", "to": "hpc-a", "amount": 13},
        {"from": "hpc-c", "to": "hpc-a", "amount": 25},
    ]
    assert data["block"] == books.k.chain.block_number() and data["chain_id"] == books.k.chain.chain_id
    assert data["centres"]["hpc-c"]["voided"] == ["hpc-a"]
    assert data["centres"]["hpc-a"]["anchored_claims"] == {"hpc-b": 55, "hpc-c": 25, "hpc-a": 99}

    positions = {r["centre"]: r for r in rows(tmp_path / "epoch-1" / "positions.csv")}
    assert {c: int(r["net_on_chain"]) for c, r in positions.items()} == settled
    assert {c: int(r["net_recomputed"]) for c, r in positions.items()} == settled
    # a net is what the centre's standing claims bring in less what others' claim on it
    for r in positions.values():
        assert int(r["claims_on_others"]) - int(r["claimed_by_others"]) == int(r["net_on_chain"])
    assert positions["hpc-a"]["records"] == "4" and positions["hpc-a"]["anchored_records"] == "4"

    claims = {(r["centre"], r["home"]): r for r in rows(tmp_path / "epoch-1" / "claims.csv")}
    chain = books.k.c.usage_ledger.functions
    for (centre, home), r in claims.items():
        on = chain.claimOf(1, centre.encode().ljust(32, b"\0"), home.encode().ljust(32, b"\0")).call()
        assert (r["root"], int(r["anchored_total"]), r["voided"]) == ("0x" + on[0].hex(), on[2], str(on[3]))
    assert claims[("hpc-a", "hpc-b")]["records_total"] == "55" and claims[("hpc-c", "hpc-a")]["voided"] == "True"

    page = (tmp_path / "epoch-1" / "settlement.html").read_text()
    assert "<svg" in page and "verified against the chain" in page
    assert "+38" in page and "-13" in page and "-25" in page
    assert not re.search(r"<script|<link|src=|@import|url\(", page)  # self-contained: nothing fetched


def test_a_shortfall_is_reported_as_the_chain_recorded_it(books, tmp_path):  # noqa: F811
    report = report_of(books, 2)
    write_report(report, tmp_path)
    data = json.loads((tmp_path / "epoch-2" / "report.json").read_text())
    assert data["verified"] and data["net_positions_on_chain"] == on_chain(books, 2) == data["net_positions"]
    short = data["shortfalls"]["hpc-b"]
    assert short > 0 and data["net_positions"]["hpc-a"] == 5000 - short
    positions = {r["centre"]: r for r in rows(tmp_path / "epoch-2" / "positions.csv")}
    assert positions["hpc-b"]["shortfall"] == str(short)


def test_a_tampered_record_is_a_finding_in_every_file(books, tmp_path):  # noqa: F811
    evs = copy(books)
    ev = evs[A][0]
    changed = dataclasses.replace(ev.record, price=ev.record.price + 1)
    evs[A][0] = dataclasses.replace(
        ev, record=changed, signature=sign_record(changed, books.domain, books.k.accounts["hpc-a"].key)
    )
    report = report_of(books, 1, evs)
    assert not report.ok
    write_report(report, tmp_path)
    data = json.loads((tmp_path / "epoch-1" / "report.json").read_text())
    assert not data["verified"] and any("sum tree of the supplied records" in f for f in data["findings"])
    assert "NOT verified" in (tmp_path / "epoch-1" / "settlement.html").read_text()


def test_an_epoch_never_anchored_or_not_an_epoch_is_refused(books):  # noqa: F811
    """Epoch 9 has no anchor: nothing to report, said plainly."""
    with pytest.raises(ReportUnusable, match="no centre has anchored epoch 9"):
        report_of(books, 9, evidence={})
    for bad in (0, -1, True):
        with pytest.raises(ReportUnusable, match="epochs count from 1"):
            report_of(books, bad, evidence={})


def test_a_gateway_showing_other_figures_is_a_finding(books):  # noqa: F811
    report = report_of(books, 1)
    report.gateway = "http://gw.example"
    anchors = {
        name: {
            "record_count": t.anchored_count,
            "homes": {
                h: {"root": t.anchored_roots[h], "total": total, "voided": h in t.voided}
                for h, total in t.anchored_claims.items()
            },
        }
        for name, t in report.audit.totals.items()
    }
    honest = {"epoch": 1, "anchors": anchors, "settled": True, "net_positions": on_chain(books, 1)}
    assert gateway_findings(report, honest) == []
    lying = json.loads(json.dumps(honest))
    lying["anchors"]["hpc-a"]["homes"]["hpc-b"]["total"] = 56
    lying["net_positions"]["hpc-a"] = 39
    found = gateway_findings(report, lying)
    assert len(found) == 2 and "hpc-a's claim on hpc-b" in found[0] and "net positions" in found[1]


# -- the command ----------------------------------------------------------------------------------


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_a_chain_that_does_not_answer_is_a_clear_error(books, tmp_path):  # noqa: F811
    deployment = tmp_path / "deployment.json"
    books.k.deployment.to_json(deployment)
    code, _, err = run_cli(
        [
            "audit",
            "report",
            "--epoch",
            1,
            "--chain",
            "http://127.0.0.1:9",
            "--deployment",
            deployment,
            "--out",
            tmp_path,
        ]
    )
    assert code == 2 and err.startswith("error: ") and "127.0.0.1:9" in err and "Traceback" not in err
    assert not (tmp_path / "epoch-1").exists()


def test_a_missing_deployment_file_is_a_clear_error(tmp_path):
    code, _, err = run_cli(
        [
            "audit",
            "report",
            "--epoch",
            1,
            "--chain",
            "http://127.0.0.1:9",
            "--deployment",
            tmp_path / "no.json",
            "--out",
            tmp_path,
        ]
    )
    assert code == 2 and "no.json" in err


@pytest.fixture(scope="module")
def settled_epoch(consortium) -> int:
    """An epoch of its own at the session's consortium in which cloud-b served a job of alice@hpc-a, settled."""
    from gateway.client.dispatch import finish, submit_anywhere, with_home_session
    from gateway.client.http import GatewayClient
    from gateway.client.wallet import PaymentKeys
    from tests.fixtures.consortium import PASSWORDS

    consortium.close_epoch_everywhere()
    keys = PaymentKeys()
    with GatewayClient(consortium.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        job = {"command": ["python3", "-c", "print(1)"], "walltime": 30}
        submission = submit_anywhere(consortium.url("hpc-a"), job, with_home_session(home), centre="cloud-b", keys=keys)
        assert finish(submission, keys).price > 0
    epoch = consortium.close_epoch_everywhere()[0]["epoch"]
    consortium.wait_settled(epoch)
    return epoch


def test_the_command_writes_an_epochs_report(consortium, settled_epoch, tmp_path):
    argv = ["audit", "report", "--epoch", settled_epoch, "--chain", consortium.anvil_url]
    argv += ["--deployment", consortium.deployment_file, "--out", tmp_path, "--gateway", consortium.url("ai-c")]
    code, out, err = run_cli(argv)
    assert code == 0, out + err
    assert f"epoch {settled_epoch}: verified against the chain" in out and "MISMATCH" not in out
    folder = tmp_path / f"epoch-{settled_epoch}"
    data = json.loads((folder / "report.json").read_text())
    settled = settlement_of(_contracts(consortium), consortium.deployment, settled_epoch)
    chain_nets = {centre_name_of(c): n for c, n in settled.items()}
    assert data["net_positions_on_chain"] == chain_nets == data["net_positions"]
    assert data["centres"]["cloud-b"]["claims"]["hpc-a"] > 0 and data["gateway"] == consortium.url("ai-c")
    assert {r["centre"] for r in rows(folder / "positions.csv")} >= {"hpc-a", "cloud-b", "ai-c"}


def test_the_command_with_a_gateway_that_does_not_answer(consortium, settled_epoch, tmp_path):
    argv = ["audit", "report", "--epoch", settled_epoch, "--chain", consortium.anvil_url]
    argv += ["--deployment", consortium.deployment_file, "--out", tmp_path, "--gateway", "http://127.0.0.1:9"]
    code, _, err = run_cli(argv)
    assert code == 2 and "the gateway at http://127.0.0.1:9 could not be asked" in err
    assert not (tmp_path / f"epoch-{settled_epoch}").exists()


def test_the_command_with_an_epoch_never_anchored(consortium, tmp_path):
    argv = ["audit", "report", "--epoch", 10_000, "--chain", consortium.anvil_url]
    argv += ["--deployment", consortium.deployment_file, "--out", tmp_path]
    code, _, err = run_cli(argv)
    assert code == 2 and "no centre has anchored epoch 10000" in err


def _contracts(consortium):
    from ledger.deploy import bind

    return bind(consortium.chain, consortium.deployment, named=True)
