"""A centre's Cedar policy on chain: versions of its hashes, published only by the centre, only valid text,
never the same twice in a row; `xcentre policy publish|show`, the served text checked against the chain."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from auth.policy import PolicyError
from ledger.chain import Chain, ChainRevert, connect
from ledger.deploy import Deployment, MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.policies import (
    NO_SCHEMA,
    PolicyTextMismatch,
    PolicyUnchanged,
    PolicyVersion,
    check_latest,
    history,
    policy_hash,
    publish,
    read_text,
    schema_hash,
    verify_text,
)

POLICY = """// CPU for every member
@id("cpu-for-members")
@reason("every member of the consortium may run CPU jobs here")
permit (principal, action == XCentre::Action::"submit", resource)
when { resource == XCentre::Queue::"cpu" };
"""
STRICTER = (
    POLICY
    + """
@id("short-jobs")
@reason("jobs here run for an hour at most — café rules")
forbid (principal, action, resource) when { context.walltime > 3600 };
"""
)
SCHEMA = """
namespace XCentre {
  entity Group;
  entity User in [Group] { principal: String, home: String };
  entity Queue { centre: String };
  action submit appliesTo { principal: User, resource: Queue,
                            context: { walltime: Long, cores: Long, memory_mib: Long, gpus: Long, hour: Long } };
}
"""


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class World:
    chain: Chain
    deployment: Deployment
    accounts: dict[str, LocalAccount]


def _world(chain: Chain) -> World:
    accounts = {n: Account.create() for n in ("hpc-a", "cloud-b")}
    for account in accounts.values():
        chain.fund(account.address, 10**19)
    specs = [
        MemberSpec(n, a.address, f"https://{n}.example", bytes([i + 1]) * 32, Prices(1, 2, 3))
        for i, (n, a) in enumerate(accounts.items())
    ]
    return World(chain, deploy_consortium(chain, chain.dev_account, specs, 1, 0), accounts)


@pytest.fixture(scope="module")
def world() -> World:
    return _world(connect("embedded"))


def _count(world: World, centre: str) -> int:
    return bind(world.chain, world.deployment).consortium.functions.policyCount(centre_id(centre)).call()


# -- hashes ---------------------------------------------------------------------------------------


def test_hashes_are_sha256_of_the_utf8_text_and_zero_without_a_schema(tmp_path):
    assert policy_hash(STRICTER) == sha(STRICTER) and len(policy_hash("")) == 32
    assert schema_hash(SCHEMA) == sha(SCHEMA) and schema_hash(None) == NO_SCHEMA == bytes(32)
    assert schema_hash("") != NO_SCHEMA  # an empty schema is a schema
    # a file's text is its bytes: line ends kept, so the hash is the file's own sha256
    crlf = tmp_path / "crlf.cedar"
    crlf.write_bytes(POLICY.replace("\n", "\r\n").encode())
    assert policy_hash(read_text(crlf)) == hashlib.sha256(crlf.read_bytes()).digest()
    latin = tmp_path / "latin1.cedar"
    latin.write_bytes(STRICTER.encode("latin-1", errors="replace"))
    with pytest.raises(PolicyError, match=f"the policy file {latin} is not UTF-8"):
        read_text(latin)


# -- publish and history on the embedded chain ---------------------------------------------------


def test_versions_count_from_one_per_centre_with_their_hashes(world):
    a, b = world.accounts["hpc-a"], world.accounts["cloud-b"]
    assert history(world.chain, world.deployment, "hpc-a") == []
    first = publish(world.chain, world.deployment, a, POLICY)
    assert (first.centre, first.version, first.policy_hash, first.schema_hash) == ("hpc-a", 1, sha(POLICY), NO_SCHEMA)
    assert first.published_at == world.chain.w3.eth.get_block("latest")["timestamp"]
    other = publish(world.chain, world.deployment, b, POLICY)  # the same text elsewhere: its own version 1
    assert (other.centre, other.version) == ("cloud-b", 1)
    second = publish(world.chain, world.deployment, a, STRICTER, SCHEMA)
    assert (second.version, second.policy_hash, second.schema_hash) == (2, sha(STRICTER), sha(SCHEMA))
    assert second.published_at >= first.published_at
    assert history(world.chain, world.deployment, "hpc-a") == [first, second]
    assert history(world.chain, world.deployment, "cloud-b") == [other]
    assert second.to_dict() == {
        "centre": "hpc-a",
        "version": 2,
        "policy_hash": "0x" + sha(STRICTER).hex(),
        "schema_hash": "0x" + sha(SCHEMA).hex(),
        "published_at": second.published_at,
    }
    assert first.to_dict()["schema_hash"] == "0x" + "00" * 32


@pytest.mark.parametrize(
    ("policy", "schema", "says"),
    [
        ("permit (principal, action, resource", None, "invalid Cedar policies"),
        ("", None, "no policies"),
        ("// nothing but a comment\n", None, "no policies"),
        ('permit (principal, action, resource) when { principal.nickname == "x" };', SCHEMA, "schema"),
        (POLICY, "entity {", "invalid Cedar schema"),
    ],
)
def test_invalid_text_is_refused_before_any_transaction(world, policy, schema, says):
    account = world.accounts["cloud-b"]
    nonce, block = world.chain.w3.eth.get_transaction_count(account.address), world.chain.block_number()
    count = _count(world, "cloud-b")
    with pytest.raises(PolicyError, match=says):
        publish(world.chain, world.deployment, account, policy, schema)
    assert world.chain.w3.eth.get_transaction_count(account.address) == nonce  # nothing was sent
    assert world.chain.block_number() == block and _count(world, "cloud-b") == count


def test_the_latest_version_again_is_refused_naming_it(world):
    """Republishing the texts in force is refused with the version that has them; any change is a version."""
    account = world.accounts["cloud-b"]
    latest = publish(world.chain, world.deployment, account, STRICTER)
    before = history(world.chain, world.deployment, "cloud-b")
    with pytest.raises(PolicyUnchanged) as refused:
        publish(world.chain, world.deployment, account, STRICTER)
    message = str(refused.value)
    assert f"cloud-b's policy version {latest.version} already has this policy" in message
    assert "0x" + sha(STRICTER).hex() in message and "nothing was published" in message
    assert history(world.chain, world.deployment, "cloud-b") == before
    # a schema added to the same policy is a change; so is going back to an earlier text
    with_schema = publish(world.chain, world.deployment, account, STRICTER, SCHEMA)
    back = publish(world.chain, world.deployment, account, POLICY)
    assert (with_schema.version, back.version) == (latest.version + 1, latest.version + 2)
    assert back.policy_hash == before[0].policy_hash and back.published_at >= with_schema.published_at


def test_only_members_publish(world):
    stranger = Account.create()
    world.chain.fund(stranger.address, 10**18)
    with pytest.raises(ChainRevert, match="NotMember"):
        publish(world.chain, world.deployment, stranger, POLICY)


# -- checking a text against the chain (pure) ----------------------------------------------------


def _versions() -> list[PolicyVersion]:
    return [
        PolicyVersion("hpc-a", 1, sha(POLICY), NO_SCHEMA, 100),
        PolicyVersion("hpc-a", 2, sha(STRICTER), sha(SCHEMA), 200),
    ]


def test_a_text_is_checked_against_its_version():
    v1, v2 = _versions()
    verify_text(v1, POLICY, None)
    assert check_latest([v1, v2], STRICTER, SCHEMA) == v2
    with pytest.raises(PolicyTextMismatch, match=r"the schema hashes to 0x0{64}, the chain has 0x"):
        verify_text(v2, STRICTER, None)
    with pytest.raises(PolicyTextMismatch, match=f"the policy text hashes to 0x{sha(POLICY + ' ').hex()}"):
        verify_text(v1, POLICY + " ", None)
    with pytest.raises(PolicyTextMismatch, match=r"not hpc-a's policy version 2: .*; it is version 1, which version 2"):
        check_latest([v1, v2], POLICY, None)
    with pytest.raises(PolicyTextMismatch) as unknown:
        check_latest([v1, v2], STRICTER, SCHEMA + " ")
    assert "it is version" not in str(unknown.value) and "the schema hashes to" in str(unknown.value)
    with pytest.raises(PolicyTextMismatch, match="published no policy"):
        check_latest([], POLICY, None)


# -- the command line on anvil -------------------------------------------------------------------


def run_cli(argv: list) -> tuple[int, str, str]:
    from gateway.client.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@dataclass
class Operator:
    world: World
    common: list
    key: Path
    policy: Path
    stricter: Path
    schema: Path


@pytest.fixture(scope="module")
def operator(anvil_url, tmp_path_factory) -> Operator:
    """A consortium of its own on the session's anvil, and hpc-a's files as its operator keeps them."""
    world = _world(connect(anvil_url))
    folder = tmp_path_factory.mktemp("policy-cli")
    files = {name: folder / name for name in ("deployment.json", "chain.key", "a.cedar", "b.cedar", "schema.cedar")}
    world.deployment.to_json(files["deployment.json"])
    files["chain.key"].write_text(world.accounts["hpc-a"].key.hex())
    files["a.cedar"].write_text(POLICY)
    files["b.cedar"].write_text(STRICTER)
    files["schema.cedar"].write_text(SCHEMA)
    common = ["--chain", anvil_url, "--deployment", files["deployment.json"]]
    return Operator(world, common, files["chain.key"], files["a.cedar"], files["b.cedar"], files["schema.cedar"])


def test_an_operator_publishes_and_lists_policy_versions(operator, tmp_path):
    op = operator
    publish_a = ["policy", "publish", *op.common, "--key-file", op.key]
    code, out, err = run_cli([*publish_a, "--policy", op.policy])
    assert code == 0, err
    first = json.loads(out)
    assert (first["centre"], first["version"], first["policy_hash"]) == ("hpc-a", 1, "0x" + sha(POLICY).hex())
    assert first["schema_hash"] == "0x" + "00" * 32
    code, out, err = run_cli([*publish_a, "--policy", op.stricter, "--schema", op.schema])
    assert code == 0, err
    second = json.loads(out)
    assert (second["version"], second["schema_hash"]) == (2, "0x" + sha(SCHEMA).hex())

    code, out, err = run_cli(["policy", "show", *op.common, "--centre", "hpc-a"])
    assert code == 0, err
    assert json.loads(out) == [first, second]
    assert [v.to_dict() for v in history(op.world.chain, op.world.deployment, "hpc-a")] == [first, second]
    code, out, _ = run_cli(["policy", "show", *op.common, "--centre", "cloud-b"])
    assert (code, json.loads(out)) == (0, [])

    # refused, nothing published: the version in force again, invalid Cedar, a missing file, a non-member
    code, _, err = run_cli([*publish_a, "--policy", op.stricter, "--schema", op.schema])
    assert code == 1 and "error: hpc-a's policy version 2 already has this policy" in err
    broken = tmp_path / "broken.cedar"
    broken.write_text(POLICY.replace("};", "}"))
    code, _, err = run_cli([*publish_a, "--policy", broken])
    assert code == 1 and f"error: {broken} was not published: invalid Cedar policies" in err
    code, _, err = run_cli([*publish_a, "--policy", op.policy, "--schema", tmp_path / "missing.cedar"])
    assert code == 1 and "missing.cedar" in err
    stranger = tmp_path / "stranger.key"
    stranger.write_text(Account.create().key.hex())
    op.world.chain.fund(Account.from_key(stranger.read_text()).address, 10**18)
    code, _, err = run_cli(["policy", "publish", *op.common, "--key-file", stranger, "--policy", op.policy])
    assert code == 1 and "NotMember" in err
    code, _, err = run_cli(["policy", "show", *op.common, "--centre", "Not A Centre"])
    assert code == 1 and "error:" in err
    assert len(history(op.world.chain, op.world.deployment, "hpc-a")) == 2


class _Served:
    """A loopback HTTP server answering GET /v1/policy with whatever the test sets: a unit-test double of a
    gateway, to try the client's check with answers no honest gateway gives."""

    def __init__(self) -> None:
        self.answer: object = {}
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                body = json.dumps(served.answer).encode()
                self.send_response(200 if self.path == "/v1/policy" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def served() -> Iterator[_Served]:
    double = _Served()
    yield double
    double.server.shutdown()
    double.server.server_close()


def test_show_checks_the_text_a_gateway_serves_against_the_chain(operator, served):
    op = operator
    if len(history(op.world.chain, op.world.deployment, "hpc-a")) < 2:  # run alone: publish what the test above did
        publish(op.world.chain, op.world.deployment, op.world.accounts["hpc-a"], POLICY)
        publish(op.world.chain, op.world.deployment, op.world.accounts["hpc-a"], STRICTER, SCHEMA)
    versions = history(op.world.chain, op.world.deployment, "hpc-a")
    latest = versions[-1]
    show = ["policy", "show", *op.common, "--centre", "hpc-a", "--gateway", served.url]
    honest = latest.to_dict() | {"policy": STRICTER, "schema": SCHEMA}
    served.answer = honest
    code, out, err = run_cli(show)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["served"] == honest and shown["versions"] == [v.to_dict() for v in versions]

    # the hashes a gateway claims count for nothing: the text is hashed
    for answer, says in [
        (honest | {"policy": STRICTER + "permit (principal, action, resource);\n"}, "the policy text hashes to 0x"),
        (honest | {"schema": None}, "the schema hashes to 0x" + "00" * 32),
        (honest | {"policy": POLICY, "schema": None}, "it is version 1, which version 2 replaced"),
        (honest | {"centre": "cloud-b"}, "serves the policy of 'cloud-b', not of 'hpc-a'"),
        ({k: v for k, v in honest.items() if k != "policy"}, "answered no policy text"),
        (honest | {"schema": 7}, "answered no policy text"),
        (["not", "an", "object"], "serves the policy of None"),
    ]:
        served.answer = answer
        code, out, err = run_cli(show)
        assert (code, out) == (1, ""), (answer, err)
        assert f"error: the gateway at {served.url}" in err and says in err, err
    code, _, err = run_cli(["policy", "show", *op.common, "--centre", "cloud-b", "--gateway", served.url])
    assert code == 1 and "error:" in err
    served.answer = honest | {"centre": "cloud-b"}
    code, _, err = run_cli(["policy", "show", *op.common, "--centre", "cloud-b", "--gateway", served.url])
    assert code == 1 and "published no policy on chain" in err
    unreachable = served.url
    served.server.shutdown()
    served.server.server_close()
    code, _, err = run_cli(["policy", "show", *op.common, "--centre", "hpc-a", "--gateway", unreachable])
    assert code == 1 and "did not answer" in err


def test_show_checks_a_real_gateway_s_text_against_the_chain(consortium):
    """The session's consortium (real gateways on anvil): each centre's gateway serves the text of its latest
    version on chain; asked for another centre, its answer is refused."""
    common = ["--chain", consortium.anvil_url, "--deployment", consortium.deployment_file]
    code, out, err = run_cli(["policy", "show", *common, "--centre", "hpc-a", "--gateway", consortium.url("hpc-a")])
    assert code == 0, err
    shown = json.loads(out)
    latest = history(consortium.chain, consortium.deployment, "hpc-a")[-1]
    assert shown["served"] == latest.to_dict() | {"policy": shown["served"]["policy"], "schema": None}
    assert policy_hash(shown["served"]["policy"]) == latest.policy_hash
    assert shown["served"]["policy"] == read_text(consortium.policy_file("hpc-a"))
    code, _, err = run_cli(["policy", "show", *common, "--centre", "hpc-a", "--gateway", consortium.url("cloud-b")])
    assert code == 1 and "serves the policy of 'cloud-b', not of 'hpc-a'" in err
