"""Access decisions on the chain: each member's published policy versions (Consortium) and the
decision log each anchor commits (UsageLedger), on the embedded chain as tests/test_contracts.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from eth_utils import keccak

from ledger.ids import centre_id
from ledger.merkle import MerkleTree
from ledger.records import record_digest
from tests.test_contracts import ADMIT, REMOVE, Consortium, make_consortium, reverts, spec
from tests.test_payment_contracts import (
    A,
    B,
    anchor,
    answer,
    dispute,
    events,
    evidence,
    fields,
    make_job,
    pay_consortium,
)

POLICY_V1 = 'permit(principal, action, resource) when { principal.groups.contains("hpc") };'
POLICY_V2 = 'forbid(principal, action, resource) when { resource.queue == "gpu" };\n' + POLICY_V1
SCHEMA = '{"": {"entityTypes": {}, "actions": {}}}'


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


NO_SCHEMA = bytes(32)


@pytest.fixture
def four() -> Consortium:
    return make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3)


@pytest.fixture
def k() -> Consortium:
    return pay_consortium()


def publish(k: Consortium, who: str, policy_hash: bytes, schema_hash: bytes = NO_SCHEMA) -> dict:
    """Publishes and returns the PolicyPublished event's arguments, with the block's time."""
    receipt = k.tx(k.c.consortium.functions.publishPolicy(policy_hash, schema_hash), who)
    [ev] = events(k, "consortium", "PolicyPublished", receipt)
    return dict(ev) | {"block_time": k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]}


# -- policies ---------------------------------------------------------------------------------


def test_a_member_publishes_numbered_versions_in_force_from_their_block(four):
    fns = four.c.consortium.functions
    a = centre_id("hpc-a")
    assert fns.policyCount(a).call() == 0
    first = publish(four, "hpc-a", sha(POLICY_V1))
    assert (first["id"], first["version"], first["policyHash"], first["schemaHash"]) == (
        a,
        1,
        sha(POLICY_V1),
        NO_SCHEMA,
    )
    assert first["publishedAt"] == first["block_time"]
    second = publish(four, "hpc-a", sha(POLICY_V2), sha(SCHEMA))
    assert (second["version"], second["policyHash"], second["schemaHash"]) == (2, sha(POLICY_V2), sha(SCHEMA))
    assert second["publishedAt"] == second["block_time"] >= first["publishedAt"]
    assert fns.policyCount(a).call() == 2
    # a published version never changes
    assert fns.policy(a, 1).call() == (1, first["publishedAt"], sha(POLICY_V1), NO_SCHEMA)
    assert fns.policy(a, 2).call() == (2, second["publishedAt"], sha(POLICY_V2), sha(SCHEMA))


def test_only_members_publish_and_the_policy_hash_is_never_zero(four):
    fns = four.c.consortium.functions
    reverts("NotMember", four.tx, fns.publishPolicy(sha(POLICY_V1), NO_SCHEMA), four.outsider())
    reverts("InvalidPolicyHash", four.tx, fns.publishPolicy(bytes(32), sha(SCHEMA)), "hpc-a")
    reverts("InvalidPolicyHash", four.tx, fns.publishPolicy(bytes(32), NO_SCHEMA), "hpc-a")
    assert fns.policyCount(centre_id("hpc-a")).call() == 0  # nothing of a refused publication stays


def test_a_removed_member_can_no_longer_publish_but_its_versions_stay_readable(four):
    fns = four.c.consortium.functions
    b = centre_id("hpc-b")
    publish(four, "hpc-b", sha(POLICY_V1))
    four.tx(fns.propose(REMOVE, spec("hpc-b", four.accounts["hpc-b"]).as_tuple()), "hpc-a")
    four.tx(fns.vote(fns.proposalCount().call()), "cloud-c")
    four.tx(fns.vote(fns.proposalCount().call()), "edge-d")
    assert fns.isMember(b).call() is False
    reverts("NotMember", four.tx, fns.publishPolicy(sha(POLICY_V2), NO_SCHEMA), "hpc-b")
    assert fns.policyCount(b).call() == 1 and fns.policy(b, 1).call()[2] == sha(POLICY_V1)


def test_republishing_the_latest_pair_is_refused_and_every_version_is_a_change(four):
    fns = four.c.consortium.functions
    a = centre_id("hpc-a")
    publish(four, "hpc-a", sha(POLICY_V1))
    err = reverts("PolicyUnchanged", four.tx, fns.publishPolicy(sha(POLICY_V1), NO_SCHEMA), "hpc-a")
    assert err.error_args == (a, 1)
    # a new schema with the same policy is a new version ...
    assert publish(four, "hpc-a", sha(POLICY_V1), sha(SCHEMA))["version"] == 2
    err = reverts("PolicyUnchanged", four.tx, fns.publishPolicy(sha(POLICY_V1), sha(SCHEMA)), "hpc-a")
    assert err.error_args == (a, 2)
    # ... and so is going back to an earlier version's texts: only the latest pair is compared
    assert publish(four, "hpc-a", sha(POLICY_V1))["version"] == 3
    assert fns.policyCount(a).call() == 3


def test_a_version_never_published_is_unknown(four):
    fns = four.c.consortium.functions
    a, c = centre_id("hpc-a"), centre_id("cloud-c")
    publish(four, "hpc-a", sha(POLICY_V1))
    for version in (0, 2, 2**64 - 1):
        err = reverts("UnknownPolicy", four.chain.call, fns.policy(a, version))
        assert err.error_args == (a, version)
    err = reverts("UnknownPolicy", four.chain.call, fns.policy(c, 1))  # a member that never published
    assert err.error_args == (c, 1) and fns.policyCount(c).call() == 0
    err = reverts("UnknownPolicy", four.chain.call, fns.policy(centre_id("nobody"), 1))
    assert err.error_args == (centre_id("nobody"), 1)


def test_a_member_publishes_only_its_own_policy(four):
    fns = four.c.consortium.functions
    a, b = centre_id("hpc-a"), centre_id("hpc-b")
    publish(four, "hpc-a", sha(POLICY_V1))
    theirs = publish(four, "hpc-b", sha(POLICY_V2))  # hpc-b's call names no centre: it is always its own
    assert (theirs["id"], theirs["version"]) == (b, 1)
    assert fns.policyCount(a).call() == 1 and fns.policy(a, 1).call()[2] == sha(POLICY_V1)
    assert fns.policyCount(b).call() == 1 and fns.policy(b, 1).call()[2] == sha(POLICY_V2)
    # a member admitted later starts at version 1 too
    fresh = four.outsider()
    four.tx(fns.propose(ADMIT, spec("ai-e", fresh).as_tuple()), "hpc-a")
    four.tx(fns.vote(fns.proposalCount().call()), "hpc-b")
    four.tx(fns.vote(fns.proposalCount().call()), "cloud-c")
    assert publish(four, fresh, sha(POLICY_V1))["version"] == 1


# -- decision logs in anchors -----------------------------------------------------------------


def decision_log(n: int) -> tuple[bytes, int]:
    """The root and size of a log of n entry digests (ledger.merkle's tree, as the gateways build it)."""
    return MerkleTree([keccak(keccak(keccak(i.to_bytes(4, "big")))) for i in range(n)]).root, n


def test_an_anchor_commits_the_epochs_decision_log(k):
    ul = k.c.usage_ledger.functions
    root, count = decision_log(7)
    job = make_job(k, "hpc-b", "hpc-a", 1)
    receipt = k.tx(ul.anchor(1, [A], [job.digest], [1], [job.record.price], root, count), "hpc-b")
    [ev] = events(k, "usage_ledger", "EpochAnchored", receipt)
    assert (ev["centre"], ev["epoch"], ev["homes"], ev["counts"]) == (B, 1, [A], [1])
    assert (ev["decisionRoot"], ev["decisionCount"]) == (root, count)
    assert ev["anchoredAt"] == k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert ul.decisionsOf(B, 1).call() == [root, count]
    assert ul.anchorOf(B, 1).call() == [True, ev["anchoredAt"], 1]
    # an anchor without a log, and a centre or epoch not anchored, read as no log
    k.tx(ul.anchor(1, [], [], [], [], bytes(32), 0), "hpc-a")
    assert ul.decisionsOf(A, 1).call() == [bytes(32), 0]
    assert ul.decisionsOf(centre_id("cloud-c"), 1).call() == [bytes(32), 0]
    assert ul.decisionsOf(B, 2).call() == [bytes(32), 0]


def test_a_decision_log_with_a_root_and_no_entries_or_entries_and_no_root_is_refused(k):
    ul = k.c.usage_ledger.functions
    root, _ = decision_log(3)
    for bad in ((bytes(32), 3), (root, 0), (bytes(32), 2**64 - 1)):
        reverts("InvalidDecisionLog", k.tx, ul.anchor(1, [], [], [], [], *bad), "hpc-a")
    assert ul.anchorOf(A, 1).call()[0] is False  # nothing of a refused anchor stays
    assert ul.decisionsOf(A, 1).call() == [bytes(32), 0]
    k.tx(ul.anchor(1, [], [], [], [], root, 3), "hpc-a")  # the same epoch anchors once it is whole
    assert ul.decisionsOf(A, 1).call() == [root, 3]


def test_a_centre_that_only_refused_anchors_its_decision_log_with_no_homes(k):
    """A centre that served no job in an epoch but decided (denied) requests anchors the log alone."""
    ul = k.c.usage_ledger.functions
    root, count = decision_log(1)
    receipt = k.tx(ul.anchor(2, [], [], [], [], root, count), "cloud-c")
    [ev] = events(k, "usage_ledger", "EpochAnchored", receipt)
    assert (ev["homes"], ev["roots"], ev["counts"], ev["totals"]) == ([], [], [], [])
    assert (ev["decisionRoot"], ev["decisionCount"]) == (root, count)
    c = centre_id("cloud-c")
    assert ul.anchorOf(c, 2).call()[::2] == [True, 0] and ul.decisionsOf(c, 2).call() == [root, count]
    assert ul.bondOf(c).call()[1] > 0  # bonded like any anchor
    err = reverts("AlreadyAnchored", k.tx, ul.anchor(2, [], [], [], [], *decision_log(2)), "cloud-c")
    assert err.error_args == (c, 2)  # a log once anchored is never replaced
    assert ul.decisionsOf(c, 2).call() == [root, count]


# -- records name their decision entry -------------------------------------------------------


def test_a_record_naming_its_decision_entry_answers_a_dispute(k):
    """The contract's record digest covers `decision`: the signed record answers, and the same
    record re-pointed at another decision entry is not the anchored leaf."""
    ul = k.c.usage_ledger.functions
    entry = keccak(b"the decision-log entry that admitted this job")
    jobs = [make_job(k, "hpc-b", "hpc-a", 1, record_changes={"decision": entry}) for _ in range(2)]
    assert jobs[0].record.decision == entry
    domain_digest = record_digest(jobs[0].record, k.deployment)
    assert ul.hashRecord(fields(jobs[0].record)).call() == domain_digest == jobs[0].digest
    other = replace(jobs[0].record, decision=keccak(b"another entry"))
    assert ul.hashRecord(fields(other)).call() == record_digest(other, k.deployment) != jobs[0].digest
    tree = anchor(k, "hpc-b", 1, {"hpc-a": jobs})["hpc-a"]
    did = dispute(k, "hpc-a", "hpc-b", 1, "hpc-a", 0)
    repointed = evidence(jobs[0], tree, 0)
    repointed = (fields(other), *repointed[1:])
    reverts("InvalidProof", k.tx, ul.answer(did, repointed), "hpc-b")
    receipt = answer(k, "hpc-b", did, evidence(jobs[0], tree, 0))
    [ev] = events(k, "usage_ledger", "DisputeAnswered", receipt)
    assert (ev["id"], ev["recordDigest"]) == (did, jobs[0].digest)
    assert ul.disputeOf(did).call()[6] == 2  # answered
