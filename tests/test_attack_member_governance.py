"""A member (or a coalition short of quorum) against governance: stale proposals, FUND."""

from __future__ import annotations

from eth_account import Account

from ledger import governance as gov
from ledger.ids import centre_id
from tests.test_contracts import make_consortium, reverts, spec


def test_a_fund_proposal_is_not_carried_for_a_member_readmitted_with_another_account():
    """FUND(edge-d) is voted while edge-d is one operator; edge-d is removed and its name admitted
    again with another account. The old proposal, carried now, must not mint to the new one."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d"], quorum=2)
    fns = k.c.consortium.functions
    gov.propose_funding(k.chain, k.deployment, k.accounts["hpc-a"], "edge-d", 10**6)
    fund = fns.proposalCount().call()
    gov.propose_remove(k.chain, k.deployment, k.accounts["hpc-a"], "edge-d")
    gov.vote(k.chain, k.deployment, k.accounts["hpc-b"], fns.proposalCount().call())
    newcomer = Account.create()
    k.chain.fund(newcomer.address, 10**18)
    k.tx(fns.propose(0, spec("edge-d", newcomer).as_tuple()), "hpc-a")
    k.tx(fns.vote(fns.proposalCount().call()), "hpc-b")
    assert fns.isMember(centre_id("edge-d")).call()
    supply = k.c.credit.functions.totalSupply().call()
    reverts("NotMember", k.tx, fns.vote(fund), "cloud-c")
    assert k.c.credit.functions.balanceOf(newcomer.address).call() == 0
    assert k.c.credit.functions.totalSupply().call() == supply
    assert fns.proposalTerms(fund).call()[3] is False  # not carried


def test_a_fund_proposal_still_mints_to_the_account_it_named():
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c"], quorum=2)
    gov.propose_funding(k.chain, k.deployment, k.accounts["hpc-a"], "cloud-c", 77)
    before = k.c.credit.functions.balanceOf(k.accounts["cloud-c"].address).call()
    assert gov.vote(k.chain, k.deployment, k.accounts["hpc-b"], 1).carried
    assert k.c.credit.functions.balanceOf(k.accounts["cloud-c"].address).call() == before + 77


def test_votes_cast_before_a_removal_do_not_count_again_after_readmission():
    """edge-d and ai-e vote for quorum 1 (2 of the 3 votes needed); edge-d is voted out, then its
    name admitted again under another account. Its old vote must not count again: with it, one
    more coalition vote would carry a quorum of 1."""
    k = make_consortium(["hpc-a", "hpc-b", "cloud-c", "edge-d", "ai-e"], quorum=3)
    fns = k.c.consortium.functions
    k.tx(fns.proposeQuorum(1), "edge-d")
    lower = fns.proposalCount().call()
    k.tx(fns.vote(lower), "ai-e")
    assert fns.proposalTerms(lower).call()[4] == 2
    k.tx(fns.propose(1, spec("edge-d", k.accounts["edge-d"]).as_tuple()), "hpc-a")
    k.tx(fns.vote(fns.proposalCount().call()), "hpc-b")
    k.tx(fns.vote(fns.proposalCount().call()), "cloud-c")
    assert fns.proposalTerms(lower).call()[4] == 1
    newcomer = Account.create()
    k.chain.fund(newcomer.address, 10**18)
    k.tx(fns.propose(0, spec("edge-d", newcomer).as_tuple()), "hpc-a")
    k.tx(fns.vote(fns.proposalCount().call()), "hpc-b")
    k.tx(fns.vote(fns.proposalCount().call()), "cloud-c")
    assert fns.isMember(centre_id("edge-d")).call()
    assert fns.proposalTerms(lower).call()[4] == 1  # ai-e's only
    reverts("AlreadyVoted", k.tx, fns.vote(lower), newcomer)  # the id voted: no second vote
    assert fns.quorum().call() == 3
    # a vote cast after the readmission counts as usual
    k.tx(fns.proposeQuorum(2), newcomer)
    assert fns.proposalTerms(fns.proposalCount().call()).call()[4] == 1
