"""The consortium contracts on the embedded chain (and once end to end on anvil)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.logs import DISCARD

from ledger.chain import Chain, ChainRevert, connect
from ledger.deploy import (
    DEFAULT_ANCHOR_BOND,
    DEFAULT_BOOKING_DELAY,
    DEFAULT_DISPUTE_BOND,
    Contracts,
    Deployment,
    MemberSpec,
    Prices,
    bind,
    deploy_consortium,
)
from ledger.ids import centre_id, centre_name
from ledger.netting import net_positions, settle_from_collateral, transfers
from ledger.sumtree import SumTree

INITIAL = 1_000_000
NOTICE = 3_600  # seconds between publishing rates and their earliest effect
ADMIT, REMOVE = 0, 1


@dataclass
class Consortium:
    chain: Chain
    deployment: Deployment
    c: Contracts
    accounts: dict[str, LocalAccount]
    specs: list[MemberSpec]

    def ids(self) -> list[bytes]:
        return [s.id for s in self.specs]

    def tx(self, fn, who: str | LocalAccount):
        sender = self.accounts[who] if isinstance(who, str) else who
        return self.chain.transact(fn, sender)

    def outsider(self) -> LocalAccount:
        acct = Account.create()
        self.chain.fund(acct.address, 10**18)
        return acct


def spec(name: str, acct: LocalAccount, price: int = 1) -> MemberSpec:
    return MemberSpec(
        name, acct.address, f"http://{name}.example:8000", bytes([len(name)]) * 32, Prices(price, 10 * price, 3 * price)
    )


def make_consortium(
    names: list[str],
    quorum: int,
    url: str = "embedded",
    rate_notice: int = NOTICE,
    initial: int = INITIAL,
    **params: int,
) -> Consortium:
    """A fresh deployment; with no dispute window unless `params` set one, so an epoch
    settles in the block after its last anchor."""
    chain = connect(url)
    accounts = {n: Account.create() for n in names}
    for acct in accounts.values():
        chain.fund(acct.address, 10**19)
    specs = [spec(n, accounts[n]) for n in names]
    params = {"dispute_window": 0, **params}
    deployment = deploy_consortium(chain, chain.dev_account, specs, quorum, initial, rate_notice=rate_notice, **params)
    return Consortium(chain, deployment, bind(chain, deployment), accounts, specs)


def advance(chain: Chain, seconds: int) -> None:
    """Mines a block `seconds` after the latest one (calls, and the embedded chain's pre-flight
    of a transaction, run at the latest block's time; the transaction's own block is 1 s later)."""
    if chain.embedded:
        tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        tester.time_travel(chain.w3.eth.get_block("latest")["timestamp"] + seconds + 1)  # mines at 1 s before
    else:
        chain.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        chain.mine()


def active_names(k: Consortium) -> list[str]:
    return [centre_name(m[0]) for m in k.c.consortium.functions.members().call()]


@pytest.fixture
def four() -> Consortium:
    return make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3)


def reverts(reason: str, fn, *args):
    with pytest.raises(ChainRevert) as info:
        fn(*args)
    assert info.value.reason == reason, str(info.value)
    return info.value


# -- deployment ------------------------------------------------------------------------


def test_deployment_lists_genesis_members_in_order_and_round_trips(four, tmp_path):
    k = four
    assert active_names(k) == ["hpc-a", "hpc-b", "cloud-c", "edge-d"]
    assert k.c.consortium.functions.quorum().call() == 3
    b = k.c.consortium.functions.member(centre_id("hpc-b")).call()
    assert b[1] == "hpc-b" and b[2] == k.accounts["hpc-b"].address and b[3] == "http://hpc-b.example:8000"
    assert Prices.from_tuple(b[5]) == Prices(1, 10, 3) and b[6] is True  # the admission rates
    assert k.c.consortium.functions.idOf(k.accounts["cloud-c"].address).call() == centre_id("cloud-c")
    # every member's credit is collateral in Settlement, none is a token balance it could move away
    assert k.c.credit.functions.balanceOf(k.accounts["edge-d"].address).call() == 0
    assert k.c.settlement.functions.collateralOf(k.accounts["edge-d"].address).call() == [INITIAL, 0, 0, 0, 0]
    assert k.c.credit.functions.balanceOf(k.deployment.settlement).call() == 4 * INITIAL
    assert k.c.credit.functions.totalSupply().call() == 4 * INITIAL
    assert k.c.usage_ledger.functions.settlement().call() == k.deployment.settlement
    assert (k.deployment.dispute_window, k.deployment.booking_delay) == (0, DEFAULT_BOOKING_DELAY)
    assert k.c.usage_ledger.functions.disputeWindow().call() == 0
    assert k.c.usage_ledger.functions.bookingDelay().call() == DEFAULT_BOOKING_DELAY
    assert k.c.settlement.functions.anchorBond().call() == DEFAULT_ANCHOR_BOND
    assert k.c.settlement.functions.disputeBond().call() == DEFAULT_DISPUTE_BOND
    assert Deployment.from_json(k.deployment.to_json()) == k.deployment
    path = tmp_path / "deployment.json"
    k.deployment.to_json(path)
    assert Deployment.from_json(path) == k.deployment
    assert Deployment.from_json(str(path)) == k.deployment
    # a description written before the dispute window existed still reads (the gateway asks the chain)
    old = json.loads(k.deployment.to_json())
    del old["dispute_window"], old["booking_delay"]
    legacy = Deployment.from_json(json.dumps(old))
    assert (
        legacy.dispute_window is None
        and legacy.booking_delay is None
        and legacy.usage_ledger == k.deployment.usage_ledger
    )
    old["dispute_window"] = -1
    with pytest.raises(ValueError, match="dispute_window"):
        Deployment.from_json(json.dumps(old))


def test_constructor_rejects_quorum_out_of_range():
    chain = connect()
    acct = Account.create()
    genesis = [spec("hpc-a", acct).as_tuple()]
    reverts("InvalidQuorum", chain.deploy, "Consortium", chain.dev_account, genesis, 2, 0)
    reverts("InvalidQuorum", chain.deploy, "Consortium", chain.dev_account, genesis, 0, 0)
    with pytest.raises(ValueError):
        deploy_consortium(chain, chain.dev_account, [spec("hpc-a", acct)], 2, 0)
    for bad in (-1, 2**64, 1.5, True):
        for param in ("rate_notice", "dispute_window", "booking_delay"):
            with pytest.raises(ValueError, match=param):
                deploy_consortium(chain, chain.dev_account, [spec("hpc-a", acct)], 1, 0, **{param: bad})
    for bad in (-1, 2**96, 1.5, True):
        for param in ("anchor_bond", "dispute_bond"):
            with pytest.raises(ValueError, match=param):
                deploy_consortium(chain, chain.dev_account, [spec("hpc-a", acct)], 1, 0, **{param: bad})


def test_id_of_a_non_member_reverts(four):
    with pytest.raises(ChainRevert) as info:
        four.chain.call(four.c.consortium.functions.idOf(Account.create().address))
    assert info.value.reason == "NotMember"


# -- governance ------------------------------------------------------------------------


def test_admission_needs_k_of_n_votes(four):
    k = four
    newcomer = Account.create()
    k.chain.fund(newcomer.address, 10**18)
    fns = k.c.consortium.functions
    receipt = k.tx(fns.propose(ADMIT, spec("ai-e", newcomer).as_tuple()), "hpc-a")
    created = k.c.consortium.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)[0]["args"]
    pid = created["proposalId"]
    assert created["memberId"] == centre_id("ai-e") and created["proposer"] == centre_id("hpc-a")
    assert fns.isMember(centre_id("ai-e")).call() is False
    k.tx(fns.vote(pid), "hpc-b")
    assert fns.isMember(centre_id("ai-e")).call() is False  # 2 of 3
    receipt = k.tx(fns.vote(pid), "edge-d")
    admitted = k.c.consortium.events.MemberAdmitted().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["name"] for e in admitted] == ["ai-e"]
    assert active_names(k) == ["hpc-a", "hpc-b", "cloud-c", "edge-d", "ai-e"]
    assert fns.proposal(pid).call()[:3] == [ADMIT, True, 3]
    # the new member takes part at once
    k.tx(fns.propose(REMOVE, spec("hpc-b", k.accounts["hpc-b"]).as_tuple()), newcomer)


def test_non_member_cannot_propose_or_vote(four):
    k = four
    fns = k.c.consortium.functions
    outsider = k.outsider()
    reverts("NotMember", k.tx, fns.propose(ADMIT, spec("ai-e", outsider).as_tuple()), outsider)
    receipt = k.tx(fns.propose(ADMIT, spec("ai-e", outsider).as_tuple()), "hpc-a")
    pid = k.c.consortium.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)[0]["args"]["proposalId"]
    reverts("NotMember", k.tx, fns.vote(pid), outsider)


def test_double_vote_and_closed_or_unknown_proposals_revert(four):
    k = four
    fns = k.c.consortium.functions
    newcomer = Account.create()
    k.tx(fns.propose(ADMIT, spec("ai-e", newcomer).as_tuple()), "hpc-a")
    pid = fns.proposalCount().call()
    reverts("AlreadyVoted", k.tx, fns.vote(pid), "hpc-a")  # the proposer's vote counted
    k.tx(fns.vote(pid), "hpc-b")
    reverts("AlreadyVoted", k.tx, fns.vote(pid), "hpc-b")
    k.tx(fns.vote(pid), "cloud-c")
    reverts("ProposalClosed", k.tx, fns.vote(pid), "edge-d")
    reverts("UnknownProposal", k.tx, fns.vote(pid + 1), "edge-d")
    reverts("UnknownProposal", k.tx, fns.vote(0), "edge-d")


def test_removal_by_vote_keeps_order_and_revokes_rights(four):
    k = four
    fns = k.c.consortium.functions
    k.tx(fns.propose(REMOVE, spec("hpc-b", k.accounts["hpc-b"]).as_tuple()), "edge-d")
    pid = fns.proposalCount().call()
    k.tx(fns.vote(pid), "hpc-a")
    receipt = k.tx(fns.vote(pid), "cloud-c")
    removed = k.c.consortium.events.MemberRemoved().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["id"] for e in removed] == [centre_id("hpc-b")]
    assert active_names(k) == ["hpc-a", "cloud-c", "edge-d"]
    assert fns.member(centre_id("hpc-b")).call()[6] is False
    reverts("NotMember", k.tx, fns.propose(ADMIT, spec("ai-e", Account.create()).as_tuple()), "hpc-b")
    reverts("NotMember", k.tx, k.c.usage_ledger.functions.anchor(1, [], [], [], [], bytes(32), 0), "hpc-b")
    # 3 members left with quorum 3: a further removal would make governance impossible
    reverts("QuorumUnreachable", k.tx, fns.propose(REMOVE, spec("hpc-a", k.accounts["hpc-a"]).as_tuple()), "edge-d")


def test_admission_input_is_validated(four):
    k = four
    fns = k.c.consortium.functions
    bad_name = list(spec("ai-e", Account.create()).as_tuple())
    bad_name[1] = "AI_E"
    reverts("InvalidName", k.tx, fns.propose(ADMIT, tuple(bad_name)), "hpc-a")
    mismatch = list(spec("ai-e", Account.create()).as_tuple())
    mismatch[0] = centre_id("ai-f")
    reverts("InvalidName", k.tx, fns.propose(ADMIT, tuple(mismatch)), "hpc-a")
    reverts("AlreadyMember", k.tx, fns.propose(ADMIT, spec("hpc-b", Account.create()).as_tuple()), "hpc-a")
    reverts("AccountInUse", k.tx, fns.propose(ADMIT, spec("ai-e", k.accounts["hpc-b"]).as_tuple()), "hpc-a")
    reverts("NotMember", k.tx, fns.propose(REMOVE, spec("ai-e", Account.create()).as_tuple()), "hpc-a")
    reverts("InvalidAction", k.tx, fns.propose(2, spec("ai-e", Account.create()).as_tuple()), "hpc-a")


def test_quorum_of_one_executes_on_proposal():
    k = make_consortium(["hpc-a", "hpc-b"], quorum=1)
    k.tx(k.c.consortium.functions.propose(ADMIT, spec("ai-e", Account.create()).as_tuple()), "hpc-b")
    assert active_names(k) == ["hpc-a", "hpc-b", "ai-e"]


def receipt_events(contract, receipt, *names: str) -> list[tuple[str, dict]]:
    """The receipt's events of `contract` among `names`, in log order."""
    found = [
        (e["logIndex"], name, dict(e["args"]))
        for name in names
        for e in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    ]
    return [(name, args) for _, name, args in sorted(found, key=lambda f: f[0])]


def test_a_proposal_that_passes_emits_proposal_executed_after_its_effect(four):
    k = four
    fns = k.c.consortium.functions
    names = ("ProposalCreated", "Voted", "MemberAdmitted", "MemberRemoved", "RatesPublished", "ProposalExecuted")
    b, d = centre_id("hpc-b"), centre_id("edge-d")
    receipt = k.tx(fns.propose(ADMIT, spec("ai-e", Account.create()).as_tuple()), "hpc-a")
    assert [n for n, _ in receipt_events(k.c.consortium, receipt, *names)] == ["ProposalCreated", "Voted"]
    second = receipt_events(k.c.consortium, k.tx(fns.vote(1), "hpc-b"), *names)
    assert second == [("Voted", {"proposalId": 1, "voter": b})]
    deciding = receipt_events(k.c.consortium, k.tx(fns.vote(1), "edge-d"), *names)
    assert [n for n, _ in deciding] == ["Voted", "MemberAdmitted", "RatesPublished", "ProposalExecuted"]
    assert deciding[0][1] == {"proposalId": 1, "voter": d} and deciding[-1][1] == {"proposalId": 1}
    # a removal, and a proposal that passes on its own vote, say so too
    k.tx(fns.propose(REMOVE, spec("ai-e", Account.create()).as_tuple()), "hpc-a")
    k.tx(fns.vote(2), "hpc-b")
    deciding = receipt_events(k.c.consortium, k.tx(fns.vote(2), "cloud-c"), *names)
    assert [n for n, _ in deciding] == ["Voted", "MemberRemoved", "ProposalExecuted"]
    assert deciding[-1][1] == {"proposalId": 2} and fns.proposal(2).call()[1] is True
    one = make_consortium(["hpc-a", "hpc-b"], quorum=1)
    receipt = one.tx(one.c.consortium.functions.propose(ADMIT, spec("ai-e", Account.create()).as_tuple()), "hpc-b")
    assert [n for n, _ in receipt_events(one.c.consortium, receipt, *names)] == [
        "ProposalCreated",
        "Voted",
        "MemberAdmitted",
        "RatesPublished",
        "ProposalExecuted",
    ]


def test_a_vote_that_cannot_be_carried_out_reverts_and_is_not_counted(four):
    """The deciding vote executes; if the admission became impossible meanwhile, that vote
    reverts, and nothing says the proposal executed."""
    k = four
    fns = k.c.consortium.functions
    twin = Account.create()
    k.tx(fns.propose(ADMIT, spec("ai-e", twin).as_tuple()), "hpc-a")
    k.tx(fns.propose(ADMIT, spec("ai-f", twin).as_tuple()), "hpc-a")  # the same account
    k.tx(fns.vote(1), "hpc-b")
    k.tx(fns.vote(1), "cloud-c")  # ai-e admitted with that account
    k.tx(fns.vote(2), "hpc-b")
    reverts("AccountInUse", k.tx, fns.vote(2), "cloud-c")
    assert fns.proposal(2).call()[1:3] == [False, 2] and not fns.hasVoted(2, centre_id("cloud-c")).call()


# NatSpec and the exact compiler on every contract: the ABI is documented where it is declared.
SOURCES = sorted((Path(__file__).resolve().parents[1] / "contracts" / "src").glob("*.sol"))


def test_every_source_pins_the_compiler_the_builds_use():
    assert SOURCES
    for path in SOURCES:
        pragmas = re.findall(r"^pragma solidity ([^;]+);", path.read_text(), re.M)
        assert pragmas == ["0.8.28"], f"{path.name}: pragma solidity {pragmas}"


def test_every_event_has_a_notice_and_documents_every_parameter():
    events = 0
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"\s*event (\w+)\(", line)
            if not match:
                continue
            events += 1
            declaration = line
            j = i
            while ");" not in declaration:
                j += 1
                declaration += lines[j]
            params = [
                p.split()[-1]
                for p in declaration[declaration.index("(") + 1 : declaration.rindex(")")].split(",")
                if p.strip()
            ]
            doc = []
            j = i - 1
            while lines[j].strip().startswith("///"):
                doc.insert(0, lines[j].strip())
                j -= 1
            text = " ".join(doc)
            where = f"{path.name}: event {match.group(1)}"
            assert "@notice" in text, f"{where} has no @notice"
            for param in params:
                assert f"@param {param} " in text, f"{where} does not document {param}"
    assert events >= 15


def test_member_updates_its_own_entry(four):
    k = four
    fns = k.c.consortium.functions
    receipt = k.tx(fns.updateMember("https://new.example", b"\x07" * 32), "cloud-c")
    ev = k.c.consortium.events.MemberUpdated().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert ev["id"] == centre_id("cloud-c") and ev["gatewayUrl"] == "https://new.example"
    m = fns.member(centre_id("cloud-c")).call()
    assert m[3] == "https://new.example" and m[4] == b"\x07" * 32
    assert fns.ratesCount(centre_id("cloud-c")).call() == 1  # an update never touches the rates
    reverts("NotMember", k.tx, fns.updateMember("x", bytes(32)), k.outsider())


# -- rates -----------------------------------------------------------------------------


def now(k: Consortium) -> int:
    return k.chain.w3.eth.get_block("latest")["timestamp"]


def last_anchored_at(k: Consortium, epoch: int) -> int:
    """Block time of the latest anchor of `epoch` by an active member (0 if none): what settlement's
    answer window counts from."""
    ul = k.c.usage_ledger.functions
    return max((ul.anchorOf(i, epoch).call()[1] for i in k.c.consortium.functions.memberIds().call()), default=0)


def until_unlocked(k: Consortium, name: str) -> None:
    """Mines a block at `name`'s withdrawal unlock time (Settlement.withdrawalDelay after it asked)."""
    unlock = k.c.settlement.functions.collateralOf(k.accounts[name].address).call()[4]
    advance(k.chain, max(0, unlock - now(k)))


def rates(k: Consortium, name: str, version: int) -> tuple[int, int, Prices]:
    v, effective_from, prices = k.c.consortium.functions.rates(centre_id(name), version).call()
    return v, effective_from, Prices.from_tuple(prices)


def test_genesis_rates_are_version_one_in_force_from_deployment(four):
    k = four
    fns = k.c.consortium.functions
    assert fns.rateNotice().call() == NOTICE
    for name in k.accounts:
        assert fns.ratesCount(centre_id(name)).call() == 1
        version, effective_from, prices = rates(k, name, 1)
        assert (version, prices) == (1, Prices(1, 10, 3)) and 0 < effective_from <= now(k)
        assert tuple(fns.ratesAt(centre_id(name), now(k)).call())[:2] == (1, effective_from)
    err = reverts("UnknownRates", k.chain.call, fns.ratesAt(centre_id("hpc-a"), rates(k, "hpc-a", 1)[1] - 1))
    assert err.error_args == (centre_id("hpc-a"), 0)
    for version in (0, 2):
        err = reverts("UnknownRates", k.chain.call, fns.rates(centre_id("hpc-a"), version))
        assert err.error_args == (centre_id("hpc-a"), version)
    assert fns.ratesCount(centre_id("nobody")).call() == 0


def test_new_rates_take_effect_only_after_the_notice_and_never_change(four):
    k = four
    fns = k.c.consortium.functions
    a = centre_id("hpc-a")
    genesis = rates(k, "hpc-a", 1)
    start = now(k) + NOTICE + 10
    receipt = k.tx(fns.publishRates((4000, 0, 9), start), "hpc-a")
    ev = k.c.consortium.events.RatesPublished().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (ev["id"], ev["version"], ev["effectiveFrom"], tuple(ev["prices"].values())) == (a, 2, start, (4000, 0, 9))
    assert fns.ratesCount(a).call() == 2 and rates(k, "hpc-a", 2) == (2, start, Prices(4000, 0, 9))
    assert rates(k, "hpc-a", 1) == genesis  # a published version never changes
    # the version in force: the genesis rates until `start`, version 2 from then on
    assert fns.ratesAt(a, start - 1).call()[0] == 1
    assert fns.ratesAt(a, start).call()[0] == 2
    assert fns.ratesAt(a, 2**64).call()[0] == 2
    # the others' rates are their own
    assert fns.ratesCount(centre_id("hpc-b")).call() == 1


def test_rates_cannot_be_back_dated_rushed_or_reordered(four):
    k = four
    fns = k.c.consortium.functions
    t = now(k)
    # within the notice (the next block is at least as late as this one)
    err = reverts("RatesTooSoon", k.tx, fns.publishRates((1, 1, 1), t + NOTICE - 1), "hpc-b")
    assert err.error_args[0] == t + NOTICE - 1 and err.error_args[1] >= t + NOTICE
    reverts("RatesTooSoon", k.tx, fns.publishRates((1, 1, 1), t), "hpc-b")  # now
    reverts("RatesTooSoon", k.tx, fns.publishRates((1, 1, 1), 0), "hpc-b")  # back-dated
    later = t + 10 * NOTICE
    k.tx(fns.publishRates((2, 2, 2), later), "hpc-b")
    # before or at a version already published: it would rewrite when that one applies
    err = reverts("RatesTooSoon", k.tx, fns.publishRates((3, 3, 3), later), "hpc-b")
    assert err.error_args == (later, later + 1)
    reverts("RatesTooSoon", k.tx, fns.publishRates((3, 3, 3), later - 1), "hpc-b")
    k.tx(fns.publishRates((3, 3, 3), later + 1), "hpc-b")
    assert [rates(k, "hpc-b", v)[2] for v in (1, 2, 3)] == [Prices(1, 10, 3), Prices(2, 2, 2), Prices(3, 3, 3)]
    reverts("NotMember", k.tx, fns.publishRates((1, 1, 1), later + 5), k.outsider())


def test_a_short_notice_lets_rates_apply_from_the_next_second():
    k = make_consortium(["hpc-a", "hpc-b"], quorum=1, rate_notice=0)
    fns = k.c.consortium.functions
    t = now(k)
    reverts("RatesTooSoon", k.tx, fns.publishRates((5, 5, 5), t - 1), "hpc-a")
    k.tx(fns.publishRates((5, 5, 5), t + 1), "hpc-a")
    assert fns.ratesAt(centre_id("hpc-a"), t + 1).call()[0] == 2


def test_admission_and_readmission_publish_the_admission_rates():
    k = make_consortium(["hpc-a", "hpc-b"], quorum=1)
    fns = k.c.consortium.functions
    newcomer = Account.create()
    k.chain.fund(newcomer.address, 10**18)
    e = centre_id("ai-e")
    receipt = k.tx(fns.propose(ADMIT, spec("ai-e", newcomer, price=7).as_tuple()), "hpc-a")
    ev = k.c.consortium.events.RatesPublished().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (ev["id"], ev["version"], tuple(ev["prices"].values())) == (e, 1, (7, 70, 21))
    k.tx(fns.publishRates((8, 8, 8), now(k) + NOTICE + 60), newcomer)  # pending when ai-e is voted out
    k.tx(fns.propose(REMOVE, spec("ai-e", newcomer).as_tuple()), "hpc-a")
    assert rates(k, "ai-e", 2)[2] == Prices(8, 8, 8)  # a removed centre's rates stay readable for audits
    k.tx(fns.propose(ADMIT, spec("ai-e", newcomer, price=9).as_tuple()), "hpc-b")
    assert fns.ratesCount(e).call() == 3
    _, effective_from, prices = rates(k, "ai-e", 3)
    assert prices == Prices(9, 90, 27) and effective_from <= now(k)
    # the admission rates supersede what was left pending
    assert fns.ratesAt(e, now(k) + 2 * NOTICE).call()[0] == 3


# -- anchoring -------------------------------------------------------------------------


def leaf_digest(*parts: object) -> bytes:
    """A stand-in record digest (the contract only sees digests and amounts)."""
    return keccak(text=repr(parts))


def test_anchor_records_per_home_roots_counts_totals_and_locks_the_bond(four):
    k = four
    ul = k.c.usage_ledger.functions
    a, b, d = centre_id("hpc-a"), centre_id("hpc-b"), centre_id("edge-d")
    tb = SumTree([(leaf_digest(i), 100 * i) for i in range(1, 4)])
    ta = SumTree([(leaf_digest("own"), 7)])
    receipt = k.tx(
        ul.anchor(1, [b, d, a], [tb.root, b"\x42" * 32, ta.root], [3, 12, 1], [600, 5, 7], bytes(32), 0), "hpc-a"
    )
    ev = k.c.usage_ledger.events.EpochAnchored().process_receipt(receipt, errors=DISCARD)[0]["args"]
    at = k.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert (ev["centre"], ev["epoch"], ev["homes"], ev["counts"], ev["totals"]) == (
        a,
        1,
        [b, d, a],
        [3, 12, 1],
        [600, 5, 7],
    )
    assert ev["roots"] == [tb.root, b"\x42" * 32, ta.root] and ev["anchoredAt"] == at
    assert ul.anchorOf(a, 1).call() == [True, at, 16]
    assert ul.anchorOf(a, 2).call() == [False, 0, 0]
    assert ul.claimOf(1, a, b).call() == [tb.root, 3, 600, False]
    assert ul.claimOf(1, a, centre_id("cloud-c")).call() == [bytes(32), 0, 0, False]
    assert ul.homesOf(1, a).call() == [a, b, d]  # active members with a claim, in admission order
    assert last_anchored_at(k, 1) == at and ul.highestSettled().call() == 0
    # the claim stands as anchored; the anchoring centre's own users' records are never claimed
    assert ul.standing(1, a, b).call() == 600 and ul.standing(1, a, a).call() == 0
    # the anchor bond is locked from the centre's collateral
    bond = min(DEFAULT_ANCHOR_BOND, INITIAL)
    assert k.c.settlement.functions.collateralOf(k.accounts["hpc-a"].address).call() == [INITIAL, bond, 0, 0, 0]
    ev = k.c.settlement.events.BondLocked().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (ev["account"], ev["amount"]) == (k.accounts["hpc-a"].address, bond)
    assert ul.bondOf(a).call() == [k.accounts["hpc-a"].address, bond]
    # the bond stays locked across epochs: the next anchor finds it whole and locks nothing more
    receipt = k.tx(ul.anchor(2, [b], [tb.root], [3], [600], bytes(32), 0), "hpc-a")
    assert k.c.settlement.events.BondLocked().process_receipt(receipt, errors=DISCARD) == ()
    assert k.c.settlement.functions.collateralOf(k.accounts["hpc-a"].address).call()[1] == bond


def test_anchor_rejects_bad_claims_and_second_anchor(four):
    k = four
    ul = k.c.usage_ledger.functions
    b, c = centre_id("hpc-b"), centre_id("cloud-c")
    r = b"\x01" * 32
    reverts("NotMember", k.tx, ul.anchor(1, [], [], [], [], bytes(32), 0), k.outsider())
    err = reverts("UnknownHome", k.tx, ul.anchor(1, [centre_id("nobody")], [r], [1], [1], bytes(32), 0), "hpc-a")
    assert err.error_args == (centre_id("nobody"),)
    err = reverts(
        "DuplicateHome", k.tx, ul.anchor(1, [b, c, b], [r, r, r], [1, 1, 1], [1, 2, 3], bytes(32), 0), "hpc-a"
    )
    assert err.error_args == (b,)
    err = reverts("EmptyClaim", k.tx, ul.anchor(1, [b, c], [r, r], [1, 0], [1, 0], bytes(32), 0), "hpc-a")
    assert err.error_args == (c,)
    for bad in (([b, c], [r], [1, 1], [1, 1]), ([b], [r], [1, 1], [1]), ([b], [r], [1], [])):
        reverts("LengthMismatch", k.tx, ul.anchor(1, *bad, bytes(32), 0), "hpc-a")
    assert ul.anchorOf(centre_id("hpc-a"), 1).call()[0] is False  # nothing of a refused anchor stays
    k.tx(ul.anchor(1, [b], [r], [1], [1], bytes(32), 0), "hpc-a")
    err = reverts("AlreadyAnchored", k.tx, ul.anchor(1, [], [], [], [], bytes(32), 0), "hpc-a")
    assert err.error_args == (centre_id("hpc-a"), 1)
    # another epoch is fine, and so is an epoch with no records
    k.tx(ul.anchor(2, [], [], [], [], bytes(32), 0), "hpc-a")


def test_python_sum_tree_proofs_verify_on_chain(four):
    k = four
    ul = k.c.usage_ledger.functions
    a, b = centre_id("hpc-a"), centre_id("hpc-b")
    pairs = [(leaf_digest(i), 17 * i) for i in range(1, 8)]
    tree = SumTree(pairs)
    k.tx(ul.anchor(1, [a], [tree.root], [tree.count], [tree.total], bytes(32), 0), "hpc-b")
    verify = ul.verifyRecord
    for i, (digest, amount) in enumerate(pairs):
        p = tree.proof(i)
        assert verify(b, 1, a, i, digest, amount, list(p.hashes), list(p.sums)).call() is True
    p0, p1 = tree.proof(0), tree.proof(1)
    d0, m0 = pairs[0]
    assert verify(b, 1, a, 0, d0, m0, list(p1.hashes), list(p1.sums)).call() is False  # another leaf's proof
    assert verify(b, 1, a, 1, d0, m0, list(p0.hashes), list(p0.sums)).call() is False  # another index
    assert verify(b, 1, a, 0, d0, m0 + 1, list(p0.hashes), list(p0.sums)).call() is False  # another amount
    assert verify(b, 1, a, 7, d0, m0, list(p0.hashes), list(p0.sums)).call() is False  # past the count
    assert verify(b, 1, a, 0, d0, m0, list(p0.hashes)[:2], list(p0.sums)[:2]).call() is False  # short proof
    assert verify(b, 2, a, 0, d0, m0, list(p0.hashes), list(p0.sums)).call() is False  # not anchored
    assert verify(a, 1, b, 0, d0, m0, list(p0.hashes), list(p0.sums)).call() is False  # another claim
    # sums that wrap past 2**256 on the way up are refused, not reverted on
    wrapped = [2**256 - 1, *list(p0.sums)[1:]]
    assert verify(b, 1, a, 0, d0, m0, list(p0.hashes), wrapped).call() is False


def test_sum_trees_of_every_shape_verify_on_chain(four):
    """Every tree from 1 to 17 leaves (full ones, and last levels filled to every extent): every proof checks."""
    k = four
    ul = k.c.usage_ledger.functions
    homes = k.ids()
    sizes = iter(range(1, 18))
    for epoch in (1, 2):  # epochs past the highest settled + 2 cannot be anchored: 4 centres x 4 homes each
        for centre in k.accounts:
            trees = {
                h: SumTree([(leaf_digest(n, i), n * 1000 + i) for i in range(n)])
                for h, n in zip(homes, sizes, strict=False)
            }
            if not trees:
                return
            fn = ul.anchor(
                epoch,
                list(trees),
                [t.root for t in trees.values()],
                [t.count for t in trees.values()],
                [t.total for t in trees.values()],
                bytes(32),
                0,
            )
            k.tx(fn, centre)
            for h, tree in trees.items():
                n = tree.count
                for i in range(n):
                    digest, amount = leaf_digest(n, i), n * 1000 + i
                    p = tree.proof(i)
                    call = ul.verifyRecord(centre_id(centre), epoch, h, i, digest, amount, list(p.hashes), list(p.sums))
                    assert call.call(), (n, i)


# -- settlement ------------------------------------------------------------------------


def anchor_all(k: Consortium, epoch: int, claims: dict[tuple[str, str], int], skip: tuple[str, ...] = ()) -> None:
    """Every member (but `skip`) anchors `epoch` with one record per claim it holds, then a
    block is mined: with no dispute window the epoch is then settleable."""
    for name in k.accounts:
        if name in skip:
            continue
        mine = [(centre_id(d), v) for (c, d), v in claims.items() if c == name]
        trees = [SumTree([(leaf_digest(epoch, name, d), v)]) for d, v in mine]
        fn = k.c.usage_ledger.functions.anchor(
            epoch,
            [d for d, _ in mine],
            [t.root for t in trees],
            [1] * len(mine),
            [v for _, v in mine],
            bytes(32),
            0,
        )
        k.tx(fn, name)
    k.chain.mine()  # settle checks block.timestamp > the last anchor's (+ 2 windows)


def collateral(k: Consortium) -> list[int]:
    return [k.c.settlement.functions.collateralOf(a.address).call()[0] for a in k.accounts.values()]


def settled_transfers(k: Consortium, receipt) -> list[tuple[bytes, bytes, int]]:
    events = k.c.settlement.events.SettlementTransfer().process_receipt(receipt, errors=DISCARD)
    return [(e["args"]["from"], e["args"]["to"], e["args"]["amount"]) for e in events]


def test_settle_before_all_anchored_or_within_the_answer_window_reverts():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=2, dispute_window=50)
    anchor_all(k, 1, {("hpc-a", "hpc-b"): 10}, skip=("cloud-c",))
    err = reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")
    assert err.error_args == (1,)
    advance(k.chain, 200)
    reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")  # cloud-c never anchored
    anchor_all(k, 1, {}, skip=("hpc-a", "hpc-b"))
    last = last_anchored_at(k, 1)
    assert k.c.usage_ledger.functions.settleable(1).call() is False  # answers are due until last + 2 windows
    advance(k.chain, last + 100 - now(k))  # at last + 100 answers are still due
    reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")
    assert k.c.settlement.functions.settled(1).call() is False
    k.chain.mine()
    k.tx(k.c.settlement.functions.settle(1), "hpc-a")  # at last + 101
    assert k.c.settlement.functions.settled(1).call() is True
    assert k.c.usage_ledger.functions.settleable(2).call() is False  # nothing anchored


def test_settlement_conserves_credit_and_nets_to_at_most_n_minus_1_transfers(four):
    k = four
    claims = {
        ("hpc-a", "hpc-b"): 100,
        ("hpc-a", "cloud-c"): 50,
        ("hpc-b", "hpc-a"): 30,
        ("hpc-b", "edge-d"): 70,
        ("edge-d", "hpc-a"): 5,
        ("cloud-c", "edge-d"): 20,
    }
    anchor_all(k, 1, claims)
    before = collateral(k)
    receipt = k.tx(k.c.settlement.functions.settle(1), "cloud-c")
    after = collateral(k)
    assert sum(after) == sum(before) == k.c.credit.functions.balanceOf(k.deployment.settlement).call()
    ids = k.ids()
    settled = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert settled["centres"] == ids and sum(settled["net"]) == 0
    net = dict(zip(ids, settled["net"], strict=True))
    expected = net_positions({(centre_id(c), centre_id(d)): v for (c, d), v in claims.items()}, ids)
    assert net == expected
    assert [a - b for a, b in zip(after, before, strict=True)] == [net[i] for i in ids]
    moved = settled_transfers(k, receipt)
    assert 0 < len(moved) <= len(ids) - 1
    assert moved == transfers(net, ids)
    assert k.c.settlement.events.Shortfall().process_receipt(receipt, errors=DISCARD) == ()
    assert k.c.settlement.functions.settled(1).call() is True
    reverts("AlreadySettled", k.tx, k.c.settlement.functions.settle(1), "hpc-a")
    assert collateral(k) == after
    # the anchor bonds stay locked for the next epochs, but a debtor's bond never keeps its
    # collateral from its debts: here every credit is bonded, so each debtor's bond paid its debt
    bond = min(DEFAULT_ANCHOR_BOND, INITIAL)
    locked = [k.c.settlement.functions.collateralOf(a.address).call()[1] for a in k.accounts.values()]
    assert locked == [bond - max(0, -net[i]) for i in ids]
    assert [k.c.usage_ledger.functions.bondOf(i).call()[1] for i in ids] == locked


def test_settlement_ignores_claims_on_removed_members():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=1)
    anchor_all(k, 1, {("hpc-a", "cloud-c"): 40, ("hpc-b", "hpc-a"): 15})
    k.tx(k.c.consortium.functions.propose(REMOVE, spec("cloud-c", k.accounts["cloud-c"]).as_tuple()), "hpc-a")
    reverts("FormerParticipants", k.tx, k.c.settlement.functions.settle(1), "hpc-b")  # name them
    receipt = k.tx(k.c.settlement.functions.settleWithout(1, [centre_id("cloud-c")]), "hpc-b")
    a, b = centre_id("hpc-a"), centre_id("hpc-b")
    assert settled_transfers(k, receipt) == [(a, b, 15)]
    settled = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (settled["centres"], settled["net"]) == ([a, b], [-15, 15])
    # the removed member's anchor bond secures nothing now: anyone may release it, whole
    c = centre_id("cloud-c")
    assert k.c.settlement.functions.collateralOf(k.accounts["cloud-c"].address).call()[:2] == [INITIAL, INITIAL]
    err = reverts("StillMember", k.tx, k.c.usage_ledger.functions.releaseBond(a), "hpc-b")
    assert err.error_args == (a,)
    k.tx(k.c.usage_ledger.functions.releaseBond(c), "hpc-b")
    assert k.c.settlement.functions.collateralOf(k.accounts["cloud-c"].address).call()[:2] == [INITIAL, 0]
    assert k.c.usage_ledger.functions.bondOf(c).call() == [k.accounts["cloud-c"].address, 0]


def test_only_the_ledger_moves_collateral_and_links_are_set_once(four):
    k = four
    s, ul = k.c.settlement.functions, k.c.usage_ledger.functions
    a, b = k.accounts["hpc-a"].address, k.accounts["hpc-b"].address
    for fn in (s.lock(a, 1), s.unlock(a, 1), s.slash(a, b, 1)):
        err = reverts("Unauthorized", k.tx, fn, "hpc-a")
        assert err.error_args == (a.lower(),)
    reverts("Unauthorized", k.tx, ul.finalize(1, []), "hpc-a")
    reverts("SettlementAlreadySet", k.chain.transact, ul.setSettlement(a), k.chain.dev_account)
    reverts("Unauthorized", k.tx, ul.setSettlement(a), "hpc-a")
    fresh = k.chain.deploy("UsageLedger", k.chain.dev_account, k.deployment.consortium, 0, 0, 0)
    reverts("InvalidSettlement", k.chain.transact, fresh.functions.setSettlement(ZERO), k.chain.dev_account)
    assert not hasattr(k.c.credit.functions, "settleTransfer")


def test_empty_epoch_settles_without_transfers(four):
    k = four
    anchor_all(k, 2, {})
    receipt = k.tx(k.c.settlement.functions.settle(2), "hpc-a")
    assert settled_transfers(k, receipt) == []
    assert collateral(k) == [INITIAL] * 4


def test_shortfall_pays_creditors_pro_rata_and_conserves_credit():
    """Debts beyond a debtor's collateral: it pays what it has, creditors share pro rata,
    the dust goes to the first creditor, and nothing is created or lost."""
    names = ["hpc-a", "hpc-b", "cloud-c", "edge-d"]
    k = make_consortium(names, quorum=2, initial=100, anchor_bond=0)
    claims = {("hpc-a", "cloud-c"): 102, ("hpc-b", "cloud-c"): 198, ("hpc-a", "edge-d"): 50}
    anchor_all(k, 1, claims)
    before = collateral(k)
    receipt = k.tx(k.c.settlement.functions.settle(1), "hpc-a")
    ids = k.ids()
    net = net_positions({(centre_id(c), centre_id(d)): v for (c, d), v in claims.items()}, ids)
    free = dict(zip(ids, before, strict=True))
    moved, moves, short = settle_from_collateral(net, free, ids)
    after = collateral(k)
    assert sum(after) == sum(before)
    assert [a - b for a, b in zip(after, before, strict=True)] == [moved[i] for i in ids]
    assert settled_transfers(k, receipt) == moves
    shortfalls = k.c.settlement.events.Shortfall().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["debtor"], e["args"]["unpaid"]) for e in shortfalls] == short == [(centre_id("cloud-c"), 200)]
    # collected 150 of 350 owed: hpc-a is owed 152 and gets floor(152*150/350) = 65 + 1 dust, hpc-b 198 -> 84
    assert moved == {ids[0]: 66, ids[1]: 84, ids[2]: -100, ids[3]: -50}
    settled = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (settled["centres"], settled["net"]) == (ids, [66, 84, -100, -50])


# -- collateral ----------------------------------------------------------------------------


def test_deposits_and_withdrawals_wait_for_the_epoch_after_the_next():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3, anchor_bond=100)
    s, credit = k.c.settlement.functions, k.c.credit.functions
    a = k.accounts["hpc-a"]
    outsider = k.outsider()
    reverts("NothingToWithdraw", k.tx, s.withdraw(), "hpc-a")
    err = reverts("InsufficientCollateral", k.tx, s.requestWithdrawal(INITIAL + 1), "hpc-a")
    assert err.error_args == (a.address.lower(), INITIAL, INITIAL + 1)
    anchor_all(k, 1, {})
    k.tx(s.settle(1), "hpc-b")
    anchor_all(k, 2, {})  # highest settled 1: epochs up to 3 may be anchored, so a withdrawal waits for 3
    receipt = k.tx(s.requestWithdrawal(300), "hpc-a")
    ev = k.c.settlement.events.WithdrawalRequested().process_receipt(receipt, errors=DISCARD)[0]["args"]
    unlock_time = now(k) + s.withdrawalDelay().call()
    assert (ev["account"], ev["amount"], ev["unlockEpoch"], ev["unlockTime"]) == (a.address, 300, 3, unlock_time)
    assert s.collateralOf(a.address).call() == [INITIAL, 100, 300, 3, unlock_time]  # the anchor bond is locked
    assert s.freeOf(a.address).call() == INITIAL - 100 - 300
    k.tx(s.settle(2), "hpc-b")
    err = reverts("WithdrawalLocked", k.tx, s.withdraw(), "hpc-a")
    assert err.error_args == (3, unlock_time)
    anchor_all(k, 3, {})
    k.tx(s.settle(3), "hpc-b")
    reverts("WithdrawalLocked", k.tx, s.withdraw(), "hpc-a")  # epoch 3 settled: the time is not up
    until_unlocked(k, "hpc-a")
    receipt = k.tx(s.withdraw(), "hpc-a")
    assert k.c.settlement.events.Withdrawn().process_receipt(receipt, errors=DISCARD)[0]["args"]["amount"] == 300
    assert credit.balanceOf(a.address).call() == 300
    assert s.collateralOf(a.address).call() == [INITIAL - 300, 100, 0, 3, unlock_time]  # the bond stays
    reverts("NothingToWithdraw", k.tx, s.withdraw(), "hpc-a")
    # anyone may add collateral, for itself or for a member
    k.tx(credit.approve(k.deployment.settlement, 300), "hpc-a")
    k.tx(s.depositFor(k.accounts["hpc-b"].address, 120), "hpc-a")
    k.tx(s.deposit(180), "hpc-a")
    assert s.collateralOf(k.accounts["hpc-b"].address).call()[0] == INITIAL + 120
    assert s.collateralOf(a.address).call()[0] == INITIAL - 120
    reverts("ERC20InsufficientAllowance", k.tx, s.deposit(1), outsider)


# -- end to end on a real node -----------------------------------------------------------


def test_deploy_anchor_settle_on_anvil(own_anvil_url):
    # on an anvil of its own: it moves the chain's clock a minute ahead, past the dispute windows
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=2, url=own_anvil_url, dispute_window=30)
    assert k.chain.embedded is False and k.deployment.chain_id == k.chain.chain_id
    ul = k.c.usage_ledger.functions
    a, b = centre_id("hpc-a"), centre_id("hpc-b")
    pairs = [(leaf_digest(i), 20) for i in range(3)]
    tree = SumTree(pairs)
    k.tx(ul.anchor(1, [b], [tree.root], [3], [60], bytes(32), 0), "hpc-a")
    p = tree.proof(2)
    assert ul.verifyRecord(a, 1, b, 2, pairs[2][0], 20, list(p.hashes), list(p.sums)).call() is True
    reverts("AlreadyAnchored", k.tx, ul.anchor(1, [], [], [], [], bytes(32), 0), "hpc-a")
    reverts("NotMember", k.tx, ul.anchor(1, [], [], [], [], bytes(32), 0), k.outsider())
    reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")
    anchor_all(k, 1, {("hpc-b", "edge-d"): 25, ("cloud-c", "hpc-a"): 10}, skip=("hpc-a",))
    reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")  # within the answer window
    advance(k.chain, 61)
    before = collateral(k)
    receipt = k.tx(k.c.settlement.functions.settle(1), "edge-d")
    ids = k.ids()
    settled = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert settled["centres"] == ids
    net = dict(zip(ids, settled["net"], strict=True))
    assert net[a] == 60 - 10 and sum(net.values()) == 0 and sum(collateral(k)) == sum(before)
    assert settled_transfers(k, receipt) == transfers(net, ids)
    reverts("AlreadySettled", k.tx, k.c.settlement.functions.settle(1), "edge-d")


# -- review: claim bounds, griefing and its remedies, stale votes -------------------------

MAX_CLAIM = 2**128 - 1
ZERO = "0x" + "00" * 20


def test_claims_beyond_max_claim_are_refused_at_anchor_time(four):
    """Settlement casts claims to int256: a claim >= 2**255 would wrap negative there
    (the debtor would be paid) and sums near 2**255 would overflow and block the epoch
    forever. UsageLedger refuses such claims before they can reach the netting."""
    k = four
    ul = k.c.usage_ledger.functions
    b = centre_id("hpc-b")
    assert ul.MAX_CLAIM().call() == MAX_CLAIM
    for amount in (MAX_CLAIM + 1, 2**255 + 5, 2**256 - 1):
        err = reverts("ClaimTooLarge", k.tx, ul.anchor(1, [b], [b"\x01" * 32], [1], [amount], bytes(32), 0), "hpc-a")
        assert err.error_args == (b, amount)
    k.tx(ul.anchor(1, [b], [b"\x01" * 32], [1], [MAX_CLAIM], bytes(32), 0), "hpc-a")
    with pytest.raises(ValueError):
        net_positions({(centre_id("hpc-a"), b): MAX_CLAIM + 1}, k.ids())


def test_a_member_that_never_anchors_blocks_settlement_until_removed_by_vote(four):
    """The design's remedy for a silent member: k of n vote it out; its claims (and the
    claims on it) are then ignored and the epoch settles among the others."""
    k = four
    anchor_all(k, 1, {("hpc-a", "hpc-b"): 10, ("hpc-a", "edge-d"): 7}, skip=("edge-d",))
    reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")
    fns = k.c.consortium.functions
    k.tx(fns.propose(REMOVE, spec("edge-d", k.accounts["edge-d"]).as_tuple()), "hpc-a")
    pid = fns.proposalCount().call()
    k.tx(fns.vote(pid), "hpc-b")
    k.tx(fns.vote(pid), "cloud-c")
    receipt = k.tx(k.c.settlement.functions.settleWithout(1, [centre_id("edge-d")]), "cloud-c")
    assert settled_transfers(k, receipt) == [(centre_id("hpc-b"), centre_id("hpc-a"), 10)]
    settled = k.c.settlement.events.EpochSettled().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert settled["centres"] == [centre_id(n) for n in ("hpc-a", "hpc-b", "cloud-c")]
    # an anchor of a settled epoch is late: its claims are left for Settlement.settleLate
    k.tx(fns.propose(ADMIT, spec("edge-d", k.accounts["edge-d"]).as_tuple()), "hpc-a")
    pid = fns.proposalCount().call()
    k.tx(fns.vote(pid), "hpc-b")
    k.tx(fns.vote(pid), "cloud-c")
    k.tx(k.c.usage_ledger.functions.anchor(1, [], [], [], [], bytes(32), 0), "edge-d")
    assert k.c.usage_ledger.functions.lateOf(centre_id("edge-d"), 1).call() == [True, False]


def test_with_quorum_equal_to_n_a_silent_member_blocks_settlement_for_good():
    """Removal must leave at least `quorum` members, so with k == n nobody can be removed: one
    member that never anchors stops settlement until the anchor deadline (after it, the epoch
    settles without it: tests/test_settlement_scale.py)."""
    k = make_consortium(["hpc-a", "hpc-b"], quorum=2)
    anchor_all(k, 1, {("hpc-a", "hpc-b"): 5}, skip=("hpc-b",))
    reverts("NotSettleable", k.tx, k.c.settlement.functions.settle(1), "hpc-a")
    reverts(
        "QuorumUnreachable",
        k.tx,
        k.c.consortium.functions.propose(REMOVE, spec("hpc-b", k.accounts["hpc-b"]).as_tuple()),
        "hpc-a",
    )


def test_votes_of_a_removed_member_no_longer_count():
    """k of n means k *current* members: a vote cast by a member that was removed since
    must not help a proposal pass."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d", "ai-e"], quorum=3)
    fns = k.c.consortium.functions
    # edge-d proposes to remove hpc-b, cloud-c agrees: 2 of the 3 votes needed ...
    k.tx(fns.propose(REMOVE, spec("hpc-b", k.accounts["hpc-b"]).as_tuple()), "edge-d")
    against_b = fns.proposalCount().call()
    k.tx(fns.vote(against_b), "cloud-c")
    # ... then edge-d is itself voted out
    k.tx(fns.propose(REMOVE, spec("edge-d", k.accounts["edge-d"]).as_tuple()), "hpc-a")
    pid = fns.proposalCount().call()
    k.tx(fns.vote(pid), "hpc-b")
    k.tx(fns.vote(pid), "ai-e")
    assert active_names(k) == ["hpc-a", "hpc-b", "cloud-c", "ai-e"]
    # one more current member agrees: only 2 current members support it, not 3
    k.tx(fns.vote(against_b), "hpc-a")
    assert active_names(k) == ["hpc-a", "hpc-b", "cloud-c", "ai-e"]
    assert fns.proposal(against_b).call()[1:3] == [False, 2]
    k.tx(fns.vote(against_b), "ai-e")
    assert active_names(k) == ["hpc-a", "cloud-c", "ai-e"]
