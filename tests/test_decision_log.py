"""Every access decision on the record, over HTTP on the real consortium (slapd per centre, anvil).

A run of the demo's flow in an epoch of its own, every quote and submission it makes
recorded on the wire: each allow and each deny has its entry in the serving centre's
decision log, durable before the answer; a refusal keeps its reasons and names its
entry; an entry is fetched by its id with a proof against the root the centre anchored;
the whole log goes, page by page, to the centre's auditors only (a signature bound to the
epoch, fresh); a job's usage record names its entry.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import httpx
import pytest
from eth_account import Account

from auth.policy import CedarRequest, Decision
from gateway.api.schemas import AUDIT_PAGE, AUDIT_SIGNATURE_HEADER
from gateway.client.dispatch import NoCentreAccepts, finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, GatewayRefused, audit_headers
from gateway.client.paying import job_request
from gateway.client.wallet import PaymentKeys
from gateway.node.decisions import DecisionLog
from gateway.node.errors import Invalid, Unauthenticated
from gateway.store import NewDecision, Store
from ledger.decisions import entry_digest, log_root, new_entry, verify_entry
from ledger.ids import centre_id
from ledger.payment import request_digest
from ledger.primitives.hex import from_hex, to_hex
from tests.fixtures.consortium import PASSWORDS

POLICY_PATHS = ("/v1/jobs/quote", "/v1/jobs")
STUDENT_REASON = "hpc-a: students may request at most 1 hour of walltime"


def job(centre: str, walltime: int = 60, **resources: object) -> dict:
    return {
        "command": ["python3", "-c", "print(6 * 7)"],
        "walltime": walltime,
        "centre": centre,
        "resources": resources,
    }


#: A share of the demo's story (gateway/demo/story.py, tests/test_gateway_flow.py): name -> (user, home, entry, job)
SCENARIO = {
    "explicit": ("alice", "hpc-a", "hpc-a", job("cloud-b")),
    "gpu": ("alice", "hpc-a", "hpc-a", job("auto", queue="gpu", gpus=1)),  # the CPU centres deny it first
    "cloud-user-on-hpc": ("carol", "cloud-b", "cloud-b", job("hpc-a")),
    "student": ("bob", "hpc-a", "hpc-a", job("auto", walltime=7200)),  # every centre denies it
}


@dataclass(frozen=True)
class Answer:
    centre: str
    path: str
    request: dict
    status: int
    body: dict


class Recording(httpx.BaseTransport):
    """The client's wire: every answer to a quote or a submission, as the client got it."""

    def __init__(self, centres: dict[int, str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.centres = centres  # port -> centre
        self.answers: list[Answer] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path in POLICY_PATHS:
            body = json.loads(response.read())
            asked = json.loads(request.content)
            self.answers.append(
                Answer(self.centres[request.url.port], request.url.path, asked, response.status_code, body)
            )
        return response

    def close(self) -> None:  # shared by every client of the run; closed once, at its end
        pass


@dataclass
class Run:
    epoch: int
    answers: list[Answer]
    logged: dict[str, list] = field(default_factory=dict)
    """Each centre's decision log of the epoch right after the run (later tests add to it)."""
    views: dict[str, dict] = field(default_factory=dict)
    refusals: dict[str, GatewayRefused] = field(default_factory=dict)
    orders: dict[str, bytes] = field(default_factory=dict)
    """The request digest each job's order signed."""


@pytest.fixture(scope="module")
def run(consortium) -> Run:
    """The scenario, in an epoch of its own, every job finished (receipted), the epoch still open."""
    if any(consortium.store(n).decisions_for_epoch(e) for n, e in consortium.open_epochs().items()):
        consortium.close_epoch_everywhere()  # start from an empty log: exact counts below
    (epoch,) = set(consortium.open_epochs().values())
    recording = Recording({int(consortium.url(n).rsplit(":", 1)[1]): n for n in consortium.centres})
    result = Run(epoch=epoch, answers=recording.answers)
    keys = PaymentKeys()
    submissions = {}
    try:
        for name, (user, home, entry, scenario_job) in SCENARIO.items():
            body = dict(scenario_job)
            centre = body.pop("centre")
            with GatewayClient(consortium.url(home)) as session:
                session.login(user, PASSWORDS[user])
                try:
                    submissions[name] = submit_anywhere(
                        consortium.url(entry),
                        body,
                        with_home_session(session),
                        centre=centre,
                        keys=keys,
                        transport=recording,
                    )
                except GatewayRefused as refusal:
                    result.refusals[name] = refusal
        for name, submission in submissions.items():
            with submission.client:
                result.views[name] = finish(submission, keys).view
                result.orders[name] = submission.paid.order.request
    finally:
        recording.inner.close()
    result.logged = {n: consortium.store(n).decisions_for_epoch(epoch) for n in consortium.centres}
    return result


@pytest.fixture(scope="module")
def closed(run, consortium) -> Run:
    """The run's epoch closed and anchored at every centre, then settled (so later modules' anchors fit)."""
    consortium.close_epoch_everywhere()
    consortium.wait_settled(run.epoch)
    return run


def client(consortium, name: str, token: str | None = None) -> GatewayClient:
    return GatewayClient(consortium.url(name), token)


# -- every decision is on the record -------------------------------------------------------------


def test_every_allow_and_deny_of_the_run_has_its_entry(run, consortium):
    evaluated = [a for a in run.answers if a.status in (200, 202, 403)]
    assert len(evaluated) == len(run.answers), [(a.status, a.body) for a in run.answers]  # nothing else refused
    for name in consortium.centres:
        answered = [a for a in evaluated if a.centre == name]
        logged = run.logged[name]
        assert len(logged) == len(answered), name  # one entry per evaluation: no more, no fewer
        ids = {"0x" + d.id: d for d in logged}
        for answer in answered:
            entry = ids[answer.body["decision"]].entry  # every answer names its own entry
            assert entry["centre"] == name
            assert entry["kind"] == ("quote" if answer.path == "/v1/jobs/quote" else "submit")
            assert entry["decision"] == ("deny" if answer.status == 403 else "allow")
            assert ids[answer.body["decision"]].allowed == (answer.status != 403)
    # the scenario's shape: 4 jobs, 3 of them run (a quote and a submission each), and 5 denies:
    # the GPU job at the two CPU centres, the student's 2-hour job at all three
    allows = [a for a in evaluated if a.status != 403]
    denies = [a for a in evaluated if a.status == 403]
    assert (len(allows), len(denies)) == (6, 5)
    assert sorted(a.path for a in allows) == sorted(["/v1/jobs/quote", "/v1/jobs"] * 3)


def test_a_refusal_keeps_its_reasons_and_names_its_entry(run, consortium):
    refusal = run.refusals["student"]
    assert isinstance(refusal, NoCentreAccepts) and refusal.status == 403
    assert STUDENT_REASON in refusal.reasons
    (at_hpc,) = [a for a in run.answers if a.centre == "hpc-a" and a.request["walltime"] == 7200]
    assert at_hpc.status == 403
    assert at_hpc.body["reasons"] == [STUDENT_REASON]
    assert "does not accept this job" in at_hpc.body["error"]
    with client(consortium, "hpc-a") as c:
        shown = c.decision(at_hpc.body["decision"])
    entry = shown["entry"]
    assert (entry["decision"], entry["kind"], entry["policies"]) == ("deny", "quote", ["student-walltime"])
    assert entry["principal"]["id"] == "bob@hpc-a"
    assert entry["principal"]["attrs"]["employee_type"] == "student"
    assert entry["context"]["walltime"] == 7200
    assert entry["request"] == to_hex(request_digest(job_request(job("hpc-a", walltime=7200), "hpc-a")))
    assert shown["closed"] is False and shown["proof"] is None and shown["anchored"] is False
    assert shown["digest"] == to_hex(entry_digest(entry))


def test_quotes_and_jobs_name_their_entries(run, consortium):
    view = run.views["cloud-user-on-hpc"]
    assert view["status"] == "succeeded" and view["decision"]
    with client(consortium, "hpc-a") as c:
        entry = c.decision(view["decision"])["entry"]
    assert (entry["decision"], entry["kind"]) == ("allow", "submit")
    assert entry["principal"]["id"] == "carol@cloud-b"
    assert entry["request"] == to_hex(run.orders["cloud-user-on-hpc"])  # the request the order signed
    quotes = [a for a in run.answers if a.path == "/v1/jobs/quote" and a.status == 200 and a.centre == "hpc-a"]
    assert len(quotes) == 1 and quotes[0].body["decision"] != view["decision"]


def test_the_usage_record_names_the_entry_that_admitted_the_job(run, consortium):
    for name, view in run.views.items():
        serving = view["serving_centre"]
        with client(consortium, serving) as c:
            shown = c.decision(view["decision"])
        assert shown["entry"]["decision"] == "allow" and shown["entry"]["request"] == to_hex(run.orders[name])
        assert view["record"]["data"]["decision"] == shown["digest"] == to_hex(entry_digest(shown["entry"]))


def test_a_denied_request_stores_its_entry_and_nothing_else(run, consortium):
    hpc = consortium.centres["hpc-a"].node.parts
    token = consortium.login("bob", "hpc-a")
    before = (hpc.store.decisions_for_epoch(run.epoch), consortium.job_count(), hpc.payer.book.holds_of("bob@hpc-a"))
    long_job = job("hpc-a", walltime=7200)
    submission = long_job | {  # the policy is asked before anything is paid for: these are never looked at
        "order": {},
        "order_signature": "0x" + "11" * 65,
        "grant": {},
        "grant_signature": "0x" + "22" * 65,
    }
    answer = httpx.post(
        consortium.url("hpc-a") + "/v1/jobs", json=submission, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["reasons"] == [STUDENT_REASON] and body["decision"].startswith("0x")
    logged = hpc.store.decisions_for_epoch(run.epoch)
    (new,) = logged[len(before[0]) :]
    assert "0x" + new.id == body["decision"] and not new.allowed and new.entry["kind"] == "submit"
    assert consortium.job_count() == before[1]  # no job anywhere
    assert hpc.payer.book.holds_of("bob@hpc-a") == before[2]  # no hold at home


def test_a_submission_refused_after_the_policy_allowed_it_keeps_its_allow(run, consortium):
    hpc = consortium.centres["hpc-a"].node.parts
    token = consortium.login("alice", "hpc-a")
    before = (len(hpc.store.decisions_for_epoch(run.epoch)), consortium.job_count())
    submission = job("hpc-a") | {
        "order": {},  # malformed: refused (400) after the policy allowed the job
        "order_signature": "0x" + "11" * 65,
        "grant": {},
        "grant_signature": "0x" + "22" * 65,
    }
    answer = httpx.post(
        consortium.url("hpc-a") + "/v1/jobs", json=submission, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code == 400 and "order is malformed" in answer.json()["error"]
    (new,) = hpc.store.decisions_for_epoch(run.epoch)[before[0] :]
    assert new.allowed and new.entry["kind"] == "submit" and new.entry["principal"]["id"] == "alice@hpc-a"
    assert consortium.job_count() == before[1]


def test_an_unknown_or_malformed_decision_id_is_refused(consortium):
    with client(consortium, "hpc-a") as c:
        with pytest.raises(GatewayRefused) as unknown:
            c.decision("0x" + "ab" * 16)
        assert unknown.value.status == 404 and "no decision" in unknown.value.error
        with pytest.raises(GatewayRefused) as malformed:
            c.decision("0x" + "ab" * 32)
        assert malformed.value.status == 422


def test_the_log_of_an_open_epoch_is_not_given_out(run, consortium):
    with client(consortium, "hpc-a") as c, pytest.raises(GatewayRefused) as refused:
        c.audit_decisions(consortium.store("hpc-a").open_epoch(), consortium.auditor, "hpc-a")
    assert refused.value.status == 409 and "not closed" in refused.value.error


# -- committed on chain, checked by anyone ----------------------------------------------------------


def test_an_entry_comes_with_its_proof_against_the_anchored_root(closed, consortium):
    for name in consortium.centres:
        anchor = consortium.centres[name].node.parts.index.anchor(centre_id(name), closed.epoch)
        logged = consortium.store(name).decisions_for_epoch(closed.epoch)
        assert anchor.decision_count == len(logged) > 0
        assert anchor.decision_root == log_root(d.digest_bytes for d in logged)
        with client(consortium, name) as c:
            for stored in logged:
                shown = c.decision("0x" + stored.id)
                assert shown["closed"] and shown["anchored"] and shown["epoch"] == closed.epoch
                assert shown["root"] == shown["anchored_root"] == to_hex(anchor.decision_root)
                proof = [from_hex(h) for h in shown["proof"]]
                assert verify_entry(anchor.decision_root, shown["entry"], proof)
                # the proof vouches for this entry only: a decision rewritten afterwards fails it
                flipped = shown["entry"] | {"decision": "allow" if shown["entry"]["decision"] == "deny" else "deny"}
                assert not verify_entry(anchor.decision_root, flipped, proof)


def test_a_closure_and_the_audit_view_show_the_decision_log(closed, consortium):
    name = "cloud-b"
    anchor = consortium.centres[name].node.parts.index.anchor(centre_id(name), closed.epoch)
    with client(consortium, name) as c:
        closure = c.close_epoch(consortium.operator_key(name), closed.epoch)  # a retry answers the closure
        view = c.audit_epoch(closed.epoch)
    assert closure["decision_root"] == to_hex(anchor.decision_root)
    assert closure["decision_count"] == anchor.decision_count
    assert view["anchors"][name]["decision_root"] == to_hex(anchor.decision_root)
    assert view["anchors"][name]["decision_count"] == anchor.decision_count


def test_an_auditor_reads_a_centres_whole_log_of_a_closed_epoch(closed, consortium):
    with client(consortium, "hpc-a") as c:
        log = c.audit_decisions(closed.epoch, consortium.auditor, "hpc-a")
    stored = consortium.store("hpc-a").decisions_for_epoch(closed.epoch)
    assert (log["centre"], log["epoch"], log["count"]) == ("hpc-a", closed.epoch, len(stored))
    assert log["entries"] == [d.entry for d in stored]  # in the order stored
    anchor = consortium.centres["hpc-a"].node.parts.index.anchor(centre_id("hpc-a"), closed.epoch)
    assert log["root"] == to_hex(anchor.decision_root) == to_hex(log_root(entry_digest(e) for e in log["entries"]))


def test_the_whole_log_comes_in_pages(closed, consortium):
    stored = consortium.store("hpc-a").decisions_for_epoch(closed.epoch)
    assert len(stored) >= 3  # enough for pages of 2 to need several
    with client(consortium, "hpc-a") as c:
        paged = c.audit_decisions(closed.epoch, consortium.auditor, "hpc-a", page=2)
        first = c.audit_decisions_page(closed.epoch, consortium.auditor, "hpc-a", limit=2)
        last = c.audit_decisions_page(closed.epoch, consortium.auditor, "hpc-a", after=stored[-2].seq)
        beyond = c.audit_decisions_page(closed.epoch, consortium.auditor, "hpc-a", after=stored[-1].seq)
    assert paged["entries"] == [d.entry for d in stored] and paged["count"] == len(stored)
    assert first["entries"] == [stored[0].entry, stored[1].entry] and first["next"] == stored[1].seq
    assert first["count"] == len(stored)  # every page names the whole log's root and count
    assert last["entries"] == [stored[-1].entry] and last["next"] is None
    assert beyond["entries"] == [] and beyond["next"] is None


@pytest.mark.parametrize(
    ("query", "said"),
    [("limit=0", "limit"), (f"limit={AUDIT_PAGE + 1}", "limit"), ("after=-1", "after"), ("after=x", "after")],
)
def test_a_page_out_of_bounds_is_refused(closed, consortium, query, said):
    epoch = closed.epoch
    answer = httpx.get(
        f"{consortium.url('hpc-a')}/v1/audit/decisions/{epoch}?{query}",
        headers=audit_headers(consortium.auditor, "hpc-a", epoch),
        timeout=30,
    )
    assert answer.status_code == 422 and said in answer.text and "entries" not in answer.json()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "yesterday:0x" + "00" * 65,
        "outsider",  # a valid signature of a key no member or auditor holds
        "member",  # an active member's, not one of hpc-a's auditors
        "stale",  # the auditor's, signed ten minutes ago
        "future",  # the auditor's, signed for a minute ahead
        "elsewhere",  # the auditor's, for another centre's log
        "other epoch",  # the auditor's, for the epoch before
        "garbled",  # the auditor's, one byte changed
    ],
)
def test_the_whole_log_is_refused_without_a_fresh_signature_of_an_auditor(closed, consortium, header):
    auditor, epoch = consortium.auditor, closed.epoch
    headers = {
        None: {},
        "outsider": audit_headers(Account.create(), "hpc-a", epoch),
        "member": audit_headers(consortium.centres["cloud-b"].account, "hpc-a", epoch),
        "stale": audit_headers(auditor, "hpc-a", epoch, at=int(time.time()) - 600),
        "future": audit_headers(auditor, "hpc-a", epoch, at=int(time.time()) + 60),
        "elsewhere": audit_headers(auditor, "ai-c", epoch),
        "other epoch": audit_headers(auditor, "hpc-a", epoch - 1),
        "garbled": {
            k: v[:-4] + ("00" if v[-4:-2] != "00" else "11") + v[-2:]
            for k, v in audit_headers(auditor, "hpc-a", epoch).items()
        },
    }.get(header, {AUDIT_SIGNATURE_HEADER: header})
    answer = httpx.get(f"{consortium.url('hpc-a')}/v1/audit/decisions/{epoch}", headers=headers, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "entries" not in answer.json()


def test_a_centres_auditors_read_its_log(closed, consortium):
    """`auditors` of the configuration: accounts that are no member's, let in by this centre alone."""
    parts = consortium.centres["hpc-a"].node.parts
    auditor = Account.create()
    (signature,) = audit_headers(auditor, "hpc-a", closed.epoch).values()
    with pytest.raises(Unauthenticated):
        parts.decision_log.audit(closed.epoch, signature)  # not an auditor of this gateway
    audited = DecisionLog("hpc-a", parts.store, parts.index, auditors=[auditor.address])
    assert audited.audit(closed.epoch, signature)["count"] == len(parts.store.decisions_for_epoch(closed.epoch))


# -- the audit signature: bound to one epoch, fresh, on a store of its own ---------------------------

NOW = 1_764_650_000


class NoMembers:
    """Index double: no anchors, no members (the auditors of the configuration are the only readers)."""

    def anchor(self, centre: bytes, epoch: int) -> None:
        return None

    def member_by_account(self, account: str) -> None:
        return None


@pytest.fixture
def two_epochs(tmp_path):
    """A store with two closed epochs of 3 and 2 entries, and a DecisionLog with one auditor at a fixed clock."""
    store = Store(tmp_path / "gw.sqlite")
    for epoch, n in ((1, 3), (2, 2)):
        for i in range(n):
            store.log_decision(NewDecision.of(an_entry(epoch * 100 + i)))
        store.close_epoch(epoch, {})
    auditor = Account.create()
    yield DecisionLog("hpc-a", store, NoMembers(), auditors=[auditor.address], clock=lambda: NOW), auditor
    store.close()


def an_entry(n: int) -> dict:
    cedar = CedarRequest(f"u{n}", {"home": "hpc-a"}, (), "submit", "cpu", {"centre": "hpc-a"}, {"walltime": 60})
    request = hashlib.sha256(b"r%d" % n).digest()
    return new_entry(
        centre="hpc-a",
        time=NOW + n,
        kind="quote",
        request=request,
        cedar=cedar,
        decision=Decision(True, [], ["p"]),
        policy_version=1,
        policy_hash=hashlib.sha256(b"policy").digest(),
    )


def header(auditor, epoch: int, at: int = NOW) -> str:
    return audit_headers(auditor, "hpc-a", epoch, at=at)[AUDIT_SIGNATURE_HEADER]


def test_an_audit_signature_opens_the_epoch_it_names_only(two_epochs):
    log, auditor = two_epochs
    assert log.audit(1, header(auditor, 1))["count"] == 3
    with pytest.raises(Unauthenticated, match="not a signature of 'xcentre-audit:hpc-a:2:"):
        log.audit(2, header(auditor, 1))
    assert log.audit(2, header(auditor, 2))["count"] == 2


@pytest.mark.parametrize(("ahead", "good"), [(-300, True), (-301, False), (30, True), (31, False), (300, False)])
def test_an_audit_signature_is_good_300_s_after_and_30_s_before_its_time(two_epochs, ahead, good):
    log, auditor = two_epochs
    signature = header(auditor, 1, at=NOW + ahead)
    if good:
        assert log.audit(1, signature)["count"] == 3
    else:
        with pytest.raises(Unauthenticated, match="sign again"):
            log.audit(1, signature)


def test_pages_follow_each_other_to_the_whole_log(two_epochs):
    log, auditor = two_epochs
    whole = [d.entry for d in log.store.decisions_for_epoch(1)]
    pages, after = [], 0
    while after is not None:
        page = log.audit(1, header(auditor, 1), after=after, limit=1)
        assert (page["count"], page["root"]) == (3, to_hex(log.store.closure(1).decision_root))
        pages.append(page["entries"])
        after = page["next"]
    assert pages == [[e] for e in whole]
    assert log.audit(2, header(auditor, 2), limit=AUDIT_PAGE)["next"] is None
    for limit in (0, AUDIT_PAGE + 1):
        with pytest.raises(Invalid, match="limit"):
            log.audit(1, header(auditor, 1), limit=limit)
