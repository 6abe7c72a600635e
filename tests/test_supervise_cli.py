"""`xcentre supervise` on real chains (anvil) and gateways.

The key's generation runs on fresh deployments of three members with no gateways (one per test, since a
Supervision contract makes one key): each supervisor runs `supervise dkg` on its own, again and again, until the
key is made; or all three wait (`--wait`) as separate processes; or one dealer's share is bad, the recipient
complains and the dealer answers. Openings run on the session's consortium, whose centres generated their key at
start (2 of 3): an anonymous job's signature is asked to be opened, one share does not open it, a forged share is
recorded as rejected and its sender named, a second valid share opens it to the member's tracing key, and the home
identifies the member; `supervise status` shows each step. Bad input is exit 2 with nothing sent.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import R, to_scalar
from auth.group.credential import tracing_key
from auth.group.dkg import Dealer
from auth.group.points import g1_from_raw, g1_raw, lagrange_at_zero, random_scalar
from auth.group.signature import C1_AT, R_HAT_AT, order_message
from gateway.client.dispatch import anonymously, finish, join_group, submit_anywhere
from gateway.client.http import GatewayClient
from gateway.client.paying import signing_domain
from gateway.client.supervising import SupervisorState
from gateway.client.wallet import GroupMembership, PaymentKeys, Wallet
from ledger.chain import connect
from ledger.deploy import MemberSpec, Prices, deploy_consortium
from ledger.primitives.hex import from_hex, to_hex
from ledger.supervision import ComplaintState, ShareState, Supervision
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.test_attack_member_anonymous import HostileGateway
from tests.test_cli import run_cli

XCENTRE = Path(sys.executable).parent / "xcentre"
NAMES = ("sv-a", "sv-b", "sv-c")


@dataclass
class Fresh:
    """A deployment of three members, each a supervisor (t = 2), with their key files and state paths."""

    url: str
    supervision: Supervision
    deployment_file: Path
    accounts: dict[str, LocalAccount]
    key_files: dict[str, Path]
    states: dict[str, Path]

    def dkg(self, name: str, *extra: object) -> tuple[int, str, str]:
        return run_cli(self.argv(name) + list(extra))

    def argv(self, name: str, key_file: Path | None = None) -> list:
        chain = ["--chain", self.url, "--deployment", self.deployment_file]
        return [
            "supervise",
            "dkg",
            *chain,
            "--key-file",
            key_file or self.key_files[name],
            "--state",
            self.states[name],
        ]

    def nonce(self, name: str) -> int:
        return self.supervision.chain.w3.eth.get_transaction_count(self.accounts[name].address)


@pytest.fixture
def fresh(anvil_url, tmp_path) -> Fresh:
    chain = connect(anvil_url)
    accounts = {name: Account.create() for name in NAMES}
    for account in accounts.values():
        chain.fund(account.address, 10**20)
    members = [
        MemberSpec(name, a.address, f"http://127.0.0.1:9/{name}", bytes(32), Prices(1, 1, 1))
        for name, a in accounts.items()
    ]
    deployer = Account.create()
    chain.fund(deployer.address, 10**20)
    deployment = deploy_consortium(chain, deployer, members, 2, 0, supervision_threshold=2)
    deployment_file = tmp_path / "deployment.json"
    deployment.to_json(deployment_file)
    key_files = {}
    for name, account in accounts.items():
        key_files[name] = tmp_path / f"{name}.key"
        key_files[name].write_text(account.key.hex() + "\n")
    states = {name: tmp_path / name / "supervisor.json" for name in NAMES}
    return Fresh(anvil_url, Supervision.of(chain, deployment), deployment_file, accounts, key_files, states)


def shares_of_the_key(fresh: Fresh) -> None:
    """Every supervisor's kept share is x_i with x_i·G = Y_i on chain, and any two of them interpolate to the
    secret of Y."""
    xs = {}
    for i, name in enumerate(NAMES, 1):
        assert stat.S_IMODE(fresh.states[name].stat().st_mode) == 0o600
        state = SupervisorState.load(fresh.states[name])
        assert state is not None and state.secret_share is not None and state.coefficients == ()
        assert G1Point() * to_scalar(state.secret_share) == fresh.supervision.verification_key(i)
        xs[i] = state.secret_share
    for pair in ((1, 2), (1, 3), (2, 3)):
        x = sum(lam * xs[i] for lam, i in zip(lagrange_at_zero(pair), pair, strict=True)) % R
        assert G1Point() * to_scalar(x) == fresh.supervision.public_key()


# -- the key's generation ------------------------------------------------------------------------------


def test_each_supervisor_runs_its_part_on_its_own_until_the_key_is_made(fresh):
    code, out, err = fresh.dkg("sv-a")
    assert code == 4, err  # registered, waits for the others
    assert "registered an encryption key" in out and "waiting for registration of sv-b, sv-c" in out
    rounds = 0
    done: set[str] = set()
    while len(done) < len(NAMES):
        rounds += 1
        assert rounds <= 5, "the key generation does not converge"
        for name in NAMES:
            code, out, err = fresh.dkg(name)
            assert code in (0, 4), err
            if code == 0:
                done.add(name)
                assert "the key is generated" in out
    y = fresh.supervision.public_key()
    assert y is not None
    shares_of_the_key(fresh)
    # run again: the chain has it all, nothing is sent
    before = fresh.nonce("sv-b")
    code, out, err = fresh.dkg("sv-b")
    assert code == 0 and f"public key: {to_hex(g1_raw(y))}" in out
    assert fresh.nonce("sv-b") == before


def test_three_supervisors_wait_for_each_other_as_separate_processes(fresh):
    processes = [
        subprocess.Popen(
            [str(XCENTRE), *map(str, fresh.argv(name)), "--wait", "--interval", "0.3", "--timeout", "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in NAMES
    ]
    outputs = [p.communicate(timeout=180) for p in processes]
    for p, (out, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, out + err
        assert "the key is generated" in out
    shares_of_the_key(fresh)


def test_a_bad_share_is_complained_of_and_answered(fresh):
    """sv-a deals sv-b a share that does not decrypt: sv-b complains, sv-a (its polynomial in its state file)
    answers with the right share on chain, and the key is made with every share right."""
    for name in NAMES:
        assert fresh.dkg(name)[0] == 4  # all registered; dealing is open
    a = fresh.supervision
    state = SupervisorState.load(fresh.states["sv-a"])
    dealer = Dealer.new(2)
    state = replace(state, coefficients=dealer.coefficients)
    state.save(fresh.states["sv-a"])
    keys = [a.encryption_key(j) for j in (1, 2, 3)]
    blob = bytearray(dealer.deal(1, keys))
    blob[128 + 100] ^= 0xFF  # sv-b's slot: its ciphertext, flipped
    a.deal(fresh.accounts["sv-a"], dealer.commitments_raw(), bytes(blob))
    outputs = ""
    for _ in range(4):
        for name in NAMES:
            code, out, err = fresh.dkg(name)
            assert code in (0, 4), err
            outputs += out
    assert "complained of dealer 1's share" in outputs
    assert "answered supervisor 2's complaint with its share" in outputs
    assert a.complaint(1, 2) == ComplaintState.ANSWERED
    assert a.revealed_share(1, 2) == dealer.share_for(2)
    assert a.disqualified(1) is False
    shares_of_the_key(fresh)


def test_a_key_that_is_no_members_is_refused_and_sends_nothing(fresh, tmp_path):
    stranger = tmp_path / "stranger.key"
    stranger.write_text(Account.create().key.hex())
    code, out, err = run_cli(fresh.argv("sv-a", key_file=stranger))
    assert code == 2 and "no member centre's chain account" in err and not out
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    code, _, err = run_cli(fresh.argv("sv-a", key_file=garbage))
    assert code == 2 and "holds no hex chain key" in err and "not a key" not in err
    code, _, err = run_cli(fresh.argv("sv-a", key_file=tmp_path / "missing.key"))
    assert code == 2 and "missing.key" in err
    assert fresh.supervision.committee().registered == frozenset()


def test_another_supervisors_state_file_is_refused(fresh):
    assert fresh.dkg("sv-a")[0] == 4
    before = fresh.nonce("sv-b")
    argv = fresh.argv("sv-b")
    argv[argv.index("--state") + 1] = fresh.states["sv-a"]
    code, _, err = run_cli(argv)
    assert code == 2 and "supervisor 1's state, not sv-b's" in err
    assert fresh.nonce("sv-b") == before
    fresh.states["sv-a"].unlink()  # registered, but its secret lost: the command says so, sends nothing
    code, _, err = fresh.dkg("sv-a")
    assert code == 2 and "registered an encryption key already" in err


def test_a_deployment_file_that_is_not_one_is_refused(fresh, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    argv = fresh.argv("sv-a")
    argv[argv.index("--deployment") + 1] = bad
    code, _, err = run_cli(argv)
    assert code == 2 and "not a deployment description" in err


# -- openings on the session's consortium --------------------------------------------------------------


@dataclass
class Anonymous:
    signature_hash: str
    signature: bytes
    record: str
    order: str
    """The order's digest: what the signature signs, the transaction an opening names."""
    member_key: bytes
    """alice's tracing key T (raw): what an opening must reveal."""
    key_files: dict[str, Path]
    operator_files: dict[str, Path]
    membership: GroupMembership
    """alice's membership: more signatures of her order, each its own ciphertext (so its own pool of shares)."""

    def again(self) -> bytes:
        """Another signature of alice over her job's order: valid for the same transaction, another ciphertext."""
        return self.membership.sign(order_message(from_hex(self.order)))


@pytest.fixture(scope="module")
def anonymous(consortium, tmp_path_factory) -> Anonymous:
    """alice (hpc-a, physics) runs a job at cloud-b anonymously; each centre's chain and operator keys in files."""
    folder = tmp_path_factory.mktemp("supervise")
    with GatewayClient(consortium.url("hpc-a")) as home:
        wallet = Wallet.from_issuance(consortium.url("hpc-a"), home.credential("alice", PASSWORDS["alice"]))
        home.login("alice", PASSWORDS["alice"])
        with GatewayClient(consortium.url("ai-c")) as check:
            membership = join_group(home, "alice", wallet, "physics", check=check)
        domain = signing_domain(home.consortium())
    keys = PaymentKeys()
    job = {"command": ["true"], "walltime": 60, "resources": {}}
    submission = submit_anywhere(
        consortium.url("hpc-a"),
        job,
        anonymously(membership, consortium.url("hpc-a"), domain),
        centre="cloud-b",
        keys=keys,
    )
    with submission.client:
        result = finish(submission, keys)
    record = result.view["record"]
    wanted = record["data"]["group_signature"]
    signature = consortium.store("cloud-b").get_job(result.view["id"]).group_signature
    key_files, operator_files = {}, {}
    for name in consortium.centres:
        key_files[name] = folder / f"{name}.key"
        key_files[name].write_text(consortium.centres[name].account.key.hex())
        operator_files[name] = folder / f"{name}.operator"
        operator_files[name].write_text(consortium.operator_key(name))
    return Anonymous(
        wanted,
        signature,
        record["digest"],
        record["data"]["order"],
        g1_raw(tracing_key(membership.secret)),
        key_files,
        operator_files,
        membership,
    )


def supervise(consortium, action: str, anonymous: Anonymous | None = None, who: str | None = None, **options):
    """`xcentre supervise <action>` against the session's consortium, as centre `who` (its key and state file)."""
    argv = ["supervise", action, "--chain", consortium.anvil_url, "--deployment", consortium.deployment_file]
    if who is not None:
        argv += ["--key-file", anonymous.key_files[who]]
        if action == "share":
            argv += ["--state", consortium.supervisor_state(who)]
    for option, value in options.items():
        argv += [f"--{option.replace('_', '-')}", value]
    return run_cli(argv)


def test_an_opening_asked_shared_forged_opened_and_identified(consortium, anonymous):
    code, out, err = supervise(
        consortium,
        "request",
        anonymous,
        "cloud-b",
        signature_hash=anonymous.signature_hash,
        centre="cloud-b",
        reason="abuse report 17",
    )
    assert code == 0, err
    asked = json.loads(out)
    opening = asked["opening"]
    assert (asked["home"], asked["requester"], asked["transaction"]) == ("hpc-a", "cloud-b", anonymous.order)
    supervision = Supervision.of(consortium.chain, consortium.deployment)

    code, out, err = supervise(consortium, "share", anonymous, "hpc-a", opening=opening)
    assert code == 0, err
    assert json.loads(out) | {"tracing_key": None} == {
        "opening": opening,
        "supervisor": "hpc-a",
        "index": 1,
        "accepted": True,
        "opened": False,
        "tracing_key": None,
    }
    assert not supervision.opening(opening).opened  # one share of two opens nothing

    # cloud-b sends a share with a forged proof: on the record as rejected, naming cloud-b
    forged = supervision.submit_raw_share(
        consortium.centres["cloud-b"].account, opening, g1_raw(G1Point() * to_scalar(5)), 1, 2
    )
    assert not forged.accepted
    assert supervision.share_of(opening, 2).state == ShareState.REJECTED
    code, _, err = supervise(consortium, "share", anonymous, "cloud-b", opening=opening)
    assert code == 2 and f"cloud-b gave its share for opening {opening} already (rejected)" in err
    code, out, err = supervise(consortium, "status", opening=opening)
    assert code == 0, err
    assert "share hpc-a (1): accepted" in out
    assert "share cloud-b (2): REJECTED" in out
    assert "share ai-c (3): no share" in out
    assert "result: not opened (1 of 2 shares accepted)" in out

    code, out, err = supervise(consortium, "share", anonymous, "ai-c", opening=opening)
    assert code == 0, err
    shared = json.loads(out)
    assert shared["opened"] and from_hex(shared["tracing_key"]) == anonymous.member_key

    code, out, err = run_cli(
        [
            "supervise",
            "identify",
            "--gateway",
            consortium.url("hpc-a"),
            "--operator-key-file",
            anonymous.operator_files["hpc-a"],
            "--opening",
            opening,
        ]
    )
    assert code == 0, err
    assert (json.loads(out)["uid"], json.loads(out)["project"]) == ("alice", "physics")
    eventually(lambda: supervision.opening(opening).enrolment)
    code, out, err = supervise(consortium, "status", opening=opening)
    assert code == 0, err
    assert f"result: opened by 2 shares, tracing key T = {to_hex(anonymous.member_key)}" in out
    assert re.search(r"identified by hpc-a: enrolment 0x[0-9a-f]{64}", out)
    assert "reason: abuse report 17" in out and "committee: hpc-a (1), cloud-b (2), ai-c (3); threshold 2 of 3" in out


def test_a_supervisor_refuses_to_share_for_what_it_cannot_check(consortium, anonymous):
    """An opening that names another home than the signature's, a transaction it does not sign (its record's digest,
    or none), or a signature no centre serves: no share. (Each opening is of another signature of alice's order,
    served by a gateway of the test's: each its own pool of shares, and who serves it does not matter.)"""
    supervision = Supervision.of(consortium.chain, consortium.deployment)
    asker = consortium.centres["ai-c"].account
    signatures = [anonymous.again() for _ in range(3)]
    hostile = HostileGateway()
    try:
        for signature in signatures:
            hostile.serve(signature, from_hex(anonymous.order))
        asked = [
            supervision.request_opening(asker, signatures[0], "cloud-b", from_hex(anonymous.order), "x"),
            supervision.request_opening(asker, signatures[1], "hpc-a", from_hex(anonymous.record), "x"),
            supervision.request_opening(asker, signatures[2], "hpc-a", bytes(32), "x"),
        ]
        wrong_home, wrong_record, no_transaction = (
            supervise(consortium, "share", anonymous, "hpc-a", opening=o, centre="hpc-a", gateway=hostile.url)
            for o in asked
        )
    finally:
        hostile.server.shutdown()
    assert wrong_home[0] == 2 and not wrong_home[1]
    assert "the signature is by a member of hpc-a, but the opening names cloud-b" in wrong_home[2]
    for (code, _, err), transaction in ((wrong_record, anonymous.record), (no_transaction, to_hex(bytes(32)))):
        assert code == 2 and f"no valid group signature over the opening's transaction {transaction}" in err, err
    fresh = anonymous.again()
    unknown = fresh[:-1] + bytes([fresh[-1] ^ 1])  # its hash is served by nobody
    unserved = supervision.request_opening(asker, unknown, "hpc-a", from_hex(anonymous.order), "x")
    code, _, err = supervise(consortium, "share", anonymous, "hpc-a", opening=unserved)
    assert code == 2 and "no centre served the group signature" in err
    for opening in (*asked, unserved):
        assert supervision.share_of(opening, 1).state == ShareState.NONE


def test_a_supervisor_shares_only_for_a_valid_signature_over_the_openings_transaction_whoever_serves_it(
    consortium, anonymous
):
    """hpc-a, the home, knows alice's T from her join: it puts a fresh encryption of T into her signature's bytes
    and serves that as the signature of her job's order; cloud-b, which ran her job, serves her signature as another
    transaction's. Both come from a member's own gateway, naming whatever record suits them, and are asked for on
    chain. Each supervisor checks the signature with nothing but the chain (hpc-a's issuer keys, the supervisors'
    key, the opening's transaction) and shares for neither; the honest signature, served by the same gateway with a
    false record and no order, is shared for: who serves it does not matter."""
    supervision = Supervision.of(consortium.chain, consortium.deployment)
    y, r = supervision.public_key(), random_scalar()
    encrypted = (G1Point() * to_scalar(r), g1_from_raw(anonymous.member_key) + y * to_scalar(r))
    real, honest_one = anonymous.again(), anonymous.again()  # her signatures, each its own ciphertext
    framed = real[:C1_AT] + g1_raw(encrypted[0]) + g1_raw(encrypted[1]) + real[R_HAT_AT:]
    another = keccak(b"another job's order")
    hostile = HostileGateway()
    try:
        hostile.serve(framed, from_hex(anonymous.order))
        hostile.serve(real, another)
        hostile.serve(honest_one, another)
        home, serving = consortium.centres["hpc-a"].account, consortium.centres["cloud-b"].account
        framing = supervision.request_opening(home, framed, "hpc-a", from_hex(anonymous.order), "abuse")
        misattributed = supervision.request_opening(serving, real, "hpc-a", another, "abuse")
        for opening, transaction in ((framing, anonymous.order), (misattributed, to_hex(another))):
            code, out, err = supervise(
                consortium, "share", anonymous, "ai-c", opening=opening, centre="hpc-a", gateway=hostile.url
            )
            assert code == 2 and not out, out
            assert f"no valid group signature over the opening's transaction {transaction}" in err, err
            assert "does not verify for this message" in err, err
            assert supervision.share_of(opening, 3).state == ShareState.NONE
        honest = supervision.request_opening(serving, honest_one, "hpc-a", from_hex(anonymous.order), "x")
        code, out, err = supervise(
            consortium, "share", anonymous, "ai-c", opening=honest, centre="hpc-a", gateway=hostile.url
        )
        assert code == 0, err
        assert json.loads(out)["accepted"] and supervision.share_of(honest, 3).state == ShareState.ACCEPTED
    finally:
        hostile.server.shutdown()


def test_a_first_request_naming_a_wrong_transaction_blocks_nothing(consortium, anonymous):
    """Anyone may fetch alice's signature and ask first, naming a transaction it does not sign: nobody shares for that
    opening, and it stays unopened. The honest request of the same signature is an opening of its own, in the same
    pool of shares, shared for and opened. A request of the ciphertext once it is opened gets no share."""
    supervision = Supervision.of(consortium.chain, consortium.deployment)
    asker = consortium.centres["ai-c"].account
    signature, order = anonymous.again(), from_hex(anonymous.order)
    hostile = HostileGateway()

    def share(who: str, opening: int):
        return supervise(consortium, "share", anonymous, who, opening=opening, centre="hpc-a", gateway=hostile.url)

    try:
        hostile.serve(signature, order)
        squat = supervision.request_opening(asker, signature, "hpc-a", keccak(b"no such order"), "first!")
        honest = supervision.request_opening(asker, signature, "hpc-a", order, "abuse report 18")
        assert supervision.opening(honest).pool == squat
        code, _, err = share("hpc-a", squat)
        assert code == 2 and "no valid group signature over the opening's transaction" in err, err
        code, out, err = share("hpc-a", honest)
        assert code == 0 and not json.loads(out)["opened"], err
        code, out, err = share("ai-c", honest)
        assert code == 0, err
        assert json.loads(out)["opened"] and from_hex(json.loads(out)["tracing_key"]) == anonymous.member_key
        later = supervision.request_opening(asker, signature, "hpc-a", order, "again")
        code, _, err = share("cloud-b", later)
        assert code == 2 and "was opened already" in err, err
    finally:
        hostile.server.shutdown()
    assert not supervision.opening(squat).opened and not supervision.opening(later).opened
    code, out, err = supervise(consortium, "status", opening=squat)
    assert code == 0, err
    assert f"also asked for by opening(s) {honest}, {later}" in out
    assert f"share hpc-a (1): accepted, given for opening {honest}" in out
    assert f"not opened: no supervisor shared for it; its ciphertext was opened through opening(s) {honest}" in out


def test_bad_input_is_refused_with_nothing_sent(consortium, anonymous, tmp_path):
    supervision = Supervision.of(consortium.chain, consortium.deployment)
    count = supervision.opening_count()
    code, _, err = supervise(consortium, "share", anonymous, "hpc-a", opening=count + 5)
    assert code == 2 and f"there is no opening {count + 5}" in err
    code, _, err = supervise(consortium, "status", opening=count + 5)
    assert code == 2 and "there is no opening" in err
    code, _, err = supervise(
        consortium, "request", anonymous, "cloud-b", signature_hash="0x1234", centre="cloud-b", reason="x"
    )
    assert code == 2 and "--signature-hash" in err
    code, _, err = supervise(
        consortium, "request", anonymous, "cloud-b", signature_hash="0x" + "ab" * 32, centre="cloud-b", reason="x"
    )
    assert code == 2 and "no centre served the group signature" in err
    code, _, err = supervise(
        consortium,
        "request",
        anonymous,
        "cloud-b",
        signature_hash=anonymous.signature_hash,
        centre="cloud-b",
        reason="x" * 513,
    )
    assert code == 2 and "512 bytes" in err
    assert supervision.opening_count() == count
    opening = supervision.request_opening(
        consortium.centres["ai-c"].account, anonymous.again(), "hpc-a", from_hex(anonymous.order), "bad input"
    )
    argv = ["supervise", "share", "--chain", consortium.anvil_url, "--deployment", consortium.deployment_file]
    argv += ["--key-file", anonymous.key_files["hpc-a"], "--opening", opening]
    code, _, err = run_cli([*argv, "--state", tmp_path / "none.json"])
    assert code == 2 and "no state file" in err
    code, _, err = run_cli([*argv, "--state", consortium.supervisor_state("ai-c")])
    assert code == 2 and "is not hpc-a's state" in err
    stranger = tmp_path / "stranger.key"
    stranger.write_text(Account.create().key.hex())
    argv[argv.index("--key-file") + 1] = stranger
    code, _, err = run_cli([*argv, "--state", consortium.supervisor_state("hpc-a")])
    assert code == 2 and "no member centre's chain account" in err
    assert all(supervision.share_of(opening, i).state == ShareState.NONE for i in (1, 2, 3))
    code, _, err = run_cli(
        [
            "supervise",
            "identify",
            "--gateway",
            consortium.url("hpc-a"),
            "--operator-key-file",
            anonymous.operator_files["hpc-a"],
            "--opening",
            opening,
        ]
    )
    assert code == 2 and "409" in err  # not opened yet
