"""Attribute-based sign-on across three centres: credentials, presentations, rotation, revocation.

Runs on a consortium of its own (a fresh deployment on the session's anvil and a
new slapd per centre), because rotating issuer keys and revoking users changes
what every centre accepts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from web3.logs import DISCARD

from auth.credentials import generate_issuer_key, issue_credential
from auth.ldif import ssha, user_dn
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.wallet import Wallet
from gateway.node.signon import IssuerKey
from ledger.chain import connect
from ledger.deploy import bind
from ledger.ids import centre_id
from tests.fixtures.consortium import PASSWORDS, start_consortium
from tests.fixtures.payment import paid
from tests.fixtures.relay import Relay

CENTRES = ("hpc-a", "cloud-b", "ai-c")
ALWAYS = {"home", "revocation_epoch", "expires_at"}
QUICK = {"command": ["python3", "-c", "print('ok')"], "walltime": 30}


@pytest.fixture(scope="module")
def fresh(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("signon"))
    yield running
    running.stop()


def paid_job(consortium, centre: str, home: str = "hpc-a") -> dict:
    """QUICK for `centre`, paid by an order and `home`'s grant: what is refused is the sign-on, not the payment."""
    return QUICK | {"centre": centre} | paid(consortium, QUICK, centre, home).fields()


def wallet_of(consortium, uid: str, home: str, password: str | None = None) -> Wallet:
    with GatewayClient(consortium.url(home)) as client:
        return Wallet.from_issuance(consortium.url(home), client.credential(uid, password or PASSWORDS[uid]))


def add_person(consortium, home: str, uid: str, password: str) -> None:
    """A new person in `home`'s directory, never enrolled anywhere yet."""
    base = consortium.spec.centre(home).base_dn
    consortium.slapds[home].add(
        f"dn: {user_dn(base, uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
        f"departmentNumber: physics\nemployeeType: staff\nuserPassword: {ssha(password)}\n"
    )


def revoke_at(consortium, home: str, uid: str) -> httpx.Response:
    """The operator's revocation request, answered with its status code."""
    with httpx.Client(base_url=consortium.url(home), timeout=60) as http:
        return http.post(
            "/v1/enrolments/revoke", json={"username": uid}, headers={"X-Operator-Key": consortium.operator_key(home)}
        )


def registry(consortium):
    return bind(consortium.chain, consortium.deployment).identity_registry.functions


def accepted_at(consortium, centre: str, wallet: Wallet) -> bool:
    """Whether `centre` accepts a sign-on with this wallet now (False: refused as revoked)."""
    try:
        sign_on(consortium, centre, wallet)
    except GatewayRefused as exc:
        assert exc.status == 401 and "revoked" in exc.error, exc.error
        return False
    return True


def sign_on(consortium, centre: str, wallet: Wallet) -> dict:
    with GatewayClient(consortium.url(centre)) as client:
        return client.sign_on(wallet)


def refusal(fn: Callable[[], object]) -> GatewayRefused:
    with pytest.raises(GatewayRefused) as caught:
        fn()
    return caught.value


def sync_everywhere(consortium) -> None:
    """Bring every centre's index up to the chain (what the 1-second housekeeping does anyway)."""
    for running in consortium.centres.values():  # send what every outbox holds, then read it everywhere
        running.node.parts.epochs.flush()
    for running in consortium.centres.values():
        running.node.parts.index.sync()


def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.1)


def test_a_credential_comes_only_from_home_and_carries_live_directory_attributes(fresh):
    wallet = wallet_of(fresh, "alice", "hpc-a")
    values = wallet.credential.values
    assert (values["home"], values["department"], values["employee_type"]) == ("hpc-a", "physics", "staff")
    assert values["groups"] == "ml-project,physics"
    assert "alice" not in values["pseudonym"] and len(bytes.fromhex(values["pseudonym"])) == 32
    assert wallet.credential.verify(wallet.schema, wallet.issuer_pk)

    # the pseudonym is the enrolment registered on chain, with hpc-a as home
    sync_everywhere(fresh)
    enrolment = fresh.centres["cloud-b"].node.parts.index.enrolment("hpc-a", values["pseudonym"])
    assert enrolment is not None and not enrolment.revoked

    # the password is useful only at home: another centre does not know alice
    with GatewayClient(fresh.url("cloud-b")) as client:
        assert refusal(lambda: client.credential("alice", PASSWORDS["alice"])).status == 401
    with GatewayClient(fresh.url("hpc-a")) as client:
        assert refusal(lambda: client.credential("alice", "not-her-password")).status == 401


def test_each_centre_learns_only_what_it_asks_and_sign_ons_do_not_link(fresh):
    wallet = wallet_of(fresh, "alice", "hpc-a")
    sessions = {c: sign_on(fresh, c, wallet) for c in CENTRES}
    for centre, session in sessions.items():
        asked = set(fresh.spec.centre(centre).signon_attributes)
        assert set(session["disclosed"]) == ALWAYS | asked
        assert session["home"] == "hpc-a" and session["principal"].endswith("@hpc-a")
    assert sessions["cloud-b"]["disclosed"] == {
        "home": "hpc-a",
        "employee_type": "staff",
        "revocation_epoch": wallet.credential.values["revocation_epoch"],
        "expires_at": wallet.credential.values["expires_at"],
    }
    # three sign-ons, three unrelated pseudonyms; the same centre twice: two more
    again = sign_on(fresh, "cloud-b", wallet)
    principals = {s["principal"] for s in sessions.values()} | {again["principal"]}
    assert len(principals) == 4

    # a proof reveals neither the pseudonym nor the secret it was made from
    with GatewayClient(fresh.url("cloud-b")) as client:
        presentation = json.dumps(wallet.present(client._call("GET", "/v1/auth/request")))
    for hidden in ("pseudonym", "holder_secret", "department", "groups"):
        assert wallet.credential.values[hidden] not in presentation

    # a token is good where the sign-on was made, and nowhere else
    with GatewayClient(fresh.url("ai-c"), token=sessions["ai-c"]["token"]) as client:
        job = client.submit(paid_job(fresh, "ai-c"))
        assert client.wait(job["id"])["status"] == "succeeded"
    with GatewayClient(fresh.url("ai-c"), token=sessions["cloud-b"]["token"]) as client:
        elsewhere = refusal(lambda: client.submit(paid_job(fresh, "ai-c")))
        assert elsewhere.status == 401 and "not 'ai-c'" in elsewhere.error


def test_presentations_are_refused_with_a_reason(fresh):
    wallet = wallet_of(fresh, "carol", "cloud-b")
    node = fresh.centres["hpc-a"].node
    with GatewayClient(fresh.url("hpc-a")) as client:
        request = client._call("GET", "/v1/auth/request")
        presentation = wallet.present(request)
        client._call("POST", "/v1/auth/present", json={"presentation": presentation})
        replayed = refusal(lambda: client._call("POST", "/v1/auth/present", json={"presentation": presentation}))
        assert replayed.status == 401 and "replayed" in replayed.error

    # made for hpc-a's request, shown to ai-c
    with GatewayClient(fresh.url("hpc-a")) as client:
        presentation = wallet.present(client._call("GET", "/v1/auth/request"))
    with GatewayClient(fresh.url("ai-c")) as client:
        elsewhere = refusal(lambda: client._call("POST", "/v1/auth/present", json={"presentation": presentation}))
        assert elsewhere.status == 401 and "unknown_request" in elsewhere.error

    # a request that expired before the answer came
    stale = node.parts.signon.challenges.issue(now=int(time.time()) - 61)
    with GatewayClient(fresh.url("hpc-a")) as client:
        late = refusal(
            lambda: client._call("POST", "/v1/auth/present", json={"presentation": wallet.present(stale.to_dict())})
        )
        assert late.status == 401 and "request_expired" in late.error

    # a credential from a centre that is not a member, and one forged in a member's name
    sk, pk = generate_issuer_key()
    for home, code in (("zz-rogue", "unknown_issuer"), ("cloud-b", "key_not_valid")):
        values = dict(wallet.credential.values) | {"home": home}
        forged = Wallet(home, "", issue_credential(wallet.schema, sk, pk, values), pk, wallet.schema)
        with GatewayClient(fresh.url("hpc-a")) as client:
            refused = refusal(lambda forged=forged: client.sign_on(forged))
            assert refused.status == 401 and code in refused.error


def rotate(consortium, centre: str, overlap: int) -> IssuerKey:
    """Give `centre` a new issuer key; the old one stays valid `overlap` seconds."""
    signon = consortium.centres[centre].node.parts.signon
    signon.issuer_key = IssuerKey(*generate_issuer_key())
    signon.key_overlap = overlap
    signon.publish_issuer_key()
    sync_everywhere(consortium)
    return signon.issuer_key


def test_issuer_key_rotation_keeps_the_old_key_for_its_window_only(fresh):
    before = wallet_of(fresh, "dave", "ai-c")
    rotate(fresh, "ai-c", overlap=3600)
    assert sign_on(fresh, "cloud-b", before)  # inside the window: still accepted
    during = wallet_of(fresh, "dave", "ai-c")
    assert during.issuer_pk != before.issuer_pk

    rotate(fresh, "ai-c", overlap=0)
    for centre in CENTRES:
        rotated_out = refusal(lambda centre=centre: sign_on(fresh, centre, during))
        assert rotated_out.status == 401 and "key_not_valid" in rotated_out.error
    assert sign_on(fresh, "hpc-a", before)  # the first key's window has not ended yet
    assert sign_on(fresh, "hpc-a", wallet_of(fresh, "dave", "ai-c"))


def test_revocation_reaches_every_centre_and_only_that_home(fresh):
    bob, alice, carol = (
        wallet_of(fresh, u, h) for u, h in (("bob", "hpc-a"), ("alice", "hpc-a"), ("carol", "cloud-b"))
    )
    # a session of each kind at every centre: a presentation there, and a password session exchanged at home
    bob_tokens = {
        centre: (sign_on(fresh, centre, bob)["token"], fresh.login("bob", "hpc-a", at=centre)) for centre in CENTRES
    }

    answer = revoke_at(fresh, "hpc-a", "BOB")  # the directory's spelling is what counts
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["username"], body["revoked"], body["status"]) == ("bob", True, "done")
    assert body["tx_hash"].startswith("0x") and body["enrolment"] == "0x" + bob.credential.values["pseudonym"]
    # no explicit sync here: each gateway's own housekeeping must bring the event in
    for centre in CENTRES:

        def refuses_bob(centre=centre) -> bool:
            try:
                sign_on(fresh, centre, bob)
            except GatewayRefused as exc:
                assert exc.status == 401 and "revoked" in exc.error
                return True
            return False

        eventually(refuses_bob)

    # the sessions bob opened before the revocation end too, at every centre, whichever way he signed on
    for centre in CENTRES:
        for token in bob_tokens[centre]:
            with GatewayClient(fresh.url(centre), token=token) as client:
                ended = refusal(lambda centre=centre: client.submit(paid_job(fresh, centre)))
                assert ended.status == 401 and "predates a revocation" in ended.error

    with GatewayClient(fresh.url("hpc-a")) as home:
        no_refresh = refusal(lambda: home.credential("bob", PASSWORDS["bob"]))
        assert no_refresh.status == 403 and "revoked" in no_refresh.error
        no_login = refusal(lambda: home.login("bob", PASSWORDS["bob"]))
        assert no_login.status == 403 and "revoked" in no_login.error

    # alice, of the same home, refreshes once and is accepted everywhere again; carol never noticed
    assert refusal(lambda: sign_on(fresh, "ai-c", alice)).status == 401
    alice = wallet_of(fresh, "alice", "hpc-a")
    assert int(alice.credential.values["revocation_epoch"]) == 1
    for centre in CENTRES:
        assert sign_on(fresh, centre, alice)["home"] == "hpc-a"
        assert sign_on(fresh, centre, carol)["home"] == "cloud-b"


def test_revoking_an_unknown_user_or_without_the_operator_key_is_refused(fresh):
    with GatewayClient(fresh.url("cloud-b")) as client:
        unknown = refusal(lambda: client.revoke("nobody", fresh.operator_key("cloud-b")))
        assert unknown.status == 400 and "no enrolment" in unknown.error
        wrong_key = refusal(lambda: client.revoke("carol", "not-the-key"))
        assert wrong_key.status == 401 and "operator key" in wrong_key.error


def test_another_member_cannot_squat_a_users_enrolment(fresh):
    """Issue 6, finding 4: cloud-b sends the enrolment of hpc-a's new user before hpc-a does
    (it read the id from hpc-a's transaction waiting to be mined). hpc-a's own enrolment and
    its later revocation must still take effect on chain, and the user be refused everywhere."""
    add_person(fresh, "hpc-a", "erin", "erin-pw")
    pseudonym = fresh.centres["hpc-a"].node.parts.signon.enrolment_id("erin")
    fresh.chain.transact(registry(fresh).enrol(pseudonym), fresh.centres["cloud-b"].account)
    erin = wallet_of(fresh, "erin", "hpc-a", "erin-pw")
    sync_everywhere(fresh)
    assert accepted_at(fresh, "cloud-b", erin)
    epoch = registry(fresh).revocationEpoch(centre_id("hpc-a")).call()

    answer = revoke_at(fresh, "hpc-a", "erin")
    assert answer.status_code == 200 and answer.json()["revoked"] is True, answer.text
    assert registry(fresh).revocationEpoch(centre_id("hpc-a")).call() == epoch + 1  # the chain says so too
    for centre in CENTRES:
        eventually(lambda centre=centre: not accepted_at(fresh, centre, erin))


@pytest.fixture
def own_consortium(slapd_factory, anvil_url, tmp_path):
    """A consortium for one test that cuts a centre off the chain or votes a member out."""
    running = start_consortium(slapd_factory, anvil_url, tmp_path)
    yield running
    running.stop()


def test_a_revocation_the_chain_cannot_take_yet_is_queued_not_reported_done(own_consortium, anvil_url):
    """hpc-a loses its chain node: the revocation answers 202 "queued" (revoked: false), hpc-a
    refuses the user at once, and the revocation lands by itself once the node is back."""
    c = own_consortium
    relay = Relay(anvil_url).start()
    try:
        c.stop_centre("hpc-a")
        c.start_centre("hpc-a", chain=connect(relay.url))
        add_person(c, "hpc-a", "frank", "frank-pw")
        frank = wallet_of(c, "frank", "hpc-a", "frank-pw")
        sync_everywhere(c)
        epoch = registry(c).revocationEpoch(centre_id("hpc-a")).call()
        with GatewayClient(c.url("hpc-a")) as session:  # signed on before the revocation
            session.login("frank", "frank-pw")

        relay.cut()
        answer = revoke_at(c, "hpc-a", "frank")
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["revoked"], body["status"], body["tx_hash"]) == (False, "queued", None)
        assert "retried" in body["detail"] and "already refuses frank" in body["detail"]
        with GatewayClient(c.url("hpc-a")) as home:  # refused at home meanwhile
            assert refusal(lambda: home.login("frank", "frank-pw")).status == 403
        with GatewayClient(c.url("hpc-a"), token=session.token) as home:  # the session too: no new tokens, no jobs
            assert "revoked" in refusal(lambda: home.exchange("cloud-b")).error
            assert "revoked" in refusal(lambda: home.submit(paid_job(c, "hpc-a"))).error
        assert registry(c).revocationEpoch(centre_id("hpc-a")).call() == epoch  # nothing claimed on chain
        assert accepted_at(c, "cloud-b", frank)  # and so the others cannot know yet

        relay.restore()  # hpc-a's housekeeping sends the queued revocation
        eventually(lambda: registry(c).revocationEpoch(centre_id("hpc-a")).call() == epoch + 1)
        for centre in CENTRES:
            eventually(lambda centre=centre: not accepted_at(c, centre, frank))
        again = revoke_at(c, "hpc-a", "frank")
        assert again.status_code == 200 and again.json()["status"] == "done", again.text
    finally:
        relay.cut()


def test_a_revocation_the_chain_refuses_is_reported_as_failed(own_consortium):
    """ai-c is voted out, so the chain refuses its revocation (NotMember): the answer is an
    error with the chain's reason, nothing is claimed, and asking again sends it again."""
    c = own_consortium
    dave = wallet_of(c, "dave", "ai-c")
    sync_everywhere(c)
    governance = bind(c.chain, c.deployment).consortium.functions
    receipt = c.chain.transact(
        governance.propose(1, governance.member(centre_id("ai-c")).call()), c.centres["hpc-a"].account
    )
    [created] = bind(c.chain, c.deployment).consortium.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
    c.chain.transact(governance.vote(created["args"]["proposalId"]), c.centres["cloud-b"].account)
    assert not governance.isMember(centre_id("ai-c")).call()

    outbox = c.centres["ai-c"].node.parts.signon.outbox
    for attempt in (1, 2):  # a repeated request is sent again, and refused again
        answer = revoke_at(c, "ai-c", "dave")
        assert answer.status_code == 409, answer.text
        body = answer.json()
        assert "NotMember" in body["reasons"] and "refused to revoke dave" in body["error"]
        assert "revoked" not in body
        [item] = outbox.failed("revoke")
        assert item.attempts == attempt
    pseudonym = bytes.fromhex(dave.credential.values["pseudonym"])
    enrolled, revoked, _ = registry(c).enrolment(centre_id("ai-c"), pseudonym).call()
    assert enrolled and not revoked  # the truth: nothing changed on chain
    assert registry(c).revocationEpoch(centre_id("ai-c")).call() == 0


def test_a_sign_on_request_lives_its_full_time_when_the_chain_clock_runs_ahead():
    """A gateway judges a presentation by the later of its clock and the chain's (block stamps may run ahead,
    as on a chain whose time was advanced). Its sign-on requests were stamped by its own clock alone, so with
    the chain a minute ahead every request had expired before the wallet answered it. Unit test: SignOn with
    an index double whose chain time is an hour ahead."""
    from pathlib import Path

    from auth.credentials import CredentialSchema, key_id, make_presentation
    from auth.tokens import TokenIssuer, generate_key
    from gateway.node.signon import SignOn

    schema = CredentialSchema.load(Path(__file__).resolve().parents[1] / "gateway/demo/data/credential_schema.toml")
    sk, pk = generate_issuer_key(b"hpc-a issuer key material, 32+ bytes")
    values = {
        "home": "hpc-a",
        "pseudonym": "7f" * 32,
        "department": "physics",
        "employee_type": ["staff"],
        "groups": ["physics"],
        "clearance": 2,
        "revocation_epoch": 0,
    }
    credential = issue_credential(schema, sk, pk, values, now=int(time.time()))

    class Index:
        chain_time = int(time.time()) + 3600

        def issuer_key(self, issuer: str, kid: str, at: int) -> bytes | None:
            return pk if (issuer, kid) == ("hpc-a", key_id(pk)) else None

        def issuer_keys(self, issuer: str) -> list[bytes]:
            return [pk] if issuer == "hpc-a" else []

        def revocation_epoch(self, centre: str) -> int:
            return 0

    signon = SignOn(
        name="cloud-b",
        schema=schema,
        issuer_key=IssuerKey(sk, pk),
        enrolment_secret=b"s" * 32,
        directory=None,
        index=Index(),
        outbox=None,
        tokens=TokenIssuer("cloud-b", generate_key()),
        requested=["department"],
    )
    request = signon.request()
    assert request.expires_at >= Index.chain_time + 59  # a full minute by the clock that will judge it
    token, disclosed = signon.present(make_presentation(schema, credential, pk, request).to_dict())
    assert token.count(".") == 2 and disclosed["department"] == "physics"
