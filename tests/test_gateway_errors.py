"""Bad input at the gateways: each refused with a 4xx a person can act on, and nothing stored.

Runs against the session's real consortium (slapd per centre, anvil, HTTP gateways).
Every refusal is checked three ways: the status, words of the message, and the
centres' stores (no new job rows, no new usage records, no epoch closed).
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

import httpx
import pytest

from auth.credentials import UsedNonces
from auth.tokens import TokenIssuer, generate_key
from gateway.client.http import GatewayClient
from gateway.client.wallet import Wallet
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.payment import paid

QUICK = {"command": ["python3", "-c", "print('ok')"], "walltime": 30, "centre": "hpc-a"}


def with_payment(consortium, job: dict, home: str = "hpc-a") -> dict:
    """The job with an order for its centre and its home's grant (tests/fixtures/payment.py)."""
    centre = job["centre"] if job.get("centre") in ("hpc-a", "cloud-b", "ai-c") else "hpc-a"
    return job | paid(consortium, job, centre, home).fields()


@pytest.fixture(scope="module")
def http(consortium):
    """One HTTP client per centre, to send exactly the bytes a test wants."""
    clients = {name: httpx.Client(base_url=consortium.url(name), timeout=30) for name in consortium.centres}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture(scope="module")
def tokens(consortium):
    return {
        "alice": consortium.login("alice", "hpc-a"),
        "bob": consortium.login("bob", "hpc-a"),
        "carol": consortium.login("carol", "cloud-b"),
    }


@pytest.fixture
def nothing_stored(consortium):
    """Asserts, after the test, that no centre stored a job, a record or closed an epoch."""
    before = (consortium.job_count(), consortium.record_count(), consortium.open_epochs())
    yield
    assert (consortium.job_count(), consortium.record_count(), consortium.open_epochs()) == before


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def refused(response: httpx.Response, status: int, *words: str) -> dict:
    """The body of a refusal, after checking its status and that its message says `words`."""
    assert response.status_code == status, response.text
    body = response.json()
    signed = {"decision", "entry", "signature"}  # a policy's refusal: its decision entry, signed by the centre
    assert set(body) - signed == {"error", "reasons"} and set(body) & signed in (set(), signed)
    assert "decision" not in body or (status == 403 and re.fullmatch(r"0x[0-9a-f]{32}", body["decision"]))
    assert "entry" not in body or body["entry"]["id"] == body["decision"]
    text = (body["error"] + " " + " ".join(body["reasons"])).lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in {body}"
    return body


def wait_final(client: httpx.Client, job_id: str, token: str) -> dict:
    """Wait for a job to finish, so that its record lands before the next module closes an epoch."""
    for _ in range(2000):
        view = client.get(f"/v1/jobs/{job_id}", headers=bearer(token)).json()
        if view["status"] in ("succeeded", "failed", "timed_out"):
            return view
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# -- sign-on -------------------------------------------------------------------------------


def test_wrong_password(http, nothing_stored):
    response = http["hpc-a"].post("/v1/login", json={"username": "alice", "password": "not-alices-pw"})
    body = refused(response, 401, "unknown user or wrong password")
    assert "not-alices-pw" not in response.text and "token" not in body


def test_unknown_user_is_told_apart_from_nobody(http, nothing_stored):
    unknown = http["hpc-a"].post("/v1/login", json={"username": "mallory", "password": "x"})
    wrong = http["hpc-a"].post("/v1/login", json={"username": "alice", "password": "x"})
    refused(unknown, 401, "unknown user or wrong password")
    assert unknown.json() == wrong.json()  # no user enumeration


def test_password_is_only_good_at_the_home_centre(http, nothing_stored):
    refused(
        http["hpc-a"].post("/v1/login", json={"username": "carol", "password": PASSWORDS["carol"]}),
        401,
        "unknown user or wrong password",
    )


@pytest.mark.parametrize(
    "username",
    ["*)(uid=*", "admin)(|(uid=*", "*", "alice)(userPassword=*", "al\x00ice", "cn=admin,dc=hpc-a,dc=xcentre,dc=org"],
)
def test_ldap_injection_in_user_name(http, nothing_stored, username):
    response = http["hpc-a"].post("/v1/login", json={"username": username, "password": "anything"})
    refused(response, 422, "invalid request", "username")
    assert "token" not in response.json()


def test_ldap_wildcard_as_password_does_not_log_in(http, nothing_stored):
    refused(http["hpc-a"].post("/v1/login", json={"username": "alice", "password": "*"}), 401, "wrong password")


def test_empty_password(http, nothing_stored):
    refused(http["hpc-a"].post("/v1/login", json={"username": "alice", "password": ""}), 422, "password")


@pytest.mark.parametrize(
    ("password", "status"),
    [
        ("\x00", 401),
        ("alice-pw\x00", 401),
        ("\x00alice-pw", 401),  # NUL: was a 503, "the directory is unavailable"
        ("alice\tpw", 401),
        ("\u00ad", 401),
        ("\ue000", 401),  # a control, mapped to nothing, private use (SASLprep)
        ("\ud800", 422),
        ("a\udfffb", 422),  # a lone surrogate is not text at all: refused before the directory
    ],
)
@pytest.mark.parametrize("path", ["/v1/login", "/v1/credentials"])
def test_a_password_ldap_cannot_bind_with_is_a_wrong_password(http, nothing_stored, path, password, status):
    """No directory binds with these (ldap3 sends SASLprep'd UTF-8), so they are nobody's password."""
    body = json.dumps({"username": "alice", "password": password}).encode()  # the escapes, as a client sends them
    response = http["hpc-a"].post(path, content=body, headers={"Content-Type": "application/json"})
    refused(response, status, "unknown user or wrong password" if status == 401 else "password")
    assert "token" not in response.json() and "credential" not in response.json()


def test_credential_with_a_wrong_password(http, nothing_stored):
    refused(
        http["hpc-a"].post("/v1/credentials", json={"username": "alice", "password": "nope"}),
        401,
        "unknown user or wrong password",
    )
    refused(
        http["hpc-a"].post("/v1/credentials", json={"username": "*)(uid=*", "password": "x"}),
        422,
        "invalid request",
        "username",
    )


# -- presentation sign-on -----------------------------------------------------------------


@pytest.fixture(scope="module")
def wallet(consortium):
    with GatewayClient(consortium.url("hpc-a")) as client:
        return Wallet.from_issuance(consortium.url("hpc-a"), client.credential("alice", PASSWORDS["alice"]))


def test_presentation_is_single_use(http, wallet, nothing_stored):
    presentation = wallet.present(http["cloud-b"].get("/v1/auth/request").json())
    first = http["cloud-b"].post("/v1/auth/present", json={"presentation": presentation})
    assert first.status_code == 200, first.text
    refused(http["cloud-b"].post("/v1/auth/present", json={"presentation": presentation}), 401, "presentation refused")


def test_presentation_is_bound_to_its_verifier(http, wallet, nothing_stored):
    presentation = wallet.present(http["cloud-b"].get("/v1/auth/request").json())
    refused(http["ai-c"].post("/v1/auth/present", json={"presentation": presentation}), 401, "presentation refused")


def test_a_flood_of_sign_on_requests_leaves_a_real_users_request_good(consortium, http, wallet, nothing_stored):
    """101,000 requests from one client once evicted a real user's pending request (401 unknown_request)."""
    request = http["cloud-b"].get("/v1/auth/request").json()  # the real user asks first
    signon = consortium.centres["cloud-b"].node.parts.signon
    used = len(signon.challenges.used)
    for _ in range(101_000):  # then the flood, in-process: what 101,000 GET /v1/auth/request make the node do
        signon.request()
    response = http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(request)})
    assert response.status_code == 200, response.text
    assert len(signon.challenges.used) <= used + 1  # issuing stored nothing: only an answered request takes a slot
    refused(
        http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(request)}),
        401,
        "replayed",
        "one sign-on only",
    )


def test_a_forged_altered_or_expired_challenge_is_refused(consortium, http, wallet, nothing_stored):
    request = http["cloud-b"].get("/v1/auth/request").json()
    nonce = request["nonce"]
    for at in (2, len(nonce) // 2, len(nonce) - 1):  # a changed expiry, random part, seal
        forged = request | {"nonce": nonce[:at] + ("0" if nonce[at] != "0" else "1") + nonce[at + 1 :]}
        refused(
            http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(forged)}),
            401,
            "unknown_request",
            "did not issue",
        )
    # the challenge says what it asks: a holder who alters the copy it was shown gains nothing
    later = request | {"expires_at": request["expires_at"] + 3600}
    refused(http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(later)}), 401, "bad_proof")
    fewer = request | {"attributes": [a for a in request["attributes"] if a != "employee_type"]}
    refused(
        http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(fewer)}),
        401,
        "missing_attributes",
        "employee_type",
    )
    # a challenge made here a while ago: expired, whoever answers it
    stale = consortium.centres["cloud-b"].node.parts.signon.challenges.issue(now=int(time.time()) - 120)
    refused(
        http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(stale.to_dict())}),
        401,
        "request_expired",
        "ask for a new one",
    )
    # and the genuine one still works after all that
    response = http["cloud-b"].post("/v1/auth/present", json={"presentation": wallet.present(request)})
    assert response.status_code == 200, response.text


def test_a_full_set_of_used_nonces_refuses_for_now_and_forgets_nothing(consortium, http, wallet, nothing_stored):
    """Full of unexpired answers, the set refuses new sign-ons (503) rather than forget one (a replay)."""
    challenges = consortium.centres["cloud-b"].node.parts.signon.challenges
    kept, challenges.used = challenges.used, UsedNonces(capacity=1)
    try:
        first = wallet.present(http["cloud-b"].get("/v1/auth/request").json())
        assert http["cloud-b"].post("/v1/auth/present", json={"presentation": first}).status_code == 200
        second = wallet.present(http["cloud-b"].get("/v1/auth/request").json())
        refused(http["cloud-b"].post("/v1/auth/present", json={"presentation": second}), 503, "try again")
        refused(http["cloud-b"].post("/v1/auth/present", json={"presentation": first}), 401, "replayed")
    finally:
        challenges.used = kept


def test_garbage_presentation(http, nothing_stored):
    refused(http["ai-c"].post("/v1/auth/present", json={"presentation": {"nonce": "x"}}), 401, "presentation refused")
    refused(http["ai-c"].post("/v1/auth/present", json={"presentation": "x"}), 422, "invalid request")


# -- session tokens --------------------------------------------------------------------------


def test_missing_token(http, nothing_stored):
    refused(http["hpc-a"].post("/v1/jobs", json=QUICK), 401, "session token is required", "sign on")
    refused(
        http["hpc-a"].post("/v1/jobs", json=QUICK, headers={"Authorization": "Basic YWxpY2U6eA=="}),
        401,
        "session token is required",
    )


def test_tampered_token(http, tokens, nothing_stored):
    header, payload, signature = tokens["bob"].split(".")
    claims = _payload(tokens["bob"])
    claims["attrs"]["employeeType"] = "staff"  # bob the student promotes himself
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    refused(http["hpc-a"].post("/v1/jobs", json=QUICK, headers=bearer(forged)), 401, "session token refused", "altered")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    refused(
        http["cloud-b"].post("/v1/jobs", json=QUICK, headers=bearer(f"{header}.{payload}.{flipped}")),
        401,
        "session token refused",
    )
    refused(http["hpc-a"].post("/v1/jobs", json=QUICK, headers=bearer("not-a-token")), 401, "session token refused")


def test_expired_token(consortium, http, nothing_stored):
    issuer = TokenIssuer("hpc-a", consortium.centres["hpc-a"].token_key, ttl=60)
    for name in consortium.centres:  # refused by whichever centre it was made for
        stale = issuer.issue("alice@hpc-a", "hpc-a", {"groups": []}, audience=name, now=int(time.time()) - 3600)
        refused(http[name].post("/v1/jobs", json=QUICK, headers=bearer(stale)), 401, "expired", "log in again")
    # control: the same key and claims, issued now, are accepted (the job lookup gets past the session)
    fresh = issuer.issue("alice@hpc-a", "hpc-a", {"groups": []})
    refused(http["hpc-a"].get("/v1/jobs/nonexistent", headers=bearer(fresh)), 404, "no job nonexistent")


def test_token_of_a_foreign_centre(http, nothing_stored):
    outsider = TokenIssuer("evil-z", generate_key()).issue("mallory@evil-z", "evil-z", {"groups": ["gpu-users"]})
    refused(http["ai-c"].post("/v1/jobs", json=QUICK, headers=bearer(outsider)), 401, "not a member")
    # a foreign key cannot speak for a member centre either
    impostor = TokenIssuer("hpc-a", generate_key()).issue("alice@hpc-a", "hpc-a", {"groups": []})
    refused(http["hpc-a"].post("/v1/jobs", json=QUICK, headers=bearer(impostor)), 401, "does not verify")


def test_centre_may_not_vouch_for_another_centres_user(consortium, http, nothing_stored):
    issuer = TokenIssuer("hpc-a", consortium.centres["hpc-a"].token_key)
    with pytest.raises(ValueError):
        issuer.issue("carol@cloud-b", "cloud-b", {})


# -- jobs --------------------------------------------------------------------------------------


def test_job_over_the_policy_limits(consortium, http, nothing_stored):
    student = dict(QUICK, walltime=7200, centre="cloud-b")  # refused by cloud-b's own policy
    bob = consortium.login("bob", "hpc-a", at="cloud-b")
    body = refused(
        http["cloud-b"].post("/v1/jobs", json=with_payment(consortium, student), headers=bearer(bob)),
        403,
        "cloud-b does not accept this job",
    )
    assert body["reasons"] == ["cloud-b: students may request at most 1 hour of walltime"]
    gpus = dict(QUICK, centre="ai-c", resources={"queue": "gpu", "gpus": 16})
    alice = consortium.login("alice", "hpc-a", at="ai-c")
    refused(
        http["ai-c"].post("/v1/jobs", json=with_payment(consortium, gpus), headers=bearer(alice)),
        403,
        "ai-c does not accept this job",
        "ai-c: no policy permits",
    )
    gpu = dict(QUICK, resources={"queue": "gpu", "gpus": 1})
    for name in consortium.centres:  # carol's project has no GPUs anywhere, and every centre says why
        carol = consortium.login("carol", "cloud-b", at=name)
        job = with_payment(consortium, gpu | {"centre": name}, "cloud-b")
        body = refused(http[name].post("/v1/jobs", json=job, headers=bearer(carol)), 403)
        assert [r.split(":")[0] for r in body["reasons"]] == [name]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"walltime": 10 * 24 * 3600}, ["walltime"]),
        ({"walltime": 0}, ["walltime"]),
        ({"command": []}, ["command"]),
        ({"resources": {"cores": 0}}, ["resources.cores"]),
        ({"resources": {"gpus": 65}}, ["resources.gpus"]),
        ({"shell": "rm -rf /"}, ["shell", "extra"]),
        ({"centre": "HPC A!"}, ["centre"]),
        ({"command": ["", "x"]}, ["command", "must not be empty"]),
        ({"command": ["echo", "a\u0000b"]}, ["command", "NUL"]),
        ({"command": ["echo", "x" * 70_000]}, ["command", "characters"]),
        # strict types: JSON true is no number, "30" no integer, 30.5 no count of seconds
        # (30.0 is 30, as JSON Schema says)
        ({"walltime": True}, ["walltime", "integer"]),
        ({"walltime": "30"}, ["walltime", "integer"]),
        ({"walltime": 30.5}, ["walltime", "integer"]),
        ({"resources": {"cores": True}}, ["resources.cores", "integer"]),
        ({"resources": {"memory_mib": "1024"}}, ["resources.memory_mib", "integer"]),
        ({"resources": {"gpus": False}}, ["resources.gpus", "integer"]),
        ({"command": ["echo", 1]}, ["command", "string"]),
        ({"centre": True}, ["centre", "string"]),
    ],
)
def test_job_outside_the_api_limits(http, tokens, nothing_stored, change, words):
    response = http["hpc-a"].post("/v1/jobs", json=QUICK | change, headers=bearer(tokens["alice"]))
    refused(response, 422, "invalid request", *words)


def test_malformed_json_body(http, tokens, nothing_stored):
    headers = bearer(tokens["alice"]) | {"Content-Type": "application/json"}
    refused(
        http["hpc-a"].post("/v1/jobs", content=b'{"command": ["true"], "walltime": ', headers=headers),
        422,
        "invalid request",
        "json",
    )
    refused(http["hpc-a"].post("/v1/jobs", content=b"[1, 2]", headers=headers), 422, "invalid request")
    refused(
        http["hpc-a"].post(
            "/v1/login", content=b"username=alice&password=alice-pw", headers={"Content-Type": "application/json"}
        ),
        422,
        "invalid request",
        "json",
    )


def test_lone_surrogate_in_the_command(http, tokens, nothing_stored):
    """JSON may escape half a surrogate pair; such text can be neither stored nor exec'd."""
    body = json.dumps(QUICK | {"command": ["echo", "\ud800"]}).encode()  # ASCII, with the escape
    assert b"\\ud800" in body
    headers = bearer(tokens["alice"]) | {"Content-Type": "application/json"}
    for centre in ("hpc-a", "cloud-b"):  # meant for this centre, or misdirected: refused before either
        response = http["hpc-a"].post(
            "/v1/jobs", content=body.replace(b'"hpc-a"', f'"{centre}"'.encode()), headers=headers
        )
        refused(response, 422, "command", "UTF-8")


@pytest.mark.parametrize("path", ["/v1/login", "/v1/auth/present", "/v1/jobs"])
def test_deeply_nested_json_is_refused_without_harm(http, tokens, nothing_stored, path):
    """Nesting deep enough to overflow the parser's stack once crashed the whole gateway process."""
    headers = bearer(tokens["alice"]) | {"Content-Type": "application/json"}
    for depth in (200, 100_000):
        body = b"[" * depth + b"]" * depth
        refused(http["hpc-a"].post(path, content=body, headers=headers), 400, "nested")
    assert http["hpc-a"].get("/v1/auth/request").status_code == 200  # still serving


def test_oversized_body_is_refused(http, tokens, nothing_stored):
    headers = bearer(tokens["alice"]) | {"Content-Type": "application/json"}
    huge = json.dumps(QUICK | {"padding": "x" * (2 << 20)}).encode()
    refused(http["hpc-a"].post("/v1/jobs", content=huge, headers=headers), 413, "too large")

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        yield b'{"command": ["'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"], "walltime": 30}'

    refused(http["hpc-a"].post("/v1/jobs", content=chunks(), headers=headers), 413, "too large")


def test_an_oversized_head_is_refused(http, tokens, nothing_stored):
    """The parser takes a head of any length; the gateway serves none over 64 KiB (a redirect would carry it)."""
    headers = bearer(tokens["alice"]) | {"X-Padding": "x" * (64 * 1024)}
    refused(http["hpc-a"].post("/v1/jobs", json=QUICK, headers=headers), 431, "request head too large")
    padded = {"X-Padding": "x" * 30_000}  # the target and the headers count together
    refused(http["hpc-a"].get("/v1/members?q=" + "q" * 40_000, headers=padded), 431, "request head too large")
    assert http["hpc-a"].get("/v1/members", headers={"X-Padding": "x" * 60_000}).status_code == 200


def test_job_for_an_unknown_centre(consortium, http, tokens, nothing_stored):
    job = with_payment(consortium, QUICK) | {"centre": "nowhere"}
    response = http["hpc-a"].post("/v1/jobs", json=job, headers=bearer(tokens["alice"]))
    refused(response, 421, "unknown centre 'nowhere'", "members are ai-c, cloud-b, hpc-a")  # misdirected: not here


def test_someone_elses_job_is_not_found(consortium, http, tokens, nothing_stored):
    job_id = consortium.store("hpc-a").list_jobs(limit=1)
    job_id = job_id[0].id if job_id else "no-such-job"
    refused(http["hpc-a"].get(f"/v1/jobs/{job_id}", headers=bearer(tokens["bob"])), 404, "no job")


# -- operators ---------------------------------------------------------------------------------


def test_wrong_operator_key(consortium, http, nothing_stored):
    closures = {name: consortium.store(name).closures() for name in consortium.centres}
    refused(http["hpc-a"].post("/v1/epochs/close"), 401, "operator key")
    refused(http["hpc-a"].post("/v1/epochs/close", headers={"X-Operator-Key": "guess"}), 401, "operator key")
    other = consortium.operator_key("cloud-b")  # a centre's key does not open another's epoch
    refused(http["hpc-a"].post("/v1/epochs/close", headers={"X-Operator-Key": other}), 401, "operator key")
    assert {name: consortium.store(name).closures() for name in consortium.centres} == closures


@pytest.mark.parametrize("epoch", [True, False, 1.5, "1", [1], {"n": 1}])
def test_an_epoch_must_be_an_integer(consortium, http, nothing_stored, epoch):
    """JSON true was read as epoch 1: an operator's typo must never close (or name) an epoch."""
    closures = {name: consortium.store(name).closures() for name in consortium.centres}
    response = http["hpc-a"].post(
        "/v1/epochs/close", json={"epoch": epoch}, headers={"X-Operator-Key": consortium.operator_key("hpc-a")}
    )
    refused(response, 422, "invalid request", "epoch")
    assert {name: consortium.store(name).closures() for name in consortium.centres} == closures


# -- audit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        # the OpenAPI declares what a record id and an epoch look like: anything else is a 422
        ("/v1/audit/usage/not-hex", 422, ["invalid request", "record_id", "pattern"]),
        ("/v1/audit/usage/0x12", 422, ["record_id"]),
        ("/v1/audit/usage/0x" + "ab" * 32, 404, ["no usage record"]),
        ("/v1/audit/epochs/0", 422, ["epoch", "greater than or equal to 1"]),
        ("/v1/audit/epochs/0/records", 422, ["epoch", "greater than or equal to 1"]),
        ("/v1/audit/epochs/-1/records", 422, ["epoch", "greater than or equal to 1"]),
        ("/v1/audit/epochs/18446744073709551616", 422, ["epoch", "less than or equal to 9007199254740991"]),
        ("/v1/audit/epochs/99999999999999999999999/records", 422, ["epoch"]),
        ("/v1/audit/epochs/one", 422, ["invalid request", "epoch"]),
        ("/v1/audit/epochs/9223372036854775808", 422, ["epoch", "less than or equal"]),
        ("/v1/audit/epochs/18446744073709551615/records", 422, ["epoch", "less than or equal"]),
    ],
)
def test_bad_audit_queries(consortium, nothing_stored, path, status, words):
    with httpx.Client(base_url=consortium.url("ai-c")) as client:
        refused(client.get(path), status, *words)


# -- idempotency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "x" * 129, "caf\u00e9", "tab\tinside"])
def test_an_unusable_idempotency_key_is_refused_and_starts_nothing(consortium, http, tokens, nothing_stored, key):
    """An empty key was a 500 after the job had started elsewhere: a key must be 1-128 visible ASCII characters."""
    headers = [("Authorization", f"Bearer {tokens['alice']}"), ("Idempotency-Key", key.encode("latin-1"))]
    response = http["hpc-a"].post("/v1/jobs", json=QUICK, headers=headers)
    refused(response, 400, "idempotency-key", "1 to 128")


def test_same_idempotency_key_gives_the_same_job(consortium, http, tokens):
    key = str(uuid.uuid4())
    headers = bearer(tokens["alice"]) | {"Idempotency-Key": key}
    before = consortium.job_count()
    job = with_payment(consortium, QUICK)
    first = http["hpc-a"].post("/v1/jobs", json=job, headers=headers)
    second = http["hpc-a"].post("/v1/jobs", json=job, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert consortium.job_count() == before | {"hpc-a": before["hpc-a"] + 1}
    # the same key with another body is a conflict, and stores nothing
    response = http["hpc-a"].post("/v1/jobs", json=job | {"walltime": 31}, headers=headers)
    refused(response, 409, "idempotency key")
    assert consortium.job_count() == before | {"hpc-a": before["hpc-a"] + 1}
    wait_final(http["hpc-a"], first.json()["id"], tokens["alice"])


def test_a_job_for_another_centre_is_misdirected_and_starts_nothing(consortium, http, tokens):
    key = str(uuid.uuid4())
    headers = bearer(tokens["alice"]) | {"Idempotency-Key": key}
    job = with_payment(consortium, QUICK)
    first = http["hpc-a"].post("/v1/jobs", json=job, headers=headers).json()
    wait_final(http["hpc-a"], first["id"], tokens["alice"])
    before = consortium.job_count()
    response = http["hpc-a"].post("/v1/jobs", json=job | {"centre": "ai-c"}, headers=headers)
    refused(response, 421, "sign on at ai-c", consortium.url("ai-c"))
    assert consortium.job_count() == before
