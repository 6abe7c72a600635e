"""Netting: pure properties, and agreement with Settlement.sol on a random-ish case."""

from __future__ import annotations

import random

import pytest
from web3.logs import DISCARD

from ledger.ids import centre_id
from ledger.netting import late_positions, net_positions, settle_from_collateral, transfers

A, B, C, D, E = (centre_id(n) for n in ["a", "b", "c", "d", "e"])


def random_case(seed: int, most: int) -> tuple[random.Random, list[bytes], dict[bytes, int]]:
    """2 to `most` members with random claims on each other, and their net positions."""
    rng = random.Random(seed)
    members = [centre_id(f"c{i}") for i in range(rng.randint(2, most))]
    claims = {(c, d): rng.randint(0, 1000) for c in members for d in members if c != d and rng.random() < 0.5}
    return rng, members, net_positions(claims, members)


def test_worked_example():
    claims = {(A, B): 100, (A, C): 50, (B, A): 30, (B, D): 70, (D, A): 5}
    net = net_positions(claims, [A, B, C, D])
    assert net == {A: 115, B: 0, C: -50, D: -65}
    assert transfers(net, [A, B, C, D]) == [(C, A, 50), (D, A, 65)]


def test_greedy_follows_member_order():
    net = {A: -30, B: 20, C: -10, D: 20}
    assert transfers(net, [A, B, C, D]) == [(A, B, 20), (A, D, 10), (C, D, 10)]
    assert transfers(net, [D, C, B, A]) == [(C, D, 10), (A, D, 10), (A, B, 20)]


def test_claims_outside_members_are_ignored():
    claims = {(A, B): 10, (A, E): 99, (E, B): 7}
    assert net_positions(claims, [A, B]) == {A: 10, B: -10}


def test_bad_input():
    with pytest.raises(ValueError):
        net_positions({(A, A): 1}, [A])
    with pytest.raises(ValueError):
        net_positions({(A, B): -1}, [A, B])
    with pytest.raises(ValueError):
        net_positions({}, [A, A])
    with pytest.raises(ValueError, match="sum to zero"):
        transfers({A: 1, B: 0}, [A, B])


def test_collateral_covering_every_debt_settles_as_greedy_pairing():
    members = [A, B, C, D]
    net = {A: 115, B: 0, C: -50, D: -65}
    moved, moves, short = settle_from_collateral(net, {A: 0, B: 0, C: 50, D: 10**9}, members)
    assert moved == net and moves == transfers(net, members) == [(C, A, 50), (D, A, 65)] and short == []


def test_shortfall_is_shared_pro_rata_with_the_dust_to_the_first_creditor():
    """C owes 60 but holds 20, D owes 40 and holds it: 60 of 100 is collected and shared 2:1."""
    members = [A, B, C, D]
    net = {A: 34, B: 66, C: -60, D: -40}
    moved, moves, short = settle_from_collateral(net, {A: 0, B: 0, C: 20, D: 40}, members)
    # floor(34*60/100) = 20, floor(66*60/100) = 39; one unit of dust to A, the first creditor
    assert moved == {A: 21, B: 39, C: -20, D: -40}
    assert short == [(C, 40)]
    assert moves == transfers(moved, members) == [(C, A, 20), (D, A, 1), (D, B, 39)]


def test_a_debtor_with_nothing_blocks_nobody():
    members = [A, B, C]
    net = {A: 100, B: -70, C: -30}
    moved, moves, short = settle_from_collateral(net, {A: 5, B: 0, C: 30}, members)
    assert moved == {A: 30, B: 0, C: -30} and moves == [(C, A, 30)] and short == [(B, 70)]
    moved, moves, short = settle_from_collateral(net, {}, members)  # no collateral at all
    assert moved == {A: 0, B: 0, C: 0} and moves == [] and short == [(B, 70), (C, 30)]


@pytest.mark.parametrize("seed", range(40))
def test_collateral_settlement_conserves_and_never_overdraws(seed):
    rng, members, net = random_case(seed, 9)
    free = {m: rng.choice([0, rng.randint(0, 1500), 10**6]) for m in members}
    moved, moves, short = settle_from_collateral(net, free, members)
    assert sum(moved.values()) == 0
    for m in members:
        if net[m] <= 0:  # a debtor pays what it can, at most its debt
            assert moved[m] == -min(-net[m], free[m])
        else:  # a creditor gets at most its credit, and all of it when nobody falls short
            assert 0 <= moved[m] <= net[m]
            assert moved[m] == net[m] or short
    assert dict(short) == {m: -net[m] - free[m] for m in members if net[m] < 0 and free[m] < -net[m]}
    assert moves == transfers(moved, members)


def test_collateral_bad_input():
    with pytest.raises(ValueError, match="sum to zero"):
        settle_from_collateral({A: 1, B: 0}, {}, [A, B])
    with pytest.raises(ValueError, match="free collateral"):
        settle_from_collateral({A: 1, B: -1}, {B: -1}, [A, B])
    with pytest.raises(ValueError, match="free collateral"):
        settle_from_collateral({A: 1, B: -1}, {B: True}, [A, B])
    with pytest.raises(ValueError, match="distinct"):
        settle_from_collateral({A: 0}, {}, [A, A])
    with pytest.raises(ValueError, match="net position"):
        settle_from_collateral({A: 1.0, B: -1.0}, {}, [A, B])


def test_no_claims_no_transfers():
    net = net_positions({}, [A, B, C])
    assert net == {A: 0, B: 0, C: 0} and transfers(net, [A, B, C]) == []


@pytest.mark.parametrize("seed", range(40))
def test_random_nets_settle_fully_in_at_most_n_minus_1_transfers(seed):
    _, members, net = random_case(seed, 12)
    assert sum(net.values()) == 0
    moves = transfers(net, members)
    assert len(moves) <= len(members) - 1
    left = dict(net)
    for debtor, creditor, amount in moves:
        assert amount > 0 and net[debtor] < 0 < net[creditor]
        left[debtor] += amount
        left[creditor] -= amount
    assert all(v == 0 for v in left.values())


def test_python_transfers_equal_the_contract_events():
    from tests.test_contracts import anchor_all, make_consortium

    names = ["hpc-a", "hpc-b", "cloud-c", "edge-d", "ai-e", "hpc-f"]
    k = make_consortium(names, quorum=2)
    rng = random.Random(7)
    claims = {(c, d): rng.randint(1, 5000) for c in names for d in names if c != d and rng.random() < 0.45}
    anchor_all(k, 2, claims)
    receipt = k.tx(k.c.settlement.functions.settle(2), "ai-e")
    ids = k.ids()
    events = k.c.settlement.events.SettlementTransfer().process_receipt(receipt, errors=DISCARD)
    on_chain = [(e["args"]["from"], e["args"]["to"], e["args"]["amount"]) for e in events]
    net = net_positions({(centre_id(c), centre_id(d)): v for (c, d), v in claims.items()}, ids)
    (settled,) = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)
    assert settled["args"]["centres"] == ids and settled["args"]["net"] == [net[i] for i in ids]
    assert on_chain == transfers(net, ids)
    assert 1 < len(on_chain) <= len(ids) - 1


def test_late_positions_pay_the_late_creditor_from_each_member_home_in_anchor_order():
    ids, net = late_positions(A, {C: 30, B: 20, A: 5, E: 9, D: 0}, [A, B, C, D])
    assert ids == [A, C, B] and net == {A: 50, C: -30, B: -20}  # not its own users, no former, no zero
    moved, moves, short = settle_from_collateral(net, {B: 5, C: 100}, ids)
    assert moved == {A: 35, C: -30, B: -5} and moves == [(C, A, 30), (B, A, 5)] and short == [(B, 15)]
    assert late_positions(E, {A: 10}, [A, B]) == ([E], {E: 0})  # a former member is paid nothing
    with pytest.raises(ValueError):
        late_positions(A, {B: -1}, [A, B])
