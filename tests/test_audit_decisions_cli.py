"""`xcentre audit decisions` against the session's real consortium (slapd, anvil, HTTP gateways).

In an epoch of its own, alice runs a job at hpc-a (the policy allows it) and bob's
two-hour job is refused there by `student-walltime`; every centre closes the epoch
and hpc-a anchors its decision log. The consortium's auditor (an account in every
gateway's `auditors`) then checks hpc-a's log, fetched page by page, against the chain
and takes every decision again: a clean log
passes, a log edited in the gateway's database fails on its anchored root, and an
allow the published policy does not give, logged and anchored by hpc-a, is reported.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from gateway.client.auditing import audit_log, fetch_decision_log
from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.wallet import PaymentKeys
from gateway.store import NewDecision, StoredDecision
from ledger.decisions import entry_digest, log_root
from ledger.deploy import bind
from ledger.ids import centre_id
from ledger.primitives.hex import to_hex
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.test_cli import run_cli

BURN = "import sys; print(sum(i * i for i in range(int(sys.argv[1]))))"


def job(walltime: int) -> dict:
    return {"command": ["python3", "-c", BURN, "1000"], "walltime": walltime, "resources": {}}


@dataclass
class Decided:
    epoch: int
    refusal: StoredDecision
    """bob's refusal, as hpc-a logged it"""
    key_file: Path
    argv: list


def anchored(consortium, centre: str, epoch: int) -> tuple[bytes, int] | None:
    """(root, count) of `centre`'s decision log of `epoch` once it is anchored on chain."""
    ledger = bind(consortium.chain, consortium.deployment, named=True).usage_ledger.functions
    if not ledger.anchorOf(centre_id(centre), epoch).call().anchored:
        return None
    root, count = ledger.decisionsOf(centre_id(centre), epoch).call()
    return bytes(root), int(count)


def close_and_anchor(consortium, epoch: int) -> None:
    consortium.close_epoch_everywhere()
    eventually(lambda: all(anchored(consortium, c, epoch) for c in consortium.centres))


def audit(decided: Decided, *extra: object, epoch: int | None = None) -> tuple[int, str, str]:
    return run_cli([*decided.argv, "--epoch", epoch or decided.epoch, *extra])


def figures(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w[\w-]*):\s+(\S+)", out, flags=re.M))


@pytest.fixture(scope="module")
def decided(consortium, tmp_path_factory) -> Decided:
    if any(consortium.store(n).decisions_for_epoch(e) for n, e in consortium.open_epochs().items()):
        consortium.close_epoch_everywhere()  # an epoch of our own: exact counts below
    (epoch,) = set(consortium.open_epochs().values())
    keys = PaymentKeys()
    with GatewayClient(consortium.url("hpc-a")) as alice:
        alice.login("alice", PASSWORDS["alice"])
        submission = submit_anywhere(
            consortium.url("hpc-a"), job(60), with_home_session(alice), centre="hpc-a", keys=keys
        )
        with submission.client:
            assert finish(submission, keys).view["status"] == "succeeded"
    with GatewayClient(consortium.url("hpc-a")) as bob:
        bob.login("bob", PASSWORDS["bob"])
        with pytest.raises(GatewayRefused, match="students may request at most 1 hour"):
            submit_anywhere(consortium.url("hpc-a"), job(7200), with_home_session(bob), centre="hpc-a", keys=keys)
    close_and_anchor(consortium, epoch)
    (refusal,) = [d for d in consortium.store("hpc-a").decisions_for_epoch(epoch) if not d.allowed]
    key_file = tmp_path_factory.mktemp("auditor") / "auditor.key"
    key_file.write_text(consortium.auditor.key.hex() + "\n")
    argv = ["audit", "decisions", "--centre", "hpc-a", "--chain", consortium.anvil_url]
    argv += ["--deployment", consortium.deployment_file, "--key-file", key_file]
    return Decided(epoch, refusal, key_file, argv)


def test_a_clean_epoch_passes_with_its_figures(decided, consortium):
    code, out, err = audit(decided)
    assert code == 0, out + err
    stored = consortium.store("hpc-a").decisions_for_epoch(decided.epoch)
    allows = sum(d.allowed for d in stored)
    assert allows >= 1 and len(stored) - allows == 1  # alice's job (quote, submission), bob's refusal
    root, count = anchored(consortium, "hpc-a", decided.epoch)
    assert (root, count) == (log_root(d.digest_bytes for d in stored), len(stored))
    shown = figures(out)
    assert shown["root"] == to_hex(root)
    assert (shown["entries"], shown["allows"], shown["denies"]) == (str(count), str(allows), "1")
    assert shown["re-evaluated"] == str(count)
    assert float(shown["seconds"]) >= 0
    assert "verified against the chain" in out and "FINDING" not in out


def test_the_gateway_can_be_named(decided, consortium):
    code, out, err = audit(decided, "--gateway", consortium.url("hpc-a"), "--grace", "30")
    assert code == 0, out + err
    code, out, err = audit(decided, "--gateway", consortium.url("cloud-b"))  # not hpc-a's log: cloud-b refuses
    assert code == 2 and "refused" in err and out == ""


def test_a_log_edited_in_the_store_fails_on_its_anchored_root(decided, consortium):
    refusal = decided.refusal
    edited = refusal.entry | {"context": refusal.entry["context"] | {"walltime": 3600}}  # hide the 2-hour ask
    database = consortium.data_dir / "hpc-a" / "gateway.db"
    with sqlite3.connect(database) as db:
        db.execute("UPDATE decisions SET entry = ? WHERE id = ?", (json.dumps(edited), refusal.id))
    try:
        code, out, err = audit(decided)
    finally:
        with sqlite3.connect(database) as db:
            db.execute("UPDATE decisions SET entry = ? WHERE id = ?", (json.dumps(refusal.entry), refusal.id))
    assert code == 3, out + err
    root, _ = anchored(consortium, "hpc-a", decided.epoch)
    findings = [line for line in out.splitlines() if line.startswith("FINDING")]
    assert findings and any(to_hex(root) in line for line in findings), out
    assert "NOT verified" in out


def test_an_allow_the_published_policy_does_not_give_is_reported(decided, consortium):
    """hpc-a logs (and anchors) that it allowed bob's two-hour job: its policy version says deny."""
    store = consortium.store("hpc-a")
    (epoch,) = set(consortium.open_epochs().values())
    forged = decided.refusal.entry | {
        "id": "0x" + secrets.token_hex(16),
        "time": int(time.time()),
        "decision": "allow",
        "policies": ["cpu-for-members"],
    }
    store.log_decision(NewDecision.of(forged))
    close_and_anchor(consortium, epoch)
    code, out, err = audit(decided, epoch=epoch)
    assert code == 3, out + err
    findings = [line for line in out.splitlines() if line.startswith("FINDING")]
    (about,) = [line for line in findings if forged["id"] in line or to_hex(entry_digest(forged)) in line]
    assert "denies it" in about and "student-walltime" in about
    assert figures(out)["root"] == to_hex(anchored(consortium, "hpc-a", epoch)[0])  # the log itself is the anchored one


def test_a_record_of_a_job_admitted_the_epoch_before_is_found_in_that_epochs_log(decided, consortium):
    """A job still running at the close: its record joins the next epoch, its admitting allow stays in this one."""
    (first,) = set(consortium.open_epochs().values())
    keys = PaymentKeys()
    slow = {"command": ["python3", "-c", "import time; time.sleep(3)"], "walltime": 60, "resources": {}}
    with GatewayClient(consortium.url("hpc-a")) as alice:
        alice.login("alice", PASSWORDS["alice"])
        submission = submit_anywhere(consortium.url("hpc-a"), slow, with_home_session(alice), centre="hpc-a", keys=keys)
    consortium.close_epoch_everywhere()
    with submission.client:
        view = finish(submission, keys).view
    assert view["status"] == "succeeded" and view["usage"]["epoch"] == first + 1
    admitted = consortium.store("hpc-a").decision(view["decision"])
    assert admitted.epoch == first and admitted.entry["kind"] == "submit"
    close_and_anchor(consortium, first + 1)
    code, out, err = audit(decided, epoch=first + 1)
    assert code == 0, out + err
    assert figures(out)["records"] == "1"


@pytest.mark.parametrize(
    ("centre", "epoch", "said"),
    [
        ("nowhere", None, "nowhere is not a member"),
        ("Not A Name", None, "centre name must match"),
        ("hpc-a", "open", "has not anchored epoch"),
    ],
)
def test_unusable_input_is_exit_2_with_a_reason(decided, consortium, centre, epoch, said):
    argv = [a if a != "hpc-a" else centre for a in decided.argv]
    open_epoch = consortium.store("hpc-a").open_epoch()
    code, out, err = run_cli([*argv, "--epoch", open_epoch if epoch == "open" else decided.epoch])
    assert code == 2 and said in err and out == ""


@pytest.mark.parametrize("whose", ["an outsider", "a member"])
def test_a_key_that_is_no_auditors_is_refused(decided, consortium, tmp_path, whose):
    key = Account.create().key if whose == "an outsider" else consortium.centres["cloud-b"].account.key
    other = tmp_path / "other.key"
    other.write_text(key.hex())
    argv = [a if a != decided.key_file else other for a in decided.argv]
    code, out, err = run_cli([*argv, "--epoch", decided.epoch])
    assert code == 2 and "401" in err and "not an auditor of hpc-a" in err and out == ""


def test_the_log_is_fetched_in_pages(decided, consortium):
    stored = consortium.store("hpc-a").decisions_for_epoch(decided.epoch)
    assert len(stored) >= 3
    log = fetch_decision_log(
        consortium.chain, consortium.deployment, "hpc-a", decided.epoch, consortium.auditor, page=1
    )  # one entry a page: as many requests as entries, each signed afresh
    assert log.entries == [d.entry for d in stored]
    assert audit_log(log).ok


def test_a_negative_grace_or_a_key_file_without_a_key_is_exit_2(decided, tmp_path):
    code, out, err = audit(decided, "--grace", "-5")
    assert code == 2 and "--grace" in err and out == ""
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    argv = [a if a != decided.key_file else garbage for a in decided.argv]
    code, out, err = run_cli([*argv, "--epoch", decided.epoch])
    assert code == 2 and "holds no hex chain key" in err and "not a key" not in err and out == ""
