"""Cedar decisions with reasons a person can act on."""

from __future__ import annotations

import pytest

from auth.policy import Decision, PolicyEngine, PolicyError, Subject

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


def test_policy_ids_and_version():
    assert ENGINE.policy_ids == ["gpu-members", "cpu-for-all", "student-walltime", "secret-data", "night-gpus"]
    assert PolicyEngine(POLICIES).version == ENGINE.version
    assert PolicyEngine(POLICIES + "\n").version != ENGINE.version


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
