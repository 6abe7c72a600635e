"""Settlement at consortium scale: linear gas, silent members, late claims, running nets.

The gas tests run on anvil (every member claiming on every other: n(n-1) claims anchored
is far too slow on py-evm); the rule tests run on the embedded chain.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from eth_account import Account
from web3.logs import DISCARD

from ledger.chain import connect
from ledger.deploy import bind, deploy_consortium
from ledger.ids import centre_id
from ledger.netting import former_participants, late_positions, net_positions, settle_from_collateral, transfers
from ledger.records import UsageRecord, domain_for, record_digest
from ledger.sumtree import SumTree
from tests.test_contracts import (
    ADMIT,
    REMOVE,
    Consortium,
    advance,
    anchor_all,
    collateral,
    make_consortium,
    reverts,
    settled_transfers,
    spec,
)

SETTLE_GAS_GOAL = 5_000_000
GAS_PER_MEMBER = 40_000
GENESIS = 16  # members deployed at once; the others are admitted by vote (quorum 1)
CREDIT = 10**15


def big_consortium(url: str, n: int) -> Consortium:
    """n members on `url`, each with CREDIT of collateral, quorum 1, no dispute window."""
    chain = connect(url)
    names = [f"m{i:03d}" for i in range(n)]
    accounts = {name: Account.create() for name in names}
    for acct in accounts.values():
        chain.fund(acct.address, 10**18)
    specs = [spec(name, accounts[name]) for name in names]
    first = min(n, GENESIS)
    deployment = deploy_consortium(
        chain,
        chain.dev_account,
        specs[:first],
        1,
        CREDIT,
        dispute_window=0,
        anchor_bond=1_000,
        reserve=CREDIT * (n - first),
    )
    c = bind(chain, deployment)
    if n > first:
        chain.transact(c.credit.functions.approve(deployment.settlement, CREDIT * (n - first)), chain.dev_account)
    for s in specs[first:]:
        chain.transact(c.consortium.functions.propose(ADMIT, s.as_tuple()), accounts[names[0]])
        chain.transact(c.settlement.functions.depositFor(s.account, CREDIT), chain.dev_account)
    return Consortium(chain, deployment, c, accounts, specs)


def dense_claims(names: list[str], seed: int, most: int = 10**9) -> dict[tuple[str, str], int]:
    rng = random.Random(seed)
    return {(a, b): rng.randint(1, most) for a in names for b in names if a != b}


def by_id(claims: dict[tuple[str, str], int]) -> dict[tuple[bytes, bytes], int]:
    return {(centre_id(c), centre_id(d)): v for (c, d), v in claims.items()}


def settled_event(k: Consortium, receipt) -> tuple[list[bytes], list[int]]:
    (ev,) = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)
    return list(ev["args"]["centres"]), list(ev["args"]["net"])


@pytest.mark.parametrize("n", [32, 64, 100])
def test_settle_with_every_member_claiming_on_every_other_stays_under_5m_gas(own_anvil_url, n):
    k = big_consortium(own_anvil_url, n)
    claims = dense_claims(list(k.accounts), n)
    anchor_all(k, 1, claims)
    advance(k.chain, 1)
    receipt = k.tx(k.c.settlement.functions.settle(1), "m000")
    print(f"settle, {n} members each claiming on every other: {receipt['gasUsed']} gas")
    assert receipt["gasUsed"] < SETTLE_GAS_GOAL, f"{n} members: settle used {receipt['gasUsed']} gas"
    # linear: about 25k per member now; summing the n x n claims took 3.7M at 32 members
    assert receipt["gasUsed"] < GAS_PER_MEMBER * n, f"{n} members: settle used {receipt['gasUsed']} gas"
    ids, net = settled_event(k, receipt)
    assert ids == k.ids() and sum(net) == 0
    assert dict(zip(ids, net, strict=True)) == net_positions(by_id(claims), ids)
    assert settled_transfers(k, receipt) == transfers(dict(zip(ids, net, strict=True)), ids)


# -- the anchor deadline: a silent member ------------------------------------------------

WINDOW = 100
BOND = 1_000


def silent(**params: int) -> Consortium:
    """Four members, an anchor window of WINDOW seconds; edge-d will stay silent."""
    return make_consortium(
        ["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3, anchor_window=WINDOW, anchor_bond=BOND, **params
    )


CLAIMS = {
    ("hpc-a", "hpc-b"): 100,
    ("hpc-a", "edge-d"): 40,
    ("hpc-b", "cloud-c"): 25,
    ("cloud-c", "edge-d"): 30,
    ("cloud-c", "hpc-a"): 5,
}
LATE = {("edge-d", "hpc-a"): 70, ("edge-d", "cloud-c"): 9}


def now(k: Consortium) -> int:
    return k.chain.w3.eth.get_block("latest")["timestamp"]


def test_a_silent_member_is_settled_without_after_the_deadline_and_not_before():
    k = silent()
    anchor_all(k, 1, CLAIMS, skip=("edge-d",))
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    deadline = ul.anchorDeadline(1).call()
    assert deadline > now(k) and ul.settleable(1).call() is False
    reverts("NotSettleable", k.tx, st.settle(1), "hpc-a")
    advance(k.chain, deadline - now(k))  # at the deadline the members may still anchor
    assert ul.settleable(1).call() is False
    reverts("NotSettleable", k.tx, st.settle(1), "hpc-a")
    k.chain.mine()  # one second past it
    assert ul.settleable(1).call() is True
    before = collateral(k)
    receipt = k.tx(st.settle(1), "hpc-a")
    ids, net = settled_event(k, receipt)
    # the claims on the silent member are netted: it pays them from its collateral
    assert ids == k.ids() and sum(net) == 0
    assert dict(zip(ids, net, strict=True)) == net_positions(by_id(CLAIMS), ids)
    assert net[3] == -70
    after = collateral(k)
    assert [a - b for a, b in zip(after, before, strict=True)] == net
    assert sum(after) == sum(before)


def test_an_anchor_after_the_deadline_waits_for_settle_late_and_is_paid_once():
    k = silent(dispute_window=10)
    anchor_all(k, 1, CLAIMS, skip=("edge-d",))
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    d = centre_id("edge-d")
    advance(k.chain, ul.anchorDeadline(1).call() - now(k))
    anchor_all(k, 1, LATE, skip=("hpc-a", "hpc-b", "cloud-c"))  # after the deadline: late
    assert ul.lateOf(d, 1).call() == [True, False]
    reverts("NotSettleable", k.tx, st.settleLate(1, d), "hpc-a")  # the epoch is not settled yet
    receipt = k.tx(st.settle(1), "hpc-b")
    ids, net = settled_event(k, receipt)
    assert dict(zip(ids, net, strict=True)) == net_positions(by_id(CLAIMS), ids)  # the late claims wait
    err = reverts("AnswersDue", k.tx, st.settleLate(1, d), "hpc-a")  # its own disputes come first
    advance(k.chain, err.error_args[0] + 1 - now(k))
    before = collateral(k)
    receipt = k.tx(st.settleLate(1, d), "hpc-a")
    (ev,) = k.c.settlement.events.LateClaimsSettled().process_receipt(receipt, errors=DISCARD)
    members = k.ids()
    ids, moved = late_positions(d, {centre_id(h): v for (_, h), v in LATE.items()}, members)
    assert (
        (ev["args"]["centres"], ev["args"]["net"])
        == (ids, [moved[i] for i in ids])
        == (
            [d, centre_id("hpc-a"), centre_id("cloud-c")],
            [79, -70, -9],
        )
    )
    assert settled_transfers(k, receipt) == [(centre_id("hpc-a"), d, 70), (centre_id("cloud-c"), d, 9)]
    after = collateral(k)
    assert [a - b for a, b in zip(after, before, strict=True)] == [-70, 0, -9, 79]
    assert ul.lateOf(d, 1).call() == [True, True]
    reverts("LateAlreadySettled", k.tx, st.settleLate(1, d), "hpc-b")  # never paid twice
    reverts("NotLate", k.tx, st.settleLate(1, centre_id("hpc-a")), "hpc-b")  # on time: netted already
    assert collateral(k) == after


def test_an_anchor_after_settlement_is_late_and_open_to_disputes_first():
    """The silent member anchors after the epoch settled; a home disputes one of its claims
    and nobody answers: settleLate voids that claim and pays only the other."""
    k = silent(dispute_window=10)
    anchor_all(k, 1, CLAIMS, skip=("edge-d",))
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    d, a = centre_id("edge-d"), centre_id("hpc-a")
    advance(k.chain, ul.anchorDeadline(1).call() + 1 - now(k))
    k.tx(st.settle(1), "hpc-b")
    anchor_all(k, 1, LATE, skip=("hpc-a", "hpc-b", "cloud-c"))
    assert ul.lateOf(d, 1).call() == [True, False]
    assert ul.positionOf(1, d).call() == -70  # the running nets ignore late claims
    k.tx(ul.dispute(d, 1, a, 0, False), "hpc-a")
    anchored_at = ul.anchorOf(d, 1).call()[1]
    advance(k.chain, anchored_at + 21 - now(k))
    before = collateral(k)
    receipt = k.tx(st.settleLate(1, d), "cloud-c")
    voided = k.c.usage_ledger.events.ClaimVoided().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["centre"], e["args"]["home"]) for e in voided] == [(d, a)]
    assert settled_transfers(k, receipt) == [(centre_id("cloud-c"), d, 9)]
    after = collateral(k)
    # the challenger wins edge-d's anchor bond (what is locked of it) and gets its own back
    bond = BOND
    assert [x - y for x, y in zip(after, before, strict=True)] == [bond, 0, -9, 9 - bond]


def test_with_every_member_anchored_the_epoch_settles_before_the_deadline():
    k = silent()
    anchor_all(k, 1, CLAIMS)
    assert k.c.usage_ledger.functions.anchorDeadline(1).call() > now(k)
    receipt = k.tx(k.c.settlement.functions.settle(1), "hpc-a")
    ids, net = settled_event(k, receipt)
    assert dict(zip(ids, net, strict=True)) == net_positions(by_id(CLAIMS), ids)


# -- running nets: removed members, voided claims ---------------------------------------


def test_claims_by_and_on_members_removed_after_anchoring_are_left_out():
    names = ["hpc-a", "hpc-b", "cloud-c", "edge-d", "ai-e"]
    k = make_consortium(names, quorum=1)
    claims = dense_claims(names, 3, 10**4)
    anchor_all(k, 1, claims)
    assert k.c.usage_ledger.functions.participantCount(1).call() == 5
    fns = k.c.consortium.functions
    for gone in ("cloud-c", "ai-e"):
        k.tx(fns.propose(REMOVE, spec(gone, k.accounts[gone]).as_tuple()), "hpc-a")
    active = [centre_id(n) for n in ("hpc-a", "hpc-b", "edge-d")]
    assert fns.memberIds().call() == active
    st = k.c.settlement.functions
    err = reverts("FormerParticipants", k.tx, st.settle(1), "hpc-b")
    assert err.error_args == (1, 2)
    c, e = centre_id("cloud-c"), centre_id("ai-e")
    reverts("FormerParticipants", k.tx, st.settleWithout(1, [c]), "hpc-b")  # one left out
    assert reverts("NotFormer", k.tx, st.settleWithout(1, [c, e]), "hpc-b").error_args == (e,)  # not ascending
    assert reverts("NotFormer", k.tx, st.settleWithout(1, [c, c]), "hpc-b").error_args == (c,)
    a = centre_id("hpc-a")  # a member's claims are never taken out
    assert reverts("FormerParticipants", k.tx, st.settleWithout(1, [a, e, c]), "hpc-b").error_args == (1, 2)
    anchors = [(centre_id(n), 0, [centre_id(h) for (x, h) in claims if x == n]) for n in names]
    assert former_participants(anchors, active, 0) == [e, c]  # ascending bytes
    receipt = k.tx(st.settleWithout(1, [e, c]), "hpc-b")
    ids, net = settled_event(k, receipt)
    assert ids == active and sum(net) == 0
    assert dict(zip(ids, net, strict=True)) == net_positions(by_id(claims), active)


def test_a_member_readmitted_before_settlement_counts_again():
    names = ["hpc-a", "hpc-b", "cloud-c"]
    k = make_consortium(names, quorum=1)
    claims = dense_claims(names, 4, 10**4)
    anchor_all(k, 1, claims)
    fns = k.c.consortium.functions
    k.tx(fns.propose(REMOVE, spec("cloud-c", k.accounts["cloud-c"]).as_tuple()), "hpc-a")
    k.tx(fns.propose(ADMIT, spec("cloud-c", k.accounts["cloud-c"]).as_tuple()), "hpc-a")
    k.chain.mine()
    receipt = k.tx(k.c.settlement.functions.settle(1), "hpc-b")  # nobody to name: all are members
    ids, net = settled_event(k, receipt)
    assert dict(zip(ids, net, strict=True)) == net_positions(by_id(claims), ids)


def records(k: Consortium, epoch: int, centre: str, home: str, prices: list[int], grants: list[bytes]):
    """Usage records of `centre` on `home` (only the fields the contract checks matter here)."""
    out = []
    for i, (p, g) in enumerate(zip(prices, grants, strict=True)):
        out.append(
            UsageRecord(
                record_id=bytes([i + 1]) * 32,
                job_id=bytes([i + 1]) * 32,
                serving_centre=centre_id(centre),
                home_centre=centre_id(home),
                user=bytes(32),
                epoch=epoch,
                started_at=1,
                ended_at=2,
                cpu_millis=1,
                wall_millis=1,
                max_rss_kib=1,
                gpu_millis=0,
                rates_version=1,
                price=p,
                order=bytes([0xA0 + i]) * 32,
                grant=g,
                lock_hash=bytes(32),
                decision=bytes(32),
            )
        )
    return out


def test_voided_claims_leave_the_running_nets_and_the_settlement():
    """An unanswered dispute (upheld at settlement) and a duplicate-grant proof (at once)
    each take their claim out of both centres' running nets; the nets always sum to zero."""
    names = ["hpc-a", "hpc-b", "cloud-c", "edge-d"]
    k = make_consortium(names, quorum=3, dispute_window=30, anchor_bond=BOND)
    ul = k.c.usage_ledger.functions
    domain = domain_for(k.deployment)
    claims = {("hpc-a", "hpc-b"): 100, ("hpc-b", "cloud-c"): 60, ("edge-d", "hpc-a"): 15, ("cloud-c", "edge-d"): 8}
    anchor_all(k, 1, {p: v for p, v in claims.items() if p[0] != "cloud-c"}, skip=("cloud-c",))
    # cloud-c bills one grant twice in its claim on edge-d
    twice = records(k, 1, "cloud-c", "edge-d", [5, 3], [b"\x77" * 32] * 2)
    tree = SumTree([(record_digest(r, domain), r.price) for r in twice])
    k.tx(ul.anchor(1, [centre_id("edge-d")], [tree.root], [2], [8], bytes(32), 0), "cloud-c")
    ids = k.ids()

    def positions() -> dict[bytes, int]:
        return {i: ul.positionOf(1, i).call() for i in ids}

    assert positions() == net_positions(by_id(claims), ids)
    leaves = []
    for index, r in enumerate(twice):
        proof = tree.proof(index)
        leaves.append((1, index, r.as_tuple(), list(proof.hashes), list(proof.sums)))
    k.tx(ul.disputeDuplicate(centre_id("cloud-c"), centre_id("edge-d"), leaves[0], leaves[1]), "hpc-a")
    standing = {p: v for p, v in claims.items() if p != ("cloud-c", "edge-d")}
    assert positions() == net_positions(by_id(standing), ids) and sum(positions().values()) == 0
    k.tx(ul.dispute(centre_id("hpc-a"), 1, centre_id("hpc-b"), 0, False), "hpc-b")  # nobody answers
    advance(k.chain, 61)
    receipt = k.tx(k.c.settlement.functions.settle(1), "edge-d")
    standing.pop(("hpc-a", "hpc-b"))
    got, net = settled_event(k, receipt)
    assert dict(zip(got, net, strict=True)) == net_positions(by_id(standing), ids)
    assert positions() == net_positions(by_id(standing), ids)


@pytest.mark.parametrize("seed", range(3))
def test_running_nets_sum_to_zero_and_match_the_off_chain_netting(seed):
    rng = random.Random(seed)
    names = ["hpc-a", "hpc-b", "cloud-c", "edge-d", "ai-e"]
    k = make_consortium(names, quorum=1)
    claims = {(a, b): rng.randint(0, 500) for a in names for b in names if a != b and rng.random() < 0.6}
    claims = {p: v for p, v in claims.items() if v}
    anchor_all(k, 1, claims)
    ul = k.c.usage_ledger.functions
    everyone = k.ids()
    positions = {i: ul.positionOf(1, i).call() for i in everyone}
    assert sum(positions.values()) == 0 and positions == net_positions(by_id(claims), everyone)
    gone = rng.choice(names[1:])
    k.tx(k.c.consortium.functions.propose(REMOVE, spec(gone, k.accounts[gone]).as_tuple()), "hpc-a")
    k.chain.mine()
    before = collateral(k)
    formers = [centre_id(gone)] if any(gone in pair for pair in claims) else []
    receipt = k.tx(k.c.settlement.functions.settleWithout(1, formers), "hpc-a")
    ids, net = settled_event(k, receipt)
    assert sum(net) == 0 and centre_id(gone) not in ids
    expected = net_positions(by_id(claims), ids)
    moved, plan, _ = settle_from_collateral(expected, {i: 10**12 for i in ids}, ids)
    assert dict(zip(ids, net, strict=True)) == moved and settled_transfers(k, receipt) == plan
    assert sum(collateral(k)) == sum(before)


# -- off-chain: what a gateway asks before settling, and whom it names --------------------


class FakeIndex:
    """The three reads `gateway.node.assemble.settleable` makes of the event index."""

    def __init__(self, members: list[bytes], anchors: list[tuple[bytes, int]], now: int) -> None:
        self._members = [SimpleNamespace(id=m) for m in members]
        self._anchors = [SimpleNamespace(centre=c, anchored_at=t) for c, t in anchors]
        self._now = now

    def members(self):
        return self._members

    def anchors(self, epoch: int):
        return self._anchors

    def now(self) -> int:
        return self._now


def test_the_gateway_settles_a_silent_members_epoch_after_the_deadline_as_the_chain_does():
    from gateway.node.assemble import settleable

    a, b, d = centre_id("hpc-a"), centre_id("hpc-b"), centre_id("edge-d")
    anchors = [(a, 1000), (b, 1010)]
    at = lambda now: settleable(FakeIndex([a, b, d], anchors, now), 1, 10, WINDOW)  # noqa: E731
    assert not at(1031) and not at(1000 + WINDOW)  # d is silent: wait for the deadline
    assert at(1001 + WINDOW)
    assert not settleable(FakeIndex([a, b, d], anchors, 10**9), 1, 10, None)  # no window known: wait for all
    assert settleable(FakeIndex([a, b], anchors, 1031), 1, 10, WINDOW)  # everyone anchored
    assert not settleable(FakeIndex([a, b], anchors, 1030), 1, 10, WINDOW)  # answers still due
    late = [*anchors, (d, 1000 + WINDOW + 1)]  # a late anchor is not waited for
    assert settleable(FakeIndex([a, b, d], late, 1002 + WINDOW), 1, 10, WINDOW)
    assert not settleable(FakeIndex([a, b, d], [], 10**9), 1, 10, WINDOW)


def test_former_participants_ignore_late_anchors_and_members():
    a, b, c, d = (centre_id(n) for n in ("hpc-a", "hpc-b", "cloud-c", "edge-d"))
    anchors = [(a, 100, [b, c]), (b, 150, [a]), (d, 300, [c])]  # d anchored after the deadline (200)
    assert former_participants(anchors, [a, b], 100) == [c]
    assert former_participants(anchors, [a, b], 1000) == sorted([c, d])
    assert former_participants([], [a], 100) == []
