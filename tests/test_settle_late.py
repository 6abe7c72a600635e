"""A late anchor is paid by its own centre's gateway: housekeeping sends `settleLate` once.

On the embedded chain: four members, edge-d silent until after the anchor deadline. The
other three anchor, the epoch settles without edge-d, then edge-d anchors late; edge-d's
gateway parts (event index, outbox with the gateway's chain writes, epoch closer) are built
as `gateway.node.assemble.build_node` builds them, without the rest of a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.books.epochs import EpochCloser
from gateway.node.assemble import _register_chain_writes, settleable
from gateway.store import Store
from ledger.audit import verify_epoch
from ledger.ids import centre_id, centre_name
from ledger.index import EventIndex
from ledger.netting import late_settlement, net_positions, settle_from_collateral
from ledger.outbox import Outbox
from ledger.records import domain_for
from tests.test_contracts import Consortium, advance, anchor_all, collateral, make_consortium

WINDOW = 100  # the anchor window (s)
DISPUTES = 10  # the dispute window (s): answers are due within as long again
BOND = 1_000
INITIAL = BOND + 50  # each member's collateral (a debtor's bond is released for its debts)

# hpc-b owes 1100 and has 1050 at the epoch's settlement: a shortfall of 50
CLAIMS = {("hpc-a", "hpc-b"): 1100, ("cloud-c", "hpc-a"): 5}
# edge-d's late claims: hpc-a pays in full, hpc-b has nothing left: a shortfall of 30 of its own
LATE = {("edge-d", "hpc-a"): 20, ("edge-d", "hpc-b"): 30}

A, B, C, D = (centre_id(n) for n in ("hpc-a", "hpc-b", "cloud-c", "edge-d"))


@dataclass
class Gateway:
    """edge-d's gateway parts that settle: its index, outbox and epoch closer."""

    index: EventIndex
    outbox: Outbox
    epochs: EpochCloser

    def round(self) -> None:
        """One housekeeping round."""
        self.epochs.housekeeping()


def now(k: Consortium) -> int:
    return int(k.chain.w3.eth.get_block("latest")["timestamp"])


def gateway(k: Consortium, data: Path, name: str = "edge-d") -> Gateway:
    index = EventIndex(data / "index.db", k.chain, k.deployment)
    outbox = Outbox(data / "outbox.db")
    _register_chain_writes(outbox, k.chain, k.deployment, k.accounts[name], index, name=name)
    epochs = EpochCloser(
        name,
        Store(data / "gateway.db"),
        outbox,
        index,
        domain_for(k.deployment),
        settleable=lambda epoch: settleable(index, epoch, DISPUTES, WINDOW),
        dispute_window=DISPUTES,
    )
    return Gateway(index, outbox, epochs)


@pytest.fixture
def late(tmp_path: Path) -> tuple[Consortium, Gateway]:
    """Epoch 1 settled without edge-d (hpc-b short), then edge-d's late anchor, its answers still due."""
    k = make_consortium(
        ["hpc-a", "hpc-b", "cloud-c", "edge-d"],
        quorum=3,
        initial=INITIAL,
        anchor_window=WINDOW,
        anchor_bond=BOND,
        dispute_window=DISPUTES,
    )
    anchor_all(k, 1, CLAIMS, skip=("edge-d",))
    ul = k.c.usage_ledger.functions
    advance(k.chain, ul.anchorDeadline(1).call() + 2 * DISPUTES + 1 - now(k))
    k.tx(k.c.settlement.functions.settle(1), "hpc-a")
    anchor_all(k, 1, LATE, skip=("hpc-a", "hpc-b", "cloud-c"))
    assert ul.lateOf(D, 1).call() == [True, False]
    return k, gateway(k, tmp_path)


def test_housekeeping_pays_its_own_late_anchor_after_the_answer_window_exactly_once(late):
    k, gw = late
    anchored_at = k.c.usage_ledger.functions.anchorOf(D, 1).call()[1]
    gw.round()
    assert gw.index.anchor(D, 1).late and not gw.index.anchor(D, 1).late_settled
    assert gw.outbox.item_by_key("settle_late:1") is None  # its records may still be disputed: nothing sent
    assert k.c.usage_ledger.functions.lateOf(D, 1).call() == [True, False]

    advance(k.chain, anchored_at + 2 * DISPUTES + 1 - now(k))  # past the answer window
    before = collateral(k)
    gw.round()
    item = gw.outbox.item_by_key("settle_late:1")
    assert item is not None and item.status == "done" and item.tx_hash, item
    assert k.c.usage_ledger.functions.lateOf(D, 1).call() == [True, True]
    paid = collateral(k)
    assert [x - y for x, y in zip(paid, before, strict=True)] == [-20, 0, 0, 20]

    # a second round sends nothing: no transaction, no new outbox item, nothing moves
    block = k.chain.w3.eth.block_number
    gw.round()
    gw.round()
    assert k.chain.w3.eth.block_number == block
    assert gw.outbox.pending() == [] and gw.outbox.failed() == []
    assert collateral(k) == paid
    assert gw.index.late_anchors(D, unsettled=True) == []


def test_a_retry_after_a_crash_between_mining_and_marking_is_done(late):
    k, gw = late
    anchored_at = k.c.usage_ledger.functions.anchorOf(D, 1).call()[1]
    advance(k.chain, anchored_at + 2 * DISPUTES + 1 - now(k))
    item = gw.outbox.enqueue("settle_late", "settle_late:1", {"epoch": 1})  # queued, then the process dies ...
    before = collateral(k)
    k.tx(k.c.settlement.functions.settleLate(1, D), "edge-d")  # ... after its transaction was mined
    gw.round()  # the restarted gateway sends it again: LateAlreadySettled means done
    done = gw.outbox.item(item)
    assert done is not None and done.status == "done" and done.tx_hash is None, done
    assert [x - y for x, y in zip(collateral(k), before, strict=True)] == [-20, 0, 0, 20]  # paid once
    assert gw.index.anchor(D, 1).late_settled


def test_the_index_and_the_audit_view_show_the_late_settlement_beside_the_epochs(late):
    k, gw = late
    anchored_at = k.c.usage_ledger.functions.anchorOf(D, 1).call()[1]
    advance(k.chain, anchored_at + 2 * DISPUTES + 1 - now(k))
    gw.round()
    members = k.ids()

    # the epoch's own settlement: on-time claims only, hpc-b short by 50
    own = gw.index.settlement(1)
    assert own is not None
    net = net_positions({(centre_id(c), centre_id(d)): v for (c, d), v in CLAIMS.items()}, members)
    free = {m: INITIAL for m in members}
    moved, plan, short = settle_from_collateral(net, free, members)
    assert own.net == moved and own.transfers == plan
    assert gw.index.shortfalls(1) == dict(short) == {B: 50}  # not erased by the late settlement's

    # the late anchor's settlement, apart
    (paid,) = gw.index.late_settlements(1)
    (ev,) = k.c.settlement.events.LateClaimsSettled().get_logs(from_block=0)
    assert paid.centre == D and paid.tx_hash == "0x" + bytes(ev["transactionHash"]).hex().removeprefix("0x")
    assert paid.net == dict(zip(ev["args"]["centres"], ev["args"]["net"], strict=True))
    claims = {centre_id(h): v for (_, h), v in LATE.items()}
    ids, late_moved, late_plan, late_short = late_settlement(D, claims, members, paid.shortfalls)
    assert list(paid.net) == ids and paid.net == late_moved == {D: 20, A: -20, B: 0}
    assert paid.transfers == late_plan == [(A, D, 20)]
    assert paid.shortfalls == dict(late_short) == {B: 30}
    shortfalls = k.c.settlement.events.Shortfall().get_logs(from_block=0)
    assert [(e["args"]["debtor"], e["args"]["unpaid"]) for e in shortfalls] == [(B, 50), (B, 30)]

    anchor = gw.index.anchor(D, 1)
    assert anchor is not None and anchor.late and anchor.late_settled
    assert not any(a.late for a in gw.index.anchors(1) if a.centre != D)

    view = gw.epochs.audit_view(1)
    assert view["anchors"]["edge-d"]["late"] is True and view["anchors"]["edge-d"]["late_settled"] is True
    assert view["anchors"]["hpc-a"]["late"] is False
    assert view["shortfalls"] == {"hpc-b": 50}
    assert view["transfers"] == [{"from": d, "to": c, "amount": a} for d, c, a in _named(plan)]  # no late one
    assert view["late_settlements"] == [
        {
            "centre": "edge-d",
            "net_positions": {"edge-d": 20, "hpc-a": -20, "hpc-b": 0},
            "transfers": [{"from": "hpc-a", "to": "edge-d", "amount": 20}],
            "shortfalls": {"hpc-b": 30},
            "tx": paid.tx_hash,
        }
    ]


def test_a_late_anchor_waits_for_the_epochs_own_settlement(tmp_path):
    """Anchored after the deadline but before anyone settled: housekeeping sends nothing for it until
    the epoch is settled (settleLate would revert NotSettleable), even once its answers are past due."""
    k = make_consortium(
        ["hpc-a", "hpc-b", "cloud-c", "edge-d"],
        quorum=3,
        anchor_window=WINDOW,
        anchor_bond=BOND,
        dispute_window=DISPUTES,
    )
    anchor_all(k, 1, CLAIMS, skip=("edge-d",))
    advance(k.chain, k.c.usage_ledger.functions.anchorDeadline(1).call() + 1 - now(k))
    anchor_all(k, 1, LATE, skip=("hpc-a", "hpc-b", "cloud-c"))
    anchored_at = k.c.usage_ledger.functions.anchorOf(D, 1).call()[1]
    advance(k.chain, anchored_at + 2 * DISPUTES + 1 - now(k))
    gw = gateway(k, tmp_path)
    gw.round()
    assert gw.index.anchor(D, 1).late and gw.outbox.item_by_key("settle_late:1") is None
    assert gw.outbox.failed() == []
    k.tx(k.c.settlement.functions.settle(1), "hpc-b")
    gw.round()
    assert k.c.usage_ledger.functions.lateOf(D, 1).call() == [True, True]
    assert gw.index.late_settlements(1)[0].net == {D: 50, A: -20, B: -30}


def _named(plan: list[tuple[bytes, bytes, int]]) -> list[tuple[str, str, int]]:
    return [(centre_name(d), centre_name(c), a) for d, c, a in plan]


def test_the_chain_auditor_checks_the_epochs_settlement_against_its_own_shortfalls_only(late):
    """A late settlement's shortfall (hpc-b, 30) is not the epoch's (hpc-b, 50): the audit of the epoch's
    settlement must not take one for the other."""
    k, gw = late
    anchored_at = k.c.usage_ledger.functions.anchorOf(D, 1).call()[1]
    advance(k.chain, anchored_at + 2 * DISPUTES + 1 - now(k))
    gw.round()
    assert gw.index.late_settlements(1)  # settled late, short of its own

    report = verify_epoch(1, {}, k.chain, k.deployment)
    assert report.shortfalls == {"hpc-b": 50}
    assert not [f for f in report.findings if "settlement moved" in f or "shortfall" in f], report.findings
