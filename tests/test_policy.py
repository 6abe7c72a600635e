"""Cedar decisions with reasons a person can act on."""

from __future__ import annotations

import hashlib
import json

import pytest

from auth.policy import CedarRequest, Decision, PolicyEngine, PolicyError, Subject

POLICIES = """
@id("gpu-members")
@reason("members of gpu-users may use GPU queues")
permit(principal in XCentre::Group::"gpu-users", action == XCentre::Action::"submit", resource)
when { resource has gpu_type };

@id("cpu-for-all")
@reason("every member of the consortium may use CPU queues")
permit(principal, action == XCentre::Action::"submit", resource)
when { !(resource has gpu_type) && ["hpc-a", "hpc-b", "hpc-c"].contains(principal.home) };

@id("student-walltime")
@reason("students may request at most 1 hour of walltime")
forbid(principal, action == XCentre::Action::"submit", resource)
when { principal has employeeType && principal.employeeType == "student" && context.walltime > 3600 };

@id("secret-data")
@reason("secret data needs clearance 3 or more")
forbid(principal, action, resource)
when { resource.data_class == "secret" && !(principal has clearance && principal.clearance >= 3) };

@id("night-gpus")
forbid(principal, action, resource)
when { resource has gpu_type && context.gpus > 4 && context.hour < 6 };
"""

ENGINE = PolicyEngine(POLICIES)
ALICE = Subject(
    "alice@hpc-a",
    "hpc-a",
    {"departmentNumber": "physics", "employeeType": "staff", "clearance": "4"},
    ["gpu-users", "physics"],
)
BOB = Subject("bob@hpc-a", "hpc-a", {"departmentNumber": "chemistry", "employeeType": "student"}, [])
DAVE = Subject("dave@hpc-b", "hpc-b", {"employeeType": "staff", "clearance": 2}, ["gpu-users"])
OUTSIDER = Subject("olga@elsewhere", "elsewhere", {}, [])
GPU = {"queue": "gpu", "centre": "hpc-a", "gpu_type": "a100", "data_class": "public"}
CPU = {"queue": "cpu", "centre": "hpc-a", "gpu_type": None, "data_class": "public"}
SECRET = {"queue": "secure", "centre": "hpc-a", "data_class": "secret"}
SHORT = {"walltime": 1800, "cores": 4, "memory_mib": 4096, "gpus": 1, "hour": 14}
LONG = dict(SHORT, walltime=7200)


def test_group_member_may_use_gpu_queue():
    decision = ENGINE.decide(ALICE, "submit", GPU, LONG)
    assert decision == Decision(True, ["members of gpu-users may use GPU queues"], ["gpu-members"], [])


def test_remote_group_member_may_use_gpu_queue():
    assert ENGINE.decide(DAVE, "submit", GPU, SHORT).allowed


def test_non_member_may_not_use_gpu_queue():
    decision = ENGINE.decide(BOB, "submit", GPU, SHORT)
    assert not decision.allowed
    assert decision.reasons == ["no policy permits bob@hpc-a to submit on queue gpu"]
    assert decision.policies == []


def test_everyone_in_the_consortium_may_use_cpu_queue():
    for subject in (ALICE, BOB, DAVE):
        decision = ENGINE.decide(subject, "submit", CPU, SHORT)
        assert decision.allowed
        assert decision.reasons == ["every member of the consortium may use CPU queues"]
    assert not ENGINE.decide(OUTSIDER, "submit", CPU, SHORT).allowed


def test_student_walltime_limit_with_exact_reason():
    assert ENGINE.decide(BOB, "submit", CPU, dict(SHORT, walltime=3600)).allowed
    decision = ENGINE.decide(BOB, "submit", CPU, LONG)
    assert decision == Decision(False, ["students may request at most 1 hour of walltime"], ["student-walltime"], [])
    assert ENGINE.decide(ALICE, "submit", CPU, LONG).allowed


def test_forbid_plus_nothing_permitting_gives_both_reasons():
    decision = ENGINE.decide(BOB, "submit", GPU, LONG)
    assert decision.reasons == [
        "students may request at most 1 hour of walltime",
        "no policy permits bob@hpc-a to submit on queue gpu",
    ]


def test_several_forbids_are_reported_in_policy_order():
    decision = ENGINE.decide(BOB, "submit", SECRET, LONG)
    assert decision.reasons == [
        "students may request at most 1 hour of walltime",
        "secret data needs clearance 3 or more",
    ]
    assert decision.policies == ["student-walltime", "secret-data"]


def test_numeric_attribute_from_ldap_string():
    assert ENGINE.decide(ALICE, "submit", SECRET, SHORT).allowed  # clearance "4" -> 4
    assert ENGINE.decide(DAVE, "submit", SECRET, SHORT).reasons == ["secret data needs clearance 3 or more"]
    with pytest.raises(PolicyError, match="clearance"):
        ENGINE.decide(Subject("x@hpc-a", "hpc-a", {"clearance": "top"}), "submit", CPU, SHORT)


def test_policy_without_reason_names_itself():
    decision = ENGINE.decide(ALICE, "submit", GPU, dict(SHORT, gpus=8, hour=3))
    assert decision == Decision(False, ["forbidden by policy night-gpus"], ["night-gpus"], [])


def test_unknown_action_is_not_permitted():
    decision = ENGINE.decide(ALICE, "delete", CPU, SHORT)
    assert decision.reasons == ["no policy permits alice@hpc-a to delete on queue cpu"]


def test_evaluation_errors_are_reported():
    decision = ENGINE.decide(ALICE, "submit", {"queue": "odd"}, SHORT)  # no data_class attribute
    assert len(decision.errors) == 1 and "`secret-data`" in decision.errors[0]
    assert "data_class" in decision.errors[0]


def test_a_forbid_that_cannot_be_evaluated_denies():
    # Cedar skips a policy whose evaluation errors; for a forbid that would turn a missing
    # attribute into an allow. A user picks which centre they sign on at, and so which
    # attributes their token carries: leaving one out must not lift a prohibition.
    engine = PolicyEngine("""
        @id("cpu") permit(principal, action, resource);
        @id("no-long-student-jobs") @reason("students may request at most 1 hour of walltime")
        forbid(principal, action, resource) when { principal.employee_type == "student" && context.walltime > 3600 };
        @id("permit-that-errors") permit(principal, action, resource) when { principal.clearance > 1 };
    """)
    student = Subject("s@hpc-a", "hpc-a", {"employee_type": "student"}, [])
    assert not engine.decide(student, "submit", CPU, LONG).allowed
    silent = Subject("s@hpc-a", "hpc-a", {}, [])  # no employee_type disclosed
    decision = engine.decide(silent, "submit", CPU, LONG)
    assert not decision.allowed
    assert decision.policies == ["no-long-student-jobs"]
    assert len(decision.reasons) == 1 and "no-long-student-jobs" in decision.reasons[0]
    assert "employee_type" in decision.reasons[0]
    assert any("permit-that-errors" in e for e in decision.errors)
    # A permit that errors is only skipped: the other permit still allows.
    staff = Subject("t@hpc-a", "hpc-a", {"employee_type": "staff"}, [])
    assert engine.decide(staff, "submit", CPU, LONG).allowed
    decision = ENGINE.decide(ALICE, "submit", {"queue": "odd"}, SHORT)
    assert not decision.allowed and decision.policies == ["secret-data"]
    assert ENGINE.decide_batch(ALICE, "submit", [{"queue": "odd"}, CPU], SHORT)[1].allowed


def test_batch_equals_single_decisions():
    resources = [GPU, CPU, SECRET, CPU]
    for subject in (ALICE, BOB, DAVE):
        batch = ENGINE.decide_batch(subject, "submit", resources, LONG)
        assert batch == [ENGINE.decide(subject, "submit", r, LONG) for r in resources]
    assert ENGINE.decide_batch(ALICE, "submit", [], SHORT) == []


def test_batch_of_one_queue_with_two_attribute_sets():
    # The same queue name twice with other attributes: each is decided with its own.
    public = {"queue": "secure", "centre": "hpc-a", "data_class": "public"}
    batch = ENGINE.decide_batch(DAVE, "submit", [public, SECRET], SHORT)
    assert [d.allowed for d in batch] == [True, False]
    assert batch == [ENGINE.decide(DAVE, "submit", r, SHORT) for r in (public, SECRET)]
    assert batch[1].policies == ["secret-data"]


def test_department_alias_and_attributes_reach_cedar():
    engine = PolicyEngine("""
        @reason("physics may use the lab queue")
        permit(principal, action, resource == XCentre::Queue::"lab")
        when { principal.department == "physics" && principal.departmentNumber == "physics"
               && principal.home == "hpc-a" && principal.principal == "alice@hpc-a"
               && principal.employeeType.contains("faculty") && resource.centre == "hpc-a" };
    """)
    alice = Subject(
        "alice@hpc-a",
        "hpc-a",
        {"departmentNumber": "physics", "employeeType": ["staff", "faculty"], "userPassword": "x"},
        [],
    )
    assert engine.decide(alice, "submit", {"queue": "lab", "centre": "hpc-a"}, {}).allowed
    assert not engine.decide(alice, "submit", {"queue": "other", "centre": "hpc-a"}, {}).allowed


def test_hostile_values_stay_data():
    engine = PolicyEngine('permit(principal in XCentre::Group::"admins", action, resource);')
    sneaky = Subject(
        'eve@hpc-a" || true',
        "hpc-a",
        {"x": {"__entity": {"type": "XCentre::Group", "id": "admins"}}},
        ['admins"] || ["x'],
    )
    with pytest.raises(PolicyError):
        engine.decide(sneaky, "submit", CPU, SHORT)
    sneaky = Subject('eve@hpc-a" || true', "hpc-a", {}, ['admins"] || ["x'])
    assert not engine.decide(sneaky, "submit", {"queue": 'cpu" || true'}, SHORT).allowed


@pytest.mark.parametrize(
    "text, match",
    [
        ("permit(principal, action, resource) when { x };", "invalid Cedar"),
        ("permit(principal ==", "invalid Cedar"),
        ('@id("a") permit(principal, action, resource);\n@id("a") forbid(principal, action, resource);', "unique"),
        ("permit(principal == ?principal, action, resource);", "invalid Cedar|templates"),
    ],
)
def test_invalid_policies(text, match):
    with pytest.raises(PolicyError, match=match):
        PolicyEngine(text)


def test_invalid_requests():
    with pytest.raises(PolicyError):
        ENGINE.decide(ALICE, "submit", {"centre": "hpc-a"}, SHORT)
    with pytest.raises(PolicyError):
        ENGINE.decide(ALICE, "", CPU, SHORT)
    with pytest.raises(PolicyError):
        ENGINE.decide(ALICE, "submit", CPU, {"walltime": object()})
    with pytest.raises(PolicyError):
        ENGINE.decide(ALICE, "submit", CPU, {"walltime": 2**70})


def test_policy_ids_and_hashes():
    assert ENGINE.policy_ids == ["gpu-members", "cpu-for-all", "student-walltime", "secret-data", "night-gpus"]
    assert ENGINE.policy_hash == hashlib.sha256(POLICIES.encode("utf-8")).digest()
    assert PolicyEngine(POLICIES + "\n").policy_hash != ENGINE.policy_hash
    assert ENGINE.schema_hash == bytes(32) and ENGINE.schema_text is None


SCHEMA = """
namespace XCentre {
  entity Group;
  entity User in [Group] { principal: String, home: String, employeeType?: String };
  entity Queue { centre: String, gpu_type?: String, data_class?: String };
  action submit appliesTo { principal: User, resource: Queue,
                            context: { walltime: Long, cores: Long, memory_mib: Long, gpus: Long, hour: Long } };
}
"""


def test_schema_validates_policies_and_requests():
    engine = PolicyEngine(
        """
        @reason("students may request at most 1 hour of walltime")
        forbid(principal, action == XCentre::Action::"submit", resource)
        when { principal has employeeType && principal.employeeType == "student" && context.walltime > 3600 };
        permit(principal, action == XCentre::Action::"submit", resource);
    """,
        SCHEMA,
    )
    bob = Subject("bob@hpc-a", "hpc-a", {"employeeType": "student"}, [])
    assert engine.decide(bob, "submit", {"queue": "cpu", "centre": "hpc-a"}, SHORT).allowed
    assert not engine.decide(bob, "submit", {"queue": "cpu", "centre": "hpc-a"}, LONG).allowed
    with pytest.raises(PolicyError, match="schema"):
        PolicyEngine('permit(principal, action, resource) when { principal.nickname == "x" };', SCHEMA)
    with pytest.raises(PolicyError, match="schema"):
        PolicyEngine("permit(principal, action, resource);", "entity {")


def test_schema_hash_and_text():
    engine = PolicyEngine("permit(principal, action, resource);", SCHEMA)
    assert engine.schema_text == SCHEMA
    assert engine.schema_hash == hashlib.sha256(SCHEMA.encode("utf-8")).digest()
    as_dict = json.loads(cedar_schema_json())
    engine = PolicyEngine("permit(principal, action, resource);", as_dict)
    assert engine.schema_hash == hashlib.sha256(engine.schema_text.encode("utf-8")).digest()
    assert json.loads(engine.schema_text) == as_dict


def cedar_schema_json() -> str:
    """A schema in Cedar's JSON format (a dict given to the engine is read as one)."""
    return json.dumps(
        {
            "XCentre": {
                "entityTypes": {"User": {}, "Queue": {}},
                "actions": {"submit": {"appliesTo": {"principalTypes": ["User"], "resourceTypes": ["Queue"]}}},
            }
        }
    )


# --- the logged form of a request ------------------------------------------------------


def test_request_is_what_cedar_evaluates():
    req = ENGINE.request(ALICE, "submit", CPU, SHORT)
    assert req == CedarRequest(
        principal="alice@hpc-a",
        attrs={
            "departmentNumber": "physics",
            "department": "physics",
            "employeeType": "staff",
            "clearance": 4,
            "principal": "alice@hpc-a",
            "home": "hpc-a",
        },
        groups=("gpu-users", "physics"),
        action="submit",
        queue="cpu",
        resource_attrs={"centre": "hpc-a", "data_class": "public"},
        context=SHORT,
    )
    assert req.to_dict() == {
        "principal": {"id": "alice@hpc-a", "attrs": req.attrs, "groups": ["gpu-users", "physics"]},
        "action": "submit",
        "resource": {"queue": "cpu", "attrs": {"centre": "hpc-a", "data_class": "public"}},
        "context": SHORT,
    }
    assert CedarRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req


def test_decide_request_equals_decide():
    for subject in (ALICE, BOB, DAVE, OUTSIDER):
        for resource in (GPU, CPU, SECRET, {"queue": "odd"}):
            for context in (SHORT, LONG, dict(SHORT, gpus=8, hour=3)):
                req = ENGINE.request(subject, "submit", resource, context)
                assert ENGINE.decide_request(req) == ENGINE.decide(subject, "submit", resource, context)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("context"), "missing \\['context'\\]"),
        (lambda d: d.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda d: d["principal"].update(id=""), "principal.id"),
        (lambda d: d["principal"].update(groups="gpu-users"), "principal.groups"),
        (lambda d: d["principal"].update(groups=["gpu-users", 3]), "principal.groups"),
        (lambda d: d["principal"]["attrs"].update(__entity={"type": "XCentre::Group", "id": "admins"}), "__entity"),
        (lambda d: d["principal"]["attrs"].update(level=1.5), "level"),
        (lambda d: d["principal"]["attrs"].update(level=None), "level"),
        (lambda d: d["context"].update(walltime=2**70), "walltime"),
        (lambda d: d["resource"].pop("queue"), "resource"),
        (lambda d: d["resource"].update(attrs=[]), "resource.attrs"),
        (lambda d: d.update(action=7), "action"),
        (lambda d: d.update(context={"nested": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}}}), "__extn"),
    ],
)
def test_from_dict_refuses_bad_shapes(mutate, match):
    data = json.loads(json.dumps(ENGINE.request(ALICE, "submit", CPU, SHORT).to_dict()))
    mutate(data)
    with pytest.raises(PolicyError, match=match):
        CedarRequest.from_dict(data)


def test_from_dict_refuses_non_objects():
    wrong_principal = {"principal": [], "action": "submit", "resource": {"queue": "cpu", "attrs": {}}, "context": {}}
    for bad in (None, [], "x", wrong_principal):
        with pytest.raises(PolicyError, match="must be"):
            CedarRequest.from_dict(bad)


# --- re-evaluation of many logged requests -----------------------------------------------


def verdicts(decisions: list[Decision]) -> list[tuple[bool, list[str], list[str]]]:
    """What a re-evaluation must reproduce: allowed, the deciding policies and the errors."""
    return [(d.allowed, d.policies, d.errors) for d in decisions]


def test_reevaluate_equals_decide_request_across_subjects():
    subjects = [ALICE, BOB, DAVE, OUTSIDER]
    resources = [GPU, CPU, SECRET, {"queue": "odd"}]
    contexts = [SHORT, LONG, dict(SHORT, gpus=8, hour=3)]
    reqs = [ENGINE.request(s, "submit", r, c) for s in subjects for r in resources for c in contexts]
    decisions = ENGINE.reevaluate(reqs)
    assert verdicts(decisions) == verdicts([ENGINE.decide_request(r) for r in reqs])
    # Reasons are the deciding policies' (decide_request also says when nothing would permit).
    assert decisions[subjects.index(BOB) * 12 + 1].reasons == ["students may request at most 1 hour of walltime"]
    assert ENGINE.reevaluate([]) == []


def test_reevaluate_keeps_apart_one_uid_with_two_attribute_sets():
    # The same principal seen with and without clearance, with and without a group, and the
    # same queue seen with two data classes: evaluated together, Cedar would refuse (or, with
    # one entity kept, decide with the wrong attributes).
    cleared = Subject("carol@hpc-a", "hpc-a", {"clearance": "5"}, ["gpu-users"])
    uncleared = Subject("carol@hpc-a", "hpc-a", {"clearance": "1"}, [])
    public = {"queue": "secure", "centre": "hpc-a", "data_class": "public"}
    reqs = [
        ENGINE.request(subject, "submit", resource, SHORT)
        for _ in range(3)
        for subject in (cleared, uncleared)
        for resource in (SECRET, public, GPU)
    ]
    decisions = ENGINE.reevaluate(reqs)
    assert verdicts(decisions) == verdicts([ENGINE.decide_request(r) for r in reqs])
    assert [d.allowed for d in decisions[:6]] == [True, True, True, False, True, False]
    assert decisions[3].policies == ["secret-data"]


def test_reevaluate_applies_the_errored_forbid_rule():
    engine = PolicyEngine("""
        @id("all") permit(principal, action, resource);
        @id("no-long-student-jobs") forbid(principal, action, resource)
        when { principal.employee_type == "student" && context.walltime > 3600 };
    """)
    silent = engine.request(Subject("s@hpc-a", "hpc-a", {}, []), "submit", CPU, LONG)
    staff = engine.request(Subject("t@hpc-a", "hpc-a", {"employee_type": "staff"}, []), "submit", CPU, LONG)
    decisions = engine.reevaluate([silent, staff])
    assert [d.allowed for d in decisions] == [False, True]
    assert decisions[0].policies == ["no-long-student-jobs"]
    assert verdicts(decisions) == verdicts([engine.decide_request(silent), engine.decide_request(staff)])


def test_reevaluate_decides_a_request_the_schema_refuses_on_its_own():
    # Cedar refuses a whole entity set for one entity the schema does not allow: one such
    # request in a log must not turn the others of its chunk into denials.
    engine = PolicyEngine('permit(principal, action == XCentre::Action::"submit", resource);', SCHEMA)
    cpu = {"queue": "cpu", "centre": "hpc-a"}
    good = [engine.request(Subject(f"u{i}@hpc-a", "hpc-a", {}, []), "submit", cpu, SHORT) for i in range(3)]
    bad = CedarRequest("bob@hpc-a", {"principal": "bob@hpc-a"}, (), "submit", "gpu", {}, SHORT)
    decisions = engine.reevaluate([good[0], bad, good[1], good[2]])
    assert [d.allowed for d in decisions] == [True, False, True, True]
    assert "schema" in decisions[1].errors[0]  # which entity Cedar names first varies from call to call
    alone = engine.decide_request(bad)
    assert (decisions[1].allowed, decisions[1].policies) == (alone.allowed, alone.policies)
    assert verdicts([decisions[0], *decisions[2:]]) == verdicts([engine.decide_request(r) for r in good])


def test_reevaluate_with_many_attribute_sets_and_small_chunks(monkeypatch):
    # A log where one queue is seen with many attribute sets opens many chunks; with few open
    # at a time and small ones, a (principal, queue) pair keeps going to a chunk closed early.
    import auth.policy

    monkeypatch.setattr(auth.policy, "_CHUNK", 5)
    monkeypatch.setattr(auth.policy, "_OPEN_CHUNKS", 2)
    people = [ALICE, BOB, DAVE]
    reqs = [
        ENGINE.request(people[n % 3], "submit", dict(SECRET, data_class=f"class-{n % 7}"), dict(SHORT, hour=n % 24))
        for n in range(300)
    ]
    reqs += reqs[:40]  # and some identical requests again
    decisions = ENGINE.reevaluate(reqs)
    assert len(decisions) == len(reqs)
    assert verdicts(decisions) == verdicts([ENGINE.decide_request(r) for r in reqs])


# --- how deep a value may nest ------------------------------------------------------------


def nested(depth: int, leaf: object = "x", in_lists: bool = False) -> object:
    """`leaf` inside `depth` Records (or Sets), built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if in_lists else {"a": value}
    return value


@pytest.mark.parametrize("in_lists", [False, True])
def test_values_nest_at_most_32_deep(in_lists):
    """A logged request is read back from a centre's log: a value nested past MAX_DEPTH is refused with a
    PolicyError, never followed (a RecursionError, or with py_ecc's raised limit a crash of the auditor)."""
    ok = json.loads(json.dumps(ENGINE.request(ALICE, "submit", CPU, SHORT).to_dict()))
    ok["principal"]["attrs"]["deep"] = nested(32, in_lists=in_lists)
    req = CedarRequest.from_dict(ok)
    assert ENGINE.decide_request(req).allowed  # Cedar takes 32 levels
    for where in ("principal.attrs", "resource.attrs", "context"):
        for depth in (33, 100_000):
            data = json.loads(json.dumps(ENGINE.request(ALICE, "submit", CPU, SHORT).to_dict()))
            part, _, key = where.partition(".")
            (data[part][key] if key else data[part])["deep"] = nested(depth, in_lists=in_lists)
            with pytest.raises(PolicyError, match=f"{where}.deep nests deeper than 32"):
                CedarRequest.from_dict(data)


def test_a_subject_context_or_resource_nested_too_deep_is_refused():
    assert ENGINE.request(ALICE, "submit", CPU, dict(SHORT, deep=nested(32))).context["deep"] == nested(32)
    deep = nested(100_000)
    subject = Subject("alice@hpc-a", "hpc-a", {"deep": deep}, [])
    for args in ((subject, CPU, SHORT), (ALICE, dict(CPU, deep=deep), SHORT), (ALICE, CPU, dict(SHORT, deep=deep))):
        with pytest.raises(PolicyError, match="nests deeper than 32"):
            ENGINE.request(args[0], "submit", args[1], args[2])
    with pytest.raises(PolicyError, match="nests deeper than 32"):
        ENGINE.request(Subject("alice@hpc-a", "hpc-a", {"deep": nested(33, in_lists=True)}, []), "submit", CPU, SHORT)
