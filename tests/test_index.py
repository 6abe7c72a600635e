"""The event index mirrors governance, anchors and settlements from the chain."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain import Chain, connect
from ledger.deploy import Contracts, Deployment, MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.index import EventIndex, IndexMismatch
from ledger.netting import net_positions, transfers

A, B, C, D = (centre_id(n) for n in ("hpc-a", "hpc-b", "hpc-c", "hpc-d"))
WINDOW = 5  # the dispute window, seconds
NONE = bytes(32)  # no decision log; no schema
POLICY_A1, POLICY_A2, SCHEMA_A2, POLICY_B1 = (bytes([n]) * 32 for n in (0xA1, 0xA2, 0x5A, 0xB1))
DECISIONS_A = b"\xde" * 32  # hpc-a's decision-log root of epoch 1


@dataclass
class World:
    chain: Chain
    deployment: Deployment
    contracts: Contracts
    accounts: dict[str, LocalAccount]
    specs: dict[str, MemberSpec]


def _spec(name: str, account: LocalAccount, n: int) -> MemberSpec:
    return MemberSpec(name, account.address, f"https://{name}.example", bytes([n]) * 32, Prices(n, 10 * n, 100 * n))


@pytest.fixture(scope="module")
def world() -> World:
    """Three genesis centres (quorum 2); hpc-d admitted and hpc-c removed by vote;
    hpc-b updates its endpoint and publishes rates due in two days; hpc-a publishes two policy versions
    (the second with a schema), hpc-b one; epoch 1 anchored by every active centre (a claim per home; hpc-a
    with a decision log of 5 entries), hpc-a's claim on hpc-b disputed and left unanswered, then settled."""
    chain = connect("embedded")
    accounts = {n: Account.create() for n in ("hpc-a", "hpc-b", "hpc-c", "hpc-d")}
    for acct in accounts.values():
        chain.fund(acct.address, 10**19)
    specs = {n: _spec(n, acct, i + 1) for i, (n, acct) in enumerate(accounts.items())}
    deployment = deploy_consortium(
        chain,
        chain.dev_account,
        [specs[n] for n in ("hpc-a", "hpc-b", "hpc-c")],
        2,
        10_000,
        dispute_window=WINDOW,
        anchor_bond=1_000,
        dispute_bond=100,
        reserve=1_000,
    )
    k = bind(chain, deployment)
    a, b, d = accounts["hpc-a"], accounts["hpc-b"], accounts["hpc-d"]
    chain.transact(k.consortium.functions.propose(0, specs["hpc-d"].as_tuple()), a)
    chain.transact(k.consortium.functions.vote(1), b)
    # an admitted member deposits its anchor bond before it can anchor
    chain.transact(k.credit.functions.approve(k.settlement.address, 1_000), chain.dev_account)
    chain.transact(k.settlement.functions.depositFor(d.address, 1_000), chain.dev_account)
    chain.transact(k.consortium.functions.propose(1, specs["hpc-c"].as_tuple()), a)
    chain.transact(k.consortium.functions.vote(2), b)
    chain.transact(k.consortium.functions.propose(1, specs["hpc-b"].as_tuple()), d)  # stays open
    chain.transact(k.consortium.functions.updateMember("https://b2.example", b"\x22" * 32), b)
    due = chain.w3.eth.get_block("latest")["timestamp"] + 2 * 86_400
    chain.transact(k.consortium.functions.publishRates((7, 70, 700), due), b)
    chain.transact(k.consortium.functions.publishPolicy(POLICY_A1, NONE), a)
    chain.transact(k.consortium.functions.publishPolicy(POLICY_B1, NONE), b)
    chain.transact(k.consortium.functions.publishPolicy(POLICY_A2, SCHEMA_A2), a)
    ledger = k.usage_ledger.functions
    chain.transact(ledger.anchor(1, [B, A], [b"\x0a" * 32, b"\x0c" * 32], [3, 1], [50, 4], DECISIONS_A, 5), a)
    chain.transact(ledger.anchor(1, [A], [b"\x0b" * 32], [2], [20], NONE, 0), b)
    chain.transact(ledger.anchor(1, [B], [b"\x0d" * 32], [1], [7], b"\xdd" * 32, 1), d)
    chain.transact(ledger.dispute(A, 1, B, 1, False), b)  # never answered: the claim is void at settlement
    chain.w3.provider.ethereum_tester.time_travel(chain.w3.eth.get_block("latest")["timestamp"] + 2 * WINDOW + 1)
    chain.transact(k.settlement.functions.settle(1), a)
    return World(chain, deployment, k, accounts, specs)


def _counts(path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("events", "members", "anchors", "claims", "settlements", "transfers", "votes")
        }
    finally:
        db.close()


def test_sync_builds_members_anchors_and_settlement(world, tmp_path):
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    assert index.sync() > 0

    assert [m.name for m in index.members()] == ["hpc-a", "hpc-b", "hpc-d"]  # netting order
    a = index.member("hpc-a")
    assert a.id == A and a.account == world.accounts["hpc-a"].address and a.active
    assert a.gateway_url == "https://hpc-a.example" and a.prices == Prices(1, 10, 100)
    assert index.member(A) == a
    b = index.member("hpc-b")
    assert (b.gateway_url, b.token_key) == ("https://b2.example", b"\x22" * 32)
    assert (b.prices, b.rates_version) == (Prices(2, 20, 200), 1)  # the new rates are not due yet
    assert index.member_by_account(world.accounts["hpc-d"].address).name == "hpc-d"

    # the token verifier's view: removed and unknown centres have no key
    assert index.token_key("hpc-a") == bytes([1]) * 32
    assert index.token_key("hpc-b") == b"\x22" * 32
    assert index.member("hpc-c").active is False
    assert index.token_key("hpc-c") is None
    assert index.token_key("nowhere") is None
    assert index.token_key("Not A Name!") is None
    assert index.member_by_account(world.accounts["hpc-c"].address) is None

    anchor = index.anchor(A, 1)
    assert anchor.record_count == 4 and anchor.anchored_at > 0
    assert [(h, c.root, c.count, c.total, c.voided) for h, c in anchor.homes.items()] == [
        (B, b"\x0a" * 32, 3, 50, True),  # disputed, unanswered: void
        (A, b"\x0c" * 32, 1, 4, False),  # its own users': anchored for the audit, never claimed
    ]
    assert anchor.claims == {}
    assert anchor.tx_hash.startswith("0x") and anchor.block > world.deployment.start_block
    assert index.anchor("hpc-d", 1).claims == {B: 7}
    assert [(d.id, d.centre, d.home, d.index, d.need_key, d.status) for d in index.disputes(epoch=1)] == [
        (1, A, B, 1, False, "voided")
    ]
    assert index.open_disputes() == [] and [c.centre for c in index.claims_on(B)] == [A, D]
    # the anchor bond of the voided claim went to the challenger; the others stay locked
    # across epochs (hpc-d, admitted later, deposited its bond)
    bond = {n: index.collateral(world.accounts[n].address) for n in ("hpc-a", "hpc-b", "hpc-d")}
    assert [(c.balance, c.locked) for c in bond.values()] == [
        (10_000 - 1_000 - 20, 0),
        (10_000 + 1_000 + 13, 1_000),
        (1_000 + 7, 1_000),
    ]
    assert bond["hpc-b"].free == 10_013 and index.shortfalls(1) == {}
    assert index.anchor(A, 2) is None
    assert [x.centre for x in index.anchors(1)] == [A, B, D]
    assert index.anchors(2) == []

    settled = index.settlement(1)
    members = [A, B, D]
    claims = {(x.centre, debtor): amt for x in index.anchors(1) for debtor, amt in x.claims.items()}
    assert settled.net == net_positions(claims, members) == {A: -20, B: 13, D: 7}
    assert list(settled.net) == members
    assert settled.transfers == transfers(settled.net, members) == [(A, B, 13), (A, D, 7)]
    assert index.settlement(2) is None

    proposals = index.proposals()
    assert [(p.id, p.action, p.member_id, p.executed) for p in proposals] == [
        (1, 0, D, True),
        (2, 1, C, True),
        (3, 1, B, False),
    ]
    assert proposals[0].voters == [A, B] and proposals[2].voters == [D]
    assert [p.id for p in index.proposals(open_only=True)] == [3]


def test_resync_is_a_noop_and_small_windows_agree(world, tmp_path):
    big = EventIndex(tmp_path / "big.sqlite", world.chain, world.deployment)
    small = EventIndex(tmp_path / "small.sqlite", world.chain, world.deployment, window=3)
    n = big.sync()
    assert small.sync() == n
    before = _counts(tmp_path / "big.sqlite")
    assert big.sync() == 0
    assert _counts(tmp_path / "big.sqlite") == before == _counts(tmp_path / "small.sqlite")
    assert small.members() == big.members()
    assert small.settlement(1) == big.settlement(1)
    assert small.last_block == big.last_block == world.chain.block_number()


def test_new_index_on_same_file_resumes(world, tmp_path):
    path = tmp_path / "idx.sqlite"
    first = EventIndex(path, world.chain, world.deployment)
    first.sync()
    last = first.last_block
    first.close()

    world.chain.transact(
        world.contracts.usage_ledger.functions.anchor(2, [A], [b"\x0c" * 32], [1], [5], NONE, 0),
        world.accounts["hpc-b"],
    )
    again = EventIndex(path, world.chain, world.deployment)
    assert again.last_block == last
    assert again.anchor(A, 1) is not None  # kept from the first run
    assert again.sync() == 1  # only the new anchor: hpc-b's bond, kept locked, is whole
    assert again.anchor(B, 2).claims == {A: 5}


def test_index_refuses_another_chain(world, tmp_path):
    path = tmp_path / "idx.sqlite"
    EventIndex(path, world.chain, world.deployment).sync()

    other = connect("embedded")
    accounts = [Account.create() for _ in range(2)]
    for acct in accounts:
        other.fund(acct.address, 10**19)
    specs = [_spec(f"x-{i}", acct, i + 1) for i, acct in enumerate(accounts)]
    deployment = deploy_consortium(other, other.dev_account, specs, 1, 0)
    with pytest.raises(IndexMismatch):
        EventIndex(path, other, deployment).sync()
    # same addresses, different history (a fresh chain reusing the deployment file)
    with pytest.raises(IndexMismatch, match="does not have"):
        EventIndex(path, other, Deployment(**{**world.deployment.__dict__, "chain_id": other.chain_id})).sync()
    other.mine(world.chain.block_number())
    with pytest.raises(IndexMismatch, match="another chain history"):
        EventIndex(path, other, Deployment(**{**world.deployment.__dict__, "chain_id": other.chain_id})).sync()


def test_follow_keeps_the_index_current(world, tmp_path):
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    index.sync()
    seen = threading.Event()
    errors = []
    index.follow(interval=0.02, on_error=errors.append)
    try:
        world.chain.transact(
            world.contracts.usage_ledger.functions.anchor(3, [B], [b"\x0d" * 32], [1], [9], NONE, 0),
            world.accounts["hpc-d"],
        )
        for _ in range(500):
            if index.anchor(D, 3) is not None:
                seen.set()
                break
            threading.Event().wait(0.01)
    finally:
        index.stop()
    assert seen.is_set(), errors
    assert index.anchor(D, 3).claims == {B: 9}


def test_concurrent_reads_during_sync(world, tmp_path):
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment, window=2)
    failures = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                index.members()
                index.anchors(1)
                index.settlement(1)
            except Exception as exc:  # noqa: BLE001  # pragma: no cover - a thread's failure: the assertion reports it
                failures.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    index.sync()
    done.set()
    for t in threads:
        t.join()
    assert failures == []
    assert [m.name for m in index.members()] == ["hpc-a", "hpc-b", "hpc-d"]


def test_sync_over_json_rpc(anvil_url, tmp_path):
    """The same index over a real node (anvil): logs come back as JSON-RPC, not eth-tester."""
    chain = connect(anvil_url)
    accounts = [Account.create() for _ in range(2)]
    for acct in accounts:
        chain.fund(acct.address, 10**19)
    x, y = (centre_id(n) for n in ("rpc-x", "rpc-y"))
    specs = [_spec(n, acct, i + 1) for i, (n, acct) in enumerate(zip(("rpc-x", "rpc-y"), accounts, strict=True))]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 1, 1_000, dispute_window=1, anchor_bond=100)
    k = bind(chain, deployment)
    chain.transact(k.usage_ledger.functions.anchor(1, [y], [b"\x01" * 32], [2], [11], b"\x03" * 32, 2), accounts[0])
    chain.transact(k.usage_ledger.functions.anchor(1, [x], [b"\x02" * 32], [1], [4], NONE, 0), accounts[1])
    chain.transact(k.consortium.functions.publishPolicy(b"\x04" * 32, NONE), accounts[1])
    chain.w3.provider.make_request("evm_increaseTime", [3])  # past both windows
    chain.w3.provider.make_request("anvil_mine", [1])
    chain.transact(k.settlement.functions.settle(1), accounts[1])

    index = EventIndex(tmp_path / "rpc.sqlite", chain, deployment, window=2)
    assert index.sync() > 0 and index.sync() == 0
    assert [m.name for m in index.members()] == ["rpc-x", "rpc-y"]
    assert index.anchor(x, 1).claims == {y: 11}
    assert (index.anchor(x, 1).decision_root, index.anchor(x, 1).decision_count) == (b"\x03" * 32, 2)
    assert index.policy("rpc-y").policy_hash == b"\x04" * 32 and index.policy("rpc-x") is None
    settled = index.settlement(1)
    assert settled.net == {x: 7, y: -7} and settled.transfers == [(y, x, 7)]


def test_every_rates_version_is_kept_and_the_one_in_force_found(world, tmp_path):
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    index.sync()
    history = index.rates_history("hpc-b")
    assert [(r.centre, r.version, r.prices) for r in history] == [
        (B, 1, Prices(2, 20, 200)),
        (B, 2, Prices(7, 70, 700)),
    ]
    genesis, due = history[0].effective_from, history[1].effective_from
    assert genesis <= index.chain_time < due
    assert index.rates("hpc-b", 2) == history[1] and index.rates(B, 1) == history[0]
    assert index.rates_in_force("hpc-b", due - 1) == history[0]
    assert index.rates_in_force("hpc-b", due) == index.rates_in_force(B, 2**63 - 1) == history[1]
    assert index.rates_in_force("hpc-b", genesis - 1) is None  # before admission
    # a removed centre's rates stay, for the audit of its records
    assert index.member("hpc-c").active is False and index.rates("hpc-c", 1).prices == Prices(3, 30, 300)
    assert index.rates("hpc-d", 1).prices == Prices(4, 40, 400)  # admitted by vote: its admission rates
    for centre, version in (("hpc-b", 3), ("hpc-b", 0), ("nowhere", 1), ("Not A Name!", 1), ("hpc-b", "1")):
        assert index.rates(centre, version) is None
    assert index.rates_history("nowhere") == [] and index.rates_in_force("Not A Name!", due) is None


def test_every_policy_version_is_kept_apart_per_centre_and_the_latest_found(world, tmp_path):
    from ledger.policies import history

    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    index.sync()
    a1, a2 = index.policies("hpc-a")
    assert [(p.centre, p.version, p.policy_hash, p.schema_hash) for p in (a1, a2)] == [
        (A, 1, POLICY_A1, NONE),
        (A, 2, POLICY_A2, SCHEMA_A2),
    ]
    assert 0 < a1.published_at <= a2.published_at <= index.chain_time
    # the same versions, published_at included, as the contract's own views give them
    on_chain = [
        (v.version, v.policy_hash, v.schema_hash, v.published_at)
        for v in history(world.chain, world.deployment, "hpc-a")
    ]
    assert on_chain == [(p.version, p.policy_hash, p.schema_hash, p.published_at) for p in (a1, a2)]
    assert index.policy("hpc-a") == index.policy(A) == index.policy("hpc-a", 2) == a2  # the latest
    assert index.policy("hpc-a", 1) == index.policy(A, 1) == a1
    # hpc-b's version 1, published between hpc-a's two, is its own
    assert [(p.centre, p.version, p.policy_hash) for p in index.policies(B)] == [(B, 1, POLICY_B1)]
    assert index.policy("hpc-b") == index.policy("hpc-b", 1) == index.policies("hpc-b")[0]
    assert index.policies("hpc-d") == [] and index.policy("hpc-d") is None  # never published one
    for centre, version in (("hpc-a", 3), ("hpc-a", 0), ("hpc-b", 2), ("hpc-a", "1"), ("hpc-a", True)):
        assert index.policy(centre, version) is None, (centre, version)
    assert index.policy("nowhere") is None and index.policy("Not A Name!") is None and index.policies(b"x") == []


def test_an_anchor_carries_its_decision_log_root_and_count(world, tmp_path):
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    index.sync()
    logs = {x.centre: (x.decision_root, x.decision_count) for x in index.anchors(1)}
    assert logs == {A: (DECISIONS_A, 5), B: (NONE, 0), D: (b"\xdd" * 32, 1)}
    assert (index.anchor("hpc-a", 1).decision_root, index.anchor("hpc-a", 1).decision_count) == (DECISIONS_A, 5)
    decisions = world.contracts.usage_ledger.functions.decisionsOf(A, 1).call()
    assert (bytes(decisions[0]), decisions[1]) == (DECISIONS_A, 5)


def test_list_reads_run_a_fixed_number_of_queries(world, tmp_path):
    """Lists are read in one query per table, however many rows they hold (no query per row)."""
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    index.sync()
    statements: list[str] = []
    index._db.set_trace_callback(statements.append)
    reads = {
        "members": index.members,  # the chain's clock, then members with their rates in force
        "anchors": lambda: index.anchors(1),  # anchors, then their claims
        "proposals": index.proposals,  # proposals, then their votes
        "key_proposals": index.key_proposals,
    }
    counts, sizes = {}, {}
    try:
        for name, read in reads.items():
            statements.clear()
            sizes[name] = len(read())
            counts[name] = sum(s.lstrip().upper().startswith("SELECT") for s in statements)
    finally:
        index._db.set_trace_callback(None)
    assert sizes == {"members": 3, "anchors": 3, "proposals": 3, "key_proposals": 0}
    limits = {"members": 2, "anchors": 2, "proposals": 2, "key_proposals": 2}
    assert {name: n for name, n in counts.items() if n > limits[name]} == {}


def test_every_event_of_the_indexed_contracts_has_a_projection():
    """An event the contracts gain gets a handler in the projection table, and no handler outlives its event."""
    from ledger.artifacts import abi
    from ledger.index.projections import PROJECTIONS

    assert set(PROJECTIONS) == {"Consortium", "UsageLedger", "Settlement", "IdentityRegistry"}
    for contract, handlers in PROJECTIONS.items():
        events = {e["name"] for e in abi(contract) if e["type"] == "event"}
        missing, stale = events - set(handlers), set(handlers) - events
        assert not missing, f"{contract} emits {sorted(missing)}: add handlers to ledger/index/projections.py"
        assert not stale, f"{contract} no longer emits {sorted(stale)}: remove their handlers"


def test_an_index_written_before_schema_versions_opens_with_its_rows(world, tmp_path):
    """A file of the first layout (user_version 0) is adopted as version 1, rows kept, then migrated."""
    from pathlib import Path

    from ledger.db import schema_version
    from ledger.index.schema import MIGRATIONS

    dump = (Path(__file__).parent / "fixtures" / "databases" / "index_v0.sql").read_text()
    deployment = Deployment.from_json(dump.splitlines()[1].removeprefix("-- Deployment: "))
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(dump)
        assert schema_version(db) == 0
    fresh = EventIndex(tmp_path / "new.sqlite", world.chain, deployment)
    index = EventIndex(path, world.chain, deployment)

    def layout(db: sqlite3.Connection) -> list[tuple]:
        return [*db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"), schema_version(db)]

    with sqlite3.connect(path) as old, sqlite3.connect(tmp_path / "new.sqlite") as new:
        assert layout(old) == layout(new) and schema_version(old) == len(MIGRATIONS)
    a, b, c = (centre_id(n) for n in ("hpc-a", "hpc-b", "hpc-c"))
    assert [m.name for m in index.members()] == ["hpc-a", "hpc-b", "hpc-c"] and fresh.members() == []
    assert index.member("hpc-c").prices == Prices(3, 30, 300)
    assert [(p.id, p.action, p.member_id, p.executed, p.voters) for p in index.proposals()] == [
        (1, 0, c, True, [a, b]),
        (2, 1, b, False, [c]),
    ]
    assert [(x.centre, x.claims) for x in index.anchors(1)] == [(a, {b: 50}), (b, {a: 20}), (c, {})]
    # anchored before decision logs were: none committed
    assert {(x.decision_root, x.decision_count) for x in index.anchors(1)} == {(NONE, 0)}
    assert index.policies("hpc-a") == [] and index.policy("hpc-a") is None
    assert index.settlement(1).transfers == [(b, a, 30)]
    assert index.current_issuer_key("hpc-a").pk == b"\x07" * 96
    assert index.enrolment("hpc-a", b"\x05" * 32).revoked and index.revocation_epoch("hpc-a") == 1
    assert index.last_block > deployment.start_block and index.chain_time > 0


def test_fair_payment_events_project_claims_disputes_keys_and_collateral(tmp_path):
    """Anchors claim per home; a dispute answered by a reveal keeps k by its lock hash; a voided claim stands for
    nothing; collateral follows deposits, settlement transfers and withdrawals."""
    from eth_utils import keccak

    from ledger.index.projections import Event, project
    from ledger.index.queries import IndexQueries
    from ledger.index.schema import open_index

    db = open_index(tmp_path / "idx.sqlite")
    accounts = {A: Account.create().address, B: Account.create().address}
    n = iter(range(1, 100))

    def ev(contract: str, event: str, **args) -> None:
        project(db, Event(contract, event, args, next(n), 0, "0x" + "ab" * 32))

    for i, (member, account) in enumerate(accounts.items()):
        ev("Consortium", "MemberAdmitted", id=member, name=f"m{i}", account=account, gatewayUrl="u", tokenKey=b"k" * 32)
    ev(
        "UsageLedger",
        "EpochAnchored",
        centre=A,
        epoch=1,
        homes=[A, B],
        roots=[b"\x01" * 32, b"\x02" * 32],
        counts=[1, 3],
        totals=[5, 70],
        anchoredAt=1000,
        decisionRoot=b"\x08" * 32,
        decisionCount=6,
    )
    ev(
        "UsageLedger",
        "EpochAnchored",
        centre=B,
        epoch=1,
        homes=[A],
        roots=[b"\x03" * 32],
        counts=[2],
        totals=[40],
        anchoredAt=1001,
        decisionRoot=NONE,
        decisionCount=0,
    )
    key = b"\x07" * 32
    ev("UsageLedger", "Disputed", id=1, centre=A, epoch=1, home=B, index=2, needKey=True, challenger=accounts[B])
    ev("UsageLedger", "Disputed", id=2, centre=B, epoch=1, home=A, index=0, needKey=False, challenger=accounts[A])
    ev("Settlement", "Deposited", account=accounts[A], amount=1_000)
    ev("Settlement", "Deposited", account=accounts[B], amount=500)
    q = IndexQueries(db, threading.RLock())
    assert [d.id for d in q.open_disputes()] == [1, 2] and q.revealed_key(keccak(key)) is None
    ev("UsageLedger", "DisputeAnswered", id=1, recordDigest=b"\x09" * 32, key=key)
    ev("UsageLedger", "ClaimVoided", centre=B, epoch=1, home=A, disputeId=2)
    ev("Settlement", "SettlementTransfer", epoch=1, **{"from": B, "to": A, "amount": 70})
    ev("Settlement", "WithdrawalRequested", account=accounts[A], amount=100, unlockEpoch=3)

    assert q.revealed_key(keccak(key)) == key and q.revealed_key(b"\x00" * 32) is None
    assert q.open_disputes() == [] and [d.status for d in q.disputes(epoch=1)] == ["answered", "voided"]
    a, b = q.anchor(A, 1), q.anchor(B, 1)
    assert (a.record_count, a.anchored_at, a.claims) == (4, 1000, {B: 70})  # own home anchored, never claimed
    assert (a.decision_root, a.decision_count, b.decision_root, b.decision_count) == (b"\x08" * 32, 6, NONE, 0)
    assert a.homes[B].root == b"\x02" * 32 and (a.homes[B].count, a.homes[B].total) == (3, 70)
    assert b.claims == {} and b.homes[A].voided
    assert [(c.centre, c.total, c.voided) for c in q.claims_on(A)] == [(B, 40, True)]
    assert [(c.centre, c.count) for c in q.claims_on(B, 1)] == [(A, 3)]
    assert q.collateral(accounts[A]).free == 1_000 + 70 - 100 and q.collateral(accounts[B]).balance == 430
    assert q.collateral(Account.create().address).free == 0


def test_a_homes_revocation_epoch_at_a_time_follows_its_revocations_block_times(tmp_path):
    """Group credentials carry their home's revocation epoch as it stood at the start of their issue week, so the
    index answers the epoch at any time from the Revoked events' block times; an index written before it kept
    them learns them from the chain at its next sync."""
    from eth_utils import keccak

    from ledger.db import schema_version
    from ledger.index.schema import MIGRATIONS
    from tests.test_contracts import advance

    chain = connect("embedded")
    accounts = {n: Account.create() for n in ("hpc-a", "hpc-b")}
    for acct in accounts.values():
        chain.fund(acct.address, 10**19)
    specs = [_spec(n, acct, i + 1) for i, (n, acct) in enumerate(accounts.items())]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 1, 1_000)
    registry = bind(chain, deployment).identity_registry.functions
    times = []
    for n in range(2):
        chain.transact(registry.enrol(keccak(f"user {n}".encode())), accounts["hpc-a"])
    for n in range(2):
        advance(chain, 1_000)
        receipt = chain.transact(registry.revoke(keccak(f"user {n}".encode())), accounts["hpc-a"])
        times.append(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
    first, second = times
    path = tmp_path / "idx.sqlite"
    index = EventIndex(path, chain, deployment)
    index.sync()

    def epochs(q) -> list[int]:
        return [q.revocation_epoch_at("hpc-a", t) for t in (0, first - 1, first, second - 1, second, 2**40)]

    assert epochs(index) == [0, 0, 1, 1, 2, 2] and index.revocation_epoch("hpc-a") == 2
    assert index.revocation_epoch_at("hpc-b", 2**40) == 0 and index.revocation_epoch_at("nobody", 2**40) == 0
    index.close()

    with sqlite3.connect(path) as db:  # the file as the step before this one left it
        db.executescript("DROP TABLE revocations; PRAGMA user_version = 3;")  # before step 4 (later ones run again)
    older = EventIndex(path, chain, deployment)
    with sqlite3.connect(path) as db:
        assert schema_version(db) == len(MIGRATIONS)
    # times not read yet: each revocation counts as in force since ever, never as not yet made
    assert epochs(older) == [2, 2, 2, 2, 2, 2]
    assert older.sync() == 0 and epochs(older) == [0, 0, 1, 1, 2, 2]
    older.close()


def test_a_sync_asked_again_within_its_freshness_asks_the_chain_nothing(world, tmp_path):
    """What a public route's flood relies on (GET /v1/audit/epochs/{n}): `unless_within` seconds after a sync
    finished, another asks the chain nothing; without it, or once that long has passed, the chain is asked."""
    index = EventIndex(tmp_path / "idx.sqlite", world.chain, world.deployment)
    index.sync()
    asked: list[int] = []
    head = index._sync.reader.head
    index._sync.reader.head = lambda: asked.append(1) or head()  # type: ignore[method-assign]
    assert index.sync(unless_within=60) == 0 and asked == []
    index.sync()
    assert asked == [1]
    assert index.sync(unless_within=0) == 0 and asked == [1, 1]
