"""The `xcentre` command line against the session's real consortium (slapd, anvil, gateways).

login, submit, epoch close and audit run in-process through gateway.client.cli.main;
`xcentre gateway` runs as a real subprocess (the demo is tests/test_demo_output.py).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from auth.tokens import save_private_key
from gateway.api.server import free_port
from gateway.client.cli import main
from ledger.primitives.files import write_private
from tests.fixtures.consortium import PASSWORDS

XCENTRE = Path(sys.executable).parent / "xcentre"
SCHEMA = Path(__file__).resolve().parents[1] / "gateway" / "demo" / "data" / "credential_schema.toml"


def run_cli(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run `xcentre argv` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        if stdin is not None:
            patch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def wallet(consortium, tmp_path_factory) -> Path:
    """carol@cloud-b's wallet, from `xcentre login` at her home centre."""
    path = tmp_path_factory.mktemp("cli-home") / "xcentre" / "wallet.json"
    code, out, err = run_cli(
        ["login", "--gateway", consortium.url("cloud-b"), "--user", "carol", "--password-stdin", "--wallet", path],
        stdin=PASSWORDS["carol"] + "\n",
    )
    assert code == 0, err
    assert f"credential from cloud-b saved in {path}" in out
    return path


@pytest.fixture(scope="module")
def submitted(consortium, wallet) -> dict:
    """A job carol submits at her home gateway for hpc-a, waited for with --wait: paid, receipted, opened."""
    code, out, err = run_cli(
        [
            "submit",
            "--user",
            "carol",
            "--password-stdin",
            "--gateway",
            consortium.url("cloud-b"),
            "--centre",
            "hpc-a",
            "--walltime",
            "60",
            "--wait",
            "--wallet",
            wallet,
            "--",
            "python3",
            "-c",
            "print(6 * 7)",
        ],
        stdin=PASSWORDS["carol"] + "\n",
    )
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def closed_epoch(consortium, submitted, tmp_path_factory) -> int:
    """The epoch holding the CLI's job, closed at every centre with `xcentre epoch close`, then settled."""
    (epoch,) = set(consortium.open_epochs().values())
    keys = tmp_path_factory.mktemp("operator-keys")
    closures = []
    for name in consortium.centres:
        key_file = keys / name
        key_file.write_text(consortium.operator_key(name) + "\n")
        code, out, err = run_cli(["epoch", "close", "--gateway", consortium.url(name), "--operator-key-file", key_file])
        assert code == 0, err
        closures.append(json.loads(out))
    assert {c["epoch"] for c in closures} == {epoch}
    assert all(c["anchored"] for c in closures)
    assert not any(c["settled"] for c in closures)  # a dispute window opens before anyone is paid
    consortium.wait_settled(epoch)  # then the gateways settle it on their own
    return epoch


def audit(consortium, epoch: int, signatures: str = "all") -> tuple[int, str, str]:
    return run_cli(
        [
            "audit",
            "verify",
            "--epoch",
            epoch,
            "--chain",
            consortium.anvil_url,
            "--deployment",
            consortium.deployment_file,
            "--signatures",
            signatures,
        ]
    )


# -- login --------------------------------------------------------------------------------------


def test_login_writes_a_private_wallet_file(consortium, wallet):
    assert stat.S_IMODE(wallet.stat().st_mode) == 0o600
    assert stat.S_IMODE(wallet.parent.stat().st_mode) == 0o700
    saved = json.loads(wallet.read_text())
    assert saved["home"] == "cloud-b" and saved["home_url"] == consortium.url("cloud-b")
    assert saved["credential"] and saved["issuer_pk"].startswith("0x")
    assert PASSWORDS["carol"] not in wallet.read_text()
    assert not list(wallet.parent.glob("*.tmp"))


def test_login_with_a_wrong_password_saves_nothing(consortium, tmp_path):
    path = tmp_path / "session.json"
    code, _, err = run_cli(
        ["login", "--gateway", consortium.url("cloud-b"), "--user", "carol", "--password-stdin", "--wallet", path],
        stdin="not-carols\n",
    )
    assert code == 2
    assert "refused: 401" in err and "wrong password" in err
    assert not path.exists()


def test_login_at_an_unreachable_gateway(tmp_path):
    code, _, err = run_cli(
        [
            "login",
            "--gateway",
            f"http://127.0.0.1:{free_port()}",
            "--user",
            "carol",
            "--password-stdin",
            "--wallet",
            tmp_path / "w.json",
        ],
        stdin="x\n",
    )
    assert code == 1
    assert "did not answer" in err and "Traceback" not in err


# -- submit ---------------------------------------------------------------------------------------


def test_submit_wait_runs_the_job(submitted, wallet):
    run = submitted
    assert run["serving_centre"] == "hpc-a"
    assert run["status"] == "succeeded" and run["exit_code"] == 0
    # the outputs came sealed; the receipt for the record released the key that opened them
    assert run["stdout_tail"] is None and run["stdout"].strip() == "42"
    assert run["paid"] == run["usage"]["price"] and run["receipt"] == run["record"]["digest"]
    payments = wallet.with_suffix(".payments.json")  # the job's payment key is dropped once it is done
    assert json.loads(payments.read_text()) == {} and stat.S_IMODE(payments.stat().st_mode) == 0o600
    # signed on with a presentation of her credential: the serving centre sees a pseudonym of cloud-b
    assert run["principal"].endswith("@cloud-b") and "carol" not in run["principal"]
    assert run["usage"]["price"] > 0 and run["record_id"].startswith("0x")


def test_submit_refused_by_policy(consortium, wallet):
    before = consortium.job_count()
    code, _, err = run_cli(
        [
            "submit",
            "--user",
            "carol",
            "--password-stdin",
            "--gateway",
            consortium.url("cloud-b"),
            "--centre",
            "cloud-b",
            "--queue",
            "gpu",
            "--gpus",
            "1",
            "--wallet",
            wallet,
            "--",
            "true",
        ],
        stdin=PASSWORDS["carol"] + "\n",
    )
    assert code == 2
    assert "refused: 403" in err and "cloud-b: no policy permits" in err
    assert consortium.job_count() == before


def test_submit_auto_signs_on_where_the_job_runs(consortium, wallet):
    """Placement asked at cloud-b; the wallet signs on at the GPU centre, which alone takes the job."""
    code, _, err = run_cli(
        [
            "submit",
            "--user",
            "carol",
            "--password-stdin",
            "--gateway",
            consortium.url("cloud-b"),
            "--queue",
            "gpu",
            "--gpus",
            "1",
            "--walltime",
            "60",
            "--wait",
            "--wallet",
            wallet,
            "--",
            "true",
        ],
        stdin=PASSWORDS["carol"] + "\n",
    )
    assert code == 2 and "refused: 403" in err  # carol's project has no GPUs anywhere: every centre says why
    assert all(f"{c}:" in err for c in ("hpc-a", "cloud-b", "ai-c"))


def test_submit_without_a_wallet(consortium, tmp_path):
    code, _, err = run_cli(
        [
            "submit",
            "--user",
            "carol",
            "--gateway",
            consortium.url("cloud-b"),
            "--wallet",
            tmp_path / "none.json",
            "--",
            "true",
        ]
    )
    assert code == 1 and "run 'xcentre login'" in err


@pytest.mark.parametrize("text", ["{}", "[]", '{"home": "x", "home_url": "y"}'])
def test_submit_with_a_file_that_is_not_a_wallet(consortium, tmp_path, text):
    path = tmp_path / "wallet.json"
    path.write_text(text)
    code, _, err = run_cli(
        ["submit", "--user", "carol", "--gateway", consortium.url("cloud-b"), "--wallet", path, "--", "true"]
    )
    assert code == 1 and f"{path} is not a wallet" in err


def test_submit_without_a_command(consortium, wallet):
    code, _, err = run_cli(["submit", "--user", "carol", "--gateway", consortium.url("cloud-b"), "--wallet", wallet])
    assert code == 1 and "no command given" in err


# -- result, balance, complain -----------------------------------------------------------------------


def carol(*argv: object) -> tuple[int, str, str]:
    """`xcentre argv` as carol, her password on standard input."""
    return run_cli([*argv], stdin=PASSWORDS["carol"] + "\n")


def test_a_job_submitted_without_wait_is_finished_by_result(consortium, wallet):
    """submit returns at once, its payment key kept; `result` gives the receipt later and opens the outputs."""
    code, out, err = carol(
        "submit", "--user", "carol", "--password-stdin", "--gateway", consortium.url("cloud-b"), "--centre", "hpc-a",
        "--walltime", "60", "--wallet", wallet, "--", "python3", "-c", "print(6 * 9)",
    )  # fmt: skip
    assert code == 0, err
    job = json.loads(out)["id"]
    assert f"xcentre result {job} --centre hpc-a" in err
    payments = wallet.with_suffix(".payments.json")
    assert [facts["job"] for facts in json.loads(payments.read_text()).values()] == [job]
    code, out, err = run_cli(["result", job, "--centre", "hpc-a", "--wallet", wallet])
    assert code == 0, err
    done = json.loads(out)
    assert done["status"] == "succeeded" and done["stdout"].strip() == "54" and done["stdout_tail"] is None
    assert done["paid"] == done["usage"]["price"] > 0 and done["receipt"] == done["record"]["digest"]
    assert json.loads(payments.read_text()) == {}  # receipt given, key checked: the payment key is dropped
    again = run_cli(["result", job, "--centre", "hpc-a", "--wallet", wallet])
    assert again[0] == 1 and "pays for no unfinished job" in again[2]


def test_result_of_an_unknown_job_or_at_another_centre_is_refused(consortium, wallet):
    code, _, err = run_cli(["result", "no-such-job", "--centre", "hpc-a", "--wallet", wallet])
    assert code == 1 and "pays for no unfinished job no-such-job at hpc-a" in err


def test_balance_shows_the_project_and_the_user(consortium, wallet, submitted):
    code, out, err = carol("balance", "--user", "carol", "--password-stdin", "--wallet", wallet, "--json")
    assert code == 0, err
    answer = json.loads(out)
    project = answer["project"]
    assert project["name"] == "biology" and project["allocation"] == 500_000_000
    assert project["available"] == project["allocation"] - project["held"] - project["spent"]
    assert answer["user"]["principal"] == "carol@cloud-b"
    assert submitted["order"] in {h["order"] for h in answer["holds"]}  # the --wait job's hold, at hpc-a
    code, out, err = carol("balance", "--user", "carol", "--password-stdin", "--wallet", wallet)
    assert code == 0, err
    text = " ".join(out.split())
    assert "project biology" in text and "500,000,000" in text and "carol@cloud-b" in text and "hpc-a" in text


def test_balance_of_a_project_that_is_not_yours_is_refused(consortium, wallet):
    code, out, err = carol("balance", "--user", "carol", "--password-stdin", "--wallet", wallet, "--project", "physics")
    assert code == 2 and "refused: 403" in err and "'physics' is not one of your projects" in err and out == ""
    code, _, err = run_cli(["balance", "--user", "carol", "--password-stdin", "--wallet", wallet], stdin="wrong\n")
    assert code == 2 and "refused: 401" in err


@pytest.mark.parametrize("record", ["0xzz", "0x1234", "ab" * 31])
def test_complain_with_a_malformed_record_digest_is_refused(wallet, record):
    code, _, err = carol("complain", "--record", record, "--user", "carol", "--password-stdin", "--wallet", wallet)
    assert code == 1 and "--record" in err and "Traceback" not in err


def test_complain_about_a_record_the_wallet_does_not_know_is_refused(consortium, wallet):
    code, _, err = carol(
        "complain", "--record", "0x" + "ab" * 32, "--user", "carol", "--password-stdin", "--wallet", wallet
    )
    assert code == 1 and "has record 0x" + "ab" * 32 in err


# -- audit -----------------------------------------------------------------------------------------


def test_audit_verify_a_clean_epoch(consortium, closed_epoch):
    code, out, err = audit(consortium, closed_epoch)
    assert code == 0, out + err
    assert f"epoch {closed_epoch}: verified against the chain" in out
    assert "MISMATCH" not in out


def test_audit_epoch_shows_the_books(consortium, closed_epoch, submitted):
    code, out, _ = run_cli(["audit", "epoch", "--gateway", consortium.url("ai-c"), "--epoch", closed_epoch])
    assert code == 0
    view = json.loads(out)
    assert view["settled"] and sum(view["net_positions"].values()) == 0
    assert view["anchors"]["hpc-a"]["claims"]["cloud-b"] >= submitted["usage"]["price"]


@pytest.mark.parametrize("signatures", ["all", "unbound"])
def test_audit_verify_detects_a_tampered_record(consortium, closed_epoch, submitted, signatures):
    """Either way: a record the serving centre rewrote no longer rebuilds the root it anchored."""
    record_id = submitted["record_id"][2:]
    db = sqlite3.connect(consortium.store("hpc-a").path, isolation_level=None)
    try:
        (original,) = db.execute("SELECT record FROM usage_records WHERE record_id = ?", (record_id,)).fetchone()
        record = json.loads(original)
        assert record["epoch"] == closed_epoch
        record["price"] -= 1  # the serving centre quietly rewrites its books
        db.execute("UPDATE usage_records SET record = ? WHERE record_id = ?", (json.dumps(record), record_id))
        try:
            code, out, _ = audit(consortium, closed_epoch, signatures)
        finally:
            db.execute("UPDATE usage_records SET record = ? WHERE record_id = ?", (original, record_id))
    finally:
        db.close()
    assert code == 3
    assert "MISMATCH" in out and "hpc-a" in out
    assert f"epoch {closed_epoch}: NOT verified against the chain" in out
    assert audit(consortium, closed_epoch, signatures)[0] == 0  # restored: the books verify again


def test_audit_verify_with_a_missing_deployment_file(consortium, tmp_path):
    code, _, err = run_cli(
        ["audit", "verify", "--epoch", 1, "--chain", consortium.anvil_url, "--deployment", tmp_path / "nope.json"]
    )
    assert code == 1 and "nope.json" in err


# -- xcentre gateway (subprocess) --------------------------------------------------------------------


def test_gateway_runs_from_a_config_file(consortium, tmp_path):
    """A second hpc-a gateway (same chain account and token key, own data and port) from a TOML file."""
    hpc_a = consortium.centres["hpc-a"]
    slapd = consortium.slapds["hpc-a"]
    folder = tmp_path / "hpc-a-node"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / "chain.key").write_text("0x" + bytes(hpc_a.account.key).hex() + "\n")
    save_private_key(hpc_a.token_key, folder / "keys" / "token.pem")
    write_private(folder / "keys" / "issuer.key", hpc_a.issuer_key.sk.hex())
    (folder / "credential_schema.toml").write_text(SCHEMA.read_text())
    (folder / "policy.cedar").write_text(hpc_a.spec.policy)
    (folder / "deployment.json").write_text(consortium.deployment_file.read_text())
    port = free_port()
    (folder / "gateway.toml").write_text(f"""\
centre = "hpc-a"
data_dir = "data"
chain_url = "{consortium.anvil_url}"
deployment = "deployment.json"
chain_key_file = "keys/chain.key"
token_key_file = "keys/token.pem"
issuer_key_file = "keys/issuer.key"
credential_schema = "credential_schema.toml"
signon_attributes = {json.dumps(list(hpc_a.spec.signon_attributes))}
operator_key = "second-node-operator-key"
policy_file = "policy.cedar"
ldap_url = "{slapd.url}"
ldap_base_dn = "{slapd.base_dn}"
ldap_bind_dn = "{slapd.service_dn}"
ldap_bind_password = "{slapd.service_password}"
host = "127.0.0.1"
port = {port}
""")
    log = folder / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(XCENTRE), "gateway", "--config", str(folder / "gateway.toml")],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        docs = _wait_for(url + "/docs", process, log)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        login = httpx.post(url + "/v1/login", json={"username": "alice", "password": PASSWORDS["alice"]}, timeout=30)
        assert login.status_code == 200, login.text
        session = login.json()
        assert session["principal"] == "alice@hpc-a" and session["home"] == "hpc-a"
        # a token it exchanges is signed with hpc-a's registered key, so cloud-b accepts it
        exchanged = httpx.post(
            url + "/v1/tokens",
            json={"audience": "cloud-b"},
            timeout=30,
            headers={"Authorization": f"Bearer {session['token']}"},
        )
        assert exchanged.status_code == 200, exchanged.text
        other = httpx.get(
            consortium.url("cloud-b") + "/v1/jobs/none",
            timeout=30,
            headers={"Authorization": f"Bearer {exchanged.json()['token']}"},
        )
        assert other.status_code == 404 and "no job none" in other.json()["error"]
        wrong = httpx.post(url + "/v1/login", json={"username": "alice", "password": "nope"}, timeout=30)
        assert wrong.status_code == 401
        assert (folder / "data" / "gateway.db").exists()
        # a second gateway on the same data folder is refused before it touches anything
        second = subprocess.run(
            [str(XCENTRE), "gateway", "--config", str(folder / "gateway.toml")],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert f"another gateway (pid {process.pid}) runs on the data folder" in second.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()[-3000:]


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"xcentre gateway exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"xcentre gateway did not answer at {url}: {log.read_text()[-3000:]}")


def test_gateway_with_a_missing_config_file(tmp_path):
    code, _, err = run_cli(["gateway", "--config", tmp_path / "absent.toml"])
    assert code == 1 and "absent.toml does not exist" in err


def test_a_password_asked_with_no_terminal_and_nothing_on_stdin_is_a_clear_error(tmp_path):
    """Without a terminal (a script, a cron job) the prompt reads standard input; empty, it says how to give it.
    Every command that asks a password asks it the same way (`_password`)."""
    done = subprocess.run(
        [str(XCENTRE), "login", "--user", "alice", "--gateway", "http://127.0.0.1:9"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,  # no controlling terminal: getpass falls back to standard input
        env=os.environ | {"XCENTRE_HOME": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "no password for alice" in done.stderr and "--password-stdin" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
