"""Attack (user, outsider): the decision log of issue 9 as a way in, a weight, or a leak.

Three attacks that work on the code as it stands; each test asserts the safe behaviour.

- A proof request (GET /v1/decisions/{id}, public) rebuilt a closed epoch's whole log tree
  whenever that epoch was not among the last two asked for: holding one id in each of three
  closed epochs, anyone made every request re-read and re-hash a whole epoch.
- One session logs an entry per quote, allow or deny, without any bound: a flood fills the
  store, every epoch's log, the auditor's single-response download and its re-evaluation.
- The whole log of an epoch goes to every active member (X-Audit-Signature), and an entry of a
  password session (at home, or exchanged for another centre) names its principal as uid@home:
  every member learns who asked what, where the "who learns what" table says other members
  cannot link users.
"""

from __future__ import annotations

import hashlib
import re

import httpx

from auth.policy import CedarRequest, Decision
from gateway.client.http import audit_headers
from gateway.node.decisions import DecisionLog
from gateway.store import NewDecision, Store
from ledger.decisions import new_entry, verify_entry
from ledger.primitives.hex import from_hex


def _entry(n: int) -> dict:
    cedar = CedarRequest(
        principal=f"u{n}@hpc-a",
        attrs={"principal": f"u{n}@hpc-a", "home": "hpc-a"},
        groups=(),
        action="submit",
        queue="cpu",
        resource_attrs={"centre": "hpc-a"},
        context={"walltime": 60},
    )
    return new_entry(
        centre="hpc-a",
        time=1_764_650_000 + n,
        kind="quote",
        request=hashlib.sha256(b"r%d" % n).digest(),
        cedar=cedar,
        decision=Decision(True, [], ["p"]),
        policy_version=1,
        policy_hash=hashlib.sha256(b"policy").digest(),
    )


class _NoAnchors:
    """Index double: nothing anchored yet, no members (the proof does not depend on either)."""

    def anchor(self, centre: bytes, epoch: int) -> None:
        return None

    def member_by_account(self, account: str) -> None:
        return None


def test_proofs_from_more_closed_epochs_than_kept_do_not_reread_whole_logs(tmp_path):
    store = Store(tmp_path / "gw.sqlite")
    try:
        epochs = 4
        ids = []
        for epoch in range(1, epochs + 1):
            for n in range(50):
                stored = store.log_decision(NewDecision.of(_entry(epoch * 1000 + n)))
            ids.append("0x" + stored.id)
            store.close_epoch(epoch, {})
        reads = []
        for name in ("decisions_for_epoch", "decision_digests"):  # spies on the real store's whole-log reads
            whole = getattr(store, name, None)
            if whole is not None:
                setattr(store, name, lambda epoch, whole=whole, name=name: reads.append(name) or whole(epoch))
        statements = []
        store.set_trace_callback(statements.append)  # and on every statement the proofs run
        log = DecisionLog("hpc-a", store, _NoAnchors())
        for _ in range(3):  # an outsider holding one id per epoch, asking for each in turn
            for epoch, entry_id in enumerate(ids, start=1):
                answer = log.entry(entry_id)
                proof = [from_hex(p) for p in answer["proof"]]
                assert verify_entry(store.closure(epoch).decision_root, answer["entry"], proof)
        whole_log = [s for s in statements if re.search(r"FROM decisions\b.*\bWHERE epoch", s, re.S)]
        # safe: a closed log is fixed, so its tree is built once, at its close, and a proof never reads the log
        assert not reads and not whole_log, (
            f"{len(reads) + len(whole_log)} whole-epoch reads for {3 * epochs} proof requests over {epochs} "
            f"closed epochs: {reads or whole_log[:1]}"
        )
    finally:
        store.close()


FLOOD = 200


def test_a_flood_of_denied_quotes_from_one_session_is_bounded(consortium):
    token = consortium.login("bob", "hpc-a")
    store = consortium.store("hpc-a")
    before = len(store.decisions_for_epoch(store.open_epoch()))
    job = {"command": ["true"], "walltime": 7200, "centre": "hpc-a"}  # students: at most 1 hour at hpc-a
    statuses = []
    with httpx.Client(base_url=consortium.url("hpc-a"), headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(FLOOD):
            statuses.append(client.post("/v1/jobs/quote", json=job, timeout=30).status_code)
    logged = len(store.decisions_for_epoch(store.open_epoch())) - before
    assert statuses[0] == 403
    # safe: past some rate, the gateway refuses (429) before evaluating and storing anything
    assert 429 in statuses and logged < FLOOD, (
        f"{FLOOD} denied quotes in a burst from one session: {statuses.count(403)} answered 403, "
        f"{logged} entries stored, none refused for the rate"
    )


def test_a_member_reading_a_decision_log_learns_no_uid_of_another_centres_user(consortium):
    token = consortium.login("alice", "hpc-a", at="cloud-b")  # a password sign-on at home, exchanged
    quoted = httpx.post(
        f"{consortium.url('cloud-b')}/v1/jobs/quote",
        json={"command": ["true"], "walltime": 60, "centre": "cloud-b"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert quoted.status_code == 200, quoted.text
    epoch = consortium.close_epoch_everywhere()[0]["epoch"]
    member = consortium.centres["ai-c"].node.parts.account  # neither alice's home nor the serving centre
    answer = httpx.get(
        f"{consortium.url('cloud-b')}/v1/audit/decisions/{epoch}",
        headers=audit_headers(member, "cloud-b", epoch),
        timeout=30,
    )
    if answer.status_code == 401:
        return  # safe too: the whole log is for the centre's auditors only
    assert answer.status_code == 200, answer.text
    ours = [e for e in answer.json()["entries"] if e["id"] == quoted.json()["decision"]]
    assert len(ours) == 1
    # safe: the entry names a pseudonym, as a presented sign-on's does, never the uid another member can read
    assert "alice" not in str(ours[0]["principal"]), (
        f"ai-c, a member, reads from cloud-b's decision log that alice@hpc-a asked: {ours[0]['principal']}"
    )
