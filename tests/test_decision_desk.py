"""The desk that evaluates each request and makes it a decision-log entry: its refusals, unit by unit.

The keeper is a double here (its policy served as given); tests/test_decision_log.py runs the
desk in real gateways.
"""

from pathlib import Path

import pytest
from eth_account import Account

from auth.policy import PolicyEngine, Subject
from gateway.node.errors import Invalid, TooManyRequests
from gateway.node.policies import DecisionDesk, Served
from gateway.node.ratelimit import RateLimit
from gateway.store import Store
from ledger.ids import centre_id
from ledger.index import PolicyInfo
from ledger.records import Domain
from ledger.signed_decisions import entry_signer

POLICY = Path(__file__).parent.parent.joinpath("gateway/demo/data/hpc-a.cedar").read_text()
CPU = {"queue": "cpu", "centre": "hpc-a"}
CENTRE = Account.from_key(b"c".ljust(32, b"k"))
DOMAIN = Domain(chain_id=1337, verifying_contract="0x" + "12" * 20)
SHORT = {"walltime": 60, "cores": 1, "memory_mib": 1024, "gpus": 0, "hour": 3}


class Keeper:
    def __init__(self, engine: PolicyEngine) -> None:
        self.served = Served(engine, PolicyInfo(centre_id("hpc-a"), 1, engine.policy_hash, engine.schema_hash, 1))

    def current(self) -> Served:
        return self.served


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "gateway.db") as store:
        yield store


def evaluate(desk: DecisionDesk, subject: Subject):
    return desk.evaluate(kind="quote", request=bytes(32), subject=subject, resource=CPU, context=SHORT, now=1)


def test_a_request_cedar_cannot_hold_is_a_clear_400_and_stores_nothing(store):
    desk = DecisionDesk("hpc-a", Keeper(PolicyEngine(POLICY)), store, CENTRE, DOMAIN)  # type: ignore[arg-type]
    odd = Subject("alice@hpc-a", "hpc-a", {"clearance": 2**70})  # beyond Cedar's integers
    with pytest.raises(Invalid, match=r"hpc-a's policy cannot evaluate this request: .*integer range"):
        evaluate(desk, odd)
    assert store.decisions_for_epoch(store.open_epoch()) == []


def test_past_its_rate_a_principal_is_refused_before_anything_is_evaluated(store):
    desk = DecisionDesk("hpc-a", Keeper(PolicyEngine(POLICY)), store, CENTRE, DOMAIN, RateLimit(1.0, 2))  # type: ignore[arg-type]
    alice = Subject("alice@hpc-a", "hpc-a", {"employee_type": "staff"})
    for _ in range(2):
        desk.keep(evaluate(desk, alice))
    with pytest.raises(
        TooManyRequests, match=r"at most 1 requests a second .*burst of 2.* nothing was evaluated"
    ) as caught:
        evaluate(desk, alice)
    assert 0 < caught.value.retry_after <= 1.0
    assert evaluate(desk, Subject("carol@cloud-b", "cloud-b", {})).decision.allowed  # another principal's own
    assert len(store.decisions_for_epoch(store.open_epoch())) == 2


def test_the_presented_sessions_of_one_ipv6_network_share_one_bound(store):
    """Each sign-on is a fresh pseudonym, so only the address bounds presented sessions; one IPv6 host holds a
    whole /64, so the /64 is one address (and an IPv4 address is its own)."""
    desk = DecisionDesk("hpc-a", Keeper(PolicyEngine(POLICY)), store, CENTRE, DOMAIN, client_limit=RateLimit(0.001, 2))  # type: ignore[arg-type]

    def ask(n: int, client: str):
        subject = Subject(f"{n:016x}@cloud-b", "cloud-b", {})
        return desk.evaluate(
            kind="quote", request=bytes(32), subject=subject, resource=CPU, context=SHORT, now=1, client=client
        )

    for n in range(2):
        ask(n, f"2001:db8:1:2::{n:x}")
    with pytest.raises(TooManyRequests, match="presented sessions of one network address"):
        ask(2, "2001:db8:1:2:ffff:ffff:ffff:ffff")
    ask(3, "2001:db8:1:3::1")  # another /64
    ask(4, "192.0.2.1") and ask(5, "192.0.2.2") and ask(6, "192.0.2.2")
    with pytest.raises(TooManyRequests):
        ask(7, "::ffff:192.0.2.2")  # the same IPv4 address, as IPv6 writes it


def test_a_refusal_carries_its_entry_signed_by_the_centre(store):
    """What the refused user holds: the entry, and the centre's signature of it in the deployment's domain."""
    desk = DecisionDesk("hpc-a", Keeper(PolicyEngine(POLICY)), store, CENTRE, DOMAIN)  # type: ignore[arg-type]
    bob = Subject("bob@hpc-a", "hpc-a", {"employee_type": "student"})
    long = SHORT | {"walltime": 7200}
    refusal = desk.refuse(
        desk.evaluate(kind="quote", request=bytes(32), subject=bob, resource=CPU, context=long, now=1)
    )
    assert refusal.entry["id"] == refusal.decision and refusal.entry["decision"] == "deny"
    assert entry_signer(refusal.entry, bytes.fromhex(refusal.signature[2:]), DOMAIN) == CENTRE.address
    assert store.decision(refusal.decision).entry == refusal.entry  # stored as signed
    other = Domain(chain_id=1337, verifying_contract="0x" + "34" * 20)  # another deployment's: not its statement
    assert entry_signer(refusal.entry, bytes.fromhex(refusal.signature[2:]), other) != CENTRE.address
    altered = refusal.entry | {"policies": []}
    assert entry_signer(altered, bytes.fromhex(refusal.signature[2:]), DOMAIN) != CENTRE.address
