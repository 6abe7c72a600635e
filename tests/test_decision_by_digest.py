"""One decision-log entry by its digest, for auditors: GET /v1/audit/decisions/by-digest/{digest}.

A usage record names the digest of the allow that admitted its job, which may be in an
earlier epoch's log than the record's own: the auditor asks the centre for that one entry
with its proof, and checks the proof against the root the centre anchored for the entry's
epoch, one look-up per record, never a walk back through epochs. The answer names a
principal's attributes, so it goes to the centre's auditors only, each asking with a fresh
signature bound to the digest asked for.
"""

from __future__ import annotations

import time

import httpx
import pytest
from eth_account import Account

from gateway.api.schemas import AUDIT_SIGNATURE_HEADER
from gateway.client.http import GatewayClient, audit_headers
from gateway.node.decisions import DecisionLog
from gateway.node.errors import Conflict, Invalid, NotFound, Unauthenticated
from gateway.store import NewDecision, Store
from ledger.decisions import entry_digest, verify_entry
from ledger.deploy import bind
from ledger.ids import centre_id
from ledger.primitives.hex import from_hex, to_hex
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.test_decision_log import NOW, NoMembers, an_entry

UNKNOWN = "0x" + "ab" * 32


def signed(auditor, what: int | str, at: int = NOW) -> str:
    return audit_headers(auditor, "hpc-a", what, at=at)[AUDIT_SIGNATURE_HEADER]


@pytest.fixture
def log(tmp_path):
    """Epoch 1 closed with 3 entries, epoch 2 open with 1; a DecisionLog with one auditor at a fixed clock."""
    store = Store(tmp_path / "gw.sqlite")
    entries = [an_entry(n) for n in range(3)]
    for entry in entries:
        store.log_decision(NewDecision.of(entry))
    store.close_epoch(1, {})
    entries.append(an_entry(10))
    store.log_decision(NewDecision.of(entries[-1]))
    auditor = Account.create()
    yield DecisionLog("hpc-a", store, NoMembers(), auditors=[auditor.address], clock=lambda: NOW), auditor, entries
    store.close()


def test_an_entry_of_a_closed_epoch_comes_with_its_proof(log):
    decisions, auditor, entries = log
    digest = to_hex(entry_digest(entries[1]))
    found = decisions.by_digest(digest, signed(auditor, digest))
    root = decisions.store.closure(1).decision_root
    assert (found["centre"], found["epoch"], found["digest"], found["root"]) == ("hpc-a", 1, digest, to_hex(root))
    assert found["entry"] == entries[1]
    assert verify_entry(root, found["entry"], [from_hex(p) for p in found["proof"]])
    upper = "0x" + digest[2:].upper()  # any case in the path; the signature is of the lowercase digest
    assert decisions.by_digest(upper, signed(auditor, digest))["entry"] == entries[1]


def test_a_signature_opens_the_digest_it_names_only(log):
    decisions, auditor, entries = log
    digest, other = (to_hex(entry_digest(e)) for e in entries[:2])
    for header in (None, signed(auditor, 1), signed(auditor, other), signed(Account.create(), digest)):
        with pytest.raises(Unauthenticated):
            decisions.by_digest(digest, header)
    with pytest.raises(Unauthenticated, match="sign again"):
        decisions.by_digest(digest, signed(auditor, digest, at=NOW - 301))


def test_an_unknown_digest_an_open_epoch_and_a_malformed_digest_are_refused(log):
    decisions, auditor, entries = log
    with pytest.raises(NotFound, match="no decision with digest"):
        decisions.by_digest(UNKNOWN, signed(auditor, UNKNOWN))
    pending = to_hex(entry_digest(entries[-1]))
    with pytest.raises(Conflict, match="epoch 2, not closed"):
        decisions.by_digest(pending, signed(auditor, pending))
    for malformed in ("0x" + "ab" * 16, "ab" * 32, "0x" + "zz" * 32, UNKNOWN + "00"):
        with pytest.raises(Invalid, match="not an entry digest"):
            decisions.by_digest(malformed, signed(auditor, malformed))


# -- over HTTP, on the real consortium -------------------------------------------------------------


def _anchored_root(consortium, epoch: int) -> tuple[bytes, int] | None:
    ledger = bind(consortium.chain, consortium.deployment, named=True).usage_ledger.functions
    if not ledger.anchorOf(centre_id("hpc-a"), epoch).call().anchored:
        return None
    root, count = ledger.decisionsOf(centre_id("hpc-a"), epoch).call()
    return bytes(root), int(count)


def _get(consortium, digest: str, headers: dict | None = None) -> httpx.Response:
    url = f"{consortium.url('hpc-a')}/v1/audit/decisions/by-digest/{digest}"
    return httpx.get(url, headers=headers or {}, timeout=30)


@pytest.fixture(scope="module")
def quoted(consortium) -> tuple[int, str, int]:
    """alice's quote at hpc-a, asked for while its epoch is open, then anchored: (epoch, digest, the status then)."""
    (epoch,) = set(consortium.open_epochs().values())
    with GatewayClient(consortium.url("hpc-a")) as alice:
        alice.login("alice", PASSWORDS["alice"])
        quote = alice.quote({"command": ["true"], "walltime": 60, "resources": {}, "centre": "hpc-a"})
    digest = to_hex(consortium.store("hpc-a").decision(quote["decision"]).digest_bytes)
    open_status = _get(consortium, digest, audit_headers(consortium.auditor, "hpc-a", digest)).status_code
    consortium.close_epoch_everywhere()
    eventually(lambda: _anchored_root(consortium, epoch))
    consortium.wait_settled(epoch)
    return epoch, digest, open_status


def test_an_auditor_gets_the_entry_proven_against_the_anchored_root(consortium, quoted):
    epoch, digest, open_status = quoted
    assert open_status == 409
    with GatewayClient(consortium.url("hpc-a")) as auditor:
        found = auditor.audit_decision(from_hex(digest), consortium.auditor, "hpc-a")
    root, count = _anchored_root(consortium, epoch)
    assert found["epoch"] == epoch and found["digest"] == digest and count >= 1
    assert to_hex(entry_digest(found["entry"])) == digest
    assert verify_entry(root, found["entry"], [from_hex(p) for p in found["proof"]])


@pytest.mark.parametrize(
    "header", [None, "garbage", "outsider", "member", "log of its epoch", "another digest", "stale", "garbled"]
)
def test_the_entry_is_refused_without_a_fresh_signature_of_an_auditor_for_it(consortium, quoted, header):
    epoch, digest, _ = quoted
    auditor = consortium.auditor
    headers = {
        None: {},
        "garbage": {AUDIT_SIGNATURE_HEADER: "now:0x" + "00" * 65},
        "outsider": audit_headers(Account.create(), "hpc-a", digest),
        "member": audit_headers(consortium.centres["cloud-b"].account, "hpc-a", digest),
        "log of its epoch": audit_headers(auditor, "hpc-a", epoch),
        "another digest": audit_headers(auditor, "hpc-a", UNKNOWN),
        "stale": audit_headers(auditor, "hpc-a", digest, at=int(time.time()) - 600),
        "garbled": {
            k: v[:-4] + ("00" if v[-4:-2] != "00" else "11") + v[-2:]
            for k, v in audit_headers(auditor, "hpc-a", digest).items()
        },
    }[header]
    answer = _get(consortium, digest, headers)
    assert answer.status_code == 401, answer.text
    assert "entry" not in answer.json()


def test_an_unknown_digest_is_404_and_a_malformed_one_422(consortium, quoted):
    auditor = consortium.auditor
    unknown = _get(consortium, UNKNOWN, audit_headers(auditor, "hpc-a", UNKNOWN))
    assert unknown.status_code == 404 and "no decision with digest" in unknown.json()["error"]
    for malformed in ("0x" + "ab" * 16, "ab" * 32, "0x" + "zz" * 32, UNKNOWN + "00"):
        answer = _get(consortium, malformed, audit_headers(auditor, "hpc-a", malformed))
        assert answer.status_code == 422, (malformed, answer.text)
        assert "entry" not in answer.json()
