"""The user's anonymous path through the `xcentre` command line, on the session's real consortium (slapd, anvil,
HTTP gateways, the Supervision contract with the key its three centres generated at start, 2 of 3).

alice joins physics at her home hpc-a (`xcentre group join`), then submits anonymously (`xcentre submit
--anonymous`): the job is placed at cloud-b, quoted, granted by hpc-a and run under group signatures, and its
result is opened with the receipt as for any job. cloud-b's record of it names the signature's hash and nothing
of alice; two supervisors open that signature on chain and hpc-a, its home, maps it to alice.
"""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from eth_utils import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import to_scalar
from auth.credentials import generate_issuer_key
from auth.group.credential import (
    CREDENTIAL_PERIOD,
    credential_expiry,
    issue_group_credential,
    issue_week,
    issuer_key_id,
    join_request,
    new_member_secret,
    tracing_key,
)
from auth.group.points import g1_raw
from gateway.client.dispatch import JOIN_SLACK, singled_out
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.wallet import Wallet
from gateway.store.groups import GroupBook
from ledger.primitives.hex import from_hex, to_hex
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.test_cli import run_cli

HOME, SERVING = "hpc-a", "cloud-b"


@pytest.fixture(scope="module")
def wallet(consortium, tmp_path_factory) -> Path:
    """alice's wallet: her credential from `xcentre login`, then her membership of physics from `group join`."""
    path = tmp_path_factory.mktemp("anonymous") / "xcentre" / "wallet.json"
    login = ["login", "--gateway", consortium.url(HOME), "--user", "alice", "--password-stdin", "--wallet", path]
    code, _, err = run_cli(login, stdin=PASSWORDS["alice"] + "\n")
    assert code == 0, err
    code, out, err = join(path, "physics")
    assert code == 0, err
    assert "member of physics@hpc-a" in out
    return path


def join(wallet: Path, project: str, user: str = "alice", *extra: object) -> tuple[int, str, str]:
    argv = ["group", "join", "--project", project, "--user", user, "--password-stdin", "--wallet", wallet, *extra]
    return run_cli(argv, stdin=PASSWORDS[user] + "\n")


def submit(consortium, wallet: Path, *extra: object) -> tuple[int, str, str]:
    argv = ["submit", "--anonymous", "--gateway", consortium.url(HOME), "--walltime", "60", "--wallet", wallet]
    return run_cli([*argv, *extra, "--", "python3", "-c", "print(6 * 7)"])


@pytest.fixture(scope="module")
def ran(consortium, wallet) -> dict:
    """alice's anonymous job at cloud-b, waited for: record checked, receipt given, outputs opened."""
    code, out, err = submit(consortium, wallet, "--project", "physics", "--centre", SERVING, "--wait")
    assert code == 0, err
    return json.loads(out)


def test_join_keeps_the_membership_in_the_private_wallet(consortium, wallet):
    assert stat.S_IMODE(wallet.stat().st_mode) == 0o600
    kept = Wallet.load(wallet)
    (membership,) = kept.groups
    assert (membership.project, membership.credential.home, membership.credential.project) == (
        "physics",
        HOME,
        "physics",
    )
    assert membership.credential.verify(membership.secret, membership.issuer_pk)
    # the home keeps the tracing key sk·H with alice, never sk: that is what an opening reveals
    row = GroupBook(consortium.store(HOME)).member(bytes(tracing_key(membership.secret).to_compressed_bytes()))
    assert row is not None and (row.uid, row.project) == ("alice", "physics")


def test_join_checks_the_homes_answer_at_the_gateway_named(consortium, tmp_path):
    """`--check-gateway URL`: the home's answer is compared with what that gateway reads on chain, and kept only if
    it confirms it; one that cannot (here: nobody listening) keeps the membership out of the wallet."""
    path = tmp_path / "wallet.json"
    login = ["login", "--gateway", consortium.url(HOME), "--user", "alice", "--password-stdin", "--wallet", path]
    assert run_cli(login, stdin=PASSWORDS["alice"] + "\n")[0] == 0
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, out, err = join(path, "physics", "alice", "--check-gateway", closed)
    assert code != 0 and closed in err and not out and Wallet.load(path).groups == ()
    code, out, err = join(path, "physics", "alice", "--check-gateway", consortium.url(SERVING))
    assert code == 0, err
    assert f"checked at {consortium.url(SERVING)}" in out and [m.project for m in Wallet.load(path).groups] == [
        "physics"
    ]


def test_a_join_answer_is_taken_only_as_every_member_of_the_home_gets_it():
    """What `join_group` compares with the check gateway's GET /v1/supervision for the credential's week: the
    chain's supervision key, this week's expiry (or the last week's, if the week turned less than a minute before
    the check gateway's clock), and the issuer key and revocation epoch the home had when that week began (whatever
    it rotated or revoked since)."""
    isk, ipk = generate_issuer_key()
    week = CREDENTIAL_PERIOD
    turned = 3_000 * week  # a week boundary
    Y = g1_raw(G1Point())
    request = join_request(sk := new_member_secret(), home=HOME, project="physics", member="alice")
    issued = issue_group_credential(
        isk, ipk, request, home=HOME, member="alice", revocation_epoch=4, expires_at=credential_expiry(turned - 1)
    )
    assert issued.verify(sk, ipk)
    _, rotated = generate_issuer_key()

    def facts(now: int, **change) -> dict:
        keys = {
            "centre": HOME,
            "issuer_key": to_hex(rotated),  # the home's key now: set since the week began
            "key_id": issuer_key_id(rotated),
            "week_start": issue_week(issued.expires_at),
            "group_issuer_key": to_hex(ipk),
            "group_key_id": issued.key_id,
            "revocation_epoch": 4,
        }
        return {"supervision_key": to_hex(Y), "committee": [HOME], "threshold": 1, "now": now, "home": keys | change}

    assert singled_out(issued, ipk, Y, facts(turned - 1)) is None
    assert singled_out(issued, ipk, Y, facts(turned + JOIN_SLACK - 1)) is None  # the week turned in between
    assert "not at" in singled_out(issued, ipk, Y, facts(turned + JOIN_SLACK))
    assert "supervisors' key" in singled_out(issued, ipk, g1_raw(G1Point() * to_scalar(2)), facts(turned))
    for other in (to_hex(rotated), None):  # the home's key now, or none at the week's start
        assert "the issuer key the home had on chain when the week began" in singled_out(
            issued, ipk, Y, facts(turned, group_issuer_key=other)
        )
    assert "revocation epoch is 4, not 5, the home's when the week began" in singled_out(
        issued, ipk, Y, facts(turned, revocation_epoch=5)
    )
    for broken in (
        {},
        facts(turned) | {"home": None},
        facts(turned) | {"now": "soon"},
        facts(turned) | {"supervision_key": "0x12"},
        facts(turned, week_start=turned),  # an answer for another week than the credential's
        facts(turned, week_start=None),
    ):
        with pytest.raises(ValueError, match="not GET /v1/supervision's"):
            singled_out(issued, ipk, Y, broken)


def test_login_again_keeps_the_memberships(consortium, wallet):
    before = Wallet.load(wallet).groups
    login = ["login", "--gateway", consortium.url(HOME), "--user", "alice", "--password-stdin", "--wallet", wallet]
    code, _, err = run_cli(login, stdin=PASSWORDS["alice"] + "\n")
    assert code == 0, err
    assert Wallet.load(wallet).groups == before


def test_joining_a_project_that_is_not_yours_is_refused_and_keeps_nothing(wallet):
    before = wallet.read_bytes()
    code, _, err = join(wallet, "biology")  # carol's project at cloud-b, none of alice's at hpc-a
    assert code == 2 and "refused" in err
    assert wallet.read_bytes() == before


def test_the_anonymous_job_runs_and_its_result_is_opened(ran):
    assert ran["status"] == "succeeded"
    assert ran["stdout"].strip() == "42"
    assert ran["paid"] > 0
    assert ran["receipt"] == ran["record"]["digest"]


def test_the_serving_centre_keeps_the_signature_and_no_identity(consortium, ran):
    job = consortium.store(SERVING).get_job(ran["id"])
    assert job.group_signature is not None
    record = ran["record"]["data"]
    assert from_hex(record["group_signature"], size=32) == keccak(job.group_signature)
    held = json.dumps(ran) + repr(job)
    assert "alice" not in held and "Alice" not in held
    with GatewayClient(consortium.url(SERVING)) as client:  # what supervisors fetch, by the record's hash
        served = client.anonymous_signature(record["group_signature"])
    assert from_hex(served["group_signature"]) == job.group_signature
    assert (served["order"], served["record"]) == (record["order"], ran["record"]["digest"])


def test_an_opening_is_identified_by_the_home_as_alice(consortium, wallet, ran):
    wanted = from_hex(ran["record"]["data"]["group_signature"], size=32)
    opening = consortium.supervisor(SERVING).request(wanted, "a test of the supervised opening", centre=SERVING)
    assert consortium.supervisor(SERVING).supervision.opening(opening).transaction == from_hex(
        ran["record"]["data"]["order"]
    )  # the transaction an opening names is the order the signature signs
    assert not consortium.supervisor(HOME).share(opening).tracing_key  # one share of two opens nothing
    opened = consortium.supervisor("ai-c").share(opening)
    assert opened.accepted and opened.tracing_key is not None
    with GatewayClient(consortium.url(SERVING)) as other:  # only the home maps a tracing key to its member
        with pytest.raises(GatewayRefused) as refused:
            other.identify(opening, consortium.operator_key(SERVING))
    assert refused.value.status == 403
    with GatewayClient(consortium.url(HOME)) as home:
        identified = home.identify(opening, consortium.operator_key(HOME))
    assert (identified["uid"], identified["project"], identified["opening"]) == ("alice", "physics", opening)
    # on the record: the enrolment alice's login put on chain before the opening was asked for (the contract
    # takes no other), written by hpc-a's outbox
    enrolment = consortium.centres[HOME].node.parts.signon.enrolment_id("alice")
    assert from_hex(identified["enrolment"]) == enrolment
    contract = consortium.supervisor(HOME).supervision
    eventually(lambda: contract.opening(opening).enrolment == enrolment)
    (membership,) = Wallet.load(wallet).groups
    assert opened.tracing_key == g1_raw(tracing_key(membership.secret))


def test_submit_anonymous_without_a_membership_says_what_to_run(consortium, tmp_path):
    path = tmp_path / "wallet.json"
    login = ["login", "--gateway", consortium.url(SERVING), "--user", "carol", "--password-stdin", "--wallet", path]
    code, _, err = run_cli(login, stdin=PASSWORDS["carol"] + "\n")
    assert code == 0, err
    code, out, err = submit(consortium, path)
    assert code == 1 and "xcentre group join" in err and not out


def test_submit_anonymous_for_a_project_not_joined_is_refused(consortium, wallet):
    code, _, err = submit(consortium, wallet, "--project", "ml-project")
    assert code == 1 and "no member of project 'ml-project'" in err


def test_submit_needs_a_user_or_anonymous(consortium, wallet):
    code, _, err = run_cli(["submit", "--gateway", consortium.url(HOME), "--wallet", wallet, "--", "true"])
    assert code == 1 and "--anonymous" in err


def test_an_anonymous_job_submitted_without_wait_is_finished_by_result(consortium, wallet):
    code, out, err = submit(consortium, wallet, "--centre", "ai-c")
    assert code == 0, err
    view = json.loads(out)
    assert f"xcentre result {view['id']} --centre ai-c" in err
    code, out, err = run_cli(["result", view["id"], "--centre", "ai-c", "--wallet", wallet])
    assert code == 0, err
    done = json.loads(out)
    assert done["stdout"].strip() == "42" and done["paid"] > 0
    assert done["record"]["data"]["group_signature"] != "0x" + "00" * 32
