"""A gateway serves only the Cedar policy its centre published on chain, and follows a new version live.

Runs on a consortium of its own (a fresh deployment on the session's anvil, a new slapd
per centre), since it publishes new versions of hpc-a's policy; `xcentre gateway` is run
in-process on a configuration file, as an operator runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auth.tokens import save_private_key
from gateway.client.cli import main
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.demo import local
from gateway.demo.local import demo_spec
from gateway.node.policies import PolicyNotPublished
from ledger.policies import policy_hash, publish
from ledger.primitives.files import write_private
from ledger.primitives.hex import to_hex
from tests.fixtures.consortium import eventually, start_consortium

SCHEMA = Path(local.__file__).parent / "data" / "credential_schema.toml"
HPC_A = demo_spec().centre("hpc-a").policy
#: hpc-a's policy with the students' limit raised from one hour to three
LONGER = HPC_A.replace("context.walltime > 3600", "context.walltime > 10800").replace(
    "at most 1 hour", "at most 3 hours"
)
TWO_HOURS = {"command": ["true"], "walltime": 7200, "centre": "hpc-a"}


@pytest.fixture(scope="module")
def fresh(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("policy"))
    yield running
    running.stop()


def as_bob(fresh) -> GatewayClient:
    return GatewayClient(fresh.url("hpc-a"), fresh.login("bob", "hpc-a"))


def quoted(client: GatewayClient, job: dict) -> dict | None:
    """The quote, or None while the centre's policy refuses the job (403) or it has no policy to decide by (503)."""
    try:
        return client.quote(job)
    except GatewayRefused as refused:
        if refused.status not in (403, 503):
            raise
        return None


def gateway_config(fresh, folder: Path, policy: str) -> Path:
    """A configuration file for a second hpc-a gateway (its keys, its own data folder) serving `policy`."""
    hpc_a, slapd = fresh.centres["hpc-a"], fresh.slapds["hpc-a"]
    (folder / "keys").mkdir(parents=True)
    write_private(folder / "keys" / "chain.key", "0x" + bytes(hpc_a.account.key).hex() + "\n")
    save_private_key(hpc_a.token_key, folder / "keys" / "token.pem")
    write_private(folder / "keys" / "issuer.key", hpc_a.issuer_key.sk.hex())
    (folder / "policy.cedar").write_bytes(policy.encode())
    fresh.deployment.to_json(folder / "deployment.json")
    (folder / "gateway.toml").write_text(f"""\
centre = "hpc-a"
data_dir = "data"
chain_url = "{fresh.anvil_url}"
deployment = "deployment.json"
chain_key_file = "keys/chain.key"
token_key_file = "keys/token.pem"
issuer_key_file = "keys/issuer.key"
credential_schema = "{SCHEMA}"
signon_attributes = {json.dumps(list(hpc_a.spec.signon_attributes))}
operator_key = "second-node-operator-key"
policy_file = "policy.cedar"
ldap_url = "{slapd.url}"
ldap_base_dn = "{slapd.base_dn}"
ldap_bind_dn = "{slapd.service_dn}"
ldap_bind_password = "{slapd.service_password}"
sandbox = "{local.job_sandbox()}"
""")
    return folder / "gateway.toml"


def test_a_centre_that_published_no_policy_is_refused_at_start(slapd_factory, anvil_url, tmp_path, monkeypatch):
    def publish_all_but_hpc_a(chain, deployment, account, text, schema=None):
        return None if text == HPC_A else publish(chain, deployment, account, text, schema)

    monkeypatch.setattr(local, "publish_policy", publish_all_but_hpc_a)
    with pytest.raises(PolicyNotPublished) as refused:
        start_consortium(slapd_factory, anvil_url, tmp_path)
    message = str(refused.value)
    assert "hpc-a has published no policy on chain" in message
    assert to_hex(policy_hash(HPC_A)) in message and "xcentre policy publish" in message


def test_a_gateway_whose_policy_file_is_not_the_published_one_does_not_start(fresh, tmp_path, capsys):
    config = gateway_config(fresh, tmp_path / "second", LONGER)
    assert main(["gateway", "--config", str(config)]) == 1
    error = capsys.readouterr().err
    published = fresh.centres["hpc-a"].node.parts.index.policy("hpc-a")
    assert f"are not hpc-a's policy version {published.version} on chain" in error
    assert to_hex(policy_hash(LONGER)) in error and to_hex(published.policy_hash) in error
    assert "xcentre policy publish" in error


def test_a_version_published_on_chain_is_served_without_a_restart(fresh):
    node = fresh.centres["hpc-a"].node
    before = node.parts.index.policy("hpc-a")
    with as_bob(fresh) as bob:
        with pytest.raises(GatewayRefused) as refused:
            bob.quote(TWO_HOURS)
        assert refused.value.status == 403 and refused.value.reasons == [
            "hpc-a: students may request at most 1 hour of walltime"
        ]
        denied = bob.decision(refused.value.decision)["entry"]
        assert (denied["decision"], denied["policy_version"]) == ("deny", before.version)
        assert denied["policy_hash"] == to_hex(policy_hash(HPC_A))

        published = fresh.change_policy("hpc-a", LONGER)  # the operator's new file, then its hash on chain
        assert published.version == before.version + 1
        quote = eventually(lambda: quoted(bob, TWO_HOURS), within=30)
        allowed = bob.decision(quote["decision"])["entry"]
        assert (allowed["decision"], allowed["policy_version"]) == ("allow", published.version)
        assert allowed["policy_hash"] == to_hex(published.policy_hash)
        assert fresh.centres["hpc-a"].node is node  # the same gateway, never restarted

        # its texts, for anyone to check against the chain: the version served now and the one before
        served = bob.policy()
        assert (served["version"], served["policy"], served["schema"]) == (published.version, LONGER, None)
        assert served["policy_hash"] == to_hex(policy_hash(LONGER))
        assert bob.policy(before.version)["policy"] == HPC_A

        # and back: the old text as a new version refuses the job again, naming that version
        again = fresh.change_policy("hpc-a", HPC_A)
        eventually(lambda: quoted(bob, TWO_HOURS) is None, within=30)
        with pytest.raises(GatewayRefused) as refused_again:
            bob.quote(TWO_HOURS)
        assert bob.decision(refused_again.value.decision)["entry"]["policy_version"] == again.version


def test_while_its_files_lag_the_chain_a_gateway_decides_nothing(fresh):
    node = fresh.centres["hpc-a"].node
    served = node.parts.index.policy("hpc-a")
    text = fresh.policy_file("hpc-a").read_text() + "\n// reviewed\n"
    # published on chain before the operator installed the text on the gateway
    published = publish(fresh.chain, fresh.deployment, fresh.centres["hpc-a"].account, text)
    short = TWO_HOURS | {"walltime": 60}
    with as_bob(fresh) as bob:

        def unavailable() -> GatewayRefused | None:
            try:
                bob.quote(short)
            except GatewayRefused as refused:
                return refused if refused.status == 503 else None
            return None

        def logged() -> int:
            return len(node.parts.store.decisions_for_epoch(node.parts.store.open_epoch()))

        eventually(unavailable, within=30)  # once its index has the new version
        before = logged()
        refusal = unavailable()
        assert refusal is not None and refusal.status == 503
        assert to_hex(published.policy_hash) in refusal.error  # what the chain has
        assert to_hex(served.policy_hash) in refusal.error  # what the files hold
        assert logged() == before  # nothing decided, nothing logged
        with pytest.raises(GatewayRefused) as never_served:
            bob.policy(published.version)
        assert never_served.value.status == 404

        fresh.policy_file("hpc-a").write_bytes(text.encode())
        quote = eventually(lambda: quoted(bob, short), within=30)
        assert bob.decision(quote["decision"])["entry"]["policy_version"] == published.version
        assert bob.policy(published.version)["policy"] == text
