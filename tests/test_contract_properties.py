"""Stateful properties of fair payment on the real contracts (embedded chain), with hypothesis.

Random epochs of jobs (orders, grants, records, receipts or none), cheating claims
(made-up records, overpriced records, one grant billed twice in one epoch or in two),
homes that dispute every bad record as their watchers do (and sometimes an honest one,
to grief), claimants that answer what they can, then settlement. The test keeps its
own books: each home's hold book and what the contracts should conclude, and checks
after every epoch that
- credit is conserved (Settlement collateral + ERC-20 balances never change in sum);
- the contract voids exactly the claims with a bad record, and nothing else;
- nobody is paid twice (a grant in two leaves is voided by disputeDuplicate);
- every hold ends paid (its record stands in a settled, unvoided claim) or refunded;
- an honest centre's claims are never voided and it is paid exactly its records;
- an honest payer pays no more than it granted, exactly its valid records;
- every member's collateral moved by exactly its net claims and the bonds it won or lost.
One deployment is reused: every example starts from a chain snapshot.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from web3.logs import DISCARD

from ledger.chain import ChainRevert, connect
from ledger.deploy import MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.lock import lock_hash, new_key
from ledger.payment import Grant, Order, Receipt, grant_digest, order_digest, sign_typed
from ledger.pricing import Meters, price
from ledger.records import Domain, UsageRecord, record_digest
from ledger.sumtree import SumTree

CENTRES = ("hpc-a", "cloud-b", "edge-c")
PRICES = Prices(per_cpu_second=1_000, per_gpu_second=50_000, per_gib_hour=20_000)
INITIAL = 10**12  # each member's collateral: far above any epoch's claims, so nothing falls short
WINDOW = 30
ANCHOR_BOND = 1_000_000
DISPUTE_BOND = 100_000
ZERO = bytes(32)

PAIRS = [(c, h) for c in CENTRES for h in CENTRES if c != h]


@dataclass
class World:
    """One deployment on the embedded chain and the snapshot every example starts from."""

    chain: Any
    accounts: dict[str, LocalAccount]
    contracts: Any
    domain: Domain
    snapshot: Any

    def reset(self) -> None:
        self.tester.revert_to_snapshot(self.snapshot)
        self.chain._nonces.clear()  # the chain went back: the cached nonces with it

    @property
    def tester(self) -> Any:
        return self.chain.w3.provider.ethereum_tester

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def skip(self, seconds: int) -> None:
        self.tester.time_travel(self.now() + seconds)
        self.chain.mine(1)


@functools.cache
def world() -> World:
    chain = connect("embedded")
    accounts = {name: Account.create() for name in CENTRES}
    for account in accounts.values():
        chain.fund(account.address, 10**21)
    specs = [MemberSpec(n, accounts[n].address, f"http://{n}.invalid", os.urandom(32), PRICES) for n in CENTRES]
    deployment = deploy_consortium(
        chain,
        chain.dev_account,
        specs,
        2,
        INITIAL,
        dispute_window=WINDOW,
        booking_delay=86_400,
        anchor_bond=ANCHOR_BOND,
        dispute_bond=DISPUTE_BOND,
    )
    contracts = bind(chain, deployment)
    snapshot = chain.w3.provider.ethereum_tester.take_snapshot()
    return World(chain, accounts, contracts, Domain.for_deployment(deployment), snapshot)


def _tuple(obj: Any) -> tuple:
    return tuple(obj.message().values())


@dataclass
class Hold:
    """A line of a home's hold book: the grant it signed and how it ended."""

    home: str
    centre: str
    grant: bytes
    amount: int
    status: str = "held"  # held -> paid | refunded
    paid: int = 0
    times_paid: int = 0


@dataclass(repr=False)
class Leaf:
    """One record a centre put in a claim, with the evidence it holds for it."""

    record: UsageRecord
    parts: tuple  # record, order, orderSig, grant, grantSig, receiptSig (Evidence minus key and proof)
    key: bytes
    receipt: bool
    kind: str  # honest | fake | overprice | duplicate
    hold: Hold | None

    def __repr__(self) -> str:
        return f"Leaf({self.kind}, price={self.record.price}, epoch={self.record.epoch}, receipt={self.receipt})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints a drawn leaf
        printer.text(repr(self))

    @property
    def digest(self) -> bytes:
        return record_digest(self.record, world().domain)

    @property
    def grant(self) -> bytes:
        return self.record.grant


@dataclass(repr=False)
class Claim:
    epoch: int
    centre: str
    home: str
    leaves: list[Leaf]
    tree: SumTree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = SumTree([(leaf.digest, leaf.record.price) for leaf in self.leaves])

    def __repr__(self) -> str:
        return f"Claim(epoch {self.epoch}, {self.centre} on {self.home}, {self.leaves})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def proof(self, index: int) -> tuple[list[bytes], list[int]]:
        p = self.tree.proof(index)
        return list(p.hashes), list(p.sums)

    def duplicate_leaf(self, index: int) -> tuple:
        hashes, sums = self.proof(index)
        return (self.epoch, index, _tuple(self.leaves[index].record), hashes, sums)

    def bad(self) -> bool:
        return any(leaf.kind != "honest" for leaf in self.leaves)


class FairPayment(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = world()
        self.w.reset()
        self.c = self.w.contracts
        self.epoch = 1
        self.pending: dict[tuple[str, str], list[Leaf]] = {pair: [] for pair in PAIRS}
        self.history: list[Claim] = []
        self.holds: list[Hold] = []
        self.open_holds: list[Hold] = []
        self.cheaters: set[str] = set()
        self.griefers: set[str] = set()
        self.supply = self.c.credit.functions.totalSupply().call()

    # -- the books' pieces ---------------------------------------------------------------
    def _job(self, centre: str, home: str, cpu_millis: int, max_price: int, *, receipt: bool, kind: str) -> Leaf:
        """A user of `home` orders a job at `centre`, its home grants, the centre meters and signs."""
        w, domain = self.w, self.w.domain
        user = Account.create()
        deadline = w.now() + 7_200  # jobs run up to an hour (cpu_millis <= 3,600,000)
        order = Order(os.urandom(32), centre_id(centre), 1, max_price, deadline, int.from_bytes(os.urandom(32), "big"))
        grant_signer = w.accounts[centre] if kind == "fake" else w.accounts[home]  # a made-up record: no home's grant
        grant = Grant(
            order_digest(order, domain), user.address, centre_id(home), centre_id(centre), max_price, deadline
        )
        hold = None
        if kind != "fake":
            hold = Hold(home, centre, grant_digest(grant, domain), max_price)
            self.holds.append(hold)
            self.open_holds.append(hold)
        meters = Meters(cpu_millis=cpu_millis, gpu_millis=0, max_rss_kib=256 * 1024, wall_millis=cpu_millis + 1_000)
        fair = min(price(meters, PRICES), grant.amount)
        key = new_key()
        started = w.now()
        record = UsageRecord(
            record_id=os.urandom(32),
            job_id=os.urandom(32),
            serving_centre=centre_id(centre),
            home_centre=centre_id(home),
            user=os.urandom(32),
            epoch=self.epoch,
            started_at=started,
            ended_at=started + meters.wall_millis // 1000,
            cpu_millis=meters.cpu_millis,
            wall_millis=meters.wall_millis,
            max_rss_kib=meters.max_rss_kib,
            gpu_millis=0,
            rates_version=1,
            price=fair + 1 + fair // 2 if kind == "overprice" else fair,
            order=order_digest(order, domain),
            grant=grant_digest(grant, domain),
            lock_hash=lock_hash(key),
            decision=os.urandom(32),
        )
        receipt_sig = sign_typed(Receipt(record_digest(record, domain)), domain, user.key) if receipt else b""
        parts = (
            _tuple(record),
            _tuple(order),
            sign_typed(order, domain, user.key),
            _tuple(grant),
            sign_typed(grant, domain, grant_signer.key),
            receipt_sig,
        )
        return Leaf(record, parts, key, receipt, kind, hold)

    # -- rules: what happens during an epoch ------------------------------------------------
    @rule(
        pair=st.sampled_from(PAIRS),
        jobs=st.lists(
            st.tuples(st.integers(1, 3_600_000), st.sampled_from([None, 0.5, 2.0]), st.booleans()),
            min_size=1,
            max_size=3,
        ),
    )
    def honest_jobs(self, pair: tuple[str, str], jobs: list[tuple[int, float | None, bool]]) -> None:
        """Jobs of `home` users at `centre`: at the list price, capped by a grant below it, or under a
        grant above it; with a receipt, or without (the user vanished: the centre reveals the key)."""
        centre, home = pair
        for cpu_millis, cap, receipt in jobs:
            list_price = price(Meters(cpu_millis, 0, 256 * 1024, cpu_millis + 1_000), PRICES)
            max_price = max(1, int(list_price * cap)) if cap else list_price
            self.pending[pair].append(self._job(centre, home, cpu_millis, max_price, receipt=receipt, kind="honest"))

    @rule(
        pair=st.sampled_from(PAIRS), cpu_millis=st.integers(1, 3_600_000), kind=st.sampled_from(["fake", "overprice"])
    )
    def cheating_record(self, pair: tuple[str, str], cpu_millis: int, kind: str) -> None:
        centre, home = pair
        list_price = price(Meters(cpu_millis, 0, 256 * 1024, cpu_millis + 1_000), PRICES)
        self.pending[pair].append(self._job(centre, home, cpu_millis, 2 * list_price, receipt=True, kind=kind))
        self.cheaters.add(centre)

    @precondition(lambda self: any(leaf.kind == "honest" for leaves in self.pending.values() for leaf in leaves))
    @rule(data=st.data())
    def bill_twice_in_one_epoch(self, data: st.DataObject) -> None:
        choices = [(pair, leaf) for pair, leaves in self.pending.items() for leaf in leaves if leaf.kind == "honest"]
        pair, leaf = data.draw(st.sampled_from(choices))
        self.pending[pair].append(Leaf(leaf.record, leaf.parts, leaf.key, leaf.receipt, "duplicate", leaf.hold))
        self.cheaters.add(pair[0])

    @precondition(lambda self: any(not c.bad() for c in self.history))
    @rule(data=st.data())
    def bill_again_in_a_later_epoch(self, data: st.DataObject) -> None:
        """The same grant (an order already paid) re-billed under a new record of this epoch."""
        claim = data.draw(st.sampled_from([c for c in self.history if not c.bad()]))
        leaf = data.draw(st.sampled_from(claim.leaves))
        domain = self.w.domain
        record = UsageRecord(**{**vars(leaf.record), "epoch": self.epoch, "record_id": os.urandom(32)})
        centre = self.w.accounts[claim.centre]
        del centre  # the claimant signs records off-chain; the contract checks the claim's proof, not this signature
        parts = (_tuple(record), *leaf.parts[1:5], b"")
        assert record.grant == leaf.record.grant and record_digest(record, domain) != leaf.digest
        self.pending[(claim.centre, claim.home)].append(Leaf(record, parts, leaf.key, False, "duplicate", leaf.hold))
        self.cheaters.add(claim.centre)

    @rule(pair=st.sampled_from(PAIRS), amount=st.integers(1, 10**9))
    def grant_without_a_job(self, pair: tuple[str, str], amount: int) -> None:
        """The home holds credit for an order that never runs: the hold must come back."""
        hold = Hold(pair[1], pair[0], os.urandom(32), amount)
        self.holds.append(hold)
        self.open_holds.append(hold)

    @rule(home=st.sampled_from(CENTRES))
    def grief(self, home: str) -> None:
        """This home will also dispute an honest record with a receipt (and lose its bond)."""
        self.griefers.add(home)

    # -- closing an epoch: anchors, watchers' disputes, answers, settlement ----------------------
    @rule()
    def close_epoch(self) -> None:
        w, ul, st_ = self.w, self.c.usage_ledger, self.c.settlement
        epoch = self.epoch
        claims = {pair: Claim(epoch, *pair, leaves) for pair, leaves in self.pending.items() if leaves}
        self.pending = {pair: [] for pair in PAIRS}  # taken now: a failed close is not retried by teardown
        accounts = [w.accounts[n].address for n in CENTRES]
        before = {a: self._balance(a) for a in accounts}
        flows = dict.fromkeys(accounts, 0)
        for centre in CENTRES:
            mine = [claims[(centre, h)] for h in CENTRES if (centre, h) in claims]
            w.chain.transact(
                ul.functions.anchor(
                    epoch,
                    [centre_id(c.home) for c in mine],
                    [c.tree.root for c in mine],
                    [c.tree.count for c in mine],
                    [c.tree.total for c in mine],
                    bytes(32),
                    0,
                ),
                w.accounts[centre],
            )
        # The homes' watchers: duplicates, then the first bad record, then records without a receipt.
        disputes: list[tuple[int, Claim, int, bool]] = []
        slashed: set[str] = set()  # centres whose anchor bond is gone
        expect_void: set[tuple[str, str]] = set()
        for pair, claim in claims.items():
            centre, home = pair
            challenger = w.accounts[home]
            dup = self._duplicate(claim)
            if dup is not None:
                a, b = dup
                w.chain.transact(
                    ul.functions.disputeDuplicate(centre_id(centre), centre_id(home), a, claim.duplicate_leaf(b)),
                    challenger,
                )
                expect_void.add(pair)
                if centre not in slashed:
                    slashed.add(centre)
                    flows[w.accounts[centre].address] -= ANCHOR_BOND
                    flows[challenger.address] += ANCHOR_BOND
                continue
            bad = [i for i, leaf in enumerate(claim.leaves) if leaf.kind != "honest"]
            targets = [(bad[0], False)] if bad else [(i, True) for i, f in enumerate(claim.leaves) if not f.receipt]
            if not bad and home in self.griefers:
                targets += [(i, False) for i, f in enumerate(claim.leaves) if f.receipt][:1]
            for index, need_key in targets:
                receipt = w.chain.transact(
                    ul.functions.dispute(centre_id(centre), epoch, centre_id(home), index, need_key), challenger
                )
                (opened,) = ul.events.Disputed().process_receipt(receipt, errors=DISCARD)
                disputes.append((int(opened["args"]["id"]), claim, index, need_key))
            if bad:
                expect_void.add(pair)
        # The claimants answer every dispute with what they hold; a bad record's answer must fail.
        unanswered = []
        for dispute_id, claim, index, need_key in disputes:
            leaf = claim.leaves[index]
            key = leaf.key if (need_key or not leaf.receipt) else ZERO
            evidence = (*leaf.parts, key, *claim.proof(index))
            centre = w.accounts[claim.centre]
            if leaf.kind != "honest":
                with pytest.raises(ChainRevert):
                    w.chain.transact(ul.functions.answer(dispute_id, evidence), centre)
                unanswered.append((claim, w.accounts[claim.home].address))
                continue
            w.chain.transact(ul.functions.answer(dispute_id, evidence), centre)
            if not need_key:
                flows[w.accounts[claim.home].address] -= DISPUTE_BOND
                flows[centre.address] += DISPUTE_BOND
        for claim, challenger in unanswered:  # finalize: the anchor bond goes to the first challenger
            if claim.centre not in slashed:
                slashed.add(claim.centre)
                flows[w.accounts[claim.centre].address] -= ANCHOR_BOND
                flows[challenger] += ANCHOR_BOND
        w.skip(2 * WINDOW + 1)
        w.chain.transact(st_.functions.settle(epoch), w.chain.dev_account)
        self._check_epoch(epoch, claims, expect_void, before, flows)
        self._check_credit_is_conserved()
        event(f"epoch closed with {len(disputes)} disputes, {len(expect_void)} claims voided")
        self.history += [c for c in claims.values()]
        self.griefers.clear()
        self.epoch += 1

    def teardown(self) -> None:
        """Every example ends with its last epoch settled, so every hold it made is checked."""
        if any(self.pending.values()):
            self.close_epoch()

    def _duplicate(self, claim: Claim) -> tuple[tuple, int] | None:
        """(the earlier leaf, the index of the later) of a grant billed twice, if any."""
        seen: dict[bytes, int] = {}
        for j, leaf in enumerate(claim.leaves):
            if leaf.grant in seen:
                return claim.duplicate_leaf(seen[leaf.grant]), j
            for old in self.history:
                if (old.centre, old.home) == (claim.centre, claim.home):
                    for i, o in enumerate(old.leaves):
                        if o.grant == leaf.grant:
                            return old.duplicate_leaf(i), j
            seen[leaf.grant] = j
        return None

    # -- the checks --------------------------------------------------------------------------
    def _balance(self, address: str) -> int:
        return int(self.c.settlement.functions.collateralOf(address).call()[0])

    def _check_epoch(
        self,
        epoch: int,
        claims: dict[tuple[str, str], Claim],
        expect_void: set[tuple[str, str]],
        before: dict[str, int],
        flows: dict[str, int],
    ) -> None:
        ul = self.c.usage_ledger
        assert self.c.settlement.functions.settled(epoch).call()
        voided = {pair for pair in claims if ul.functions.claimOf(epoch, *map(centre_id, pair)).call()[3]}
        assert voided == expect_void, f"epoch {epoch}: voided {voided}, the bad claims are {expect_void}"
        net = dict.fromkeys(CENTRES, 0)
        stands: dict[tuple[str, str], int] = {}
        for pair, claim in claims.items():
            standing = stands[pair] = ul.functions.standing(epoch, *map(centre_id, pair)).call()
            assert standing == (0 if pair in voided else claim.tree.total)
            net[pair[0]] += standing
            net[pair[1]] -= standing
            if pair in voided:
                continue
            for leaf in claim.leaves:  # a hold is paid iff its record stands in a settled, unvoided claim
                assert leaf.hold is not None and leaf.kind == "honest"
                leaf.hold.times_paid += 1
                leaf.hold.paid += leaf.record.price
        for hold in self.open_holds:
            assert hold.times_paid <= 1, "a grant was paid twice"
            assert hold.paid <= hold.amount, "a payer paid more than it granted"
            hold.status = "paid" if hold.times_paid else "refunded"
        self.open_holds = []
        assert all(h.status in ("paid", "refunded") for h in self.holds)
        for name in CENTRES:  # collateral moved by the net claims and the bonds, nothing else
            address = self.w.accounts[name].address
            assert self._balance(address) == before[address] + net[name] + flows[address], name
        for name in set(CENTRES) - self.cheaters:  # an honest centre is paid exactly its records
            for (centre, home), claim in claims.items():
                if centre == name:
                    assert (centre, home) not in voided
                    assert sum(leaf.record.price for leaf in claim.leaves) == claim.tree.total
        for home in CENTRES:  # an honest payer pays exactly its valid records, never above its grants
            paid = sum(amount for (_, h), amount in stands.items() if h == home)
            valid = sum(
                leaf.record.price
                for (c, h), claim in claims.items()
                if h == home and (c, h) not in voided
                for leaf in claim.leaves
            )
            assert paid == valid <= sum(h.amount for h in self.holds if h.home == home)

    def _check_credit_is_conserved(self) -> None:
        """Only close_epoch touches the chain, so it checks this after each epoch."""
        credit, settlement = self.c.credit, self.c.settlement
        holders = [self.w.chain.dev_account.address, *(a.address for a in self.w.accounts.values())]
        collateral = sum(self._balance(a) for a in holders)
        assert collateral == credit.functions.balanceOf(settlement.address).call()
        tokens = sum(credit.functions.balanceOf(a).call() for a in [*holders, settlement.address])
        assert tokens == credit.functions.totalSupply().call() == self.supply


FairPayment.TestCase.settings = settings(
    max_examples=6,
    # Each example runs real transactions (seconds); shrinking a failure would take minutes,
    # so a failure is reported as found (the drawn leaves and claims print compactly).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    stateful_step_count=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFairPayment = FairPayment.TestCase
