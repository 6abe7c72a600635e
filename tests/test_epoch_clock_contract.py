"""UsageLedger's epoch clock (`epochLength`) on the embedded chain.

Without a clock epochs are each centre's own counter and an epoch's anchor deadline counts from its
`Consortium.anchorQuorum`-th on-time anchor: members that alone reach that quorum can anchor epochs as
early as they like, start the deadline before the others' epochs have ended, make the others' anchors
late and settle epochs ahead of them (tests/test_reattack_scale.py). With a clock every centre's epoch e
ends at the same chain time, may be anchored only from then, and its anchors are late only after
`epochEnd(e) + anchorWindow`, a deadline nobody can move. Each test here asserts something that holds
only with the clock (or, for a deployment without one, that nothing changed).
"""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_utils import to_checksum_address
from web3.logs import DISCARD
from web3.types import TxReceipt

from ledger.chain import Chain, connect
from ledger.deploy import Deployment, bind, deploy_consortium
from ledger.epoch_clock import EpochClock
from ledger.ids import centre_id
from ledger.sumtree import SumTree
from tests.test_contracts import Consortium, advance, leaf_digest, make_consortium, now, reverts, spec

HOUR = 3_600  # the epoch length
WINDOW = 600  # the anchor window (s)
OFFSET = 60  # a clocked deployment lands this many seconds into an epoch, so epoch 1 is far from over


# -- helpers ------------------------------------------------------------------------------------------------------


def clocked(
    names: list[str], quorum: int, offset: int = OFFSET, initial: int = 1_000_000, **settings: int
) -> Consortium:
    """A fresh deployment with an HOUR-long epoch clock, an anchor window of WINDOW and no dispute window,
    deployed `offset` seconds past a multiple of HOUR (the embedded chain runs on the wall clock: a
    deployment made just before a round hour would see epoch 1 end within seconds)."""
    chain = connect()
    latest = chain.w3.eth.get_block("latest")["timestamp"]
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]  # only the embedded provider has it
    tester.time_travel((latest // HOUR + 1) * HOUR + offset)
    accounts = {n: Account.create() for n in names}
    for acct in accounts.values():
        chain.fund(acct.address, 10**19)
    specs = [spec(n, accounts[n]) for n in names]
    deployment = deploy_consortium(
        chain,
        chain.dev_account,
        specs,
        quorum,
        initial,
        rate_notice=HOUR,
        dispute_window=0,
        anchor_window=WINDOW,
        epoch_length=HOUR,
        **settings,
    )
    return Consortium(chain, deployment, bind(chain, deployment), accounts, specs)


def clock(k: Consortium) -> EpochClock:
    found = k.deployment.epoch_clock()
    assert found is not None
    return found


def at(k: Consortium, when: int) -> None:
    """Mines a block at `when`: calls (and a transaction's pre-flight) then run at `when`, and the next
    transaction is mined at `when` + 1."""
    advance(k.chain, when - now(k))


def anchor(k: Consortium, name: str, epoch: int, owed: dict[str, int] | None = None) -> TxReceipt:
    """`name` anchors `epoch` with one record per home in `owed` (home -> amount); the receipt."""
    homes = list((owed or {}).items())
    trees = [SumTree([(leaf_digest(epoch, name, h), v)]) for h, v in homes]
    fn = k.c.usage_ledger.functions.anchor(
        epoch,
        [centre_id(h) for h, _ in homes],
        [t.root for t in trees],
        [1] * len(homes),
        [v for _, v in homes],
        bytes(32),
        0,
    )
    return k.tx(fn, name)


def settled_net(k: Consortium, receipt: TxReceipt) -> dict[str, int]:
    """The nets of an EpochSettled event, by member name."""
    (ev,) = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)
    names = {centre_id(s.name): s.name for s in k.specs}
    return {names[c]: n for c, n in zip(ev["args"]["centres"], ev["args"]["net"], strict=True)}


def deployed_at(chain: Chain, address: str, since: int) -> int:
    """Block time of the block that created the contract at `address` (searched from block `since`)."""
    for number in range(since, chain.block_number() + 1):
        if chain.w3.eth.get_code(to_checksum_address(address), block_identifier=number):
            return chain.w3.eth.get_block(number)["timestamp"]
    raise AssertionError(f"no code at {address}")


# -- 1. the clock -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, OFFSET, HOUR // 2])
def test_the_origin_is_the_deployment_time_rounded_down_to_the_epoch_length(offset: int) -> None:
    k = clocked(["hpc-a", "hpc-b"], 1, offset=offset)
    ul = k.c.usage_ledger.functions
    origin = ul.epochOrigin().call()
    deployed = deployed_at(k.chain, k.deployment.usage_ledger, k.deployment.start_block)
    assert ul.epochLength().call() == HOUR == k.deployment.epoch_length
    assert origin == k.deployment.epoch_origin and origin % HOUR == 0
    assert origin <= deployed < origin + HOUR
    for e in (0, 1, 2, 7, 10**6):
        assert ul.epochEnd(e).call() == clock(k).end(e) == origin + e * HOUR


def test_the_origin_of_a_deployment_at_any_time_is_a_multiple_of_the_length() -> None:
    k = make_consortium(["hpc-a", "hpc-b"], 1, epoch_length=7)  # at the wall clock's time
    origin = k.c.usage_ledger.functions.epochOrigin().call()
    deployed = deployed_at(k.chain, k.deployment.usage_ledger, k.deployment.start_block)
    assert origin % 7 == 0 and origin <= deployed < origin + 7
    assert k.deployment.epoch_clock() == EpochClock(7, origin)


def test_an_epoch_may_be_anchored_only_once_it_has_ended() -> None:
    k = clocked(["hpc-a", "hpc-b"], 1)
    ul = k.c.usage_ledger.functions
    end = clock(k).end(1)
    assert clock(k).epoch_at(now(k)) == 1 and now(k) < end
    err = reverts("EpochNotOver", k.tx, ul.anchor(1, [], [], [], [], bytes(32), 0), "hpc-a")
    assert err.error_args == (1, end)
    at(k, end - 1)  # a second before the end: still refused
    err = reverts("EpochNotOver", k.tx, ul.anchor(1, [], [], [], [], bytes(32), 0), "hpc-a")
    assert err.error_args == (1, end)
    assert ul.anchorOf(centre_id("hpc-a"), 1).call()[0] is False
    at(k, end)
    assert clock(k).epoch_at(now(k)) == 2
    receipt = anchor(k, "hpc-a", 1, {"hpc-b": 10})
    anchored_at = k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert ul.anchorOf(centre_id("hpc-a"), 1).call() == [True, anchored_at, 1]
    assert ul.lateOf(centre_id("hpc-a"), 1).call() == [False, False]


# -- 2. no racing ahead -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "quorum", "silent"),
    [
        (["hpc-a", "hpc-b"], 1, "hpc-b"),  # one member alone reaches anchorQuorum
        (["hpc-a", "hpc-b", "cloud-c"], 2, "cloud-c"),  # two of three do
    ],
)
def test_members_that_reach_the_anchor_quorum_cannot_run_epochs_ahead_of_a_silent_one(
    names: list[str], quorum: int, silent: str
) -> None:
    k = clocked(names, quorum)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    coalition = [n for n in names if n != silent]
    assert k.c.consortium.functions.anchorQuorum().call() == len(coalition)
    c = clock(k)
    # before epoch 1 ends the coalition can anchor none of 1, 2, 3 (without a clock it could, and start
    # their deadlines at once)
    for epoch in (1, 2, 3):
        err = reverts("EpochNotOver", k.tx, ul.anchor(epoch, [], [], [], [], bytes(32), 0), coalition[0])
        assert err.error_args == (epoch, c.end(epoch))
    # the coalition anchors epoch 1 first, the moment it ends, claiming on the silent member
    at(k, c.end(1))
    for name in coalition:
        anchor(k, name, 1, {silent: 100})
    # ... and still cannot anchor (so cannot settle) epoch 2 or 3 ahead of the silent member
    for epoch in (2, 3):
        err = reverts("EpochNotOver", k.tx, ul.anchor(epoch, [], [], [], [], bytes(32), 0), coalition[0])
        assert err.error_args == (epoch, c.end(epoch))
        assert ul.settleable(epoch).call() is False
        reverts("NotSettleable", k.tx, st.settle(epoch), coalition[0])
    assert ul.anchorDeadline(1).call() == c.end(1) + WINDOW  # the quorum's anchors moved nothing
    reverts("NotSettleable", k.tx, st.settle(1), coalition[0])  # the silent member still has until then
    # the silent member anchors epoch 1 at its deadline: on time, its claim netted
    at(k, c.end(1) + WINDOW - 1)  # mined at the deadline itself
    receipt = anchor(k, silent, 1, {coalition[0]: 30})
    assert k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == c.end(1) + WINDOW
    assert k.c.usage_ledger.events.AnchoredLate().process_receipt(receipt, errors=DISCARD) == ()
    assert ul.lateOf(centre_id(silent), 1).call() == [False, False]
    assert ul.standing(1, centre_id(silent), centre_id(coalition[0])).call() == 30
    k.chain.mine()  # settle wants a block past the last on-time anchor
    net = settled_net(k, k.tx(st.settle(1), coalition[0]))
    assert net[silent] == 30 - 100 * len(coalition)
    assert net[coalition[0]] == 100 - 30
    assert sum(net.values()) == 0
    assert st.settledThrough().call() == 1


# -- 3. the deadline is fixed -------------------------------------------------------------------------------------


def test_the_anchor_deadline_is_the_epochs_end_plus_the_window_whoever_anchored() -> None:
    k = clocked(["hpc-a", "hpc-b", "cloud-c"], 2)
    ul = k.c.usage_ledger.functions
    c = clock(k)
    for epoch in (1, 2, 50):
        assert ul.anchorDeadline(epoch).call() == c.end(epoch) + WINDOW  # before anyone anchored
    at(k, c.end(1) + 100)
    anchor(k, "hpc-a", 1)
    assert ul.anchorDeadline(1).call() == c.end(1) + WINDOW  # one anchor, below the quorum
    at(k, c.end(1) + 200)
    anchor(k, "hpc-b", 1)
    assert ul.anchorDeadline(1).call() == c.end(1) + WINDOW  # the quorum-th anchor does not move it


def test_without_a_clock_the_deadline_counts_from_the_quorum_th_anchor() -> None:
    """The contrast: with no clock the deadline is 0 until the quorum anchored, then that anchor + window."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], 2, anchor_window=WINDOW)
    ul = k.c.usage_ledger.functions
    assert ul.anchorDeadline(1).call() == 0
    anchor(k, "hpc-a", 1)
    assert ul.anchorDeadline(1).call() == 0
    receipt = anchor(k, "hpc-b", 1)
    second = k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert ul.anchorDeadline(1).call() == second + WINDOW


# -- 4. late anchors ----------------------------------------------------------------------------------------------


def test_an_anchor_after_the_epochs_end_plus_the_window_is_late() -> None:
    k = clocked(["hpc-a", "hpc-b", "cloud-c"], 2)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    c = clock(k)
    at(k, c.end(1))
    anchor(k, "hpc-a", 1, {"hpc-b": 50})
    anchor(k, "hpc-b", 1)
    at(k, c.end(1) + WINDOW)  # mined one second past the deadline
    receipt = anchor(k, "cloud-c", 1, {"hpc-a": 40})
    (ev,) = k.c.usage_ledger.events.AnchoredLate().process_receipt(receipt, errors=DISCARD)
    assert (ev["args"]["centre"], ev["args"]["epoch"]) == (centre_id("cloud-c"), 1)
    assert ul.lateOf(centre_id("cloud-c"), 1).call() == [True, False]
    net = settled_net(k, k.tx(st.settle(1), "hpc-a"))
    assert net == {"hpc-a": 50, "hpc-b": -50, "cloud-c": 0}  # the late claim waits for settleLate
    k.tx(st.settleLate(1, centre_id("cloud-c")), "hpc-b")
    assert ul.lateOf(centre_id("cloud-c"), 1).call() == [True, True]


def test_a_first_anchor_after_the_deadline_is_late_too() -> None:
    """Without a clock an epoch's first anchor is never late (its deadline has not started); with one the
    deadline runs whether or not anybody anchored."""
    k = clocked(["hpc-a", "hpc-b", "cloud-c"], 2)
    ul = k.c.usage_ledger.functions
    at(k, clock(k).end(1) + WINDOW)
    receipt = anchor(k, "cloud-c", 1, {"hpc-a": 40})
    assert len(k.c.usage_ledger.events.AnchoredLate().process_receipt(receipt, errors=DISCARD)) == 1
    assert ul.lateOf(centre_id("cloud-c"), 1).call() == [True, False]
    assert ul.positionOf(1, centre_id("cloud-c")).call() == 0  # not in the running nets


# -- 5. an epoch nobody anchored ----------------------------------------------------------------------------------


def test_an_epoch_nobody_anchored_settles_after_its_deadline() -> None:
    k = clocked(["hpc-a", "hpc-b"], 1)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    c = clock(k)
    at(k, c.end(1) + WINDOW)  # at the deadline anchors are still on time
    assert ul.settleable(1).call() is False
    reverts("NotSettleable", k.tx, st.settle(1), "hpc-a")
    k.chain.mine()
    assert ul.settleable(1).call() is True
    net = settled_net(k, k.tx(st.settle(1), "hpc-b"))
    assert net == {"hpc-a": 0, "hpc-b": 0}
    assert st.settled(1).call() is True and st.settledThrough().call() == 1
    # epoch 2, anchored by nobody either, follows at its own deadline
    at(k, c.end(2) + WINDOW + 1)
    k.tx(st.settle(2), "hpc-a")
    assert st.settledThrough().call() == 2 and ul.highestSettled().call() == 2


def test_without_a_clock_an_epoch_nobody_anchored_never_settles() -> None:
    k = make_consortium(["hpc-a", "hpc-b"], 1, anchor_window=WINDOW)
    ul, st = k.c.usage_ledger.functions, k.c.settlement.functions
    advance(k.chain, 10 * HOUR)
    assert ul.settleable(1).call() is False
    reverts("NotSettleable", k.tx, st.settle(1), "hpc-a")
    assert st.settledThrough().call() == 0


# -- 6. no clock: nothing changed ---------------------------------------------------------------------------------


def test_without_a_clock_any_epoch_may_be_anchored_at_once() -> None:
    k = make_consortium(["hpc-a", "hpc-b"], 1)
    ul = k.c.usage_ledger.functions
    assert (ul.epochLength().call(), ul.epochOrigin().call()) == (0, 0)
    assert (k.deployment.epoch_length, k.deployment.epoch_origin, k.deployment.epoch_clock()) == (0, 0, None)
    for epoch in (0, 1, 2, 10**6):
        assert ul.epochEnd(epoch).call() == 0
    for epoch in (1, 2, 10**6):
        anchor(k, "hpc-a", epoch, {"hpc-b": 5})
        assert ul.anchorOf(centre_id("hpc-a"), epoch).call()[0] is True
        assert ul.lateOf(centre_id("hpc-a"), epoch).call() == [False, False]


# -- 7. bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "3600", True, None])
def test_deploy_refuses_an_epoch_length_that_is_not_a_number_of_seconds(bad: object) -> None:
    chain = connect()
    with pytest.raises(ValueError, match="epoch_length must be a non-negative number of seconds"):
        deploy_consortium(chain, chain.dev_account, [spec("hpc-a", Account.create())], 1, 0, epoch_length=bad)  # type: ignore[arg-type]  # the bad input
    assert chain.block_number() == 0  # refused before anything was deployed


def test_a_deployment_description_reads_its_clock_and_rejects_a_bad_one() -> None:
    k = clocked(["hpc-a", "hpc-b"], 1)
    text = k.deployment.to_json()
    assert Deployment.from_json(text) == k.deployment
    assert Deployment.from_json(text).epoch_clock() == EpochClock(HOUR, k.deployment.epoch_origin)
    data = json.loads(text)
    for field, bad in (("epoch_length", "x"), ("epoch_length", -1), ("epoch_origin", "x"), ("epoch_length", 1.5)):
        with pytest.raises(ValueError, match=f"not a deployment description: {field} must be"):
            Deployment.from_json(json.dumps({**data, field: bad}))
    # a description written before the clock existed reads as no clock
    del data["epoch_length"], data["epoch_origin"]
    legacy = Deployment.from_json(json.dumps(data))
    assert (legacy.epoch_length, legacy.epoch_origin, legacy.epoch_clock()) == (0, 0, None)
    assert legacy.usage_ledger == k.deployment.usage_ledger


def test_an_epoch_clock_needs_a_positive_length() -> None:
    with pytest.raises(ValueError, match="positive length"):
        EpochClock(0, 0)
    with pytest.raises(ValueError, match="origin >= 0"):
        EpochClock(HOUR, -1)
    c = EpochClock(HOUR, 10 * HOUR)
    assert (c.epoch_at(0), c.epoch_at(c.end(1) - 1), c.epoch_at(c.end(1)), c.end(3)) == (1, 1, 2, 13 * HOUR)


def test_deploy_refuses_an_epoch_longer_than_the_booking_delay() -> None:
    """A record must be anchored by its order's deadline + the booking delay (`_checkTerms`: Late); on the clock
    it can be anchored only once its epoch has ended, so a longer epoch would leave honest records unanswerable."""
    chain = connect()
    with pytest.raises(
        ValueError, match=r"epoch_length 7200 s is too long for the booking delay of 3600 s.*at most 2640 s"
    ):
        deploy_consortium(
            chain, chain.dev_account, [spec("hpc-a", Account.create())], 1, 0, booking_delay=HOUR, epoch_length=2 * HOUR
        )
    assert chain.block_number() == 0


def test_a_description_whose_clock_has_no_origin_or_a_wrong_one_is_refused() -> None:
    data = json.loads(clocked(["hpc-a"], 1).deployment.to_json())
    with pytest.raises(ValueError, match="not a deployment description: 'epoch_origin'"):
        Deployment.from_json(json.dumps({k: v for k, v in data.items() if k != "epoch_origin"}))
    for length, origin in ((HOUR, data["epoch_origin"] + 1), (0, HOUR)):
        with pytest.raises(ValueError, match=f"epoch_origin {origin} is not the start of an epoch clock"):
            Deployment.from_json(json.dumps(data | {"epoch_length": length, "epoch_origin": origin}))
