"""Anonymous jobs at the serving centre, over HTTP on real parts (slapd per centre, anvil, gateways, Supervision).

A member of hpc-a's project physics holds a group credential blindly issued with hpc-a's
issuer key; the supervisors' key comes from a DKG run through the Supervision contract.
cloud-b quotes and runs the job under group signatures alone, and its usage record names
the signature's hash, which cloud-b serves for the supervisors (2 of 3 open it to the member's
tracing key). What cloud-b keeps (records, decision log, store) names nobody. Every refusal (a
tampered signature, one over another message, a replayed order, an expired credential, one with
an epoch of its own after a mid-week revocation, a home nobody knows) is a clear 4xx with nothing
stored. Grants here are signed with the home's member key directly, as test_job_payment's are
(the home's anonymous grant desk has its own tests).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs import SHA256
from auth.group.credential import (
    GroupCredential,
    credential_expiry,
    issue_group_credential,
    issue_week,
    join_request,
    new_member_secret,
    tracing_key,
)
from auth.group.opening import decryption_share
from auth.group.points import g1_raw
from auth.group.signature import ciphertext, order_message, quote_message, sign, signature_hash
from gateway.api.schemas import JobRequest
from gateway.client.http import GatewayClient, GatewayRefused, job_signer
from gateway.client.paying import make_order
from gateway.client.supervising import SupervisorState
from gateway.node import anonymous as anonymous_desk
from gateway.node.anonymous import job_request_digest
from gateway.node.ratelimit import RateLimit
from gateway.node.signon import IssuerKey
from ledger.ids import centre_id
from ledger.payment import order_digest, sign_typed
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import UsageRecord, domain_for, record_digest
from ledger.supervision import Supervision
from tests.fixtures.consortium import PASSWORDS, eventually, start_consortium
from tests.fixtures.payment import home_grant, quote

JOB = {"command": ["python3", "-c", "print(6 * 7)"], "walltime": 30, "resources": {"cores": 1}}
WEEK = 7 * 24 * 3600


@pytest.fixture(scope="module")
def consortium(slapd_factory, anvil_url, tmp_path_factory):
    """A consortium of this module's own (its last test revokes a user at hpc-a); its supervisors ran their DKG
    through the Supervision contract as it started."""
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("anonymous"))
    yield running
    running.stop()


@dataclass(frozen=True)
class Member:
    """A member of a home's project: the secret only their wallet holds, and their credential."""

    sk: int
    credential: GroupCredential
    issuer_pk: bytes
    key: G1Point

    def sign(self, message: bytes) -> str:
        return to_hex(sign(self.credential, self.sk, self.issuer_pk, self.key, message))


def join(consortium, key: G1Point, *, home="hpc-a", project="physics", issuer: IssuerKey | None = None, **terms):
    """What the home's join desk gives alice: a credential blindly signed with its issuer key (or `issuer`)."""
    sk = new_member_secret()
    issuer = issuer or consortium.centres[home].issuer_key
    index = consortium.centres["cloud-b"].node.parts.index
    expires_at = credential_expiry(index.now())
    terms = {
        "revocation_epoch": index.revocation_epoch_at(home, issue_week(expires_at)),
        "expires_at": expires_at,
    } | terms
    request = join_request(sk, home=home, project=project, member="alice")
    credential = issue_group_credential(issuer.sk, issuer.pk, request, home=home, member="alice", **terms)
    return Member(sk, credential, issuer.pk, key)


def fresh_issuer() -> IssuerKey:
    sk = SHA256.keygen(secrets.token_bytes(32))
    return IssuerKey(sk, SHA256.sk_to_pk(sk))


@dataclass(frozen=True)
class Ordered:
    """An order for a job, its fresh account, and what POST /v1/anonymous/jobs takes (job, order, home's grant)."""

    account: LocalAccount
    digest: bytes
    fields: dict


def ordered(consortium, centre: str = "cloud-b", job: dict = JOB, home: str = "hpc-a") -> Ordered:
    domain = domain_for(consortium.deployment)
    account = Account.create()
    order = make_order(job, quote(consortium, job, centre), now=int(time.time()))
    signature = to_hex(sign_typed(order, domain, account.key))
    granted = home_grant(consortium, home)(order.to_dict(), signature)
    fields = job | {"centre": centre, "order": order.to_dict(), "order_signature": signature} | granted
    return Ordered(account, order_digest(order, domain), fields)


def quote_signature(member: Member, job: dict, centre: str) -> str:
    """A group signature over the job request as `centre` takes it."""
    return member.sign(quote_message(job_request_digest(JobRequest.model_validate(job), centre)))


def pseudonym(group_signature: str, home: str = "hpc-a") -> str:
    return f"{signature_hash(from_hex(group_signature))[:8].hex()}@{home}"


@pytest.fixture(scope="module")
def key(consortium) -> G1Point:
    """The supervisors' key, generated through the Supervision contract when the consortium started."""
    key = Supervision.of(consortium.chain, consortium.deployment).public_key()
    assert key is not None, "the local consortium's supervisors generated no key"
    return key


@pytest.fixture(scope="module")
def alice(consortium, key) -> Member:
    return join(consortium, key)


def decision_count(store) -> int:
    return sum(len(store.decisions_for_epoch(e)) for e in range(1, store.open_epoch() + 1))


def stored(consortium) -> tuple:
    """Jobs, records and decision-log entries of every centre."""
    return (
        consortium.job_count(),
        consortium.record_count(),
        {n: decision_count(consortium.store(n)) for n in consortium.centres},
    )


@pytest.fixture
def nothing_stored(consortium):
    """No job, record or decision-log entry anywhere."""
    before = stored(consortium)
    yield
    assert stored(consortium) == before


@pytest.fixture(scope="module")
def anonymous_run(consortium, alice):
    """alice's job at cloud-b under group signatures alone: quote, order, grant, submission, result."""
    cloud = GatewayClient(consortium.url("cloud-b"))
    quoted = cloud.anonymous_quote(JOB | {"centre": "cloud-b"}, quote_signature(alice, JOB, "cloud-b"))
    paid = ordered(consortium)
    group_signature = alice.sign(order_message(paid.digest))
    idempotency_key = secrets.token_hex(8)
    accepted = cloud.anonymous_submit(paid.fields, group_signature, idempotency_key)
    cloud.job_signer = job_signer("cloud-b", paid.account)  # the order's account follows the job: no session
    view = cloud.wait(accepted["id"])
    cloud.close()
    return quoted, paid, group_signature, idempotency_key, accepted, view


# -- the anonymous path ----------------------------------------------------------------------------------------------


def test_an_anonymous_job_is_quoted_run_and_recorded_under_its_signature_hash(consortium, anonymous_run):
    quoted, paid, group_signature, _, accepted, view = anonymous_run
    assert quoted["centre"] == "cloud-b" and quoted["max_price"] == paid.fields["order"]["max_price"]
    assert view["status"] == "succeeded" and view["serving_centre"] == "cloud-b"
    assert accepted["principal"] == pseudonym(group_signature)
    sig = from_hex(group_signature)
    record = UsageRecord.from_dict(view["record"]["data"])
    assert record.group_signature == signature_hash(sig) == keccak(sig)
    assert record.home_centre == centre_id("hpc-a") and record.order == paid.digest
    assert consortium.store("cloud-b").get_job(view["id"]).group_signature == sig
    # anyone may fetch the signature by the hash the record names, with the order it signs and the record's digest
    with GatewayClient(consortium.url("cloud-b")) as anyone:
        served = anyone.anonymous_signature(to_hex(record.group_signature))
        assert served == {
            "signature_hash": to_hex(record.group_signature),
            "group_signature": group_signature,
            "order": to_hex(record.order),
            "record": to_hex(record_digest(record, domain_for(consortium.deployment))),
        }
        with pytest.raises(GatewayRefused) as unknown:
            anyone.anonymous_signature(to_hex(keccak(b"no such signature")))
    assert unknown.value.status == 404


def test_the_signature_a_record_names_opens_to_its_member_with_t_shares(consortium, anonymous_run, alice):
    """What the serving centre serves by the record's hash is what the supervisors open: 2 of 3 shares on chain
    give alice's tracing key, which the home alone maps to her."""
    view = anonymous_run[-1]
    record = UsageRecord.from_dict(view["record"]["data"])
    with GatewayClient(consortium.url("cloud-b")) as anyone:
        served = anyone.anonymous_signature(to_hex(record.group_signature))
    signature = from_hex(served["group_signature"])
    assert keccak(signature) == record.group_signature
    supervision = Supervision.of(consortium.chain, consortium.deployment)
    opening = supervision.request_opening(
        consortium.centres["ai-c"].account, signature, "hpc-a", from_hex(served["record"]), "a test of the record"
    )
    c1, _ = ciphertext(signature)
    for name in supervision.supervisors()[:2]:
        state = SupervisorState.load(consortium.supervisor_state(name))
        share = decryption_share(state.secret_share, state.index, c1, opening)
        submitted = supervision.submit_share(consortium.centres[name].account, opening, share)
        assert submitted.accepted
    assert submitted.tracing_key == tracing_key(alice.sk)


def test_the_serving_centre_holds_no_identity_of_an_anonymous_user(consortium, anonymous_run, alice):
    _, _, group_signature, _, _, view = anonymous_run
    store = consortium.store("cloud-b")
    job = store.get_job(view["id"])
    entry = store.decision_by_digest(job.decision).entry
    # Cedar saw a pseudonym whose only attributes are its home and its project group
    assert entry["principal"] == {
        "id": pseudonym(group_signature),
        "attrs": {"principal": pseudonym(group_signature), "home": "hpc-a"},
        "groups": ["physics@hpc-a"],
    }
    assert (job.principal, job.home) == (pseudonym(group_signature), "hpc-a")
    # nothing cloud-b keeps names alice: not her uid or name, her enrolment id, her tracing key or credential
    enrolment = consortium.centres["hpc-a"].node.parts.signon.enrolment_id("alice").hex()
    T = tracing_key(alice.sk)
    secrets_of_alice = ("alice", "Alice Archer", enrolment, g1_raw(T).hex(), alice.credential.signature.hex())
    for db in ("gateway.db", "outbox.db"):
        with sqlite3.connect(consortium.data_dir / "cloud-b" / db) as conn:
            dump = "\n".join(conn.iterdump()).lower()
        if db == "gateway.db":
            assert group_signature[2:].lower() in dump  # the scan reads the jobs' blobs, as hex
        for secret in secrets_of_alice:
            assert secret.lower() not in dump, f"cloud-b's {db} holds {secret!r}"


def test_a_retry_with_the_idempotency_key_gets_the_same_job_and_without_it_the_order_is_a_replay(
    consortium, anonymous_run, nothing_stored
):
    _, paid, group_signature, idempotency_key, accepted, _ = anonymous_run
    with GatewayClient(consortium.url("cloud-b")) as cloud:
        assert cloud.anonymous_submit(paid.fields, group_signature, idempotency_key)["id"] == accepted["id"]
        with pytest.raises(GatewayRefused) as replayed:
            cloud.anonymous_submit(paid.fields, group_signature)
    assert replayed.value.status == 409 and "replayed order" in replayed.value.error
    assert accepted["id"] in replayed.value.error


def test_the_policy_decides_for_the_project_and_logs_only_the_pseudonym(consortium, alice):
    """ai-c's GPU queue is for gpu-users and ml-project@hpc-a: physics@hpc-a is refused, with the entry's id."""
    job = {"command": ["true"], "walltime": 30, "resources": {"cores": 1, "gpus": 1, "queue": "gpu"}}
    signature = quote_signature(alice, job, "ai-c")
    with pytest.raises(GatewayRefused) as caught, GatewayClient(consortium.url("ai-c")) as ai:
        ai.anonymous_quote(job | {"centre": "ai-c"}, signature)
    assert caught.value.status == 403 and caught.value.decision
    principal = consortium.store("ai-c").decision(from_hex(caught.value.decision)).entry["principal"]
    assert principal["id"] == pseudonym(signature) and principal["groups"] == ["physics@hpc-a"]


def test_anonymous_decisions_are_bounded_per_address_and_never_ask_the_directory(consortium, alice, monkeypatch):
    node = consortium.centres["cloud-b"].node
    monkeypatch.setattr(node.parts.decisions, "client_limit", RateLimit(0.001, 2))

    def no_directory(*_):
        raise AssertionError("an anonymous request looked up the directory")

    monkeypatch.setattr(node.parts.directory, "groups_of", no_directory)
    statuses = []
    with GatewayClient(consortium.url("cloud-b")) as cloud:
        for _ in range(3):  # three signatures: three pseudonyms, one address
            try:
                cloud.anonymous_quote(JOB | {"centre": "cloud-b"}, quote_signature(alice, JOB, "cloud-b"))
                statuses.append(200)
            except GatewayRefused as exc:
                statuses.append(exc.status)
    assert statuses == [200, 200, 429]


def test_group_signatures_from_one_address_are_bounded_before_any_is_verified(consortium, alice, monkeypatch):
    """Each route that verifies a group signature (~5 ms of pairings, no session needed) answers 429 with
    Retry-After past a burst from one network address, before verifying: the serving centre's quote and job routes
    (one bound together) and the home's grant route."""
    serving, home = consortium.centres["cloud-b"].node, consortium.centres["hpc-a"].node.parts.groups
    monkeypatch.setattr(serving.anonymous, "limit", RateLimit(0.001, 1))
    monkeypatch.setattr(home, "_limit", RateLimit(0.001, 1))
    verified, real = [], anonymous_desk.verify
    monkeypatch.setattr(anonymous_desk, "verify", lambda *a, **k: verified.append(a) or real(*a, **k))
    paid = ordered(consortium)
    signature = alice.sign(order_message(paid.digest))
    quote = {"request": JOB | {"centre": "cloud-b"}, "group_signature": quote_signature(alice, JOB, "cloud-b")}
    with httpx.Client(base_url=consortium.url("cloud-b"), timeout=30) as cloud:
        assert cloud.post("/v1/anonymous/quote", json=quote).status_code == 200
        for path, body in (
            ("/v1/anonymous/quote", quote),
            ("/v1/anonymous/jobs", paid.fields | {"group_signature": signature}),
        ):
            answer = cloud.post(path, json=body)
            assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1, answer.text
            assert "nothing was verified" in answer.json()["error"]
    assert len(verified) == 1
    grant = {
        "order": paid.fields["order"],
        "order_signature": paid.fields["order_signature"],
        "group_signature": signature,
    }
    with httpx.Client(base_url=consortium.url("hpc-a"), timeout=30) as at_home:
        first, second = (at_home.post("/v1/anonymous/grants", json=grant) for _ in range(2))
    assert first.status_code != 429, first.text  # what the home makes of it (a grant, or a refusal): verified
    assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1, second.text


# -- refusals: each clear, nothing stored ----------------------------------------------------------------------------


def refused(consortium, fields: dict, group_signature: str, centre: str = "cloud-b") -> GatewayRefused:
    with pytest.raises(GatewayRefused) as caught, GatewayClient(consortium.url(centre)) as client:
        client.anonymous_submit(fields, group_signature, secrets.token_hex(8))
    return caught.value


def test_a_tampered_group_signature_is_refused(consortium, alice, nothing_stored):
    paid = ordered(consortium)
    sig = bytearray(from_hex(alice.sign(order_message(paid.digest))))
    sig[-40] ^= 0x01  # in the proof
    error = refused(consortium, paid.fields, to_hex(bytes(sig)))
    assert error.status == 401 and "group signature refused" in error.error and "does not verify" in error.error


def test_a_signature_over_another_message_is_refused(consortium, alice, nothing_stored):
    mine, other = ordered(consortium), ordered(consortium)
    error = refused(consortium, mine.fields, alice.sign(order_message(other.digest)))  # another order
    assert error.status == 401 and "does not verify for this message" in error.error
    error = refused(consortium, mine.fields, alice.sign(quote_message(mine.digest)))  # a quote's message
    assert error.status == 401 and "does not verify for this message" in error.error


def test_an_order_for_another_centre_is_refused_after_the_policy_decided(consortium, alice):
    """Rightly signed, for ai-c, sent to cloud-b: the order's check refuses it; only the policy's decision is kept."""
    elsewhere = ordered(consortium, centre="ai-c")
    jobs, records, decisions = stored(consortium)
    error = refused(consortium, elsewhere.fields | {"centre": None}, alice.sign(order_message(elsewhere.digest)))
    assert error.status == 400 and "this order is for another centre (ai-c), not cloud-b" in error.error
    assert stored(consortium) == (jobs, records, decisions | {"cloud-b": decisions["cloud-b"] + 1})


def test_an_expired_credential_is_refused(consortium, key, nothing_stored):
    late = join(consortium, key, expires_at=int(time.time()) - 3600)
    paid = ordered(consortium)
    error = refused(consortium, paid.fields, late.sign(order_message(paid.digest)))
    assert error.status == 403 and "expired" in error.error and "join project physics at hpc-a again" in error.error


def test_a_signature_by_a_home_nobody_knows_is_refused(consortium, key, nothing_stored):
    stranger = join(consortium, key, home="edge-x", issuer=fresh_issuer())
    paid = ordered(consortium)
    error = refused(consortium, paid.fields, stranger.sign(order_message(paid.digest)))
    assert error.status == 401 and "unknown issuer key" in error.error and "of edge-x" in error.error
    impostor = join(consortium, key, issuer=fresh_issuer())  # says hpc-a, with a key hpc-a never registered
    error = refused(consortium, paid.fields, impostor.sign(order_message(paid.digest)))
    assert error.status == 401 and "unknown issuer key" in error.error and "of hpc-a" in error.error


def test_a_revocation_at_a_home_reaches_its_members_signatures_at_the_next_weeks_turn(consortium, key):
    """hpc-a revokes bob mid-week (a home may revoke an enrolment of its own at any second). Every group credential
    of a week carries the epoch its home had when the week began, so one carrying the epoch this revocation made
    would be one member's own: refused; the week's credentials are taken until they expire (a revocation reaches
    anonymous use at the next week's turn). The module's last test."""
    index = consortium.centres["cloud-b"].node.parts.index
    began = index.revocation_epoch_at("hpc-a", issue_week(credential_expiry(index.now())))
    with GatewayClient(consortium.url("hpc-a")) as home:
        home.credential("bob", PASSWORDS["bob"])  # enrols bob
        eventually(lambda: home.revoke("bob", consortium.operator_key("hpc-a"))["revoked"])
    eventually(lambda: index.revocation_epoch("hpc-a") > began)
    own = join(consortium, key, revocation_epoch=index.revocation_epoch("hpc-a"))
    paid = ordered(consortium)
    unchanged = stored(consortium)
    error = refused(consortium, paid.fields, own.sign(order_message(paid.digest)))
    assert error.status == 403 and "no member of that week has a later one" in error.error
    assert stored(consortium) == unchanged
    weeks = join(consortium, key)  # what hpc-a gives everyone who joins this week
    assert weeks.credential.revocation_epoch == began
    paid = ordered(consortium)
    with GatewayClient(consortium.url("cloud-b")) as cloud:
        accepted = cloud.anonymous_submit(paid.fields, weeks.sign(order_message(paid.digest)))
        cloud.job_signer = job_signer("cloud-b", paid.account)
        assert cloud.wait(accepted["id"])["status"] == "succeeded"
