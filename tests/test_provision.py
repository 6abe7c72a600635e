"""Setting a consortium up from nothing, as operators do, with gateways as separate processes.

Each centre runs `xcentre keygen`; the public halves go into a members file;
`xcentre deploy` writes them on anvil; each centre starts `xcentre gateway
--config` next to its own slapd. Then a user of one centre signs on at the other
with a BBS proof, runs a job there, the epoch is closed and settled, and
`xcentre audit verify` checks it against the chain.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from gateway.api.server import free_port
from gateway.client.dispatch import finish, submit_anywhere, with_wallet
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable
from gateway.client.provision import ProvisionError, load_members, new_centre_keys
from gateway.client.wallet import PaymentKeys, Wallet
from gateway.demo.local import demo_spec
from ledger.chain import connect
from tests.fixtures.consortium import PASSWORDS

XCENTRE = Path(sys.executable).with_name("xcentre")
DEMO_DATA = Path(__file__).resolve().parents[1] / "gateway" / "demo" / "data"
CENTRES = ("hpc-a", "cloud-b")


def xcentre(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(XCENTRE), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_keygen_writes_private_keys_and_never_overwrites(tmp_path):
    public = new_centre_keys(tmp_path / "k", "hpc-a")
    assert public["centre"] == "hpc-a" and public["account"].startswith("0x")
    assert len(bytes.fromhex(public["token_key"][2:])) == 32 and len(bytes.fromhex(public["issuer_pk"][2:])) == 96
    for name in ("chain.key", "token.pem", "issuer.key"):
        assert stat.S_IMODE(os.stat(tmp_path / "k" / name).st_mode) == 0o600
    with pytest.raises(ProvisionError, match="never overwritten"):
        new_centre_keys(tmp_path / "k", "hpc-a")


def test_a_members_file_with_mistakes_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "members.toml"
    for text, words in (
        ("quorum = 1\n", "no [[member]]"),
        (
            'quorum = 3\n[[member]]\nname = "a"\naccount = "0x' + "11" * 20 + '"\ngateway_url = "http://x"\n'
            'token_key = "0x'
            + "22" * 32
            + '"\nprices = { per_cpu_second = 1, per_gpu_second = 0, per_gib_hour = 0 }\n',
            "quorum must be an integer from 1 to 1",
        ),
        (
            'quorum = 1\n[[member]]\nname = "a"\naccount = "nope"\ngateway_url = "http://x"\n'
            'token_key = "0x'
            + "22" * 32
            + '"\nprices = { per_cpu_second = 1, per_gpu_second = 0, per_gib_hour = 0 }\n',
            "account is not an address",
        ),
        ("this is = not toml [", "cannot read"),
        ("rate_notice = -1\n" + ONE_MEMBER, "rate_notice must be a non-negative integer"),
        ('rate_notice = "1d"\n' + ONE_MEMBER, "rate_notice must be a non-negative integer"),
        ("dispute_window = -4\n" + ONE_MEMBER, "dispute_window must be a non-negative integer"),
        ('booking_delay = "a day"\n' + ONE_MEMBER, "booking_delay must be a non-negative integer"),
        ("supervision = 1\n" + ONE_MEMBER, "supervision. must be a table"),
        (ONE_MEMBER + '[supervision]\nsupervisors = ["b"]\n', "supervisors must be distinct members"),
        (ONE_MEMBER + '[supervision]\nsupervisors = ["a", "a"]\n', "supervisors must be distinct members"),
        (ONE_MEMBER + "[supervision]\nthreshold = 2\n", "threshold must be an integer from 1 to 1"),
        (
            ONE_MEMBER
            + ONE_MEMBER.split("\n", 1)[1].replace('"a"', '"b"').replace("11" * 20, "33" * 20)
            + "[supervision]\nthreshold = 1\n",
            "threshold must be an integer from 2 to 2",  # one supervisor of two would open alone
        ),
        (ONE_MEMBER + "[supervision]\ndkg_window = 0\n", "dkg_window must be 1 to"),
        (ONE_MEMBER + "[supervision]\nquorum = 1\n", "unknown keys: quorum"),
    ):
        path.write_text(text)
        with pytest.raises(ProvisionError, match=words.replace("[", r"\[")):
            load_members(path)
    path.write_text(ONE_MEMBER)
    assert load_members(path).rate_notice == 86_400  # a day unless the consortium says otherwise
    path.write_text("rate_notice = 600\n" + ONE_MEMBER)
    assert load_members(path).rate_notice == 600
    plan = load_members(path)  # disputes within an hour, records up to a day late, unless the consortium says otherwise
    assert (plan.dispute_window, plan.booking_delay) == (3_600, 86_400)
    path.write_text("dispute_window = 4\nbooking_delay = 2\n" + ONE_MEMBER)
    assert (load_members(path).dispute_window, load_members(path).booking_delay) == (4, 2)
    assert (plan.supervisors, plan.supervision_threshold, plan.dkg_window) == (None, None, 600)
    path.write_text(ONE_MEMBER + '[supervision]\nsupervisors = ["a"]\nthreshold = 1\ndkg_window = 30\n')
    plan = load_members(path)
    assert (plan.supervisors, plan.supervision_threshold, plan.dkg_window) == (["a"], 1, 30)


def test_a_members_file_sets_the_epoch_clock_within_the_booking_delay(tmp_path):
    path = tmp_path / "members.toml"
    path.write_text(ONE_MEMBER)
    assert load_members(path).epoch_length == 0  # no clock unless the consortium asks for one
    path.write_text("epoch_length = 3600\n" + ONE_MEMBER)
    assert load_members(path).epoch_length == 3_600
    for text, words in (
        ("epoch_length = -1\n", "epoch_length must be a non-negative integer"),
        ('epoch_length = "1h"\n', "epoch_length must be a non-negative integer"),
        # a day's booking delay less 15 minutes for a late close and a minute to anchor
        ("epoch_length = 85441\n", "epoch_length = 85441 s closes epochs too far.*set epoch_length to at most 85440"),
        ("booking_delay = 60\nepoch_length = 16\n", "at most 15 s"),
    ):
        path.write_text(text + ONE_MEMBER)
        with pytest.raises(ProvisionError, match=words):
            load_members(path)


ONE_MEMBER = (
    'quorum = 1\n[[member]]\nname = "a"\naccount = "0x' + "11" * 20 + '"\ngateway_url = "http://x"\n'
    'token_key = "0x' + "22" * 32 + '"\nprices = { per_cpu_second = 1, per_gpu_second = 0, per_gib_hour = 0 }\n'
)


def test_a_consortium_from_nothing(tmp_path, anvil_url, slapd_factory):
    spec = demo_spec()
    ports = {name: free_port() for name in CENTRES}
    public = {}
    for name in CENTRES:
        result = xcentre("keygen", "--centre", name, "--dir", str(tmp_path / name / "keys"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        public[name] = json.loads(result.stdout)

    # collateral for the anchor bond and the grants; disputes within 2 s, so the epoch settles soon
    members = ["quorum = 2", "initial_credit = 1000000000", "dispute_window = 2", "booking_delay = 60"]
    for name in CENTRES:
        prices = spec.centre(name).prices
        members += [
            "[[member]]",
            f'name = "{name}"',
            f'account = "{public[name]["account"]}"',
            f'gateway_url = "http://127.0.0.1:{ports[name]}"',
            f'token_key = "{public[name]["token_key"]}"',
            (
                f"prices = {{ per_cpu_second = {prices.per_cpu_second}, per_gpu_second = {prices.per_gpu_second}, "
                f"per_gib_hour = {prices.per_gib_hour} }}"
            ),
        ]
    (tmp_path / "members.toml").write_text("\n".join(members) + "\n")
    (tmp_path / "deployer.key").write_text(connect(anvil_url).dev_account.key.hex())
    deployed = xcentre(
        "deploy",
        "--chain",
        anvil_url,
        "--key-file",
        "deployer.key",
        "--members",
        "members.toml",
        "--out",
        "deployment.json",
        "--fund-members",
        str(10**19),
        cwd=tmp_path,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed 2 members" in deployed.stdout
    for name in CENTRES:  # each centre publishes its policy on chain: its gateway serves no other
        published = xcentre(
            "policy",
            "publish",
            "--chain",
            anvil_url,
            "--deployment",
            "deployment.json",
            "--key-file",
            f"{name}/keys/chain.key",
            "--policy",
            str(DEMO_DATA / f"{name}.cedar"),
            cwd=tmp_path,
        )
        assert published.returncode == 0, published.stderr
        assert json.loads(published.stdout)["version"] == 1

    with ExitStack() as stack:
        for name in CENTRES:
            centre = spec.centre(name)
            slapd = slapd_factory(users=centre.users, groups=centre.groups, base_dn=centre.base_dn)
            folder = tmp_path / name
            (folder / "gateway.toml").write_text(f"""\
centre = "{name}"
port = {ports[name]}
data_dir = "data"
chain_url = "{anvil_url}"
deployment = "../deployment.json"
chain_key_file = "keys/chain.key"
token_key_file = "keys/token.pem"
issuer_key_file = "keys/issuer.key"
credential_schema = "{DEMO_DATA / "credential_schema.toml"}"
signon_attributes = {json.dumps(list(centre.signon_attributes))}
policy_file = "{DEMO_DATA / f"{name}.cedar"}"
operator_key = "{name}-operator"
ldap_url = "{slapd.url}"
ldap_base_dn = "{slapd.base_dn}"
ldap_bind_dn = "{slapd.service_dn}"
ldap_bind_password = "{slapd.service_password}"

[allocations]
{chr(10).join(f"{group} = {amount}" for group, amount in centre.allocations.items())}
""")
            stack.enter_context(_gateway(folder))
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in CENTRES}
        for url in urls.values():
            _wait_until_up(url)

        # alice enrols at home, signs on at cloud-b with a proof and runs a job there, paid from her project
        keys = PaymentKeys()
        with GatewayClient(urls["hpc-a"]) as home:
            wallet = Wallet.from_issuance(urls["hpc-a"], home.credential("alice", PASSWORDS["alice"]))
            home.login("alice", PASSWORDS["alice"])  # her home grants the order of each job
            with GatewayClient(urls["cloud-b"]) as client:
                _eventually(lambda: _signs_on(client, wallet))  # once cloud-b's index has hpc-a's issuer key
            job = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30}
            submission = submit_anywhere(urls["hpc-a"], job, with_wallet(wallet, home), centre="cloud-b", keys=keys)
            with submission.client:
                result = finish(submission, keys)
            done = result.view
            assert done["serving_centre"] == "cloud-b"
            assert done["status"] == "succeeded" and result.stdout.strip() == "42"
            assert done["usage"]["price"] > 0 and result.price == done["usage"]["price"]
            held = home.balance()["user"]
            assert held["held"] >= done["usage"]["price"] and held["spent"] == 0  # the order's maximum, until settled

        closures = []
        for name in ("cloud-b", "hpc-a"):
            with GatewayClient(urls[name]) as client:
                closures.append(client.close_epoch(f"{name}-operator"))
        assert closures[0]["claims"] == {"hpc-a": done["usage"]["price"]}
        assert all(c["anchored"] and not c["settled"] for c in closures)  # the dispute window opens first
        with GatewayClient(urls["hpc-a"]) as client:  # then the gateways settle it on their own
            _eventually(lambda: client.audit_epoch(1)["settled"], within=60)
            client.login("alice", PASSWORDS["alice"])
            # settled: her project paid the price, the rest of the hold is free again
            _eventually(lambda: client.balance()["holds"][0]["status"] != "held", within=30)
            mine = client.balance()
            assert [(h["status"], h["price"]) for h in mine["holds"]] == [("paid", done["usage"]["price"])]
            assert (mine["user"]["held"], mine["user"]["spent"]) == (0, done["usage"]["price"])

        audit = xcentre(
            "audit", "verify", "--epoch", "1", "--chain", anvil_url, "--deployment", "deployment.json", cwd=tmp_path
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "verified against the chain" in audit.stdout


def _signs_on(client: GatewayClient, wallet: Wallet) -> bool:
    try:
        client.sign_on(wallet)
        return True
    except (GatewayRefused, GatewayUnreachable):
        return False


def _eventually(check, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.2)


def _wait_until_up(url: str, within: float = 60.0) -> None:
    def up() -> bool:
        try:
            return httpx.get(url + "/docs", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _eventually(up, within)


class _gateway:
    """`xcentre gateway --config` as a process, stopped with SIGTERM at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> subprocess.Popen:
        self.log = open(self.folder / "gateway.log", "wb")
        self.process = subprocess.Popen(
            [str(XCENTRE), "gateway", "--config", str(self.folder / "gateway.toml")],
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self.process

    def __exit__(self, *_: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        assert self.process.returncode == 0, (self.folder / "gateway.log").read_text()[-3000:]
