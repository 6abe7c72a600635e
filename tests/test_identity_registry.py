"""IdentityRegistry: issuer keys with rotation windows, k-of-n key governance,
enrolments and revocation epochs, and their mirror in the event index."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.logs import DISCARD

from ledger.artifacts import load_artifact
from ledger.chain import Chain, ChainRevert, connect
from ledger.deploy import Contracts, Deployment, MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.index import EnrolmentInfo, EventIndex, IssuerKeyInfo

A, B, C = (centre_id(n) for n in ("hpc-a", "hpc-b", "cloud-c"))


@dataclass
class World:
    chain: Chain
    deployment: Deployment
    c: Contracts
    accounts: dict[str, LocalAccount]

    @property
    def reg(self):
        return self.c.identity_registry.functions

    def tx(self, fn, who: str | LocalAccount):
        sender = self.accounts[who] if isinstance(who, str) else who
        return self.chain.transact(fn, sender)

    def ts(self, receipt) -> int:
        """Block time of the block that included `receipt`."""
        return int(self.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def keys(self, centre: bytes) -> list[tuple]:
        return [tuple(k) for k in self.reg.issuerKeys(centre).call()]

    def valid(self, centre: bytes, pk: bytes, at: int) -> bool:
        return self.reg.isKeyValid(centre, keccak(pk), at).call()

    def outsider(self) -> LocalAccount:
        acct = Account.create()
        self.chain.fund(acct.address, 10**18)
        return acct


def make_world(url: str = "embedded", names=("hpc-a", "hpc-b", "cloud-c"), quorum: int = 2) -> World:
    chain = connect(url)
    accounts = {n: Account.create() for n in names}
    for acct in accounts.values():
        chain.fund(acct.address, 10**19)
    specs = [
        MemberSpec(n, accounts[n].address, f"https://{n}.example", bytes([i + 1]) * 32, Prices(1, 2, 3))
        for i, n in enumerate(names)
    ]
    deployment = deploy_consortium(chain, chain.dev_account, specs, quorum, 1_000)
    return World(chain, deployment, bind(chain, deployment), accounts)


@pytest.fixture
def w() -> World:
    return make_world()


def pk() -> bytes:
    """A fresh 96-byte key (the registry only checks the length)."""
    return os.urandom(96)


def reverts(reason: str, fn, *args):
    with pytest.raises(ChainRevert) as info:
        fn(*args)
    assert info.value.reason == reason, str(info.value)
    return info.value


def events(w: World, name: str, receipt) -> list[dict]:
    return [e["args"] for e in getattr(w.c.identity_registry.events, name)().process_receipt(receipt, errors=DISCARD)]


# -- deployment -----------------------------------------------------------------------


def test_deployment_includes_the_registry_and_round_trips(w, tmp_path):
    assert w.deployment.identity_registry is not None
    assert w.c.identity_registry.address == w.deployment.identity_registry
    assert w.c.identity_registry.functions.consortium().call() == w.deployment.consortium
    assert Deployment.from_json(w.deployment.to_json()) == w.deployment
    older = w.deployment.to_json().replace(f'"identity_registry": "{w.deployment.identity_registry}",', "")
    assert "identity_registry" not in older
    old = Deployment.from_json(older)
    assert old.identity_registry is None and bind(w.chain, old).identity_registry is None


# -- issuer keys ----------------------------------------------------------------------


def test_centre_sets_its_own_key(w):
    k1 = pk()
    receipt = w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a")
    t = w.ts(receipt)
    assert w.keys(A) == [(k1, keccak(k1), t, 0)]
    [ev] = events(w, "IssuerKeySet", receipt)
    assert (ev["centre"], ev["keyId"], ev["pk"], ev["validFrom"]) == (A, keccak(k1), k1, t)
    assert events(w, "IssuerKeyEnds", receipt) == []  # there was no previous key
    assert w.valid(A, k1, t) and w.valid(A, k1, t + 10**6) and not w.valid(A, k1, t - 1)
    assert w.keys(B) == [] and not w.valid(B, k1, t)


def test_rotation_keeps_the_old_key_valid_until_the_given_time_and_not_after(w):
    k1, k2, k3 = pk(), pk(), pk()
    t1 = w.ts(w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a"))
    until = w.now() + 3_600
    r2 = w.tx(w.reg.setIssuerKey(k2, until), "hpc-a")
    t2 = w.ts(r2)
    assert w.keys(A) == [(k1, keccak(k1), t1, until), (k2, keccak(k2), t2, 0)]
    [ends] = events(w, "IssuerKeyEnds", r2)
    assert (ends["centre"], ends["keyId"], ends["validUntil"]) == (A, keccak(k1), until)
    assert w.valid(A, k1, until - 1) and not w.valid(A, k1, until)
    assert w.valid(A, k2, t2) and w.valid(A, k2, until + 10**6)

    # Rotating again with 0 ends the current key now; the first keeps its own window.
    r3 = w.tx(w.reg.setIssuerKey(k3, 0), "hpc-a")
    t3 = w.ts(r3)
    keys = w.keys(A)
    assert keys[0][3] == until and keys[1][3] == t3 and keys[2] == (k3, keccak(k3), t3, 0)
    assert w.valid(A, k2, t3 - 1) and not w.valid(A, k2, t3)

    # A time in the past means "now" too.
    k4 = pk()
    r4 = w.tx(w.reg.setIssuerKey(k4, 1), "hpc-a")
    assert w.keys(A)[2][3] == w.ts(r4)


def test_old_key_expires_as_block_time_passes():
    """On the embedded chain, travel past the rotation window: the chain itself says so."""
    w = make_world()
    k1, k2 = pk(), pk()
    w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a")
    until = w.now() + 600
    w.tx(w.reg.setIssuerKey(k2, until), "hpc-a")
    assert w.valid(A, k1, w.now())
    w.chain.w3.provider.ethereum_tester.time_travel(until + 5)
    w.chain.mine()
    assert w.now() > until
    assert not w.valid(A, k1, w.now()) and w.valid(A, k2, w.now())


def test_keys_are_checked_for_length_and_reuse_and_members_only(w):
    for bad in (b"", b"\x01" * 95, b"\x01" * 97, b"\x01" * 48):
        reverts("InvalidKeyLength", w.tx, w.reg.setIssuerKey(bad, 0), "hpc-a")
    k1 = pk()
    w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a")
    err = reverts("KeyAlreadyUsed", w.tx, w.reg.setIssuerKey(k1, 0), "hpc-a")
    assert err.error_args == (A, keccak(k1))
    reverts("NotMember", w.tx, w.reg.setIssuerKey(pk(), 0), w.outsider())
    assert len(w.keys(A)) == 1


def test_another_member_cannot_set_a_centres_key(w):
    ka, kb = pk(), pk()
    w.tx(w.reg.setIssuerKey(ka, 0), "hpc-a")
    w.tx(w.reg.setIssuerKey(kb, 0), "hpc-b")  # only ever the caller's own key
    assert [k[0] for k in w.keys(A)] == [ka] and [k[0] for k in w.keys(B)] == [kb]
    # A single member's proposal is not enough with quorum 2.
    receipt = w.tx(w.reg.proposeIssuerKey(A, pk(), 0), "hpc-b")
    assert events(w, "IssuerKeySet", receipt) == []
    assert [k[0] for k in w.keys(A)] == [ka] and w.keys(A)[0][3] == 0


# -- governance -----------------------------------------------------------------------


def test_governance_key_change_needs_k_of_n_votes(w):
    old, new = pk(), pk()
    t0 = w.ts(w.tx(w.reg.setIssuerKey(old, 0), "hpc-a"))
    until = w.now() + 100
    receipt = w.tx(w.reg.proposeIssuerKey(A, new, until), "hpc-b")
    [proposed] = events(w, "IssuerKeyProposed", receipt)
    pid = proposed["proposalId"]
    assert pid == 1 and proposed["centre"] == A and proposed["keyId"] == keccak(new)
    assert proposed["proposer"] == B and proposed["previousValidUntil"] == until
    assert w.reg.keyProposal(pid).call() == [A, new, until, False, 1]
    assert w.reg.hasVotedKey(pid, B).call() and not w.reg.hasVotedKey(pid, C).call()

    err = reverts("AlreadyVoted", w.tx, w.reg.voteIssuerKey(pid), "hpc-b")
    assert err.error_args == (pid, B)
    reverts("NotMember", w.tx, w.reg.voteIssuerKey(pid), w.outsider())
    reverts("NotMember", w.tx, w.reg.proposeIssuerKey(A, pk(), 0), w.outsider())
    reverts("UnknownProposal", w.tx, w.reg.voteIssuerKey(99), "cloud-c")
    reverts("UnknownProposal", w.tx, w.reg.voteIssuerKey(0), "cloud-c")
    assert w.keys(A) == [(old, keccak(old), t0, 0)]

    err = reverts("NotCarried", w.tx, w.reg.carryIssuerKey(pid), "cloud-c")  # 1 vote of 2: carried by a vote only
    assert err.error_args == (pid, 1, 2)
    reverts("NotMember", w.tx, w.reg.carryIssuerKey(pid), w.outsider())
    receipt = w.tx(w.reg.voteIssuerKey(pid), "cloud-c")
    t1 = w.ts(receipt)
    assert [e["proposalId"] for e in events(w, "ProposalExecuted", receipt)] == [pid]
    assert w.keys(A) == [(old, keccak(old), t0, until), (new, keccak(new), t1, 0)]
    assert w.reg.keyProposal(pid).call()[3:] == [True, 2]
    reverts("ProposalClosed", w.tx, w.reg.voteIssuerKey(pid), "hpc-a")
    reverts("ProposalClosed", w.tx, w.reg.carryIssuerKey(pid), "hpc-a")


def test_a_key_proposal_expires_30_days_after_it_was_made(w):
    """A leaked key's replacement that did not pass is not carried a month later: the vote reverts."""
    lifetime = 30 * 24 * 3600
    old, new = pk(), pk()
    w.tx(w.reg.setIssuerKey(old, 0), "hpc-a")
    made = w.ts(w.tx(w.reg.proposeIssuerKey(A, new, 0), "hpc-b"))
    assert w.reg.PROPOSAL_LIFETIME().call() == lifetime
    assert w.reg.proposalExpiresAt(1).call() == made + lifetime
    w.chain.w3.provider.ethereum_tester.time_travel(made + lifetime)  # the next block: at expiry
    err = reverts("ProposalExpired", w.tx, w.reg.voteIssuerKey(1), "cloud-c")
    assert err.error_args == (1,)
    assert w.reg.keyProposal(1).call()[3:] == [False, 1] and w.keys(A)[0][3] == 0  # the old key stands
    # a fresh proposal is carried as ever
    w.tx(w.reg.proposeIssuerKey(A, new, 0), "hpc-b")
    assert events(w, "ProposalExecuted", w.tx(w.reg.voteIssuerKey(2), "cloud-c")) == [{"proposalId": 2}]


def test_key_governance_is_the_consortiums_proposal_machinery(w):
    """One k-of-n base for both contracts: the same vote and execution events, the same errors,
    and the execution announced after the key change it made."""
    abis = [load_artifact(n)["abi"] for n in ("Consortium", "IdentityRegistry")]
    shared = [{i["name"]: i for i in abi if i["type"] in ("event", "error")} for abi in abis]
    for name in ("Voted", "ProposalExecuted", "UnknownProposal", "ProposalClosed", "AlreadyVoted", "ProposalExpired"):
        assert shared[0][name] == shared[1][name], name
    new = pk()
    w.tx(w.reg.setIssuerKey(pk(), 0), "hpc-a")
    receipt = w.tx(w.reg.proposeIssuerKey(A, new, 0), "hpc-b")
    assert events(w, "Voted", receipt) == [{"proposalId": 1, "voter": B}]
    assert events(w, "ProposalExecuted", receipt) == []
    receipt = w.tx(w.reg.voteIssuerKey(1), "cloud-c")
    logs = sorted(
        (e["logIndex"], name)
        for name in ("Voted", "IssuerKeyEnds", "IssuerKeySet", "ProposalExecuted")
        for e in getattr(w.c.identity_registry.events, name)().process_receipt(receipt, errors=DISCARD)
    )
    assert [name for _, name in logs] == ["Voted", "IssuerKeyEnds", "IssuerKeySet", "ProposalExecuted"]
    assert events(w, "ProposalExecuted", receipt) == [{"proposalId": 1}]


def test_governance_rejects_bad_proposals(w):
    reverts("UnknownCentre", w.tx, w.reg.proposeIssuerKey(centre_id("nobody"), pk(), 0), "hpc-a")
    reverts("InvalidKeyLength", w.tx, w.reg.proposeIssuerKey(A, b"\x01" * 95, 0), "hpc-b")
    k1 = pk()
    w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a")
    reverts("KeyAlreadyUsed", w.tx, w.reg.proposeIssuerKey(A, k1, 0), "hpc-b")


def test_governance_with_an_empty_key_revokes_every_still_valid_key(w):
    k1, k2 = pk(), pk()
    w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a")
    w.tx(w.reg.setIssuerKey(k2, w.now() + 10_000), "hpc-a")  # k1 in its rotation window
    w.tx(w.reg.proposeIssuerKey(A, b"", 0), "hpc-b")
    receipt = w.tx(w.reg.voteIssuerKey(1), "cloud-c")
    t = w.ts(receipt)
    ends = events(w, "IssuerKeyEnds", receipt)
    assert [(e["keyId"], e["validUntil"]) for e in ends] == [(keccak(k1), t), (keccak(k2), t)]
    assert [k[3] for k in w.keys(A)] == [t, t]
    assert not w.valid(A, k1, t) and not w.valid(A, k2, t) and w.valid(A, k2, t - 1)
    # The centre may set a fresh key afterwards.
    k3 = pk()
    w.tx(w.reg.setIssuerKey(k3, 0), "hpc-a")
    assert w.keys(A)[2][0] == k3 and w.keys(A)[2][3] == 0


def test_quorum_one_executes_at_once():
    w = make_world(names=("hpc-a", "hpc-b"), quorum=1)
    k = pk()
    receipt = w.tx(w.reg.proposeIssuerKey(B, k, 0), "hpc-a")
    assert events(w, "ProposalExecuted", receipt)
    assert [x[0] for x in w.keys(B)] == [k]


def test_key_votes_of_a_removed_member_no_longer_count():
    """A key change needs k *current* members: the vote of a member voted out since is void."""
    w = make_world(names=("hpc-a", "hpc-b", "cloud-c", "edge-d"), quorum=2)
    w.tx(w.reg.setIssuerKey(pk(), 0), "hpc-a")
    hijack = pk()
    w.tx(w.reg.proposeIssuerKey(A, hijack, 0), "cloud-c")  # 1 of 2
    fns = w.c.consortium.functions
    w.tx(fns.propose(1, fns.member(C).call()), "hpc-a")
    w.tx(fns.vote(1), "hpc-b")  # cloud-c is out
    assert not fns.isMember(C).call()
    assert w.reg.keyProposal(1).call()[3:] == [False, 0]
    w.tx(w.reg.voteIssuerKey(1), "edge-d")
    assert w.reg.keyProposal(1).call()[3:] == [False, 1]
    assert [k[0] for k in w.keys(A)][-1] != hijack
    w.tx(w.reg.voteIssuerKey(1), "hpc-b")
    assert w.reg.keyProposal(1).call()[3:] == [True, 2]
    assert [k[0] for k in w.keys(A)][-1] == hijack


# -- enrolment and revocation ---------------------------------------------------------


def test_enrol_once_at_the_home(w):
    e1 = os.urandom(32)
    receipt = w.tx(w.reg.enrol(e1), "hpc-a")
    t = w.ts(receipt)
    assert w.reg.enrolment(A, e1).call() == [True, False, t]
    [ev] = events(w, "Enrolled", receipt)
    assert (ev["enrolmentId"], ev["home"], ev["enrolledAt"]) == (e1, A, t)
    err = reverts("AlreadyEnrolled", w.tx, w.reg.enrol(e1), "hpc-a")
    assert err.error_args == (A, e1)
    reverts("InvalidEnrolment", w.tx, w.reg.enrol(b"\x00" * 32), "hpc-a")
    reverts("NotMember", w.tx, w.reg.enrol(os.urandom(32)), w.outsider())
    assert w.reg.enrolment(A, os.urandom(32)).call() == [False, False, 0]
    assert w.reg.enrolment(B, e1).call() == [False, False, 0]  # an id means something only at its home


def test_no_member_can_take_or_block_another_homes_enrolment(w):
    """Enrolment squatting: hpc-b sends hpc-a's user's enrolment id first (it saw hpc-a's
    transaction waiting to be mined). hpc-a's own enrolment and revocation must still land,
    and nothing hpc-b does with that id touches hpc-a's user or hpc-a's revocation epoch."""
    e = os.urandom(32)
    tb = w.ts(w.tx(w.reg.enrol(e), "hpc-b"))
    receipt = w.tx(w.reg.enrol(e), "hpc-a")
    ta = w.ts(receipt)
    [ev] = events(w, "Enrolled", receipt)
    assert (ev["enrolmentId"], ev["home"]) == (e, A)
    assert w.reg.enrolment(A, e).call() == [True, False, ta]
    assert w.reg.enrolment(B, e).call() == [True, False, tb]

    # hpc-b revoking its own use of the id leaves hpc-a's user and epoch alone
    w.tx(w.reg.revoke(e), "hpc-b")
    assert w.reg.enrolment(A, e).call() == [True, False, ta]
    assert w.reg.revocationEpoch(A).call() == 0 and w.reg.revocationEpoch(B).call() == 1

    # a member that never enrolled the id cannot revoke it either: it names only its own users
    err = reverts("UnknownEnrolment", w.tx, w.reg.revoke(e), "cloud-c")
    assert err.error_args == (C, e)

    receipt = w.tx(w.reg.revoke(e), "hpc-a")
    [ev] = events(w, "Revoked", receipt)
    assert (ev["enrolmentId"], ev["home"], ev["revocationEpoch"]) == (e, A, 1)
    assert w.reg.enrolment(A, e).call() == [True, True, ta]
    assert w.reg.revocationEpoch(A).call() == 1 and w.reg.revocationEpoch(C).call() == 0


def test_only_the_home_revokes_and_each_revocation_bumps_its_epoch(w):
    e1, e2 = os.urandom(32), os.urandom(32)
    t1 = w.ts(w.tx(w.reg.enrol(e1), "hpc-a"))
    w.tx(w.reg.enrol(e2), "hpc-a")
    assert w.reg.revocationEpoch(A).call() == 0
    err = reverts("UnknownEnrolment", w.tx, w.reg.revoke(e1), "hpc-b")  # hpc-b has no such user
    assert err.error_args == (B, e1)
    reverts("NotMember", w.tx, w.reg.revoke(e1), w.outsider())
    reverts("UnknownEnrolment", w.tx, w.reg.revoke(os.urandom(32)), "hpc-a")

    receipt = w.tx(w.reg.revoke(e1), "hpc-a")
    [ev] = events(w, "Revoked", receipt)
    assert (ev["enrolmentId"], ev["home"], ev["revocationEpoch"]) == (e1, A, 1)
    assert w.reg.enrolment(A, e1).call() == [True, True, t1]
    assert w.reg.revocationEpoch(A).call() == 1 and w.reg.revocationEpoch(B).call() == 0
    err = reverts("AlreadyRevoked", w.tx, w.reg.revoke(e1), "hpc-a")
    assert err.error_args == (A, e1)
    w.tx(w.reg.revoke(e2), "hpc-a")
    assert w.reg.revocationEpoch(A).call() == 2


# -- the index ------------------------------------------------------------------------


def test_index_mirrors_keys_enrolments_and_revocations(w, tmp_path):
    k1, k2, kb, kc = pk(), pk(), pk(), pk()
    t1 = w.ts(w.tx(w.reg.setIssuerKey(k1, 0), "hpc-a"))
    until = w.now() + 1_000
    t2 = w.ts(w.tx(w.reg.setIssuerKey(k2, until), "hpc-a"))
    w.tx(w.reg.setIssuerKey(kb, 0), "hpc-b")
    w.tx(w.reg.setIssuerKey(kc, 0), "cloud-c")
    e1, e2, e3 = os.urandom(32), os.urandom(32), os.urandom(32)
    tb1 = w.ts(w.tx(w.reg.enrol(e1), "hpc-b"))  # the same id at another home first
    te1 = w.ts(w.tx(w.reg.enrol(e1), "hpc-a"))
    w.tx(w.reg.enrol(e2), "hpc-a")
    w.tx(w.reg.enrol(e3), "hpc-b")
    w.tx(w.reg.revoke(e1), "hpc-a")

    index = EventIndex(tmp_path / "index.sqlite", w.chain, w.deployment, window=3)
    assert index.sync() > 0 and index.sync() == 0

    assert index.issuer_keys("hpc-a") == [
        IssuerKeyInfo(k1, keccak(k1), t1, until, A, index.issuer_keys(A)[0].block),
        IssuerKeyInfo(k2, keccak(k2), t2, 0, A, index.issuer_keys(A)[1].block),
    ]
    assert index.current_issuer_key("hpc-a").pk == k2 and index.current_issuer_key("nobody") is None
    short1, short2 = keccak(k1)[:8].hex(), keccak(k2)[:8].hex()
    assert index.issuer_keys(A)[0].short_id == short1
    assert index.issuer_key("hpc-a", short1, t1) == k1
    assert index.issuer_key("hpc-a", "0x" + short1.upper(), until - 1) == k1
    assert index.issuer_key("hpc-a", short1, until) is None  # rotated out
    assert index.issuer_key("hpc-a", short1, t1 - 1) == k1  # a chain clock ahead of ours is no reason to refuse
    assert index.issuer_key(A, short2, until + 10**6) == k2
    assert index.issuer_key("hpc-a", keccak(k2).hex(), t2) == k2  # a full id works too
    assert index.issuer_key("hpc-b", short1, t2) is None  # another centre's key id
    for bad in ("", "abc", short1[:14], short1[:15] + "g", short1 + "0", None, 5, "zz" * 8):
        assert index.issuer_key("hpc-a", bad, t1) is None
    assert index.issuer_key("no-such", short1, t1) is None

    assert index.revocation_epoch("hpc-a") == 1 and index.revocation_epoch(B) == 0
    assert index.revocation_epoch("nobody") == 0
    info = index.enrolment("hpc-a", e1)
    assert info == EnrolmentInfo(e1, A, te1, True, 1, info.block)
    other = index.enrolment(B, e1)
    assert other == EnrolmentInfo(e1, B, tb1, False, None, other.block)  # each home's enrolment is its own
    assert index.enrolment(A, "0x" + e2.hex()).revoked is False
    assert index.enrolment(A, e2).revocation_epoch is None
    assert index.enrolment(B, e3).home == B and index.enrolment(A, e3) is None
    assert index.enrolment(A, os.urandom(32)) is None and index.enrolment(A, "0x12") is None
    assert index.enrolment("nobody", e1) is None and index.enrolment(b"\x01", e1) is None

    # Later events arrive with the next sync; the existing queries are unaffected.
    w.tx(w.reg.revoke(e2), "hpc-a")
    w.tx(w.reg.proposeIssuerKey(C, b"", 0), "hpc-a")
    assert index.sync() >= 3
    assert index.revocation_epoch("hpc-a") == 2 and index.enrolment(A, e2).revocation_epoch == 2
    [open_proposal] = index.key_proposals(open_only=True)
    assert (open_proposal.centre, open_proposal.key_id, open_proposal.voters) == (C, None, [A])
    assert open_proposal.expires_at == w.reg.proposalExpiresAt(open_proposal.id).call()  # as the chain says
    receipt = w.tx(w.reg.voteIssuerKey(open_proposal.id), "hpc-b")
    index.sync()
    assert index.key_proposals(open_only=True) == []
    [done] = index.key_proposals()
    assert done.executed and done.voters == [A, B]
    assert index.issuer_keys("cloud-c")[0].valid_until == w.ts(receipt)
    assert index.current_issuer_key("cloud-c") is None
    assert [m.name for m in index.members()] == ["hpc-a", "hpc-b", "cloud-c"]


def test_index_takes_executions_from_proposal_executed_events(tmp_path):
    """A proposal is executed in the index when, and only when, its contract says so with
    `ProposalExecuted`: nothing is inferred from a vote and a member change in one transaction,
    and each contract's events change only its own proposals."""
    from ledger.index.projections import Event, project
    from ledger.index.schema import open_index

    db = open_index(tmp_path / "index.sqlite")

    def apply(contract: str, name: str, block: int, tx: str, **args) -> None:
        project(db, Event(contract, name, args, block, 0, tx))

    apply("Consortium", "ProposalCreated", 1, "0x01", proposalId=1, action=0, memberId=C, proposer=A)
    apply("Consortium", "Voted", 1, "0x01", proposalId=1, voter=A)
    apply(
        "IdentityRegistry",
        "IssuerKeyProposed",
        2,
        "0x02",
        proposalId=1,
        centre=B,
        keyId=bytes(32),
        previousValidUntil=0,
        proposer=A,
    )
    apply("IdentityRegistry", "Voted", 2, "0x02", proposalId=1, voter=A)
    apply("IdentityRegistry", "Voted", 3, "0x03", proposalId=1, voter=C)

    def state() -> tuple:
        return (
            db.execute("SELECT executed FROM proposals WHERE id = 1").fetchone()[0],
            db.execute("SELECT executed FROM key_proposals WHERE id = 1").fetchone()[0],
            [r[0] for r in db.execute("SELECT voter FROM votes WHERE proposal_id = 1 ORDER BY rowid")],
            [r[0] for r in db.execute("SELECT voter FROM key_votes WHERE proposal_id = 1 ORDER BY rowid")],
        )

    assert state() == (0, 0, [A], [A, C])  # a key vote is not a membership vote
    apply("IdentityRegistry", "ProposalExecuted", 3, "0x03", proposalId=1)
    assert state() == (0, 1, [A], [A, C])
    apply("Consortium", "ProposalExecuted", 4, "0x04", proposalId=1)
    assert state() == (1, 1, [A], [A, C])


def test_index_forgets_the_keys_of_a_removed_centre(w, tmp_path):
    kc = pk()
    t = w.ts(w.tx(w.reg.setIssuerKey(kc, 0), "cloud-c"))
    index = EventIndex(tmp_path / "index.sqlite", w.chain, w.deployment)
    index.sync()
    assert index.issuer_key("cloud-c", keccak(kc)[:8].hex(), t) == kc
    fns = w.c.consortium.functions
    spec_c = fns.member(C).call()
    w.tx(fns.propose(1, spec_c), "hpc-a")
    w.tx(fns.vote(1), "hpc-b")
    index.sync()
    assert index.issuer_key("cloud-c", keccak(kc)[:8].hex(), t) is None
    assert [k.pk for k in index.issuer_keys("cloud-c")] == [kc]  # history is kept


def test_index_over_json_rpc(anvil_url, tmp_path):
    """The registry and its index on a real node (anvil)."""
    w = make_world(anvil_url, names=("rpc-a", "rpc-b"), quorum=2)
    a, b = centre_id("rpc-a"), centre_id("rpc-b")
    k1, k2, k3 = pk(), pk(), pk()
    reverts("InvalidKeyLength", w.tx, w.reg.setIssuerKey(b"\x01" * 95, 0), "rpc-a")
    t1 = w.ts(w.tx(w.reg.setIssuerKey(k1, 0), "rpc-a"))
    until = w.now() + 500
    w.tx(w.reg.setIssuerKey(k2, until), "rpc-a")
    w.tx(w.reg.proposeIssuerKey(a, k3, 0), "rpc-b")
    reverts("AlreadyVoted", w.tx, w.reg.voteIssuerKey(1), "rpc-b")
    t3 = w.ts(w.tx(w.reg.voteIssuerKey(1), "rpc-a"))
    e = os.urandom(32)
    w.tx(w.reg.enrol(e), "rpc-a")  # rpc-a takes rpc-b's user's id first: it blocks nothing
    w.tx(w.reg.enrol(e), "rpc-b")
    w.tx(w.reg.revoke(e), "rpc-b")
    reverts("AlreadyRevoked", w.tx, w.reg.revoke(e), "rpc-b")

    index = EventIndex(tmp_path / "rpc.sqlite", w.chain, w.deployment, window=2)
    assert index.sync() > 0
    assert [k.pk for k in index.issuer_keys("rpc-a")] == [k1, k2, k3]
    assert index.issuer_key("rpc-a", keccak(k1)[:8].hex(), until - 1) == k1
    assert index.issuer_key("rpc-a", keccak(k1)[:8].hex(), until) is None
    assert index.issuer_key("rpc-a", keccak(k2)[:8].hex(), t3) is None  # governance ended it now
    assert index.issuer_key("rpc-a", keccak(k3)[:8].hex(), t3) == k3
    assert index.issuer_keys(a)[0].valid_from == t1
    assert index.revocation_epoch("rpc-b") == 1 and index.enrolment("rpc-b", e).revoked
    assert index.enrolment(b, e).home == b
    assert index.revocation_epoch("rpc-a") == 0 and not index.enrolment(a, e).revoked
