"""`xcentre consortium up|status|down` on real processes: anvil, one slapd and one gateway process per centre.

The consortium is the operator's example (examples/consortium.toml), brought up as the README
walks through it: a user signs on and runs a job through HTTP, `down` leaves no process
behind. Gas money is handled explicitly: `up` funds the centres' accounts, refuses when a
chain with a gas price would leave them empty, and `xcentre deploy` says which accounts hold none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from gateway.client.cli import main
from gateway.client.dispatch import finish, submit_anywhere, with_wallet
from gateway.client.http import GatewayClient
from gateway.client.provision import new_centre_keys
from gateway.client.wallet import PaymentKeys, Wallet
from gateway.consortium import slapd as slapd_node
from gateway.consortium.anvil import anvil_binary
from gateway.consortium.control import ConsortiumError, Proc, State, up
from gateway.consortium.processes import alive, start_time
from gateway.consortium.spec import SpecError, load_consortium
from ledger.chain import connect
from ledger.deploy import Deployment, bind

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
XCENTRE = Path(sys.executable).with_name("xcentre")

pytestmark = [
    pytest.mark.skipif(anvil_binary() is None, reason="anvil is not installed: run `npm ci` in contracts/"),
    pytest.mark.skipif(not slapd_node.installed(), reason=slapd_node.INSTALL_HINT),
]


def test_up_status_a_job_and_down(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["consortium", "up", "--file", str(EXAMPLES / "consortium.toml"), "--dir", str(run)]) == 0
    state = State.load(run)
    assert state is not None
    pids = [p.pid for _, p in state.processes()]
    try:
        assert len(pids) == 7 and all(alive(pid) for pid in pids)  # anvil, and a slapd and a gateway per centre
        capsys.readouterr()
        assert main(["consortium", "status", "--dir", str(run), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert {h["name"] for h in report} == {
            "anvil",
            *(f"{c} {part}" for c in ("hpc-a", "cloud-b", "ai-c") for part in ("slapd", "gateway")),
        }
        assert all(h["healthy"] for h in report), report
        assert "block" in next(h["detail"] for h in report if h["name"] == "anvil")

        # up on a running consortium says so and starts nothing
        assert main(["consortium", "up", "--file", str(EXAMPLES / "consortium.toml"), "--dir", str(run)]) == 0
        assert "already running" in capsys.readouterr().out
        assert [p.pid for _, p in State.load(run).processes()] == pids  # type: ignore[union-attr]

        # every centre's account was funded with gas (from anvil's dev account) and paid its own transactions
        chain = connect(state.chain_url)
        members = (run / "members.toml").read_text()
        # every period of the consortium file is the deployment's
        spec = load_consortium(EXAMPLES / "consortium.toml")
        contracts = bind(chain, Deployment.from_json(run / "deployment.json"))
        ledger = contracts.usage_ledger.functions
        assert contracts.settlement.functions.anchorWindow().call() == spec.anchor_window == 120
        assert ledger.disputeWindow().call() == spec.dispute_window
        assert ledger.bookingDelay().call() == spec.booking_delay
        assert ledger.epochLength().call() == spec.epoch_length == 0  # the example's epochs: closed by the gateways
        for name in ("hpc-a", "cloud-b", "ai-c"):
            account = Account.from_key((run / name / "keys" / "chain.key").read_text().strip()).address
            assert account in members
            assert 0 < chain.w3.eth.get_balance(account) < 10 * 10**18

        # alice enrols at her home, signs on at cloud-b with a proof, and runs a job at hpc-a through HTTP
        hpc_a, cloud_b = state.centres["hpc-a"].url, state.centres["cloud-b"].url
        keys = PaymentKeys()
        with GatewayClient(hpc_a) as home:
            wallet = Wallet.from_issuance(hpc_a, home.credential("alice", "alice-pw"))
            home.login("alice", "alice-pw")
            with GatewayClient(cloud_b) as there:
                assert there.sign_on(wallet)["token"]
            job = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30}
            submission = submit_anywhere(hpc_a, job, with_wallet(wallet, home), centre="hpc-a", keys=keys)
            with submission.client:
                result = finish(submission, keys)
        assert result.view["status"] == "succeeded" and result.stdout.strip() == "42"
        assert result.price > 0
    finally:
        assert main(["consortium", "down", "--dir", str(run)]) == 0
    assert not [pid for pid in pids if alive(pid)]
    capsys.readouterr()
    assert main(["consortium", "status", "--dir", str(run)]) == 3  # nothing answers: not healthy


def test_up_on_an_existing_chain_refuses_centres_without_gas_money(tmp_path, anvil_url):
    """On an existing chain whose gas price is not zero, with no funding asked for: `up` says which accounts hold
    nothing and how to fix it, and starts nothing."""
    example = (EXAMPLES / "consortium.toml").read_text()
    chain = f'[chain]\nurl = "{anvil_url}"\nfunder_key_file = "funder.key"\ngas_per_centre = 0\n'
    spec = tmp_path / "consortium.toml"
    spec.write_text(example[: example.index("[chain]")] + chain + example[example.index("[[member]]") :])
    (tmp_path / "funder.key").write_text(connect(anvil_url).dev_account.key.hex())
    for name in ("hpc-a", "cloud-b", "ai-c"):
        (tmp_path / name).symlink_to(EXAMPLES / name)
    (tmp_path / "credential_schema.toml").symlink_to(EXAMPLES / "credential_schema.toml")
    with pytest.raises(ConsortiumError) as refused:
        up(spec, tmp_path / "run", say=lambda _: None)
    message = str(refused.value)
    assert "hold too little gas money" in message and "zero gas price" in message
    for name in ("hpc-a", "cloud-b", "ai-c"):
        assert name in message
    state = State.load(tmp_path / "run")
    assert state is not None and state.anvil is None and not [p for _, p in state.processes() if p.running()]
    assert not (tmp_path / "run" / "deployment.json").exists()  # nothing deployed with accounts that cannot pay


def test_deploy_reports_each_members_gas_and_how_to_fund_it(tmp_path, anvil_url):
    """`xcentre deploy` on a chain with a gas price: members without gas money are named with the command that
    funds them; `xcentre consortium fund` then tops them up from a funded account."""
    publics = [new_centre_keys(tmp_path / name, name) for name in ("a", "b")]
    lines = ["quorum = 1", "initial_credit = 2000000"]
    for p in publics:
        lines += [
            "[[member]]",
            f'name = "{p["centre"]}"',
            f'account = "{p["account"]}"',
            'gateway_url = "http://127.0.0.1:1"',
            f'token_key = "{p["token_key"]}"',
            "prices = { per_cpu_second = 1, per_gpu_second = 0, per_gib_hour = 0 }",
        ]
    (tmp_path / "members.toml").write_text("\n".join(lines) + "\n")
    (tmp_path / "deployer.key").write_text(connect(anvil_url).dev_account.key.hex())
    common = ["--chain", anvil_url, "--key-file", "deployer.key", "--members", "members.toml"]
    deployed = subprocess.run(
        [str(XCENTRE), "deploy", *common, "--out", "deployment.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr
    for p in publics:
        assert f"{p['centre']} {p['account']}: 0 wei of gas money" in deployed.stdout
    assert "warning:" in deployed.stderr and "xcentre consortium fund" in deployed.stderr
    funded = subprocess.run(
        [str(XCENTRE), "consortium", "fund", *common], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert funded.returncode == 0, funded.stderr
    chain = connect(anvil_url)
    assert all(chain.w3.eth.get_balance(p["account"]) > 0 for p in publics)
    assert "still short" not in funded.stdout


def test_the_examples_are_files_each_tool_takes(tmp_path):
    """Every example file is what its reader accepts: the consortium file, each gateway configuration, each
    policy (checked by the Cedar engine), the credential schema, and each LDIF under its gateway's base DN."""
    from auth.credentials import CredentialSchema
    from gateway.consortium.spec import load_consortium
    from gateway.node.config import load_config
    from ledger.policies import validate

    spec = load_consortium(EXAMPLES / "consortium.toml")
    assert [m.name for m in spec.members] == ["hpc-a", "cloud-b", "ai-c"] and spec.chain.anvil
    clocked = shutil.copytree(EXAMPLES, tmp_path / "examples") / "consortium.toml"  # its commented clock, switched on
    clocked.write_text((EXAMPLES / "consortium.toml").read_text().replace("# epoch_length = 15", "epoch_length = 15"))
    assert load_consortium(clocked).epoch_length == 15
    too_long = clocked.with_name("too-long.toml")  # the example's booking delay of 60 s allows 15 s at most
    too_long.write_text(clocked.read_text().replace("epoch_length = 15", "epoch_length = 16"))
    with pytest.raises(SpecError, match=r"epoch_length = 16 s closes epochs too far.*set epoch_length to at most 15 s"):
        load_consortium(too_long)
    CredentialSchema.load(EXAMPLES / "credential_schema.toml")
    uids = []
    for m in spec.members:
        config = load_config(m.gateway)
        assert config.centre == m.name and config.credential_schema == EXAMPLES / "credential_schema.toml"
        validate(config.policy_file.read_text())
        ldif = m.directory.read_text()
        assert f"dn: {config.ldap_base_dn}\n" in ldif and f"dn: {config.ldap_bind_dn}\n" in ldif
        assert all(f"dn: cn={group},ou=groups,{config.ldap_base_dn}\n" in ldif for group in config.allocations)
        uids.append(config.job_uids)
    assert len(set(uids)) == len(uids)  # no two centres on one machine run jobs as the same uids


def test_the_copy_each_gateway_runs_with_spells_every_kind_of_setting_as_toml():
    import tomllib

    from gateway.consortium.control import _toml

    values = {"centre": "hpc-a", "port": 8000, "credit_share": 0.5, "job_network": False, "job_uids": [1, 2]}
    assert tomllib.loads(_toml(values | {"allocations": {"physics": 5}})) == values | {"allocations": {"physics": 5}}


def test_up_refuses_an_epoch_too_long_before_it_starts_anything(tmp_path, capsys):
    examples = shutil.copytree(EXAMPLES, tmp_path / "examples")
    file = examples / "consortium.toml"
    file.write_text(file.read_text().replace("# epoch_length = 15", "epoch_length = 16"))
    run = tmp_path / "run"
    assert main(["consortium", "up", "--file", str(file), "--dir", str(run)]) == 1
    assert "set epoch_length to at most 15 s" in capsys.readouterr().err
    assert not run.exists() or not any(run.iterdir())  # no chain started, no account funded, nothing written


def test_a_pid_reused_by_another_process_is_never_stopped(tmp_path):
    """The state file names a process by pid and start time: once ours is gone and its pid belongs to another
    process, `down` must leave that process alone."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        proc = Proc(stranger.pid, 1, "log", started=start_time(stranger.pid) - 1)  # "ours" started earlier
        assert not proc.running()
        assert proc.stop(timeout=1) == "not running" and proc.pid is None
        assert stranger.poll() is None  # still running
        ours = Proc(None, 1, "log")
        ours.track(stranger.pid)
        assert ours.running() and ours.stop(timeout=5) in ("stopped", "killed")
        assert stranger.wait(timeout=5) is not None
    finally:
        stranger.kill()
        stranger.wait()
