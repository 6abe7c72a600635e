"""The decision log: entries, their digests, the epoch's Merkle root and proofs."""

from __future__ import annotations

import copy
import json

import pytest
from eth_utils import keccak

from auth.policy import PolicyEngine, Subject
from ledger.decisions import (
    DecisionLogError,
    check_entry,
    entry_digest,
    entry_leaf,
    log_proof,
    log_root,
    new_entry,
    verify_entry,
)
from ledger.merkle import MerkleTree
from ledger.primitives.canonical import canonical_bytes

POLICY = """
@id("cpu-for-members") @reason("every member may run CPU jobs")
permit (principal, action == XCentre::Action::"submit", resource) when { resource == XCentre::Queue::"cpu" };
@id("student-walltime") @reason("students may request at most 1 hour")
forbid (principal, action, resource)
when { principal has employee_type && principal.employee_type == "student" && context.walltime > 3600 };
"""
ENGINE = PolicyEngine(POLICY)
STUDENT = Subject("a1b2c3d4e5f60718@hpc-a", "hpc-a", {"employee_type": "student"}, ["physics@hpc-a"])
CPU = {"queue": "cpu", "centre": "hpc-b", "gpu_type": None, "data_class": "public"}
LONG = {"walltime": 7200, "cores": 2, "memory_mib": 1024, "gpus": 0, "hour": 14}
REQUEST = keccak(b"the job request")


def make(time: int = 1_764_650_000, context: dict = LONG, entry_id: bytes | None = None, **kw) -> dict:
    cedar = ENGINE.request(STUDENT, "submit", CPU, context)
    return new_entry(
        centre="hpc-b",
        time=time,
        kind=kw.pop("kind", "submit"),
        request=REQUEST,
        cedar=cedar,
        decision=ENGINE.decide_request(cedar),
        policy_version=2,
        policy_hash=ENGINE.policy_hash,
        entry_id=entry_id,
        **kw,
    )


def test_entry_shape():
    entry = make(entry_id=bytes(range(16)))
    cedar = ENGINE.request(STUDENT, "submit", CPU, LONG).to_dict()
    assert entry == {
        "v": 1,
        "id": "0x000102030405060708090a0b0c0d0e0f",
        "centre": "hpc-b",
        "time": 1_764_650_000,
        "kind": "submit",
        "request": "0x" + REQUEST.hex(),
        "action": "submit",
        "principal": cedar["principal"],
        "resource": cedar["resource"],
        "context": cedar["context"],
        "decision": "deny",
        "policies": ["student-walltime"],
        "policy_version": 2,
        "policy_hash": "0x" + ENGINE.policy_hash.hex(),
    }
    assert entry["principal"]["attrs"] == {
        "employee_type": "student",
        "principal": "a1b2c3d4e5f60718@hpc-a",
        "home": "hpc-a",
    }
    assert check_entry(json.loads(json.dumps(entry))) == entry


def test_allow_entry_and_fresh_ids():
    allowed = make(context=dict(LONG, walltime=600), kind="quote")
    assert allowed["decision"] == "allow" and allowed["policies"] == ["cpu-for-members"]
    assert allowed["kind"] == "quote"
    assert make()["id"] != make()["id"]


def test_entry_is_a_copy_of_the_request():
    cedar = ENGINE.request(STUDENT, "submit", CPU, LONG)
    entry = new_entry(
        centre="hpc-b",
        time=1,
        kind="submit",
        request=REQUEST,
        cedar=cedar,
        decision=ENGINE.decide_request(cedar),
        policy_version=1,
        policy_hash=ENGINE.policy_hash,
    )
    entry["context"]["walltime"] = 1
    assert cedar.context["walltime"] == 7200


@pytest.mark.parametrize(
    "change, match",
    [
        ({"centre": "HPC B"}, "centre"),
        ({"time": -1}, "time"),
        ({"time": True}, "time"),
        ({"kind": "cancel"}, "kind"),
        ({"request": b"short"}, "request"),
        ({"policy_version": 0}, "policy_version"),
        ({"policy_hash": bytes(31)}, "policy_hash"),
        ({"entry_id": bytes(15)}, "entry_id"),
    ],
)
def test_new_entry_refuses_bad_input(change, match):
    cedar = ENGINE.request(STUDENT, "submit", CPU, LONG)
    args = {
        "centre": "hpc-b",
        "time": 1,
        "kind": "submit",
        "request": REQUEST,
        "cedar": cedar,
        "decision": ENGINE.decide_request(cedar),
        "policy_version": 1,
        "policy_hash": ENGINE.policy_hash,
    } | change
    with pytest.raises(DecisionLogError, match=match):
        new_entry(**args)


def _set(path: str, value: object):
    def mutate(entry: dict) -> None:
        *parents, last = path.split(".")
        node = entry
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (_set("v", 2), "version 1"),
        (_set("v", True), "version 1"),
        (_set("id", "0x" + "AB" * 16), "id"),
        (_set("id", "0x" + "ab" * 32), "id"),
        (_set("centre", ""), "centre"),
        (_set("time", 1.5), "time"),
        (_set("time", 2**64), "time"),
        (_set("kind", "Submit"), "kind"),
        (_set("request", "0x12"), "request"),
        (_set("decision", "maybe"), "decision"),
        (_set("policies", "student-walltime"), "policies"),
        (_set("policies", [""]), "policies"),
        (_set("policy_version", "2"), "policy_version"),
        (_set("policy_hash", None), "policy_hash"),
        (_set("principal.attrs.level", 1.5), "level"),
        (_set("principal.attrs.__entity", {"type": "XCentre::Group", "id": "admins"}), "__entity"),
        (_set("resource.queue", 3), "resource.queue"),
        (_set("action", ""), "action"),
        (_set("context", []), "context"),
        (_set("extra", 1), "unexpected \\['extra'\\]"),
        (_set("policy_hash", _DELETE), "missing \\['policy_hash'\\]"),
    ],
)
def test_check_entry_refuses_bad_entries(mutate, match):
    entry = make()
    mutate(entry)
    with pytest.raises(DecisionLogError, match=match):
        check_entry(entry)


def test_check_entry_refuses_non_objects():
    for bad in (None, [], "entry", 7):
        with pytest.raises(DecisionLogError, match="JSON object"):
            check_entry(bad)


def test_digest_is_keccak_of_canonical_json_and_stable():
    entry = make(entry_id=bytes(16))
    assert entry_digest(entry) == keccak(canonical_bytes(entry))
    reordered = json.loads(json.dumps(entry, sort_keys=False))
    reordered = dict(reversed(list(reordered.items())))
    assert entry_digest(reordered) == entry_digest(entry)
    assert entry_digest(entry).hex() == entry_digest(copy.deepcopy(entry)).hex()
    changed = copy.deepcopy(entry)
    changed["decision"] = "allow"
    assert entry_digest(changed) != entry_digest(entry)
    with pytest.raises(DecisionLogError, match="JSON"):
        entry_digest({"time": float("nan")})


def test_leaf_is_the_standard_tree_leaf_of_the_digest():
    digest = entry_digest(make())
    assert entry_leaf(digest) == keccak(keccak(digest))
    with pytest.raises(DecisionLogError, match="32 bytes"):
        entry_leaf(digest[:31])


def test_root_and_proofs():
    entries = [make(time=1_764_650_000 + i) for i in range(7)]
    digests = [entry_digest(e) for e in entries]
    root = log_root(digests)
    assert root == MerkleTree(entry_leaf(d) for d in digests).root
    assert log_root(reversed(digests)) == root  # the root is the set's
    for entry in entries:
        proof = log_proof(digests, entry_digest(entry))
        assert verify_entry(root, entry, proof)
        changed = copy.deepcopy(entry)
        changed["decision"] = "allow"
        assert not verify_entry(root, changed, proof)
        assert not verify_entry(root, entry, proof[:-1])
    assert not verify_entry(root, entries[0], ["0x12"])  # a malformed proof does not verify
    assert log_root(digests[:-1]) != root


def test_empty_log_has_root_zero_and_one_entry_is_its_own_root():
    assert log_root([]) == bytes(32)
    digest = entry_digest(make())
    assert log_root([digest]) == entry_leaf(digest)
    assert log_proof([digest], digest) == []


def test_proof_of_an_absent_entry_and_duplicates_are_refused():
    digests = [entry_digest(make()) for _ in range(3)]
    with pytest.raises(DecisionLogError, match="not in the log"):
        log_proof(digests[:2], digests[2])
    with pytest.raises(DecisionLogError, match="twice"):
        log_root([digests[0], digests[0]])
    with pytest.raises(DecisionLogError, match="32 bytes"):
        log_root([b"x"])
