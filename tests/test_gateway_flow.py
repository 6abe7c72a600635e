"""The walking skeleton over HTTP on real parts: slapd per centre, anvil, three gateways.

One module-scoped scenario (the demo's story) signs people on at home, runs their
jobs across centres, closes the epoch at every centre and settles it; the tests
then check each step's outcome, the books on chain and the auditor's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from eth_utils import to_canonical_address

from gateway.books.auditor import audit_epoch
from gateway.client.dispatch import SignOn, finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.paying import Result
from gateway.client.wallet import PaymentKeys, Wallet
from ledger.deploy import bind
from ledger.ids import centre_id
from ledger.netting import net_positions, transfers
from ledger.records import UsageRecord, domain_for, record_digest, recover_signer
from tests.fixtures.consortium import PASSWORDS, eventually

BURN = "import sys; print(sum(i * i for i in range(int(sys.argv[1]))))"


def job(centre: str, n: int = 200_000, walltime: int = 60, **resources: object) -> dict:
    return {"command": ["python3", "-c", BURN, str(n)], "walltime": walltime, "centre": centre, "resources": resources}


#: name -> (user, home, gateway used, job)
SCENARIO = {
    "explicit": ("alice", "hpc-a", "hpc-a", job("cloud-b")),
    "gpu": ("alice", "hpc-a", "hpc-a", job("auto", queue="gpu", gpus=1)),
    "other-gateway": ("alice", "hpc-a", "cloud-b", job("auto")),
    "cloud-user-on-hpc": ("carol", "cloud-b", "cloud-b", job("hpc-a")),
    "auto": ("dave", "ai-c", "ai-c", job("auto")),
    "student": ("bob", "hpc-a", "hpc-a", job("hpc-a", n=1000, walltime=7200)),
    # signed on at hpc-a with a presentation of dave's BBS credential from ai-c, not a password token
    "presented": ("dave", "ai-c", "hpc-a", job("auto")),
}
PRESENTED = {"presented"}


@dataclass
class Flow:
    epoch: int
    sessions: dict[str, dict]
    presented: dict[str, dict] = field(default_factory=dict)
    views: dict[str, dict] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)
    refusals: dict[str, GatewayRefused] = field(default_factory=dict)
    closures: list[dict] = field(default_factory=list)
    jobs_before: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)
    """The payment account each job's order was signed with."""


def every_cpu_free(consortium) -> None:
    """Wait until no job holds a CPU at any centre: placement ranks by free capacity before price, and these
    tests assert the price order (an earlier job of the story still running would take its centre's room)."""

    def idle() -> bool:
        for name in consortium.centres:
            with GatewayClient(consortium.url(name)) as client:
                capacity = client.capacity()
            if capacity["free_cpus"] != capacity["total_cpus"]:
                return False
        return True

    eventually(idle, within=60)


@pytest.fixture(scope="module")
def flow(consortium) -> Flow:
    """Run the whole story once, in an epoch of its own, and close that epoch everywhere.

    Each job goes through client-side placement: the gateway named in SCENARIO ranks the
    centres, and the client signs on at each candidate itself (a token exchanged at home,
    or a fresh presentation from the wallet) and submits there, paid by an order its
    home grants; then it gives the receipt for the record and opens the outputs.
    """
    if any(consortium.store(n).records_for_epoch(e) for n, e in consortium.open_epochs().items()):
        consortium.close_epoch_everywhere()  # start from an empty epoch: exact counts below
    (epoch,) = set(consortium.open_epochs().values())
    homes: dict[str, GatewayClient] = {}
    sessions = {}
    for user, home, *_ in SCENARIO.values():
        if user not in homes:
            homes[user] = GatewayClient(consortium.url(home))
            sessions[user] = homes[user].login(user, PASSWORDS[user])
    result = Flow(epoch=epoch, sessions=sessions, jobs_before=consortium.job_count())
    keys = PaymentKeys()
    submitted = {}
    for name, (user, home, gateway, scenario_body) in SCENARIO.items():
        body = dict(scenario_body)
        centre = body.pop("centre")
        if name in PRESENTED:
            with GatewayClient(consortium.url(home)) as client:
                wallet = Wallet.from_issuance(consortium.url(home), client.credential(user, PASSWORDS[user]))

            def present(client: GatewayClient, centre: str, name: str = name, wallet: Wallet = wallet) -> None:
                result.presented[name] = client.sign_on(wallet, centre)

            sign_on = SignOn(consortium.url(home), present, homes[user].grant)
        else:
            sign_on = with_home_session(homes[user])
        if centre == "auto":
            every_cpu_free(consortium)
        try:
            submitted[name] = submit_anywhere(consortium.url(gateway), body, sign_on, centre=centre, keys=keys)
        except GatewayRefused as refusal:
            result.refusals[name] = refusal
    for home in homes.values():
        home.close()
    for name, submission in submitted.items():
        with submission.client:
            result.accounts[name] = submission.paid.account
            result.results[name] = finish(submission, keys)
            result.views[name] = result.results[name].view
    result.closures = consortium.close_epoch_everywhere()
    consortium.wait_settled(epoch)  # the gateways settle it once its dispute and answer windows passed
    return result


# -- sign-on -----------------------------------------------------------------------------


def test_each_user_signs_on_once_at_home(flow):
    homes = {user: home for user, home, *_ in SCENARIO.values()}
    for user, session in flow.sessions.items():
        assert session["principal"] == f"{user}@{homes[user]}"
        assert session["home"] == homes[user]
        assert session["token"].count(".") == 2


# -- jobs across centres -------------------------------------------------------------------


def test_explicit_target_runs_there(flow, consortium):
    view = flow.views["explicit"]
    assert view["status"] == "succeeded" and view["exit_code"] == 0
    assert view["serving_centre"] == "cloud-b" and view["principal"] == "alice@hpc-a"
    assert view["usage"]["epoch"] == flow.epoch
    assert view["usage"]["price"] > 0
    assert view["stdout_tail"] is None  # sealed: opened by the client with the key its receipt released
    assert flow.results["explicit"].stdout.strip().isdigit()
    # the serving centre holds the job and its record; the gateway that ranked the centres holds nothing
    served = consortium.store("cloud-b").get_job(view["id"])
    assert served.principal == "alice@hpc-a" and served.home == "hpc-a" and served.record_id
    assert consortium.store("hpc-a").get_job(view["id"]) is None


def test_gpu_job_is_placed_by_policy_on_the_gpu_centre(flow):
    run = flow.views["gpu"]
    # cheaper CPU-only centres come first in the ranking but their policies refuse a GPU job
    assert run["serving_centre"] == "ai-c"
    assert run["status"] == "succeeded"
    assert run["usage"]["price"] > 0


def test_placement_asked_at_another_gateway(flow):
    view = flow.views["other-gateway"]
    # ranked by cloud-b, the cheapest CPU centre: alice's home exchanged her session for cloud-b
    assert view["serving_centre"] == "cloud-b"
    assert view["principal"] == "alice@hpc-a"
    assert view["status"] == "succeeded"


def test_explicit_target_from_another_home(flow):
    run = flow.views["cloud-user-on-hpc"]
    assert run["serving_centre"] == "hpc-a" and run["principal"] == "carol@cloud-b"
    assert run["status"] == "succeeded"


def test_auto_placement_picks_the_cheapest_centre(flow):
    view = flow.views["auto"]
    assert view["serving_centre"] == "cloud-b"
    assert view["status"] == "succeeded"


def test_presented_credential_signs_on_at_another_centre(flow, consortium):
    session = flow.presented["presented"]
    # a pseudonym of the home centre, never the uid; only what the serving centre asks for is disclosed
    assert session["home"] == "ai-c" and session["principal"].endswith("@ai-c")
    assert "dave" not in session["principal"]
    requested = set(consortium.spec.centre("cloud-b").signon_attributes)  # where it signed on: the cheapest
    assert requested <= set(session["disclosed"])
    assert not {"holder_secret", "department", "pseudonym"} & set(session["disclosed"])
    view = flow.views["presented"]
    assert view["principal"] == session["principal"]
    assert view["serving_centre"] == "cloud-b" and view["status"] == "succeeded"


def test_student_job_is_denied_with_the_policy_reason(flow, consortium):
    refusal = flow.refusals["student"]
    assert refusal.status == 403
    assert "no member centre accepts this job" in refusal.error
    assert refusal.reasons == [
        "hpc-a: students may request at most 1 hour of walltime",
        f"hpc-a: decision {refusal.decision} records this refusal in its log",
    ]
    stored = consortium.store("hpc-a").decision(refusal.decision)  # the user's proof of it, and all that is stored
    assert (
        stored is not None and stored.entry["decision"] == "deny" and stored.entry["policies"] == ["student-walltime"]
    )
    assert "student" not in flow.views
    for name in consortium.centres:
        assert not consortium.store(name).list_jobs(principal="bob@hpc-a", limit=10000)


def test_every_job_was_stored_once_where_it_ran(flow, consortium):
    """A job row where it ran, nowhere else; none for refusals."""
    expected = {name: 0 for name in consortium.centres}
    for view in flow.views.values():
        expected[view["serving_centre"]] += 1
    after = consortium.job_count()
    assert {name: after[name] - flow.jobs_before[name] for name in after} == expected


# -- epoch close, anchoring, settlement ------------------------------------------------------


def test_epoch_is_closed_anchored_and_settled_at_every_centre(flow, consortium):
    assert [c["centre"] for c in flow.closures] == list(consortium.centres)
    assert {c["epoch"] for c in flow.closures} == {flow.epoch}
    assert all(c["anchored"] for c in flow.closures)
    # closing opens the dispute window: nobody is paid at the moment the last centre anchors
    assert not any(c["settled"] for c in flow.closures)
    for name in consortium.centres:  # then every centre sees it settled, once both windows passed
        with GatewayClient(consortium.url(name)) as client:
            assert client.audit_epoch(flow.epoch)["settled"]
    served = {}
    for view in flow.views.values():
        centre = view["serving_centre"]
        served[centre] = served.get(centre, 0) + 1
    assert {c["centre"]: c["record_count"] for c in flow.closures} == {n: served.get(n, 0) for n in consortium.centres}
    assert set(consortium.open_epochs().values()) == {flow.epoch + 1}


def test_claims_are_what_each_home_centre_owes(flow):
    owed: dict[str, dict[str, int]] = {}
    for view in flow.views.values():
        home = view["principal"].split("@")[1]
        if home != view["serving_centre"]:
            claims = owed.setdefault(view["serving_centre"], {})
            claims[home] = claims.get(home, 0) + view["usage"]["price"]
    assert {c["centre"]: c["claims"] for c in flow.closures} == {
        c["centre"]: owed.get(c["centre"], {}) for c in flow.closures
    }


def test_audit_view_shows_roots_counts_claims_and_net_positions(flow, consortium):
    closures = {c["centre"]: c for c in flow.closures}
    views = []
    for name in consortium.centres:
        with GatewayClient(consortium.url(name)) as client:
            views.append(client.audit_epoch(flow.epoch))
    assert all(v == views[0] for v in views), "every gateway reports the same books"
    view = views[0]
    assert view["epoch"] == flow.epoch and view["settled"]
    assert set(view["anchors"]) == set(consortium.centres)
    for name, anchor in view["anchors"].items():
        assert {h: c["root"] for h, c in anchor["homes"].items()} == {
            h: c["root"] for h, c in closures[name]["homes"].items()
        }
        assert anchor["record_count"] == closures[name]["record_count"]
        assert anchor["claims"] == closures[name]["claims"]
        assert anchor["tx"].startswith("0x")
    net = view["net_positions"]
    assert set(net) == set(consortium.centres)
    assert sum(net.values()) == 0
    assert any(net.values()), "cross-centre jobs leave someone owing"
    assert len(view["transfers"]) <= len(consortium.centres) - 1
    assert all(t["amount"] > 0 for t in view["transfers"])
    # the net positions and transfers are exactly the netting of the anchored claims
    ids = [centre_id(n) for n in consortium.centres]
    claims = {
        (centre_id(c), centre_id(d)): a for c, anchor in view["anchors"].items() for d, a in anchor["claims"].items()
    }
    expected = net_positions(claims, ids)
    assert {n: expected[centre_id(n)] for n in consortium.centres} == net
    paid = {n: 0 for n in consortium.centres}
    for t in view["transfers"]:
        paid[t["from"]] -= t["amount"]
        paid[t["to"]] += t["amount"]
    assert paid == net
    assert len(transfers(expected, ids)) == len(view["transfers"])


def test_settlement_is_on_chain(flow, consortium):
    contracts = bind(consortium.chain, consortium.deployment)
    assert contracts.settlement.functions.settled(flow.epoch).call()
    with GatewayClient(consortium.url("hpc-a")) as client:
        net = client.audit_epoch(flow.epoch)["net_positions"]
    (settled,) = contracts.settlement.events.EpochSettled.get_logs(
        from_block=consortium.deployment.start_block, argument_filters={"epoch": flow.epoch}
    )
    on_chain = dict(zip(settled.args.centres, settled.args.net, strict=True))
    assert on_chain == {centre_id(name): position for name, position in net.items()}


# -- proofs and audit -----------------------------------------------------------------------


def test_usage_record_proof_is_accepted_by_the_contract(flow, consortium):
    contracts = bind(consortium.chain, consortium.deployment)
    domain = domain_for(consortium.deployment)
    checked = 0
    for name, run in flow.views.items():
        serving = run["serving_centre"]
        with GatewayClient(consortium.url(serving)) as client:
            proof = client.usage(run["record_id"])
        assert proof["epoch"] == flow.epoch and proof["anchored"]
        record = UsageRecord.from_json(proof["record"])
        assert record.serving_centre == centre_id(serving)
        # the order's fresh payment account, never a hash of the principal (guessable, the same for every job)
        assert record.user == to_canonical_address(flow.accounts[name]).rjust(32, b"\x00")
        assert record.price == run["usage"]["price"]
        digest = bytes.fromhex(proof["digest"][2:])
        assert record_digest(record, domain) == digest
        signature = bytes.fromhex(proof["signature"][2:])
        assert recover_signer(record, domain, signature) == consortium.centres[serving].account.address
        path = [bytes.fromhex(h[2:]) for h in proof["proof"]["hashes"]], proof["proof"]["sums"]
        verify = contracts.usage_ledger.functions.verifyRecord
        home, index = record.home_centre, proof["index"]
        assert verify(centre_id(serving), flow.epoch, home, index, digest, record.price, *path).call() is True
        # the same proof does not vouch for an altered record, another epoch or another centre
        forged = record_digest(UsageRecord.from_json(proof["record"] | {"price": record.price - 1}), domain)
        assert verify(centre_id(serving), flow.epoch, home, index, forged, record.price - 1, *path).call() is False
        assert verify(centre_id(serving), flow.epoch + 1, home, index, digest, record.price, *path).call() is False
        other = next(n for n in consortium.centres if n != serving)
        assert verify(centre_id(other), flow.epoch, home, index, digest, record.price, *path).call() is False
        checked += 1
    assert checked == len(flow.views) == 6


def test_unknown_usage_record_is_404(consortium):
    with GatewayClient(consortium.url("hpc-a")) as client, pytest.raises(GatewayRefused) as refused:
        client.usage("0x" + "ab" * 32)
    assert refused.value.status == 404
    assert "no usage record" in refused.value.error


def test_auditor_verifies_the_epoch_against_the_chain(flow, consortium):
    report = audit_epoch(consortium.chain, consortium.deployment, flow.epoch)
    assert report.findings == []
    assert report.ok
    assert report.settled
    assert sum(t.records for t in report.totals.values()) == len(flow.views)
