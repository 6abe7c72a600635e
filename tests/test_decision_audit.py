"""Auditing a centre's decision log: the anchored root and count, the policy texts, the version in
force at each decision, every decision decided again, and the usage records' entries."""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import replace
from pathlib import Path

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth.policy import CedarRequest, PolicyEngine, Subject
from ledger.decision_audit import DecisionAudit, Finding, audit_decisions
from ledger.decisions import entry_digest, log_root, new_entry
from ledger.ids import centre_id
from ledger.policies import PolicyVersion
from ledger.records import UsageRecord

DATA = Path(__file__).resolve().parents[1] / "gateway" / "demo" / "data"
V1 = (DATA / "cloud-b.cedar").read_text()
# Version 2 lifts the walltime limit for students.
V2 = V1.replace("context.walltime > 3600", "context.walltime > 7200")
ENGINES = {1: PolicyEngine(V1), 2: PolicyEngine(V2)}
PUBLISHED = {1: 1_000_000, 2: 1_010_000}
VERSIONS = [PolicyVersion("cloud-b", v, ENGINES[v].policy_hash, bytes(32), PUBLISHED[v]) for v in sorted(ENGINES)]
TEXTS = {1: (V1, None), 2: (V2, None)}

STUDENT = Subject("1111111111111111@hpc-a", "hpc-a", {"employee_type": "student"}, ["physics@hpc-a"])
STAFF = Subject("2222222222222222@ai-c", "ai-c", {"employee_type": "staff"}, [])
CPU = {"queue": "cpu", "centre": "cloud-b", "gpu_type": None, "data_class": "public"}
RESTRICTED = dict(CPU, data_class="restricted")
GPU = {"queue": "gpu", "centre": "cloud-b", "gpu_type": "a100", "data_class": "public"}


def context(walltime: int, at: int = PUBLISHED[1] + 100) -> dict:
    """A job's context as the gateway makes it at time `at`: the hour is `at`'s (UTC)."""
    return {"walltime": walltime, "cores": 2, "memory_mib": 2048, "gpus": 0, "hour": time.gmtime(at).tm_hour}


def entry(subject: Subject, resource: dict, walltime: int, at: int, version: int = 1, kind: str = "submit") -> dict:
    engine = ENGINES[version]
    cedar = engine.request(subject, "submit", resource, context(walltime, at))
    return new_entry(
        centre="cloud-b",
        time=at,
        kind=kind,
        request=keccak(f"{subject.principal}{resource}{walltime}{at}".encode()),
        cedar=cedar,
        decision=engine.decide_request(cedar),
        policy_version=version,
        policy_hash=engine.policy_hash,
    )


def clean_log() -> list[dict]:
    t1, t2 = PUBLISHED[1] + 100, PUBLISHED[2] + 100
    return [
        entry(STAFF, CPU, 600, t1, kind="quote"),
        entry(STAFF, CPU, 600, t1 + 1),  # allow
        entry(STUDENT, CPU, 5400, t1 + 2),  # deny: student-walltime (v1)
        entry(STAFF, RESTRICTED, 600, t1 + 3),  # deny: no-restricted-data
        entry(STAFF, GPU, 600, t1 + 4),  # deny: nothing permits GPUs here
        entry(STUDENT, CPU, 5400, t2, version=2),  # allow under v2
        entry(STUDENT, CPU, 9000, t2 + 1, version=2),  # deny under v2
    ]


def record(decision: bytes, n: int = 1) -> UsageRecord:
    return UsageRecord(
        record_id=keccak(b"record%d" % n),
        job_id=keccak(b"job%d" % n),
        serving_centre=centre_id("cloud-b"),
        home_centre=centre_id("ai-c"),
        user=bytes(12) + bytes.fromhex("11" * 20),
        epoch=3,
        started_at=PUBLISHED[1] + 200,
        ended_at=PUBLISHED[1] + 260,
        cpu_millis=1000,
        wall_millis=60000,
        max_rss_kib=1024,
        gpu_millis=0,
        rates_version=1,
        price=5,
        order=keccak(b"order"),
        grant=keccak(b"grant"),
        lock_hash=keccak(b"lock"),
        decision=decision,
    )


def audit(entries: list[dict], anchored: list[dict] | None = None, **kw) -> DecisionAudit:
    """Audit `entries` against the root and count of `anchored` (by default: what the centre served)."""
    anchored = entries if anchored is None else anchored
    root = log_root(entry_digest(e) for e in anchored)
    return audit_decisions(entries, root, len(anchored), kw.pop("versions", VERSIONS), kw.pop("texts", TEXTS), **kw)


def kinds(result: DecisionAudit) -> list[str]:
    return [f.kind for f in result.findings]


def test_a_clean_log_passes_with_its_figures():
    log = clean_log()
    allowed = log[1]
    result = audit(log, records=[record(entry_digest(allowed))])
    assert result.ok, result.findings
    assert result.findings == ()
    assert (result.entries, result.allows, result.denies, result.reevaluated) == (7, 3, 4, 7)
    assert result.seconds >= 0


def test_an_empty_log_passes_against_a_zero_anchor():
    result = audit_decisions([], bytes(32), 0, VERSIONS, TEXTS)
    assert result.ok and result.entries == 0


def test_a_tampered_entry_fails_the_root():
    served = clean_log()
    anchored = copy.deepcopy(served)
    served[2]["context"]["walltime"] = 1800  # rewrite a refusal's request after the fact
    served[2]["decision"], served[2]["policies"] = "allow", ["cpu-for-members"]
    result = audit(served, anchored)
    assert kinds(result) == ["root"]
    assert "anchored" in result.findings[0].message
    assert not result.ok


def test_a_dropped_entry_fails_count_and_root():
    anchored = clean_log()
    served = anchored[:3] + anchored[4:]
    result = audit(served, anchored)
    assert kinds(result) == ["root", "count"]
    assert "6 entries" in result.findings[1].message and "7" in result.findings[1].message


def test_an_allow_the_policy_denies_is_reported():
    log = clean_log()
    cheat = log[3]  # restricted data on shared nodes: the policy forbids it
    cheat["decision"], cheat["policies"] = "allow", ["cpu-for-members"]
    result = audit(log)  # the centre anchored the log it served: the root matches
    assert kinds(result) == ["decision"]
    finding = result.findings[0]
    assert finding.id == cheat["id"]
    assert "logged allow" in finding.message and "denies" in finding.message
    assert "no-restricted-data" in finding.message


def test_a_deny_the_policy_allows_is_reported():
    log = clean_log()
    refused = log[1]
    refused["decision"], refused["policies"] = "deny", ["student-walltime"]
    result = audit(log)
    assert kinds(result) == ["decision"]
    assert result.findings[0].id == refused["id"]
    assert "logged deny" in result.findings[0].message and "allows" in result.findings[0].message


def test_other_determining_policies_are_reported():
    log = clean_log()
    log[2]["policies"] = ["no-restricted-data"]  # right decision, wrong reason
    result = audit(log)
    assert kinds(result) == ["decision"]
    assert "student-walltime" in result.findings[0].message


def test_an_entry_under_a_superseded_version_is_reported():
    late = PUBLISHED[2] + 61  # version 2 in force for over a minute, entry still under version 1
    log = [*clean_log(), entry(STAFF, CPU, 600, late, version=1)]
    result = audit(log, grace=60)
    assert kinds(result) == ["version"]
    assert result.findings[0].id == log[-1]["id"]
    assert "version 2" in result.findings[0].message
    # Within the grace (a gateway picks a new version up at its next round), it stands.
    assert audit([*clean_log(), entry(STAFF, CPU, 600, PUBLISHED[2] + 59, version=1)], grace=60).ok


def test_an_entry_before_its_version_was_published_is_reported():
    log = [entry(STAFF, CPU, 600, PUBLISHED[2] - 61, version=2)]
    result = audit(log, grace=60)
    assert kinds(result) == ["version"]
    assert "before" in result.findings[0].message
    assert audit([entry(STAFF, CPU, 600, PUBLISHED[2] - 59, version=2)], grace=60).ok


def test_an_entry_naming_an_unpublished_version_or_another_hash_is_reported():
    log = clean_log()
    log[0]["policy_version"] = 3
    log[1]["policy_hash"] = "0x" + "ab" * 32
    result = audit(log)
    assert kinds(result) == ["version", "version"]
    assert "never published" in result.findings[0].message
    assert "hash" in result.findings[1].message
    assert result.reevaluated == 5


def test_a_text_that_is_not_the_published_one_is_reported():
    texts = {1: (V1 + "\n// edited\n", None), 2: TEXTS[2]}
    result = audit(clean_log(), texts=texts)
    assert kinds(result) == ["text"]
    assert result.findings[0].id == "version 1"
    assert "sha256" in result.findings[0].message
    assert result.reevaluated == 2  # version 1's entries cannot be decided again
    missing = audit(clean_log(), texts={1: TEXTS[1]})
    assert kinds(missing) == ["text"] and "no text" in missing.findings[0].message
    schema = audit(clean_log(), texts={1: (V1, "entity User;"), 2: TEXTS[2]})
    assert kinds(schema) == ["text"] and "schema" in schema.findings[0].message


def test_a_text_the_engine_refuses_is_reported():
    bad = "permit(principal,"
    versions = [VERSIONS[0], replace(VERSIONS[1], policy_hash=hashlib.sha256(bad.encode()).digest())]
    result = audit(clean_log()[:5], versions=versions, texts={1: TEXTS[1], 2: (bad, None)})
    assert kinds(result) == ["text"]
    assert "Cedar" in result.findings[0].message


def test_records_must_name_an_allow_entry_of_the_log():
    log = clean_log()
    deny = entry_digest(log[2])
    quote = entry_digest(log[0])
    earlier = entry(STAFF, CPU, 600, PUBLISHED[1] + 50)  # an allow of an earlier epoch's log
    records = [record(entry_digest(log[1]), 1), record(deny, 2), record(quote, 3), record(entry_digest(earlier), 4)]
    result = audit(log, records=records)
    assert kinds(result) == ["record", "record"]
    assert [f.id for f in result.findings] == ["0x" + records[1].record_id.hex(), "0x" + records[2].record_id.hex()]
    assert "deny" in result.findings[0].message
    assert "quote" in result.findings[1].message
    # A digest absent from this log is reported only against the entries of earlier epochs the caller found.
    assert kinds(audit(log, records=records[3:], earlier_entries=[earlier])) == []
    absent = audit(log, records=records[3:], earlier_entries=[])
    assert kinds(absent) == ["record"] and "not in this log" in absent.findings[0].message


def test_a_malformed_entry_is_reported_not_raised():
    log = clean_log()
    log[4]["principal"]["attrs"]["x"] = 1.5
    log[5] = "not an entry"
    result = audit(log)
    assert kinds(result) == ["decision", "decision"]
    assert "x" in result.findings[0].message
    assert result.findings[1].id == "#6"
    assert result.reevaluated == 5


def test_findings_are_plain_data():
    finding = Finding("root", "", "the log's root is not the anchored one")
    assert finding.kind == "root"
    with pytest.raises(AttributeError):
        finding.kind = "count"  # type: ignore[misc]


# --- re-evaluation agrees with one-by-one decisions ---------------------------------------

ids = st.sampled_from([f"{i:016x}@{h}" for i in range(4) for h in ("hpc-a", "ai-c")])
attrs = st.fixed_dictionaries(
    {},
    optional={
        "employee_type": st.sampled_from(["student", "staff", "faculty"]),
        "clearance": st.integers(0, 5),
        "department": st.sampled_from(["physics", "chemistry"]),
        "home": st.sampled_from(["hpc-a", "ai-c"]),
    },
)
groups = st.lists(st.sampled_from(["gpu-users", "ml-project@hpc-a", "physics@hpc-a"]), unique=True).map(
    lambda g: tuple(sorted(g))
)
queues = st.sampled_from(["cpu", "gpu", "bigmem"])
resource_attrs = st.fixed_dictionaries(
    {"centre": st.sampled_from(["ai-c", "cloud-b"])},
    optional={"data_class": st.sampled_from(["public", "internal", "restricted"]), "gpu_type": st.just("a100")},
)
number = st.integers(0, 20_000)
contexts = st.fixed_dictionaries(
    {"cores": st.integers(1, 64), "hour": st.integers(0, 23)},
    # walltime or gpus missing, or of the wrong type, makes a policy error: an errored forbid denies
    optional={"walltime": number | st.just("long"), "gpus": st.integers(0, 16) | st.booleans()},
)
requests = st.builds(
    CedarRequest,
    principal=ids,
    attrs=attrs,
    groups=groups,
    action=st.sampled_from(["submit", "submit", "submit", "cancel"]),
    queue=queues,
    resource_attrs=resource_attrs,
    context=contexts,
)
DEMO = {p.stem: PolicyEngine(p.read_text()) for p in sorted(DATA.glob("*.cedar"))}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(requests, min_size=50, max_size=200), policy=st.sampled_from(sorted(DEMO)))
def test_reevaluate_agrees_with_decide_request(batch, policy):
    engine = DEMO[policy]
    again = engine.reevaluate(batch)
    one_by_one = [engine.decide_request(r) for r in batch]
    assert [(d.allowed, d.policies) for d in again] == [(d.allowed, d.policies) for d in one_by_one]


# --- what the gateway fixes itself, records bound to their allow, the anchor's time ---------


@pytest.mark.parametrize(
    "part, mutate",
    [
        ("context.hour", lambda e: e["context"].update(hour=(e["context"]["hour"] + 1) % 24)),
        ("context.hour", lambda e: e["context"].pop("hour")),
        ("action", lambda e: e.update(action="cancel")),
        ("resource.attrs.centre", lambda e: e["resource"]["attrs"].update(centre="hpc-a")),
        ("resource.attrs.centre", lambda e: e["resource"]["attrs"].pop("centre")),
        ("principal.attrs.principal", lambda e: e["principal"]["attrs"].update(principal="3333333333333333@ai-c")),
        ("principal.attrs.home", lambda e: e["principal"]["attrs"].pop("home")),
        ("principal.attrs.home", lambda e: e["principal"]["attrs"].update(home="hpc-a")),  # the id's home is ai-c
        ("principal.groups", lambda e: e["principal"].update(groups=["ml-project@hpc-a"])),  # an ai-c user's
    ],
)
def test_a_request_the_gateway_never_makes_is_reported(part, mutate):
    """The gateway sets the action, its own name, the principal's id and home, the home of its groups and the
    hour of the entry's time itself: an entry saying otherwise is not a request it decided."""
    log = clean_log()
    forged = log[1]
    mutate(forged)
    result = audit(log)
    assert {f.id for f in result.findings} == {forged["id"]}
    assert any(f.kind == "decision" and part in f.message for f in result.findings), result.findings


def test_an_entry_of_another_centre_is_reported():
    assert audit(clean_log(), centre="cloud-b").ok
    result = audit(clean_log(), centre="hpc-a")
    assert kinds(result) == ["decision"] * 7
    assert "cloud-b" in result.findings[0].message and "hpc-a" in result.findings[0].message


def test_records_are_bound_to_their_allow_of_this_log_or_an_earlier_one():
    """One allow admits one job, of its principal's home, started after it (within the grace: the nodes'
    clocks are not the gateway's); allows of earlier epochs that records name are held to the same."""
    log = clean_log()
    earlier = entry(STAFF, CPU, 600, PUBLISHED[1] + 50)  # an allow of an earlier epoch's log
    for allow, earlier_entries in ((log[1], None), (earlier, [earlier])):
        fine = record(entry_digest(allow), 1)
        assert audit(log, records=[fine], earlier_entries=earlier_entries).ok
        started = replace(fine, started_at=allow["time"] - 60)
        assert audit(log, records=[started], earlier_entries=earlier_entries, grace=60).ok
        cases = {
            "already named by usage record": [fine, record(entry_digest(allow), 2)],
            "home": [replace(fine, home_centre=centre_id("hpc-a"))],
            "before": [replace(fine, started_at=allow["time"] - 61)],
        }
        for words, records in cases.items():
            result = audit(log, records=records, earlier_entries=earlier_entries, grace=60)
            assert kinds(result) == ["record"], (words, result.findings)
            assert result.findings[0].id == "0x" + records[-1].record_id.hex()
            assert words in result.findings[0].message and allow["id"] in result.findings[0].message


def test_an_earlier_entry_that_is_no_allow_admits_nothing():
    deny = entry(STUDENT, CPU, 5400, PUBLISHED[1] + 50)
    assert deny["decision"] == "deny"
    result = audit(clean_log(), records=[record(entry_digest(deny))], earlier_entries=[deny, "not an entry"])
    assert kinds(result) == ["record"] and "deny" in result.findings[0].message


def test_an_entry_dated_after_the_anchor_is_reported():
    """A log is anchored after its epoch's close: an entry dated later was not decided before it was committed."""
    log = clean_log()
    last = max(e["time"] for e in log)
    assert audit(log, anchored_at=last - 60, grace=60).ok
    result = audit(log, anchored_at=last - 61, grace=60)
    assert kinds(result) == ["time"]
    assert result.findings[0].id == log[-1]["id"] and "after" in result.findings[0].message
