"""Governance by vote on the embedded chain: admit, remove, change the quorum, fund; self-service updates.

Each proposal kind is carried at the quorum and not before; a new quorum is the one
used next; credit is minted only by a carried FUND proposal; input the contract would
refuse is refused with a clear reason and changes nothing.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from web3.logs import DISCARD

from ledger import governance as gov
from ledger.chain import ChainRevert
from ledger.ids import centre_id
from tests.test_contracts import Consortium, active_names, advance, make_consortium, reverts, spec


@pytest.fixture
def four() -> Consortium:
    return make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3)


def step(k: Consortium, fn, who: str, *args, **kwargs) -> gov.Step:
    return fn(k.chain, k.deployment, k.accounts[who], *args, **kwargs)


def snapshot(k: Consortium) -> tuple:
    """What a refused step must leave unchanged."""
    fns = k.c.consortium.functions
    return (
        active_names(k),
        fns.quorum().call(),
        fns.proposalCount().call(),
        k.c.credit.functions.totalSupply().call(),
        [p.to_dict() for p in gov.proposals(k.chain, k.deployment)],
    )


def refused(k: Consortium, reason: str, fn, who, *args, **kwargs) -> gov.GovernanceError:
    before = snapshot(k)
    sender = k.accounts[who] if isinstance(who, str) else who
    with pytest.raises(gov.GovernanceError) as info:
        fn(k.chain, k.deployment, sender, *args, **kwargs)
    assert info.value.reason == reason, str(info.value)
    assert info.value.to_dict() == {"error": str(info.value), "reasons": [reason]}
    assert snapshot(k) == before
    return info.value


# -- each kind carried at the quorum, not before ---------------------------------------------


def test_admission_is_carried_by_the_third_vote_of_four(four):
    k = four
    newcomer = Account.create()
    first = step(k, gov.propose_admit, "hpc-a", spec("ai-e", newcomer))
    assert (first.proposal.id, first.proposal.action, first.proposal.subject) == (1, "admit", "ai-e")
    assert first.proposal.member["account"] == newcomer.address and first.proposal.member["prices"]["per_cpu_second"]
    assert (first.by, first.carried, first.proposal.votes, first.proposal.quorum) == ("hpc-a", False, 1, 3)
    assert not step(k, gov.vote, "hpc-b", 1).carried
    assert "ai-e" not in active_names(k)
    last = step(k, gov.vote, "edge-d", 1)
    assert last.carried and last.proposal.executed and last.proposal.voters == ["hpc-a", "hpc-b", "edge-d"]
    assert active_names(k)[-1] == "ai-e"


def test_removal_is_carried_at_the_quorum_and_not_before(four):
    k = four
    first = step(k, gov.propose_remove, "hpc-a", "edge-d")
    assert (first.proposal.action, first.proposal.subject, first.proposal.amount) == ("remove", "edge-d", None)
    # the view shows the member's own record, though the proposal stores only its id
    assert k.c.consortium.functions.proposal(1).call()[3][3] == "http://edge-d.example:8000"
    step(k, gov.vote, "hpc-b", 1)
    assert "edge-d" in active_names(k)
    assert step(k, gov.vote, "cloud-c", 1).carried
    assert active_names(k) == ["hpc-a", "hpc-b", "cloud-c"]


def test_a_lower_quorum_is_carried_and_then_used(four):
    k = four
    fns = k.c.consortium.functions
    first = step(k, gov.propose_quorum, "hpc-a", 2)
    assert (first.proposal.action, first.proposal.subject, first.proposal.amount) == ("quorum", None, 2)
    receipt_votes = step(k, gov.vote, "hpc-b", 1)
    assert not receipt_votes.carried and fns.quorum().call() == 3
    receipt = k.tx(fns.vote(1), "cloud-c")
    changed = k.c.consortium.events.QuorumChanged().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in changed] == [{"previous": 3, "quorum": 2}]
    assert gov.quorum(k.chain, k.deployment) == 2
    # two votes now carry an admission
    step(k, gov.propose_admit, "edge-d", spec("ai-e", Account.create()))
    assert step(k, gov.vote, "hpc-a", 2).carried and "ai-e" in active_names(k)


def test_a_higher_quorum_is_used_for_the_next_proposal():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=1)
    assert step(k, gov.propose_quorum, "hpc-a", 3).carried  # quorum 1: carried at once
    second = step(k, gov.propose_admit, "hpc-b", spec("ai-e", Account.create()))
    assert not second.carried and second.proposal.quorum == 3
    assert not step(k, gov.vote, "hpc-a", 2).carried
    assert step(k, gov.vote, "cloud-c", 2).carried


def test_funding_mints_credit_only_when_carried(four):
    k = four
    credit = k.c.credit.functions
    supply = credit.totalSupply().call()
    d = k.accounts["edge-d"].address
    first = step(k, gov.propose_funding, "hpc-a", "edge-d", 5_000)
    assert (first.proposal.action, first.proposal.subject, first.proposal.amount) == ("fund", "edge-d", 5_000)
    step(k, gov.vote, "hpc-b", 1)
    assert credit.balanceOf(d).call() == 0 and credit.totalSupply().call() == supply
    receipt = k.tx(k.c.consortium.functions.vote(1), "cloud-c")
    funded = k.c.consortium.events.MemberFunded().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in funded] == [
        {"id": centre_id("edge-d"), "account": d, "amount": 5_000, "proposalId": 1}
    ]
    assert credit.balanceOf(d).call() == 5_000 and credit.totalSupply().call() == supply + 5_000
    # the member deposits it as collateral as it sees fit
    k.tx(credit.approve(k.deployment.settlement, 5_000), "edge-d")
    k.tx(k.c.settlement.functions.deposit(5_000), "edge-d")
    assert k.c.settlement.functions.collateralOf(d).call()[0] == 1_000_000 + 5_000


def test_a_member_admitted_later_is_funded_by_vote(four):
    k = four
    newcomer = Account.create()
    k.chain.fund(newcomer.address, 10**18)
    step(k, gov.propose_admit, "hpc-a", spec("ai-e", newcomer))
    step(k, gov.vote, "hpc-b", 1)
    step(k, gov.vote, "cloud-c", 1)
    step(k, gov.propose_funding, "hpc-a", "ai-e", 2_000_000)
    step(k, gov.vote, "hpc-b", 2)
    assert step(k, gov.vote, "edge-d", 2).carried
    assert k.c.credit.functions.balanceOf(newcomer.address).call() == 2_000_000


# -- credit is minted in no other way ----------------------------------------------------------


def test_nobody_but_the_consortium_mints(four):
    k = four
    credit = k.c.credit.functions
    assert credit.minter().call() == k.deployment.consortium
    assert k.c.consortium.functions.credit().call() == k.deployment.credit
    supply = credit.totalSupply().call()
    for who in ("hpc-a", k.chain.dev_account, k.outsider()):
        sender = k.accounts[who] if isinstance(who, str) else who
        reverts("Unauthorized", k.chain.transact, credit.mint(sender.address, 1), sender)
    # the wiring is set once: neither the deployer nor anyone else can name another minter or credit
    dev = k.chain.dev_account
    reverts("MinterAlreadySet", k.chain.transact, credit.setMinter(k.deployment.consortium), dev)
    reverts("Unauthorized", k.tx, credit.setMinter(k.deployment.settlement), "hpc-a")
    consortium = k.c.consortium.functions
    reverts("CreditAlreadySet", k.chain.transact, consortium.setCredit(k.deployment.credit), dev)
    reverts("Unauthorized", k.tx, consortium.setCredit(k.deployment.credit), "hpc-a")
    assert credit.totalSupply().call() == supply


def test_the_credit_contract_must_name_the_consortium_as_its_minter():
    """A fresh Consortium refuses a credit contract whose minter is someone else (or none)."""
    k = make_consortium(["hpc-a"], quorum=1)
    dev = k.chain.dev_account
    fresh = k.chain.deploy("Consortium", dev, [spec("hpc-a", k.accounts["hpc-a"]).as_tuple()], 1, 0)
    other = k.chain.deploy("ConsortiumCredit", dev, [], [])
    reverts("InvalidCredit", k.chain.transact, fresh.functions.setCredit(other.address), dev)  # no minter
    reverts("InvalidCredit", k.chain.transact, fresh.functions.setCredit(dev.address), dev)  # not a contract
    reverts("InvalidMinter", k.chain.transact, other.functions.setMinter(dev.address), dev)  # not a contract
    k.chain.transact(other.functions.setMinter(k.deployment.consortium), dev)
    reverts("InvalidCredit", k.chain.transact, fresh.functions.setCredit(other.address), dev)  # another's minter
    # without a credit contract, no funding can even be proposed
    reverts("CreditNotSet", k.tx, fresh.functions.proposeFunding(centre_id("hpc-a"), 1), "hpc-a")


# -- bad input: a clear reason, nothing changed ----------------------------------------------


def test_bad_input_is_refused_with_a_reason_and_changes_nothing(four):
    k = four
    refused(k, "not-a-member", gov.propose_remove, "hpc-a", "nobody")
    refused(k, "invalid-name", gov.propose_remove, "hpc-a", "Not A Name")
    refused(k, "not-a-member", gov.propose_funding, "hpc-a", "nobody", 10)
    refused(k, "invalid-quorum", gov.propose_quorum, "hpc-a", 0)
    refused(k, "invalid-quorum", gov.propose_quorum, "hpc-a", 5)
    refused(k, "invalid-quorum", gov.propose_quorum, "hpc-a", -1)
    refused(k, "quorum-unchanged", gov.propose_quorum, "hpc-a", 3)
    for amount in (0, -5, 2**128, 1.5, True):
        refused(k, "invalid-amount", gov.propose_funding, "hpc-a", "edge-d", amount)
    refused(k, "already-member", gov.propose_admit, "hpc-a", spec("hpc-b", Account.create()))
    refused(k, "account-in-use", gov.propose_admit, "hpc-a", spec("ai-e", k.accounts["hpc-b"]))
    refused(k, "unknown-proposal", gov.vote, "hpc-a", 1)
    refused(k, "unknown-proposal", gov.vote, "hpc-a", 0)
    outsider = k.outsider()
    refused(k, "not-a-member", gov.propose_quorum, outsider, 2)
    refused(k, "not-a-member", gov.update_member, outsider, gateway_url="http://x.example")
    step(k, gov.propose_quorum, "hpc-a", 2)
    refused(k, "already-voted", gov.vote, "hpc-a", 1)
    refused(k, "not-a-member", gov.vote, outsider, 1)
    step(k, gov.vote, "hpc-b", 1)
    step(k, gov.vote, "cloud-c", 1)
    refused(k, "proposal-closed", gov.vote, "edge-d", 1)


def test_the_contract_itself_refuses_what_the_checks_refuse(four):
    """The same refusals without the client-side checks: the contract is the rule."""
    k = four
    fns = k.c.consortium.functions
    reverts("InvalidQuorum", k.tx, fns.proposeQuorum(0), "hpc-a")
    reverts("InvalidQuorum", k.tx, fns.proposeQuorum(5), "hpc-a")
    reverts("InvalidAmount", k.tx, fns.proposeFunding(centre_id("edge-d"), 0), "hpc-a")
    reverts("InvalidAmount", k.tx, fns.proposeFunding(centre_id("edge-d"), 2**128), "hpc-a")
    reverts("NotMember", k.tx, fns.proposeFunding(centre_id("nobody"), 1), "hpc-a")
    reverts("NotMember", k.tx, fns.proposeQuorum(2), k.outsider())
    reverts("InvalidAction", k.tx, fns.propose(3, spec("ai-e", Account.create()).as_tuple()), "hpc-a")
    assert fns.proposalCount().call() == 0


def test_removal_that_would_make_the_quorum_unreachable_needs_a_lower_quorum_first():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=3)
    error = refused(k, "quorum-unreachable", gov.propose_remove, "hpc-a", "cloud-c")
    assert "lower the quorum first" in str(error)
    step(k, gov.propose_quorum, "hpc-a", 2)
    step(k, gov.vote, "hpc-b", 1)
    step(k, gov.vote, "cloud-c", 1)
    step(k, gov.propose_remove, "hpc-a", "cloud-c")
    assert step(k, gov.vote, "hpc-b", 2).carried and active_names(k) == ["hpc-a", "hpc-b"]


def test_a_quorum_made_unreachable_meanwhile_is_not_carried():
    """Quorum 4 proposed among four, then a member removed: the deciding vote is refused, nothing changes."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=2)
    step(k, gov.propose_quorum, "hpc-a", 4)
    step(k, gov.propose_remove, "hpc-a", "edge-d")
    assert step(k, gov.vote, "hpc-b", 2).carried
    error = refused(k, "invalid-quorum", gov.vote, "cloud-c", 1)
    assert "1 to the number of active members" in str(error) and "(4, 3)" in str(error)
    assert gov.proposal(k.chain, k.deployment, 1).executed is False


def test_funding_a_member_removed_meanwhile_is_not_carried():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=2)
    step(k, gov.propose_funding, "hpc-a", "edge-d", 100)
    step(k, gov.propose_remove, "hpc-a", "edge-d")
    assert step(k, gov.vote, "hpc-b", 2).carried
    refused(k, "not-a-member", gov.vote, "cloud-c", 1)
    assert k.c.credit.functions.balanceOf(k.accounts["edge-d"].address).call() == 0


# -- listing ---------------------------------------------------------------------------------


def test_list_shows_action_subject_amount_votes_quorum_and_executed(four):
    k = four
    step(k, gov.propose_admit, "hpc-a", spec("ai-e", Account.create()))
    step(k, gov.propose_funding, "hpc-b", "cloud-c", 7)
    step(k, gov.propose_quorum, "cloud-c", 2)
    step(k, gov.vote, "hpc-a", 3)
    step(k, gov.vote, "edge-d", 3)  # carried: quorum 2 from now on
    step(k, gov.propose_remove, "edge-d", "hpc-b")
    listed = [
        (p.id, p.action, p.subject, p.amount, p.votes, p.quorum, p.executed)
        for p in gov.proposals(k.chain, k.deployment)
    ]
    assert listed == [
        (1, "admit", "ai-e", None, 1, 2, False),
        (2, "fund", "cloud-c", 7, 1, 2, False),
        (3, "quorum", None, 2, 3, 2, True),
        (4, "remove", "hpc-b", None, 1, 2, False),
    ]
    assert [p.id for p in gov.proposals(k.chain, k.deployment, open_only=True)] == [1, 2, 4]
    assert gov.proposal(k.chain, k.deployment, 3).voters == ["cloud-c", "hpc-a", "edge-d"]
    # an open proposal reaches the new, lower quorum with its next vote
    assert step(k, gov.vote, "hpc-a", 2).carried


# -- self-service: endpoint and token key ------------------------------------------------------


def test_a_member_rotates_its_token_key_and_moves_its_gateway(four):
    k = four
    fns = k.c.consortium.functions
    before = gov.member_record(k.chain, k.deployment, "hpc-b")
    new_key = b"\x42" * 32
    after = gov.update_member(k.chain, k.deployment, k.accounts["hpc-b"], token_key=new_key)
    assert after.token_key == "0x" + new_key.hex() and after.gateway_url == before.gateway_url
    moved = gov.update_member(k.chain, k.deployment, k.accounts["hpc-b"], gateway_url="https://b.example:9443")
    assert (moved.gateway_url, moved.token_key) == ("https://b.example:9443", after.token_key)
    assert tuple(fns.member(centre_id("hpc-b")).call()[3:5]) == ("https://b.example:9443", new_key)
    refused(k, "nothing-to-update", gov.update_member, "hpc-b")
    refused(k, "invalid-url", gov.update_member, "hpc-b", gateway_url="ftp://b.example")
    refused(k, "invalid-token-key", gov.update_member, "hpc-b", token_key=b"\x01" * 31)


def test_proposals_of_the_old_form_still_work(four):
    """`propose(action, member)` keeps its ABI: existing callers admit and remove as before."""
    k = four
    fns = k.c.consortium.functions
    k.tx(fns.propose(1, spec("edge-d", k.accounts["edge-d"]).as_tuple()), "hpc-a")
    k.tx(fns.vote(1), "hpc-b")
    k.tx(fns.vote(1), "cloud-c")
    assert active_names(k) == ["hpc-a", "hpc-b", "cloud-c"]
    with pytest.raises(ChainRevert):
        k.tx(fns.vote(1), "hpc-a")


# -- the index follows ---------------------------------------------------------------------


def test_the_index_keeps_every_kind_of_proposal_and_the_member_changes(four, tmp_path):
    from ledger.index import EventIndex

    k = four
    newcomer = Account.create()
    step(k, gov.propose_admit, "hpc-a", spec("ai-e", newcomer))
    step(k, gov.vote, "hpc-b", 1)
    step(k, gov.vote, "cloud-c", 1)
    step(k, gov.propose_funding, "hpc-a", "ai-e", 9)
    step(k, gov.propose_quorum, "hpc-a", 2)
    step(k, gov.vote, "hpc-b", 3)
    step(k, gov.vote, "edge-d", 3)
    k.chain.fund(newcomer.address, 10**18)
    gov.update_member(k.chain, k.deployment, newcomer, token_key=b"\x07" * 32)
    index = EventIndex(tmp_path / "idx.sqlite", k.chain, k.deployment)
    assert index.sync() > 0
    assert [(p.id, p.action, p.member_id, p.executed) for p in index.proposals()] == [
        (1, gov.ADMIT, centre_id("ai-e"), True),
        (2, gov.FUND, centre_id("ai-e"), False),
        (3, gov.SET_QUORUM, bytes(32), True),
    ]
    assert index.member("ai-e").token_key == b"\x07" * 32


# -- proposals expire -------------------------------------------------------------------------

LIFETIME = 30 * 24 * 3600  # Governed.PROPOSAL_LIFETIME, written out: the rule under test


def block_time(k: Consortium, receipt=None) -> int:
    """Time of `receipt`'s block (of the latest block without one)."""
    block = "latest" if receipt is None else receipt["blockNumber"]
    return int(k.chain.w3.eth.get_block(block)["timestamp"])


def next_block_at(k: Consortium, when: int) -> None:
    """Moves the chain's clock so that the next transaction's block is stamped `when`."""
    advance(k.chain, when - 1 - block_time(k))
    assert block_time(k) == when - 1


def test_a_vote_30_days_after_the_proposal_reverts_proposal_expired(four):
    """A proposal that did not pass is not carried later by votes cast under other circumstances."""
    k = four
    fns = k.c.consortium.functions
    made = block_time(k, k.tx(fns.proposeQuorum(2), "hpc-a"))
    k.tx(fns.vote(1), "hpc-b")  # 2 of 3: not carried
    next_block_at(k, made + LIFETIME)
    error = reverts("ProposalExpired", k.tx, fns.vote(1), "cloud-c")
    assert error.error_args == (1,)
    assert fns.proposalTerms(1).call()[3:] == [False, 2]  # not counted, not carried
    assert not fns.hasVoted(1, centre_id("cloud-c")).call() and fns.quorum().call() == 3
    # the views tell when, for every client
    assert fns.PROPOSAL_LIFETIME().call() == LIFETIME == gov.PROPOSAL_LIFETIME
    assert fns.proposalExpiresAt(1).call() == made + LIFETIME
    reverts("UnknownProposal", k.chain.call, fns.proposalExpiresAt(2))
    # a new proposal of the same takes votes again
    step(k, gov.propose_quorum, "hpc-b", 2)
    assert not step(k, gov.vote, "cloud-c", 2).carried
    assert step(k, gov.vote, "edge-d", 2).carried and fns.quorum().call() == 2


def test_a_vote_in_the_last_second_still_counts_and_carries(four):
    k = four
    fns = k.c.consortium.functions
    made = block_time(k, k.tx(fns.proposeQuorum(2), "hpc-a"))
    k.tx(fns.vote(1), "hpc-b")
    next_block_at(k, made + LIFETIME - 1)
    last = step(k, gov.vote, "cloud-c", 1)
    assert block_time(k, k.chain.w3.eth.get_transaction_receipt(last.tx_hash)) == made + LIFETIME - 1
    assert last.carried and fns.quorum().call() == 2
    # carried it stays, also once its lifetime is over: it is not "expired"
    advance(k.chain, LIFETIME)
    carried = gov.proposal(k.chain, k.deployment, 1)
    assert (carried.state, carried.executed, carried.expired) == ("carried", True, False)
    refused(k, "proposal-closed", gov.vote, "edge-d", 1)


def test_voting_on_an_expired_proposal_is_a_clear_refusal_not_a_raw_revert(four):
    k = four
    first = step(k, gov.propose_funding, "hpc-a", "edge-d", 100)
    assert first.proposal.expires_at == block_time(k) + LIFETIME and first.proposal.state == "open"
    # the latest block is a second before expiry, so the check here lets it through, but the vote's
    # own block is at expiry: the contract refuses, and the refusal reads the same
    next_block_at(k, first.proposal.expires_at)
    with pytest.raises(gov.GovernanceError) as info:
        step(k, gov.vote, "hpc-b", 1)
    assert info.value.reason == "proposal-expired", str(info.value)
    assert "30 days" in str(info.value) and "propose it again" in str(info.value)
    assert gov.proposal(k.chain, k.deployment, 1).voters == ["hpc-a"]  # not counted
    # once the chain is past it, the check here refuses before anything is sent
    advance(k.chain, 10)
    error = refused(k, "proposal-expired", gov.vote, "cloud-c", 1)
    assert f"expired at {gov.utc(first.proposal.expires_at)}" in str(error)
    assert k.c.credit.functions.balanceOf(k.accounts["edge-d"].address).call() == 0


def test_list_shows_open_carried_and_expired_with_their_expiry(four):
    k = four
    step(k, gov.propose_quorum, "hpc-a", 2)
    step(k, gov.propose_funding, "hpc-a", "edge-d", 7)
    step(k, gov.vote, "hpc-b", 1)
    step(k, gov.vote, "cloud-c", 1)  # carried: quorum 2
    advance(k.chain, LIFETIME)
    fresh = step(k, gov.propose_remove, "hpc-b", "edge-d")
    listed = gov.proposals(k.chain, k.deployment)
    assert [(p.id, p.state, p.executed, p.expired) for p in listed] == [
        (1, "carried", True, False),
        (2, "expired", False, True),
        (3, "open", False, False),
    ]
    assert listed[2].expires_at == fresh.proposal.expires_at > listed[1].expires_at + LIFETIME - 60
    assert listed[1].to_dict() | {"voters": None, "member": None} == {
        "id": 2,
        "action": "fund",
        "subject": "edge-d",
        "amount": 7,
        "votes": 1,
        "quorum": 2,
        "executed": False,
        "expires_at": listed[1].expires_at,
        "expired": True,
        "state": "expired",
        "voters": None,
        "member": None,
    }
    # open: still taking votes, so neither the carried nor the expired one
    assert [p.id for p in gov.proposals(k.chain, k.deployment, open_only=True)] == [3]


def test_the_index_keeps_when_each_proposal_expires(four, tmp_path):
    """The index tells open from expired as the chain does, also in a file written before it kept the times."""
    import sqlite3

    from ledger.index import EventIndex

    k = four
    step(k, gov.propose_quorum, "hpc-a", 2)
    step(k, gov.propose_funding, "hpc-b", "edge-d", 5)
    step(k, gov.vote, "cloud-c", 1)
    step(k, gov.vote, "edge-d", 1)  # carried
    advance(k.chain, LIFETIME)
    step(k, gov.propose_remove, "hpc-a", "edge-d")
    on_chain = {p.id: p for p in gov.proposals(k.chain, k.deployment)}
    path = tmp_path / "idx.sqlite"
    index = EventIndex(path, k.chain, k.deployment)
    index.sync()
    listed = index.proposals()
    assert [p.expires_at for p in listed] == [on_chain[i].expires_at for i in (1, 2, 3)]
    assert [p.expired(index.chain_time) for p in listed] == [on_chain[i].expired for i in (1, 2, 3)]
    assert [p.expired(index.chain_time) for p in listed] == [False, True, False]
    assert [p.id for p in index.proposals(open_only=True)] == [3]  # neither carried nor expired
    index.close()

    with sqlite3.connect(path) as db:  # the file as the step before this one left it: no times
        db.executescript("UPDATE proposals SET created_at = NULL; PRAGMA user_version = 5;")
    older = EventIndex(path, k.chain, k.deployment)
    assert [p.expires_at for p in older.proposals()] == [None, None, None]  # unknown, never made up
    assert older.sync() == 0
    assert [p.expires_at for p in older.proposals()] == [on_chain[i].expires_at for i in (1, 2, 3)]
    older.close()


def test_list_says_open_for_a_proposal_no_block_can_take_a_vote_on():
    """`list` (and the vote's pre-check) judged expiry by the latest block's time, but any vote is mined in a later
    block: with the latest block at expires_at - 1 no vote can count, yet the proposal was listed "open" and a vote
    sent (and reverted, at a cost)."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=3)
    made = step(k, gov.propose_funding, "hpc-a", "edge-d", 100).proposal
    next_block_at(k, made.expires_at)  # the latest block is a second before expiry: every later one is at or past it
    assert gov.proposal(k.chain, k.deployment, made.id).state == "expired"


def test_a_proposal_whose_votes_meet_a_lowered_quorum_is_carried_without_a_new_vote(four):
    """Once the quorum is lowered, a proposal made under the old one may hold the new quorum of current members'
    votes; its supporters cannot vote again (AlreadyVoted) and it was carried only inside a vote, so it expired
    unless a member who had not voted yet voted for it. Any member carries it now."""
    k = four
    fund = step(k, gov.propose_funding, "hpc-a", "edge-d", 100).proposal
    assert not step(k, gov.vote, "hpc-b", fund.id).carried  # 2 of 3
    refused(k, "not-carried", gov.carry, "cloud-c", fund.id)  # 2 votes, the quorum 3: nothing sent
    lower = step(k, gov.propose_quorum, "hpc-a", 2).proposal
    step(k, gov.vote, "hpc-b", lower.id)
    assert step(k, gov.vote, "cloud-c", lower.id).carried and gov.quorum(k.chain, k.deployment) == 2
    listed = gov.proposal(k.chain, k.deployment, fund.id)
    assert (listed.state, listed.votes, listed.quorum) == ("open", 2, 2)
    refused(k, "already-voted", gov.vote, "hpc-b", fund.id)
    before = k.c.credit.functions.balanceOf(k.accounts["edge-d"].address).call()
    carried = step(k, gov.carry, "edge-d", fund.id)
    assert carried.carried and carried.proposal.executed and carried.proposal.voters == ["hpc-a", "hpc-b"]
    assert k.c.credit.functions.balanceOf(k.accounts["edge-d"].address).call() == before + 100
    refused(k, "proposal-closed", gov.carry, "cloud-c", fund.id)
    with pytest.raises(ChainRevert, match="ProposalClosed"):  # the contract refuses it too
        k.tx(k.c.consortium.functions.carry(fund.id), "cloud-c")


def test_carrying_a_proposal_short_of_the_quorum_or_expired_is_refused_by_the_contract(four):
    k = four
    made = step(k, gov.propose_funding, "hpc-a", "edge-d", 100).proposal
    with pytest.raises(ChainRevert, match=r"NotCarried\(1, 1, 3\)"):
        k.tx(k.c.consortium.functions.carry(made.id), "hpc-b")
    next_block_at(k, made.expires_at + 1)  # the latest block at expiry: a call and a pre-flight run then
    with pytest.raises(ChainRevert, match="ProposalExpired"):
        k.tx(k.c.consortium.functions.carry(made.id), "hpc-b")
    with pytest.raises(ChainRevert, match="NotMember"):
        k.tx(k.c.consortium.functions.carry(made.id), k.outsider())
