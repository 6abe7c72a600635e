"""Authority stays with whom the user gave it to: tokens are good at one centre, no gateway submits for a user.

On the real consortium (anvil, one slapd per centre, three HTTP gateways): a member
that mints a session for another home's user, or replays a token it was shown,
gets nothing accepted anywhere else; single sign-on still works, once per centre.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.client.dispatch import finish, submit_anywhere, with_home_session, with_wallet
from gateway.client.http import GatewayClient, WrongCentre
from gateway.client.wallet import PaymentKeys, Wallet
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.payment import paid

QUICK = {"command": ["true"], "walltime": 30}
GPU = QUICK | {"resources": {"queue": "gpu", "gpus": 1}}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def paid_job(consortium, job: dict, centre: str, home: str = "hpc-a") -> dict:
    """`job` for `centre` with an order for it and `home`'s grant: whatever is refused, it is not for payment."""
    return job | {"centre": centre} | paid(consortium, job, centre, home).fields()


def home_session(consortium, uid: str = "alice", home: str = "hpc-a") -> GatewayClient:
    """A client signed on at the user's home with a password: it exchanges tokens and grants orders."""
    client = GatewayClient(consortium.url(home))
    client.login(uid, PASSWORDS[uid])
    return client


@pytest.fixture
def counted(consortium):
    """Job counts per centre before the test; the test says which may grow."""
    return consortium.job_count()


def test_a_member_cannot_mint_a_session_for_another_homes_user(consortium, counted):
    """Finding: hpc-a mints a presentation token for a made-up cloud-b user with GPU rights; every gateway took it."""
    rogue = consortium.centres["hpc-a"].node.parts.issuer
    epoch = consortium.centres["cloud-b"].node.parts.index.revocation_epoch("cloud-b")
    disclosed = {
        "home": "cloud-b",
        "groups": "gpu-users",
        "employee_type": "staff",
        "revocation_epoch": str(epoch),
        "expires_at": str(int(time.time()) + 3600),
    }
    minted = rogue.issue_presented("cloud-b", disclosed, epoch)
    for centre in ("cloud-b", "ai-c"):
        response = httpx.post(
            consortium.url(centre) + "/v1/jobs",
            json=paid_job(consortium, GPU, centre, "cloud-b"),
            headers=bearer(minted),
        )
        assert response.status_code == 401, response.text
        assert "hpc-a" in response.json()["error"]
    assert consortium.job_count() == counted


def test_a_token_is_good_only_at_the_centre_it_was_issued_for(consortium, counted):
    """A member shown a user's token cannot use it anywhere else (the old forwarding leak)."""
    token = consortium.login("alice", "hpc-a", at="cloud-b")
    for centre in ("hpc-a", "ai-c"):
        response = httpx.post(
            consortium.url(centre) + "/v1/jobs", json=paid_job(consortium, QUICK, centre), headers=bearer(token)
        )
        assert response.status_code == 401 and f"not {centre!r}" in response.json()["error"]
    assert consortium.job_count() == counted


def test_home_exchanges_a_password_session_for_another_centre(consortium):
    token = consortium.login("alice", "hpc-a", at="ai-c")
    with GatewayClient(consortium.url("ai-c"), token=token) as client:
        view = client.wait(client.submit(paid_job(consortium, GPU, "ai-c"))["id"])
    assert view["status"] == "succeeded" and view["serving_centre"] == "ai-c"
    assert view["principal"] == "alice@hpc-a"


def test_only_home_exchanges_and_only_a_password_session(consortium, tmp_path):
    carol = consortium.login("carol", "cloud-b", at="hpc-a")  # good at hpc-a, but hpc-a is not carol's home
    response = httpx.post(consortium.url("hpc-a") + "/v1/tokens", json={"audience": "ai-c"}, headers=bearer(carol))
    assert response.status_code == 403 and "home" in response.json()["error"]
    wallet = Wallet.from_issuance(consortium.url("hpc-a"), _credential(consortium, "alice", "hpc-a"))
    with GatewayClient(consortium.url("hpc-a")) as client:
        client.sign_on(wallet)
        response = httpx.post(
            consortium.url("hpc-a") + "/v1/tokens", json={"audience": "ai-c"}, headers=bearer(client.token)
        )
    assert response.status_code == 403 and "fresh presentation" in response.json()["error"]
    alice = consortium.login("alice", "hpc-a")
    response = httpx.post(consortium.url("hpc-a") + "/v1/tokens", json={"audience": "nowhere"}, headers=bearer(alice))
    assert response.status_code == 400 and "not a member" in response.json()["error"]


def test_a_session_in_its_last_seconds_is_not_exchanged_for_a_longer_one(consortium):
    """A token just past its expiry (within the verifiers' clock leeway) is refused with a reason, not a 500."""
    home = consortium.centres["hpc-a"].node.parts
    late = home.issuer.issue(
        "alice@hpc-a",
        "hpc-a",
        {},
        revocation_epoch=home.index.revocation_epoch("hpc-a"),
        now=int(time.time()) - home.issuer.ttl - 5,
    )
    response = httpx.post(consortium.url("hpc-a") + "/v1/tokens", json={"audience": "ai-c"}, headers=bearer(late))
    assert response.status_code == 401 and "expired" in response.json()["error"], response.text


def test_a_credential_in_its_last_second_is_refused_not_a_server_error(monkeypatch):
    """A sign-on in the very second the credential expires verified (not yet expired) but had no time left
    for a session: the token could not be made and the gateway answered 500. Unit test: SignOn with an
    index double; the verifier's and the token issuer's clocks both read the credential's expiry."""
    from auth.credentials import CredentialSchema, generate_issuer_key, issue_credential, key_id, make_presentation
    from auth.tokens import TokenIssuer, generate_key
    from gateway.node.errors import Unauthenticated
    from gateway.node.signon import IssuerKey, SignOn

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
    credential = issue_credential(schema, sk, pk, values, now=1_700_000_000)
    expiry = int(credential.values["expires_at"])

    class Index:
        chain_time = 0

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
    request = signon.challenges.issue(now=expiry - 1)
    presentation = make_presentation(schema, credential, pk, request).to_dict()
    clock = type("Clock", (), {"time": staticmethod(lambda: float(expiry))})
    monkeypatch.setattr("gateway.node.signon.time", clock)
    monkeypatch.setattr("auth.tokens.time", clock)
    with pytest.raises(Unauthenticated, match="expired"):
        signon.present(presentation)


def test_a_gateway_never_submits_on_a_users_behalf(consortium, counted):
    token = consortium.login("alice", "hpc-a")
    response = httpx.post(
        consortium.url("hpc-a") + "/v1/jobs", json=paid_job(consortium, QUICK, "cloud-b"), headers=bearer(token)
    )
    assert response.status_code == 421
    assert consortium.url("cloud-b") in response.json()["error"]
    auto = paid_job(consortium, QUICK, "hpc-a") | {"centre": "auto"}
    response = httpx.post(consortium.url("hpc-a") + "/v1/jobs", json=auto, headers=bearer(token))
    assert response.status_code == 421 and "/v1/placement" in response.json()["error"]
    assert consortium.job_count() == counted


def test_placement_ranks_every_member_with_its_room(consortium):
    with GatewayClient(consortium.url("cloud-b")) as client:
        candidates = client.placement(600, {"cores": 1})
        capacity = client.capacity()
    assert sorted(c["centre"] for c in candidates) == ["ai-c", "cloud-b", "hpc-a"]
    assert all(c["gateway_url"] == consortium.url(c["centre"]) for c in candidates)
    assert all(isinstance(c["free_cpus"], int) and c["free_cpus"] >= 0 for c in candidates)
    prices = [c["max_price"] for c in candidates]
    assert prices == sorted(prices)  # every centre has room here: cheapest first
    assert capacity["centre"] == "cloud-b" and 0 <= capacity["free_cpus"] <= capacity["total_cpus"]


def test_a_flood_of_capacity_requests_does_not_reach_the_executor(consortium, monkeypatch):
    """GET /v1/capacity is public; at a Slurm centre each answer runs `sinfo` against slurmctld. A flood
    from an outsider is answered from what the executor said within the last second."""
    executor = consortium.centres["cloud-b"].node.parts.executor
    asked = []
    real = executor.capacity
    monkeypatch.setattr(executor, "capacity", lambda: asked.append(1) or real())
    with httpx.Client(base_url=consortium.url("cloud-b")) as http:
        answers = [http.get("/v1/capacity") for _ in range(50)]
    assert all(a.status_code == 200 and a.json()["centre"] == "cloud-b" for a in answers)
    assert len(asked) < 10  # once a second at most, however long the flood takes here


def test_single_sign_on_once_per_centre_with_a_wallet(consortium):
    """`auto` with a wallet: the client signs on at the GPU centre itself; the job runs there."""
    wallet = Wallet.from_issuance(consortium.url("hpc-a"), _credential(consortium, "alice", "hpc-a"))
    keys = PaymentKeys()
    with home_session(consortium) as payer:
        submission = submit_anywhere(consortium.url("cloud-b"), GPU, with_wallet(wallet, payer), keys=keys)
    with submission.client:
        view = finish(submission, keys).view
    assert submission.centre == "ai-c" and view["status"] == "succeeded"
    assert view["principal"].endswith("@hpc-a") and view["principal"] != "alice@hpc-a"  # a pseudonym


def test_single_sign_on_once_per_centre_with_a_password_session(consortium):
    keys = PaymentKeys()
    with home_session(consortium) as home:
        submission = submit_anywhere(consortium.url("hpc-a"), GPU, with_home_session(home), keys=keys)
    with submission.client:
        view = finish(submission, keys).view
        assert submission.client.job(view["id"])["receipted"] is True  # the serving centre's word
    assert (submission.centre, view["status"], view["principal"]) == ("ai-c", "succeeded", "alice@hpc-a")
    assert view["receipted"] is True  # what the user is shown says so too


def test_a_member_cannot_relay_another_centres_challenge_to_a_users_wallet(consortium, counted):
    """A hostile cloud-b answers a user signing on there with ai-c's challenge and passes the proof on
    to ai-c: it would hold an ai-c session of alice's. The client answers no challenge but cloud-b's."""
    wallet = Wallet.from_issuance(consortium.url("hpc-a"), _credential(consortium, "alice", "hpc-a"))
    relayed: list[int] = []

    def hostile_cloud_b(request: httpx.Request) -> httpx.Response:
        ai_c = consortium.url("ai-c") + request.url.path
        if request.url.path == "/v1/auth/request":
            return httpx.Response(200, json=httpx.get(ai_c).json())
        answer = httpx.post(ai_c, content=request.content, headers={"Content-Type": "application/json"})
        relayed.append(answer.status_code)
        return httpx.Response(answer.status_code, content=answer.content)

    with (
        home_session(consortium) as payer,
        GatewayClient("http://cloud-b.example", transport=httpx.MockTransport(hostile_cloud_b)) as client,
    ):
        with pytest.raises(WrongCentre, match="ai-c"):
            with_wallet(wallet, payer)(client, "cloud-b")
        assert client.token is None
    assert relayed == []


def test_a_member_cannot_make_a_wallet_disclose_what_links_its_sign_ons(consortium):
    """cloud-b asks for the enrolment id (`pseudonym`): the same at every sign-on, and mapped to the uid by
    the home, so it would link every session of alice's and, with hpc-a, name her. The wallet refuses."""
    from auth.credentials import new_request

    wallet = Wallet.from_issuance(consortium.url("hpc-a"), _credential(consortium, "alice", "hpc-a"))
    asked = new_request(wallet.schema, "cloud-b", ["groups", "pseudonym"]).to_dict()
    with pytest.raises(ValueError, match="pseudonym"):
        wallet.present(asked)
    assert (
        "pseudonym"
        not in wallet.present(asked | {"attributes": ["groups", "home", "revocation_epoch", "expires_at"]})["disclosed"]
    )


@pytest.mark.parametrize("signed_on", ["wallet", "home session"])
def test_a_hostile_entry_gateway_cannot_send_the_client_elsewhere(consortium, counted, signed_on):
    """The entry gateway ranks the centres but lists its own server as ai-c's and as hpc-a's: the
    client would sign on there (a home token, a token for ai-c, or a proof it relays to ai-c).
    The client goes only where the user's home says each member is."""
    evil: list[tuple[str, str | None]] = []

    def network(request: httpx.Request) -> httpx.Response:
        if request.url.host == "evil.example":
            evil.append((request.url.path, request.headers.get("Authorization")))
            return httpx.Response(503, json={"error": "busy", "reasons": []})
        if request.url.host == "entry.example":
            candidates = httpx.post(
                consortium.url("cloud-b") + "/v1/placement",
                content=request.content,
                headers={"Content-Type": "application/json"},
            ).json()["candidates"]
            for c in candidates:
                if c["centre"] in ("ai-c", "hpc-a"):
                    c["gateway_url"] = "http://evil.example"
            return httpx.Response(200, json={"candidates": candidates})
        real = httpx.request(
            request.method,
            str(request.url),
            content=request.content,
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        )
        return httpx.Response(real.status_code, content=real.content, headers={"Content-Type": "application/json"})

    home = home_session(consortium)  # grants the order either way; signs on for alice with a home session
    if signed_on == "wallet":
        wallet = Wallet.from_issuance(consortium.url("hpc-a"), _credential(consortium, "alice", "hpc-a"))
        sign_on = with_wallet(wallet, home)
    else:
        sign_on = with_home_session(home)
    keys = PaymentKeys()
    with home:
        submission = submit_anywhere(
            "http://entry.example", GPU, sign_on, transport=httpx.MockTransport(network), keys=keys
        )
    with submission.client:
        view = finish(submission, keys).view
    assert (submission.centre, view["status"]) == ("ai-c", "succeeded")
    assert submission.client.url == consortium.url("ai-c")
    assert evil == []


def _credential(consortium, uid: str, home: str) -> dict:
    with GatewayClient(consortium.url(home)) as client:
        return client.credential(uid, PASSWORDS[uid])
