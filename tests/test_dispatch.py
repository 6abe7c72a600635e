"""Client-side placement: the client signs on at each candidate and submits there itself.

The gateways are an httpx mock transport, so each test decides exactly what every
centre answers. What matters is what the client does next: move on only when the job
certainly did not start at a centre, and never carry one centre's token to another.
"""

from __future__ import annotations

import httpx
import pytest
from eth_account import Account

from gateway.client.dispatch import GrantRefused, NoCentreAccepts, SignOn, submit_anywhere
from gateway.client.http import GatewayRefused, GatewayUnreachable
from gateway.client.paying import job_request
from gateway.client.wallet import PaymentKeys
from ledger.ids import centre_id
from ledger.payment import Order, recover, request_digest
from ledger.primitives.hex import from_hex
from ledger.records import Domain

JOB = {"command": ["true"], "walltime": 30, "resources": {"cores": 1}}
RANKING = ["cloud-b", "hpc-a", "ai-c"]
DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "cd" * 20)


class Consortium:
    """Three mock gateways: `answers[centre]` is what its POST /v1/jobs does (a status, or an exception);
    `quotes[centre]` what its POST /v1/jobs/quote does (a status, or the body of a 200)."""

    def __init__(self, **answers: object) -> None:
        self.answers = answers
        self.quotes: dict[str, object] = {}
        self.quoted: list[tuple[str, str | None, dict]] = []  # (centre, token, body)
        self.submitted: list[tuple[str, str | None, dict]] = []  # (centre, token, body)
        self.entry_urls: dict[str, str] = {}  # what the entry says of a centre's URL, where it lies
        self.home_urls: dict[str, str] = {}  # a URL a member registered on chain, where it is not the usual one
        self.decisions: dict[str, str] = {}  # the decision-log id a centre's policy refusal names

    ranking = RANKING

    def __call__(self, request: httpx.Request) -> httpx.Response:
        centre = request.url.host.split(".")[0]
        if request.url.path == "/v1/members":
            assert centre == "hpc-a", "only the user's home says where members are"
            return httpx.Response(
                200,
                json={
                    "members": [
                        {
                            "centre": c,
                            "gateway_url": self.home_urls.get(c, f"http://{c}.example"),
                            "account": Account.from_key(c.encode().ljust(32, b"k")).address,
                        }
                        for c in sorted(RANKING)
                    ],
                    "domain": {"chain_id": DOMAIN.chain_id, "verifying_contract": DOMAIN.verifying_contract},
                },
            )
        if request.url.path == "/v1/placement":  # the entry ranks everyone; a centre asked itself quotes itself
            ranking = self.ranking if centre == "entry" else [centre]
            return httpx.Response(
                200,
                json={
                    "candidates": [
                        {
                            "centre": c,
                            "gateway_url": self.entry_urls.get(c, f"http://{c}.example"),
                            "max_price": 1000 + i,
                            "free_cpus": 4,
                            "rates_version": 2,
                        }
                        for i, c in enumerate(ranking)
                    ]
                },
            )
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or None
        if request.url.path == "/v1/jobs/quote":  # each centre's own terms, not the entry's
            self.quoted.append((centre, token, httpx.Response(200, content=request.content).json()))
            quote = self.quotes.get(
                centre, {"centre": centre, "rates_version": 3, "max_price": 2000 + RANKING.index(centre)}
            )
            if isinstance(quote, int):
                body = {"error": f"{centre} says {quote}", "reasons": [f"{centre}: no"]}
                if centre in self.decisions:
                    body["decision"] = self.decisions[centre]
                return httpx.Response(quote, json=body)
            return httpx.Response(200, json=quote)
        assert request.url.path == "/v1/jobs"
        self.submitted.append((centre, token, httpx.Response(200, content=request.content).json()))
        answer = self.answers.get(centre, 202)
        if isinstance(answer, Exception):
            raise answer
        if answer == 202:
            return httpx.Response(202, json={"id": f"job-at-{centre}", "status": "queued"})
        return httpx.Response(answer, json={"error": f"{centre} says {answer}", "reasons": [f"{centre}: no"]})


def token_for(client, centre: str) -> None:
    client.token = f"token-for-{centre}"


class Home:
    """The home's grant desk, as the client sees it: what it was asked, and its answer."""

    def __init__(self, answer: Exception | None = None) -> None:
        self.asked: list[dict] = []
        self.answer = answer

    def __call__(self, order: dict, signature: str) -> dict:
        self.asked.append(order)
        if self.answer is not None:
            raise self.answer
        return {"grant": {"order": "granted", "amount": order["max_price"]}, "grant_signature": "0x" + "11" * 65}


def submit(consortium: Consortium, home: Home | None = None, **kw):
    sign_on = SignOn("http://hpc-a.example", token_for, home or Home())
    return submit_anywhere("http://entry.example", JOB, sign_on, transport=httpx.MockTransport(consortium), **kw)


def test_the_best_ranked_centre_that_accepts_runs_the_job_with_its_own_token():
    consortium = Consortium(**{"cloud-b": 403})
    submission = submit(consortium, idempotency_key="k1")
    assert submission.centre == "hpc-a" and submission.view["id"] == "job-at-hpc-a"
    assert [(c, t, b["centre"]) for c, t, b in consortium.submitted] == [
        ("cloud-b", "token-for-cloud-b", "cloud-b"),
        ("hpc-a", "token-for-hpc-a", "hpc-a"),
    ]
    assert submission.client.token == "token-for-hpc-a"


def test_an_unreachable_or_unavailable_centre_is_skipped():
    request = httpx.Request("POST", "http://cloud-b.example/v1/jobs")
    consortium = Consortium(**{"cloud-b": httpx.ConnectError("refused", request=request), "hpc-a": 503})
    assert submit(consortium).centre == "ai-c"


def test_no_answer_after_sending_stops_placement():
    """The centre may have started the job: trying another could run it twice."""
    request = httpx.Request("POST", "http://cloud-b.example/v1/jobs")
    consortium = Consortium(**{"cloud-b": httpx.ReadTimeout("slow", request=request)})
    with pytest.raises(GatewayUnreachable, match="may be running there: retry with the same idempotency key"):
        submit(consortium, idempotency_key="k1")
    assert [c for c, _, _ in consortium.submitted] == ["cloud-b"]


def test_every_refusal_is_reported_with_each_centres_reason():
    with pytest.raises(NoCentreAccepts) as caught:
        submit(Consortium(**{c: 403 for c in RANKING}))
    assert caught.value.status == 403 and caught.value.reasons == [f"{c}: no" for c in RANKING]


def test_unavailability_is_never_a_refusal():
    with pytest.raises(NoCentreAccepts) as caught:
        submit(Consortium(**{"cloud-b": 403, "hpc-a": 503, "ai-c": 403}))
    assert caught.value.status == 503 and "hpc-a: unavailable" in caught.value.reasons[1]


def test_a_bad_request_is_not_offered_elsewhere():
    consortium = Consortium(**{"cloud-b": 422})
    with pytest.raises(GatewayRefused) as caught:
        submit(consortium)
    assert caught.value.status == 422 and len(consortium.submitted) == 1


def test_an_explicit_centre_is_the_only_one_tried():
    consortium = Consortium(**{"ai-c": 403})
    with pytest.raises(NoCentreAccepts):
        submit(consortium, centre="ai-c")
    assert [c for c, _, _ in consortium.submitted] == ["ai-c"]


def test_an_unknown_centre_is_refused_with_the_members_named():
    with pytest.raises(ValueError, match="unknown centre 'nowhere'; members are ai-c, cloud-b, hpc-a"):
        submit(Consortium(), centre="nowhere")


def test_members_are_reached_where_home_says_whatever_the_entry_lists():
    """A hostile entry lists its own server as hpc-a's, leaves ai-c out and adds a centre that is no member:
    the client goes to hpc-a's real gateway, still tries ai-c, and never the stranger."""
    consortium = Consortium(**{"cloud-b": 403, "hpc-a": 403})
    consortium.ranking = ["cloud-b", "hpc-a", "stranger"]
    consortium.entry_urls = {"hpc-a": "http://evil.example", "stranger": "http://evil.example"}
    submission = submit(consortium)
    assert submission.centre == "ai-c"
    assert [c for c, _, _ in consortium.submitted] == ["cloud-b", "hpc-a", "ai-c"]


def test_a_member_whose_registered_url_is_unusable_is_skipped():
    """A member registers a gateway URL no HTTP client accepts: placement goes on to the next centre."""
    consortium = Consortium()
    consortium.home_urls = {"cloud-b": "http://\x00"}
    submission = submit(consortium)
    assert submission.centre == "hpc-a"


# -- paying -----------------------------------------------------------------------------------------


def test_each_centre_gets_an_order_for_it_from_a_fresh_account_and_its_homes_grant():
    consortium = Consortium(**{"cloud-b": 403})
    home, keys = Home(), PaymentKeys()
    submission = submit(consortium, home, keys=keys)
    signers = []
    for centre, _, body in consortium.submitted:
        order = Order.from_dict(body["order"])
        assert order.centre == centre_id(centre) and order.rates_version == 3
        assert order.request == request_digest(job_request(JOB, centre))  # the request as the centre stores it
        assert order.max_price == 2000 + RANKING.index(centre)  # that centre's own quote, not the entry's ranking
        assert body["grant"] == {"order": "granted", "amount": order.max_price}
        signers.append(recover(order, DOMAIN, from_hex(body["order_signature"])))
    assert len(set(signers)) == 2  # one account per order: the centres cannot link them
    assert [o["centre"] for o in home.asked] == ["0x" + centre_id(c).hex() for c in ("cloud-b", "hpc-a")]
    # the key of the refused order is dropped; the accepted one's is kept for the receipt
    assert list(keys.open()) == [submission.paid.account] == [signers[1]]
    assert keys.open()[signers[1]]["job"] == "job-at-hpc-a"


def test_each_centre_is_asked_for_its_quote_signed_on_there_before_home_grants_anything():
    consortium, home = Consortium(), Home()
    submission = submit(consortium, home)
    assert [(c, t, b) for c, t, b in consortium.quoted] == [
        ("cloud-b", "token-for-cloud-b", JOB | {"centre": "cloud-b"})
    ]
    assert len(home.asked) == 1 and submission.paid.order.max_price == 2000


@pytest.mark.parametrize("status", [403, 503])
def test_a_centre_that_refuses_at_the_quote_costs_no_grant(status):
    """Refused by its policy (403) or unable to price (503) at the quote: home is not asked, no key is made."""
    consortium, home, keys = Consortium(), Home(), PaymentKeys()
    consortium.quotes = {"cloud-b": status}
    submission = submit(consortium, home, keys=keys)
    assert submission.centre == "hpc-a"
    assert [c for c, _, _ in consortium.quoted] == ["cloud-b", "hpc-a"]
    assert [c for c, _, _ in consortium.submitted] == ["hpc-a"]
    assert [o["centre"] for o in home.asked] == ["0x" + centre_id("hpc-a").hex()]
    assert list(keys.open()) == [submission.paid.account]


def test_a_policy_refusal_keeps_the_id_of_its_decision_entry():
    """The id is the user's proof of the refusal: GET /v1/decisions/{id} at the centre gives it with its proof."""
    consortium, home = Consortium(), Home()
    consortium.quotes = {c: 403 for c in RANKING}
    consortium.decisions = {"cloud-b": "0x" + "ab" * 16}
    with pytest.raises(NoCentreAccepts) as caught:
        submit(consortium, home)
    assert caught.value.decisions == {"cloud-b": "0x" + "ab" * 16}
    assert caught.value.decision == "0x" + "ab" * 16
    assert f"cloud-b: decision 0x{'ab' * 16} records this refusal in its log" in caught.value.reasons


def test_every_refusal_at_the_quote_is_reported_and_nothing_granted():
    consortium, home = Consortium(), Home()
    consortium.quotes = {c: 403 for c in RANKING}
    with pytest.raises(NoCentreAccepts) as caught:
        submit(consortium, home)
    assert caught.value.status == 403 and caught.value.reasons == [f"{c}: no" for c in RANKING]
    assert home.asked == [] and consortium.submitted == []


@pytest.mark.parametrize(
    "answer",
    [
        {"centre": "hpc-a", "rates_version": 3, "max_price": 5},  # another centre's name
        {"centre": "cloud-b", "rates_version": "3", "max_price": 5},
        {"centre": "cloud-b", "rates_version": 3, "max_price": -1},
        {"centre": "cloud-b", "rates_version": 3},
    ],
)
def test_an_answer_that_is_not_the_centres_quote_signs_no_order(answer):
    consortium, home = Consortium(), Home()
    consortium.quotes = {"cloud-b": answer}
    submission = submit(consortium, home)
    assert submission.centre == "hpc-a" and len(home.asked) == 1


def test_a_centre_the_entry_left_out_quotes_for_itself():
    consortium = Consortium(**{"cloud-b": 403, "hpc-a": 403})
    consortium.ranking = ["cloud-b", "hpc-a"]
    submission = submit(consortium)
    assert submission.centre == "ai-c" and submission.paid.order.max_price == 2002


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (GatewayRefused(402, "over the project's budget", ["allocation: 5"]), 402),
        (GatewayUnreachable("home is down"), 503),
    ],
)
def test_a_grant_refused_at_home_submits_nothing_anywhere(answer, status):
    consortium, keys = Consortium(), PaymentKeys()
    with pytest.raises(GrantRefused) as caught:
        submit(consortium, Home(answer), keys=keys)
    assert caught.value.status == status and "your home did not" in caught.value.error
    assert consortium.submitted == [] and keys.open() == {}
