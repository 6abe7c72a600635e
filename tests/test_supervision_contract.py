"""The Supervision contract: the supervisors' key generation and t-of-n openings, checked against auth.group.

On the embedded chain (Prague, whose BLS12-381 precompiles py-evm runs in pure Python),
and the key paths once more on anvil. The secrets and proofs come from auth.group, so
the contract is held to exactly what the Python side makes and verifies: the DKG's
commitments and encrypted shares (auth.group.dkg), the decryption shares and their
Chaum–Pedersen proofs (auth.group.opening), real group signatures (auth.group.signature),
and the verdicts of tests/group_vectors.py on inputs tampered with here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from py_arkworks_bls12381 import G1Point, Scalar
from web3.logs import DISCARD
from web3.types import TxReceipt

from auth.bbs.encoding import R
from auth.credentials import generate_issuer_key
from auth.group import (
    Share,
    ciphertext,
    combine,
    decryption_share,
    dkg,
    g1_from_raw,
    g1_raw,
    issue_group_credential,
    join_request,
    lagrange_at_zero,
    new_member_secret,
    order_message,
    sign,
    signature_hash,
    tracing_key,
)
from ledger.chain import Chain, connect
from ledger.deploy import DEFAULT_DKG_WINDOW, Deployment, MemberSpec, Prices, bind, deploy_consortium
from ledger.ids import centre_id
from ledger.supervision import ComplaintState, ShareInfo, ShareState, Supervision
from tests.group_vectors import dleq_check, feldman_check
from tests.test_contracts import advance, reverts

SUPERVISORS = ["sup-1", "sup-2", "sup-3", "sup-4", "sup-5"]
OTHER = "other-6"  # a member that is not a supervisor
T3 = 3
WINDOW = 600
G = G1Point()
P = 0x1A0111EA397FE69A4B1BA7B6434BACD764774B84F38512BF6730D2A0F6B0F6241EABFFFEB153FFFFB9FEFFFFFFFFAAAB
OFF_CURVE = (1).to_bytes(48, "big") + (1).to_bytes(48, "big")
IDENTITY = bytes(96)


def off_subgroup() -> bytes:
    """A point on the curve y² = x³ + 4 that is not in the prime-order subgroup (raw)."""
    x = 1
    while True:
        rhs = (x**3 + 4) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs:
            raw = x.to_bytes(48, "big") + y.to_bytes(48, "big")
            if not G1Point.from_xy_bytes_unchecked_be(raw).is_in_subgroup():
                return raw
        x += 1


def mul(x: int, point: G1Point = G) -> G1Point:
    return point * Scalar(x % R)


@dataclass
class World:
    chain: Chain
    deployment: Deployment
    accounts: dict[str, LocalAccount]
    outsider: LocalAccount

    def fresh(self, threshold: int = T3, window: int = WINDOW, supervisors: list[str] = SUPERVISORS) -> Supervision:
        """A new Supervision contract on this consortium."""
        ids = [centre_id(s) for s in supervisors]
        contract = self.chain.deploy(
            "Supervision",
            self.chain.dev_account,
            self.deployment.consortium,
            self.deployment.identity_registry,
            ids,
            threshold,
            window,
        )
        return Supervision(self.chain, contract)

    def sup(self, i: int) -> LocalAccount:
        return self.accounts[SUPERVISORS[i - 1]]

    def enrol(self, home: str, enrolment: bytes) -> None:
        """`home` enrols `enrolment` in the consortium's IdentityRegistry."""
        registry = bind(self.chain, self.deployment).identity_registry
        self.chain.transact(registry.functions.enrol(enrolment), self.accounts[home])


def make_world(url: str) -> World:
    chain = connect(url)
    names = [*SUPERVISORS, OTHER]
    accounts = {n: Account.create() for n in names}
    for acct in accounts.values():
        chain.fund(acct.address, 10**19)
    outsider = Account.create()
    chain.fund(outsider.address, 10**19)
    specs = [MemberSpec(n, accounts[n].address, f"http://{n}.example", bytes(32), Prices(1, 1, 1)) for n in names]
    deployment = deploy_consortium(
        chain, chain.dev_account, specs, 4, 10**7, supervisors=SUPERVISORS, supervision_threshold=T3, dispute_window=0
    )
    return World(chain, deployment, accounts, outsider)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world("embedded")


@dataclass
class Run:
    """One key generation's secrets, as its supervisors keep them."""

    sup: Supervision
    keys: list[dkg.EncryptionKey]
    dealers: list[dkg.Dealer]
    gas: dict[str, int] = field(default_factory=dict)

    def secret_share(self, j: int, qualified: list[int]) -> int:
        """x_j from the shares on chain of the qualified dealers, decrypted and Feldman-checked."""
        received = []
        for i in qualified:
            deal = self.sup.deal_of(i)
            assert deal is not None
            s = dkg.decrypt_share(self.keys[j - 1].e, deal.shares, i, j)
            assert dkg.verify_share(dkg.parse_commitments(deal.commitments), j, s)
            received.append(s)
        return dkg.secret_share(received)

    def public_key(self, qualified: list[int]) -> G1Point:
        return dkg.public_key([self.dealers[i - 1].commitments() for i in qualified])


def register_all(world: World, sup: Supervision, gas: dict[str, int] | None = None) -> list[dkg.EncryptionKey]:
    keys = [dkg.EncryptionKey.new() for _ in SUPERVISORS]
    for i, key in enumerate(keys, 1):
        receipt = sup.register(world.sup(i), key.raw())
        if gas is not None:
            gas["register"] = max(gas.get("register", 0), receipt["gasUsed"])
    return keys


def deal(world: World, run: Run, i: int, bad_for: dict[int, int] | None = None) -> None:
    """Dealer i deals; `bad_for` maps recipients to the wrong shares it sends them instead."""
    dealer = run.dealers[i - 1]
    es = [k.E for k in run.keys]
    slots = [
        dkg.encrypt_share((bad_for or {}).get(j, dealer.share_for(j)), i, j, es[j - 1]) for j in range(1, len(es) + 1)
    ]
    receipt = run.sup.deal(world.sup(i), dealer.commitments_raw(), b"".join(slots))
    run.gas["deal"] = receipt["gasUsed"]


def start(world: World, sup: Supervision, t: int = T3) -> Run:
    gas: dict[str, int] = {}
    keys = register_all(world, sup, gas)
    return Run(sup, keys, [dkg.Dealer.new(t) for _ in SUPERVISORS], gas)


def events(sup: Supervision, name: str, receipt) -> list[dict]:
    return [dict(e["args"]) for e in getattr(sup.contract.events, name)().process_receipt(receipt, errors=DISCARD)]


@pytest.fixture(scope="module")
def keyed(world: World) -> Run:
    """An honest key generation among the five supervisors, t = 3, finalized early (everyone acknowledged)."""
    run = start(world, world.fresh())
    for i in range(1, 6):
        deal(world, run, i)
    for i in range(1, 6):
        run.sup.acknowledge(world.sup(i))
    receipt = run.sup.chain.transact(run.sup.contract.functions.finalize(), world.sup(1))
    run.gas["finalize"] = receipt["gasUsed"]
    (event,) = events(run.sup, "KeyGenerated", receipt)
    assert event["qualified"] == [1, 2, 3, 4, 5]
    return run


# -- deployment ---------------------------------------------------------------------------------------------------


def test_a_consortium_is_deployed_with_every_member_supervising_a_majority_opening():
    chain = connect("embedded")
    accounts = [Account.create() for _ in range(4)]
    specs = [
        MemberSpec(f"m-{k}", a.address, "http://m.example", bytes(32), Prices(1, 1, 1)) for k, a in enumerate(accounts)
    ]
    deployment = deploy_consortium(chain, chain.dev_account, specs, 3, 0)
    committee = Supervision.of(chain, deployment).committee()
    assert committee.supervisors == ("m-0", "m-1", "m-2", "m-3") and committee.threshold == 3
    assert (
        committee.dkg_window == DEFAULT_DKG_WINDOW and not committee.finalized and committee.registered == frozenset()
    )
    assert Deployment.from_json(deployment.to_json()) == deployment
    old = deployment.to_json().replace(f'"supervision": "{deployment.supervision}"', '"supervision": null')
    assert Deployment.from_json(old).supervision is None and bind(chain, Deployment.from_json(old)).supervision is None
    with pytest.raises(ValueError, match="no Supervision contract"):
        Supervision.of(chain, Deployment.from_json(old))
    for kwargs, message in [
        ({"supervisors": ["m-0", "nobody"]}, "not members"),
        ({"supervisors": ["m-0", "m-0"]}, "named twice"),
        ({"supervisors": []}, "1 to 32"),
        ({"supervision_threshold": 0}, "between 2 and 4"),
        ({"supervision_threshold": 1}, "between 2 and 4 .* one supervisor alone would open"),
        ({"supervision_threshold": 5}, "between 2 and 4"),
        ({"dkg_window": 0}, "dkg_window"),
        ({"dkg_window": 2**32}, "dkg_window"),
    ]:
        with pytest.raises(ValueError, match=message):
            deploy_consortium(chain, chain.dev_account, specs, 3, 0, **kwargs)
    alone = deploy_consortium(chain, chain.dev_account, specs, 3, 0, supervisors=["m-2"], supervision_threshold=1)
    assert Supervision.of(chain, alone).committee().threshold == 1  # a committee of one opens alone, by design


def test_the_contract_refuses_a_committee_it_cannot_serve(world):
    consortium, dev = world.deployment.consortium, world.chain.dev_account
    registry = world.deployment.identity_registry
    ids = [centre_id(s) for s in SUPERVISORS]
    for args, error in [
        ((registry, ids, 0, WINDOW), "InvalidThreshold"),
        ((registry, ids, 1, WINDOW), "InvalidThreshold"),  # one of five would open alone
        ((registry, ids[:2], 1, WINDOW), "InvalidThreshold"),
        ((registry, ids, 6, WINDOW), "InvalidThreshold"),
        ((registry, [*ids, ids[0]], 2, WINDOW), "InvalidSupervisor"),  # listed twice
        ((registry, [*ids[:2], centre_id("nobody")], 2, WINDOW), "InvalidSupervisor"),
        ((registry, ids, 3, 0), "InvalidWindow"),
        ((registry, ids, 3, 2**32), "InvalidWindow"),
        ((registry, [centre_id(f"x-{k}") for k in range(33)], 3, WINDOW), "InvalidThreshold"),
        ((world.deployment.credit, ids, 3, WINDOW), "InvalidRegistry"),  # not an IdentityRegistry
        ((world.outsider.address, ids, 3, WINDOW), "InvalidRegistry"),  # no contract at all
    ]:
        reverts(error, world.chain.deploy, "Supervision", dev, consortium, *args)
    single = world.chain.deploy("Supervision", dev, consortium, registry, ids[:1], 1, WINDOW)
    assert Supervision(world.chain, single).threshold() == 1


# -- key generation -----------------------------------------------------------------------------------------------


def test_five_supervisors_generate_a_key_nobody_holds(world, keyed):
    sup = keyed.sup
    committee = sup.committee()
    assert committee.supervisors == tuple(SUPERVISORS) and committee.threshold == T3
    assert committee.finalized and committee.dealt == committee.acknowledged == frozenset(range(1, 6))
    assert committee.deadlines.complaint - committee.deadlines.deal == WINDOW
    assert committee.deadlines.answer - committee.deadlines.complaint == WINDOW
    assert [sup.supervisor_index(s) for s in SUPERVISORS] == [1, 2, 3, 4, 5] and sup.supervisor_index(OTHER) == 0
    # Y is the sum of the dealers' A_i0, computed here from their own polynomials
    Y = sup.public_key()
    assert Y == keyed.public_key([1, 2, 3, 4, 5]) == mul(sum(d.coefficients[0] for d in keyed.dealers))
    assert all(sup.qualified(i) for i in range(1, 6)) and not sup.qualified(6)
    xs = [keyed.secret_share(j, [1, 2, 3, 4, 5]) for j in range(1, 6)]
    for j, x in enumerate(xs, 1):
        assert sup.verification_key(j) == mul(x)  # Y_j = x_j·G
        assert sup.encryption_key(j) == keyed.keys[j - 1].E
    # any three shares of the joint secret interpolate to log Y; nobody was given it
    for subset in ([1, 2, 3], [2, 4, 5]):
        lambdas = lagrange_at_zero(subset)
        assert mul(sum(lam * xs[j - 1] for lam, j in zip(lambdas, subset, strict=True))) == Y


def test_a_dealer_who_answers_a_complaint_with_a_bad_share_is_disqualified(world):
    run = start(world, world.fresh())
    good = run.dealers[1].share_for(3)
    bad = (good + 1) % R
    for i in range(1, 6):
        deal(world, run, i, bad_for={3: bad} if i == 2 else None)
    sup = run.sup
    # supervisor 3 finds dealer 2's share bad and complains; supervisor 4 complains wrongly of dealer 1
    deal2 = sup.deal_of(2)
    s = dkg.decrypt_share(run.keys[2].e, deal2.shares, 2, 3)
    assert s == bad and not dkg.verify_share(dkg.parse_commitments(deal2.commitments), 3, s)
    receipt = sup.complain(world.sup(3), 2)
    assert events(sup, "Complained", receipt) == [{"dealer": 2, "complainer": 3}]
    sup.complain(world.sup(4), 1)
    assert sup.complaint(2, 3) == ComplaintState.OPEN and sup.committee().open_complaints == 2
    for i in (1, 2, 3, 4, 5):
        sup.acknowledge(world.sup(i))
    reverts("WrongPhase", sup.finalize, world.sup(1))  # complaints are open
    # dealer 1 answers with the true share: the complaint is answered and dealer 1 stays
    true_share = run.dealers[0].share_for(4)
    assert feldman_check(sup.deal_of(1).commitments, 4, true_share) is True
    assert sup.answer(world.sup(1), 4, true_share) is True
    assert sup.complaint(1, 4) == ComplaintState.ANSWERED and sup.revealed_share(1, 4) == true_share
    # dealer 2 answers with the bad share: disqualified, the share on the record
    assert feldman_check(deal2.commitments, 3, bad) is False
    receipt = sup.chain.transact(sup.contract.functions.answer(3, bad), world.sup(2))
    assert events(sup, "Disqualified", receipt) == [
        {"dealer": 2, "reason": "its answer to a complaint does not verify"}
    ]
    assert not events(sup, "ComplaintAnswered", receipt)
    assert sup.disqualified(2) and sup.complaint(2, 3) == ComplaintState.ANSWERED and sup.revealed_share(2, 3) == bad
    reverts("UnknownDealer", sup.answer, world.sup(2), 3, good)  # too late to mend
    Y, qualified = sup.finalize(world.sup(5))
    assert qualified == (1, 3, 4, 5) and not sup.qualified(2)
    assert Y == run.public_key([1, 3, 4, 5]) != run.public_key([1, 2, 3, 4, 5])
    for j in range(1, 6):  # supervisor 2 still holds a share of the key it did not help make
        assert sup.verification_key(j) == mul(run.secret_share(j, [1, 3, 4, 5]))


def test_an_unanswered_complaint_disqualifies_at_finalize_after_the_deadline(world):
    run = start(world, world.fresh())
    for i in range(1, 6):
        deal(world, run, i)
    sup = run.sup
    sup.complain(world.sup(3), 2)
    for i in range(1, 6):
        sup.acknowledge(world.sup(i))
    reverts("WrongPhase", sup.finalize, world.sup(1))
    advance(world.chain, 2 * WINDOW)  # past the complaint deadline, not the answer deadline
    reverts("WrongPhase", sup.complain, world.sup(4), 2)
    reverts("WrongPhase", sup.finalize, world.sup(1))
    advance(world.chain, WINDOW)
    reverts("WrongPhase", sup.answer, world.sup(2), 3, run.dealers[1].share_for(3))  # too late to answer
    receipt = sup.chain.transact(sup.contract.functions.finalize(), world.sup(1))
    assert events(sup, "Disqualified", receipt) == [{"dealer": 2, "reason": "a complaint went unanswered"}]
    (generated,) = events(sup, "KeyGenerated", receipt)
    assert generated["qualified"] == [1, 3, 4, 5]
    assert sup.public_key() == run.public_key([1, 3, 4, 5])
    assert sup.verification_key(2) == mul(run.secret_share(2, [1, 3, 4, 5]))


def test_the_phases_keep_their_order_and_deadlines(world):
    sup = world.fresh()
    dealer = dkg.Dealer.new(T3)
    reverts("WrongPhase", sup.deal, world.sup(1), dealer.commitments_raw(), bytes(5 * 128))  # nobody registered
    reverts("WrongPhase", sup.finalize, world.sup(1))
    reverts("WrongPhase", sup.acknowledge, world.sup(1))
    deployed = world.chain.w3.eth.get_block("latest")["timestamp"]
    assert sup.committee().registration_deadline == deployed + WINDOW
    keys = [dkg.EncryptionKey.new() for _ in SUPERVISORS]
    for i in range(1, 5):
        sup.register(world.sup(i), keys[i - 1].raw())
    assert sup.deadlines().deal == 0
    # one has not registered, and registration is still open: nobody deals yet
    reverts("WrongPhase", sup.deal, world.sup(1), dealer.commitments_raw(), bytes(5 * 128))
    reverts("WrongPhase", sup.complain, world.sup(1), 2)
    receipt = sup.register(world.sup(5), keys[4].raw())
    (opened,) = events(sup, "DealingOpened", receipt)
    assert opened["dealDeadline"] == world.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] + WINDOW
    assert sup.deadlines().deal == opened["dealDeadline"]
    run = Run(sup, keys, [dkg.Dealer.new(T3) for _ in SUPERVISORS])
    for i in (1, 2, 3):
        deal(world, run, i)
    reverts("WrongPhase", sup.acknowledge, world.sup(1))  # dealing is not over: two may still deal
    advance(world.chain, WINDOW)
    reverts("WrongPhase", deal, world, run, 4)  # past the deal deadline
    for i in (1, 2, 3):
        sup.acknowledge(world.sup(i))
    Y, qualified = sup.finalize(world.outsider)  # anyone may finalize once the dealers acknowledged
    assert qualified == (1, 2, 3) and Y == run.public_key([1, 2, 3])
    reverts("WrongPhase", sup.finalize, world.sup(1))
    reverts("WrongPhase", sup.complain, world.sup(4), 1)
    reverts("WrongPhase", sup.acknowledge, world.sup(4))
    reverts("AlreadyRegistered", sup.register, world.sup(4), keys[3].raw())


def test_too_few_qualified_dealers_make_no_key(world):
    run = start(world, world.fresh())
    for i in (1, 2):
        deal(world, run, i)
    advance(world.chain, 3 * WINDOW)
    error = reverts("NotEnoughQualified", run.sup.finalize, world.sup(1))
    assert error.error_args == (2, 3)
    assert run.sup.public_key() is None and run.sup.verification_key(1) is None


def test_past_the_registration_deadline_the_registered_make_the_key_and_an_empty_seat_does_nothing(world, tmp_path):
    sup = world.fresh()
    keys = [dkg.EncryptionKey.new() for _ in SUPERVISORS]
    for i in range(1, 5):  # supervisor 5 never registers
        sup.register(world.sup(i), keys[i - 1].raw())
    advance(world.chain, WINDOW)
    reverts("WrongPhase", sup.register, world.sup(5), keys[4].raw())  # registration closed
    assert sup.deadlines().deal == 0 and sup.encryption_key(5) is None
    run = Run(sup, keys, [dkg.Dealer.new(T3) for _ in SUPERVISORS])
    reverts("NotRegistered", sup.deal, world.sup(5), run.dealers[4].commitments_raw(), bytes(5 * 128))

    def deal_among_four(i: int):
        slots = [dkg.encrypt_share(run.dealers[i - 1].share_for(j), i, j, keys[j - 1].E) for j in range(1, 5)]
        return sup.deal(world.sup(i), run.dealers[i - 1].commitments_raw(), b"".join(slots) + os.urandom(128))

    receipt = deal_among_four(1)  # the first deal opens dealing; seat 5's slot is anything
    (opened,) = events(sup, "DealingOpened", receipt)
    assert opened["dealDeadline"] == world.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] + WINDOW
    assert sup.deadlines().deal == opened["dealDeadline"]
    reverts("WrongPhase", sup.acknowledge, world.sup(1))  # three registered supervisors may still deal
    for i in (2, 3, 4):
        deal_among_four(i)
    reverts("NotRegistered", sup.complain, world.sup(5), 1)
    reverts("NotRegistered", sup.acknowledge, world.sup(5))
    for i in (1, 2, 3, 4):  # dealing is over once every registered supervisor dealt; only they acknowledge
        sup.acknowledge(world.sup(i))
    Y, qualified = sup.finalize(world.outsider)
    assert qualified == (1, 2, 3, 4) and Y == run.public_key([1, 2, 3, 4])
    assert sup.verification_key(5) is None and not sup.qualified(5)
    xs = {j: run.secret_share(j, [1, 2, 3, 4]) for j in range(1, 5)}
    assert all(sup.verification_key(j) == mul(x) for j, x in xs.items())
    signed = group_signature(Y)
    oid = request(world, sup, signed)
    c1 = sup.opening(oid).c1
    reverts("NotRegistered", sup.submit_share, world.sup(5), oid, decryption_share(1, 5, c1, oid))
    for j in (1, 3):
        assert sup.submit_share(world.sup(j), oid, decryption_share(xs[j], j, c1, oid)).tracing_key is None
    assert sup.submit_share(world.sup(4), oid, decryption_share(xs[4], 4, c1, oid)).tracing_key == signed.T


def test_fewer_registered_than_the_threshold_by_the_deadline_make_no_key(world):
    sup = world.fresh()
    keys = [dkg.EncryptionKey.new() for _ in SUPERVISORS]
    for i in (1, 2):
        sup.register(world.sup(i), keys[i - 1].raw())
    reverts("WrongPhase", sup.finalize, world.sup(1))  # registration is still open
    advance(world.chain, WINDOW)
    dealer = dkg.Dealer.new(T3)
    error = reverts("NotEnoughQualified", sup.deal, world.sup(1), dealer.commitments_raw(), bytes(5 * 128))
    assert error.error_args == (2, 3)
    assert reverts("NotEnoughQualified", sup.finalize, world.sup(1)).error_args == (2, 3)
    reverts("WrongPhase", sup.register, world.sup(3), keys[2].raw())
    assert sup.deadlines().deal == 0 and sup.public_key() is None


def test_key_generation_refuses_bad_input_with_named_errors(world):
    sup = world.fresh()
    key = dkg.EncryptionKey.new().raw()
    other, outsider = world.accounts[OTHER], world.outsider
    reverts("NotSupervisor", sup.register, other, key)  # a member, not on the committee
    reverts("NotSupervisor", sup.register, outsider, key)  # not a member at all
    reverts("BadLength", sup.register, world.sup(1), key[:95])
    for bad in (IDENTITY, OFF_CURVE, off_subgroup()):
        reverts("InvalidPoint", sup.register, world.sup(1), bad)
    run = start(world, sup)
    reverts("AlreadyRegistered", sup.register, world.sup(1), key)
    commitments = run.dealers[0].commitments_raw()
    shares = bytes(5 * 128)
    reverts("NotSupervisor", sup.deal, other, commitments, shares)
    reverts("BadLength", sup.deal, world.sup(1), commitments[:-96], shares)
    reverts("BadLength", sup.deal, world.sup(1), commitments, shares[:-1])
    reverts("InvalidPoint", sup.deal, world.sup(1), IDENTITY + commitments[96:], shares)
    reverts("InvalidPoint", sup.deal, world.sup(1), commitments[:96] + off_subgroup() + commitments[192:], shares)
    reverts("InvalidPoint", sup.deal, world.sup(1), commitments[:192] + OFF_CURVE, shares)
    deal(world, run, 1)
    reverts("AlreadyDealt", deal, world, run, 1)
    reverts("UnknownDealer", sup.complain, world.sup(1), 1)  # oneself
    reverts("UnknownDealer", sup.complain, world.sup(2), 3)  # has not dealt
    reverts("UnknownDealer", sup.complain, world.sup(2), 9)
    reverts("NotSupervisor", sup.complain, outsider, 1)
    sup.complain(world.sup(2), 1)
    reverts("AlreadyComplained", sup.complain, world.sup(2), 1)
    reverts("NoOpenComplaint", sup.answer, world.sup(1), 3, 1)
    reverts("NoOpenComplaint", sup.answer, world.sup(1), 0, 1)
    reverts("UnknownDealer", sup.answer, world.sup(3), 2, 1)  # never dealt
    for i in range(2, 6):
        deal(world, run, i)
    sup.acknowledge(world.sup(3))
    reverts("AlreadyAcknowledged", sup.acknowledge, world.sup(3))
    reverts("NotSupervisor", sup.acknowledge, outsider)


# -- openings ------------------------------------------------------------------------------------------------------


@dataclass
class Signed:
    signature: bytes
    home: str
    T: G1Point


def group_signature(Y: G1Point, home: str = SUPERVISORS[0]) -> Signed:
    """A real group signature over an order message by a member of `home`, its T encrypted to Y."""
    isk, ipk = generate_issuer_key(bytes(32))
    sk = new_member_secret()
    req = join_request(sk, home=home, project="astro", member="alice")
    cred = issue_group_credential(isk, ipk, req, home=home, member="alice", revocation_epoch=0, expires_at=2**40)
    return Signed(sign(cred, sk, ipk, Y, order_message(keccak(b"an order"))), home, tracing_key(sk))


@pytest.fixture(scope="module")
def secrets(keyed) -> list[int]:
    return [keyed.secret_share(j, [1, 2, 3, 4, 5]) for j in range(1, 6)]


def request(world: World, sup: Supervision, signed: Signed, reason: str = "abuse report 17") -> int:
    return sup.request_opening(world.accounts[OTHER], signed.signature, signed.home, keccak(b"record"), reason)


def test_three_shares_of_five_open_a_signature_and_two_do_not(world, keyed, secrets):
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    enrolment = keccak(b"enrolment of alice")
    world.enrol(signed.home, enrolment)  # at her join, before she signed
    before = sup.opening_count()
    receipt = sup.chain.transact(
        sup.contract.functions.requestOpening(signed.signature, centre_id(signed.home), keccak(b"record"), "abuse"),
        world.accounts[OTHER],
    )
    oid = before + 1
    (asked,) = events(sup, "OpeningRequested", receipt)
    assert asked["id"] == oid and asked["signatureHash"] == signature_hash(signed.signature)
    o = sup.opening(oid)
    c1, c2 = ciphertext(signed.signature)
    assert (o.requester, o.home, o.transaction, o.reason) == (OTHER, signed.home, keccak(b"record"), "abuse")
    assert (o.c1, o.c2, o.accepted, o.opened, o.tracing_key, o.enrolment) == (c1, c2, 0, False, None, None)
    assert o.pool == oid  # the first opening of its ciphertext names its pool
    reverts("NotOpened", sup.identify, world.accounts[signed.home], oid, b"\x01" * 32)
    for j in (2, 4):
        done = sup.submit_share(world.sup(j), oid, decryption_share(secrets[j - 1], j, c1, oid))
        assert done.accepted and done.tracing_key is None
    o = sup.opening(oid)
    assert o.accepted == 2 and not o.opened and o.tracing_key is None  # two shares open nothing
    share = decryption_share(secrets[4], 5, c1, oid)
    receipt = sup.chain.transact(
        sup.contract.functions.submitShare(oid, g1_raw(share.d), share.c, share.z), world.sup(5)
    )
    assert events(sup, "ShareAccepted", receipt) == [{"id": oid, "pool": oid, "index": 5}]
    (opened,) = events(sup, "Opened", receipt)
    assert opened["tracingKey"] == g1_raw(signed.T)  # T of the member who signed
    o = sup.opening(oid)
    assert o.opened and o.tracing_key == signed.T and o.accepted == 3
    assert sup.share_of(oid, 5) == ShareInfo(oid, 5, ShareState.ACCEPTED, g1_raw(share.d), share.c, share.z, oid)
    late = decryption_share(secrets[0], 1, c1, oid)
    reverts("AlreadyOpened", sup.submit_share, world.sup(1), oid, late)
    # the home alone records whom it mapped T to, once
    reverts("NotHome", sup.identify, world.accounts[SUPERVISORS[1]], oid, enrolment)
    reverts("NotHome", sup.identify, world.outsider, oid, enrolment)
    reverts("InvalidEnrolment", sup.identify, world.accounts[signed.home], oid, bytes(32))
    receipt = sup.identify(world.accounts[signed.home], oid, enrolment)
    assert events(sup, "Identified", receipt) == [{"id": oid, "home": centre_id(signed.home), "enrolment": enrolment}]
    assert sup.opening(oid).enrolment == enrolment
    reverts("AlreadyIdentified", sup.identify, world.accounts[signed.home], oid, enrolment)


def opened_events(sup: Supervision, receipt) -> dict[int, bytes]:
    """The openings a transaction opened, with their tracing keys (raw), in order."""
    return {e["id"]: bytes(e["tracingKey"]) for e in events(sup, "Opened", receipt)}


def submit(sup: Supervision, who: LocalAccount, oid: int, share: Share) -> TxReceipt:
    """submitShare through opening `oid`: the receipt."""
    return sup.chain.transact(sup.contract.functions.submitShare(oid, g1_raw(share.d), share.c, share.z), who)


def test_a_bogus_first_request_for_a_ciphertext_blocks_nothing(world, keyed, secrets):
    """A member fetches a signature (its server is public) and asks first, naming a wrong transaction, or a blob with
    the real C1 and a C2 of its own: honest supervisors share for neither. The honest request still gets its own
    opening, in the same pool (one C1), and the honest shares given for it open it on the record. The bogus openings
    stay on the record unopened: nobody shared for them, and a C2 of the asker's choosing must open to nothing (once
    x·C1 is public, C2 = T_victim + x·C1 would open to anyone's key); nor is a request made after the pool opened."""
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    sig = signed.signature
    c1, c2 = ciphertext(sig)
    enrolment = keccak(b"the signer's enrolment")
    world.enrol(signed.home, enrolment)
    asker, home = world.accounts[OTHER], world.accounts[signed.home]
    wrong = sup.request_opening(asker, sig, signed.home, keccak(b"a wrong transaction"), "first!")
    blob = sig[:105] + g1_raw(mul(7)) + sig[201:]  # the real C1, a C2 of the asker's choosing
    receipt = sup.chain.transact(
        sup.contract.functions.requestOpening(blob, centre_id(signed.home), keccak(b"record"), "first too"), asker
    )
    (asked,) = events(sup, "OpeningRequested", receipt)
    blobbed = asked["id"]
    assert asked["pool"] == wrong
    honest = request(world, sup, signed)
    assert (blobbed, honest) == (wrong + 1, wrong + 2)  # no request is refused for its ciphertext
    assert {sup.opening(k).pool for k in (wrong, blobbed, honest)} == {wrong}  # a pool is named by its first opening
    assert sup.pool(wrong).openings == (wrong, blobbed, honest) and not sup.pool(wrong).opened
    reverts("UnknownOpening", sup.pool, blobbed)  # an opening, not a pool
    for j in (1, 2):
        assert sup.submit_share(world.sup(j), honest, decryption_share(secrets[j - 1], j, c1, wrong)).accepted
    assert not any(sup.opening(k).opened for k in (wrong, blobbed, honest))
    receipt = submit(sup, world.sup(3), honest, decryption_share(secrets[2], 3, c1, wrong))
    assert events(sup, "ShareAccepted", receipt) == [{"id": honest, "pool": wrong, "index": 3}]
    assert opened_events(sup, receipt) == {honest: g1_raw(signed.T)}
    o = sup.opening(honest)
    assert o.opened and o.tracing_key == signed.T and o.accepted == 3 and o.pool == wrong and sup.pool(wrong).opened
    for k in (wrong, blobbed):
        assert (sup.opening(k).opened, sup.opening(k).tracing_key, sup.opening(k).accepted) == (False, None, 3)
        reverts("NotOpened", sup.identify, home, k, enrolment)
    # the shares are the pool's, each naming the opening it was given for
    assert [sup.share_of(k, 3).given for k in (wrong, blobbed, honest)] == [honest] * 3
    sup.identify(home, honest, enrolment)
    assert sup.opening(honest).enrolment == enrolment
    # x·C1 is public now: a blob with C2 = T_victim + x·C1 is recorded, and opens to nothing
    victim_T = tracing_key(new_member_secret())
    framing = sig[:105] + g1_raw(victim_T + (c2 - signed.T)) + sig[201:]
    receipt = sup.chain.transact(
        sup.contract.functions.requestOpening(framing, centre_id(signed.home), keccak(b"a framed deed"), "x"), home
    )
    (late,) = [e["id"] for e in events(sup, "OpeningRequested", receipt)]
    assert not opened_events(sup, receipt) and sup.opening(late).pool == wrong
    assert not sup.opening(late).opened and sup.opening(late).tracing_key is None
    reverts("AlreadyOpened", sup.submit_share, world.sup(4), late, decryption_share(secrets[3], 4, c1, wrong))
    reverts("NotOpened", sup.identify, home, late, enrolment)


def test_shares_given_through_two_openings_of_one_ciphertext_count_in_one_pool_and_open_it_on_chain(
    world, keyed, secrets
):
    """D_i = x_i·C1 does not depend on the opening: whatever shares of one C1 are on chain, through whichever
    openings, count together, and the t-th opens on the record every opening they were given for."""
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    sig = signed.signature
    c1, c2 = ciphertext(sig)
    first = request(world, sup, signed, "weak reason")
    again = sig[:-1] + bytes([sig[-1] ^ 1])  # the same C1 and C2 in another blob
    second = sup.request_opening(world.accounts[OTHER], again, signed.home, keccak(b"record"), "another reason")
    assert sup.opening(second).pool == first and second != first
    for j in (1, 2):
        sup.submit_share(world.sup(j), first, decryption_share(secrets[j - 1], j, c1, first))
    o = sup.opening(second)
    assert o.accepted == 2 and not o.opened  # the second opening sees the pool's two shares
    assert [sup.share_of(second, j).state for j in (1, 2, 3)] == [ShareState.ACCEPTED] * 2 + [ShareState.NONE]
    receipt = submit(sup, world.sup(3), second, decryption_share(secrets[2], 3, c1, first))
    assert opened_events(sup, receipt) == {second: g1_raw(signed.T), first: g1_raw(signed.T)}
    public = [
        Share(j, g1_from_raw(info.d), info.c, info.z)
        for j in range(1, 6)
        if (info := sup.share_of(first, j)).state == ShareState.ACCEPTED
    ]
    assert [s.index for s in public] == [1, 2, 3] and combine(c2, public) == signed.T
    assert all(sup.opening(k).opened and sup.opening(k).tracing_key == signed.T for k in (first, second))


def test_a_supervisor_shares_once_per_ciphertext_whatever_the_opening(world, keyed, secrets):
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    c1 = ciphertext(signed.signature)[0]
    first = request(world, sup, signed)
    second = request(world, sup, signed, "again")
    honest = [decryption_share(secrets[j - 1], j, c1, first) for j in range(1, 6)]
    assert sup.submit_share(world.sup(1), first, honest[0]).accepted
    error = reverts("AlreadyShared", sup.submit_share, world.sup(1), second, honest[0])
    assert error.error_args == (first, 1)  # named by its pool
    # a rejected share blocks its sender for the pool too, and names the opening it was given for
    receipt = sup.chain.transact(
        sup.contract.functions.submitShare(second, g1_raw(honest[1].d), honest[1].c, (honest[1].z + 1) % R),
        world.sup(2),
    )
    assert events(sup, "ShareRejected", receipt) == [
        {"id": second, "pool": first, "index": 2, "supervisor": centre_id(SUPERVISORS[1])}
    ]
    reverts("AlreadyShared", sup.submit_share, world.sup(2), first, honest[1])
    # the proof binds the pool, not the opening a share is given for
    bound_to_second = decryption_share(secrets[2], 3, c1, second)
    assert sup.submit_share(world.sup(3), second, bound_to_second).accepted is False
    assert sup.share_of(first, 3).state == ShareState.REJECTED and sup.share_of(first, 3).given == second
    o = sup.opening(first)
    assert o.accepted == 1 and not o.opened


def test_openings_nobody_shared_for_add_nothing_to_the_share_that_opens(world, keyed, secrets):
    """Any member may ask for openings of a C1 it saw, as many as it likes: the share that opens the pool opens only
    the openings an accepted share was given for (at most t), so its cost does not grow with the others."""
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    c1 = ciphertext(signed.signature)[0]
    pool = request(world, sup, signed, "bogus 0")
    for k in range(1, 12):
        request(world, sup, signed, f"bogus {k}")
    honest = request(world, sup, signed, "the abuse report")
    assert len(sup.pool(pool).openings) == 13
    for j in (1, 2):
        sup.submit_share(world.sup(j), honest, decryption_share(secrets[j - 1], j, c1, pool))
    receipt = submit(sup, world.sup(3), honest, decryption_share(secrets[2], 3, c1, pool))
    assert opened_events(sup, receipt) == {honest: g1_raw(signed.T)}
    assert receipt["gasUsed"] < 420_000  # the ceiling of the share that opens a pool of one opening


def test_an_opening_is_identified_only_as_an_enrolment_its_home_made_before_the_request(world, keyed, secrets):
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    home = world.accounts[signed.home]
    before, revoked, elsewhere = keccak(b"enrolled before"), keccak(b"enrolled, then revoked"), keccak(b"of other-6")
    world.enrol(signed.home, before)
    world.enrol(signed.home, revoked)
    world.enrol(OTHER, elsewhere)  # another home's enrolment
    oid = request(world, sup, signed)
    advance(world.chain, 1)
    after = keccak(b"enrolled after the request")
    world.enrol(signed.home, after)
    registry = bind(world.chain, world.deployment).identity_registry
    world.chain.transact(registry.functions.revoke(revoked), home)
    c1 = sup.opening(oid).c1
    for j in (1, 2, 3):
        sup.submit_share(world.sup(j), oid, decryption_share(secrets[j - 1], j, c1, oid))
    for enrolment in (elsewhere, after, keccak(b"never enrolled")):
        error = reverts("NotEnrolled", sup.identify, home, oid, enrolment)
        assert error.error_args == (centre_id(signed.home), enrolment)
    sup.identify(home, oid, revoked)  # revoked since: what it signed before is still its own
    assert sup.opening(oid).enrolment == revoked


def test_forged_shares_are_rejected_on_the_record_naming_their_sender(world, keyed, secrets):
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    oid = request(world, sup, signed)
    c1 = sup.opening(oid).c1
    honest = [decryption_share(secrets[j - 1], j, c1, oid) for j in range(1, 6)]
    wrong_x = decryption_share((secrets[0] + 1) % R, 1, c1, oid)  # a consistent proof for another secret
    forged = {
        1: (g1_raw(wrong_x.d), wrong_x.c, wrong_x.z),
        2: (g1_raw(honest[1].d), honest[1].c, (honest[1].z + 1) % R),  # tampered z
        3: (OFF_CURVE, honest[2].c, honest[2].z),
        4: (off_subgroup(), honest[3].c, honest[3].z),
        5: (IDENTITY, honest[4].c, honest[4].z),
    }
    for j, (d, c, z) in forged.items():
        receipt = sup.chain.transact(sup.contract.functions.submitShare(oid, d, c, z), world.sup(j))
        assert events(sup, "ShareRejected", receipt) == [
            {"id": oid, "pool": oid, "index": j, "supervisor": centre_id(SUPERVISORS[j - 1])}
        ]
        assert not events(sup, "ShareAccepted", receipt)
        assert sup.share_of(oid, j).state == ShareState.REJECTED
        assert (sup.share_of(oid, j).d, sup.share_of(oid, j).c, sup.share_of(oid, j).z) == (d, c, z)
        y = g1_raw(sup.verification_key(j))
        assert dleq_check(oid, j, y, g1_raw(c1), d, c, z) is False  # the Python verdict agrees
        reverts("AlreadyShared", sup.submit_share, world.sup(j), oid, honest[j - 1])  # no second try
    o = sup.opening(oid)
    assert o.accepted == 0 and not o.opened  # five rejected shares open nothing


def test_non_canonical_proofs_are_rejected_and_the_rest_still_open(world, keyed, secrets):
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    oid = request(world, sup, signed)
    c1 = sup.opening(oid).c1
    honest = [decryption_share(secrets[j - 1], j, c1, oid) for j in range(1, 6)]
    assert sup.submit_raw_share(world.sup(1), oid, g1_raw(honest[0].d), honest[0].c + R, honest[0].z).accepted is False
    assert sup.submit_raw_share(world.sup(2), oid, g1_raw(honest[1].d), honest[1].c, honest[1].z + R).accepted is False
    reverts("BadLength", sup.submit_raw_share, world.sup(3), oid, g1_raw(honest[2].d)[:95], honest[2].c, honest[2].z)
    assert sup.share_of(oid, 3).state == ShareState.NONE  # malformed calldata is refused, not recorded
    assert sup.submit_share(world.sup(4), oid, honest[3]).tracing_key is None
    assert sup.submit_share(world.sup(3), oid, honest[2]).tracing_key is None
    assert sup.submit_share(world.sup(5), oid, honest[4]).tracing_key == signed.T  # shares 3, 4, 5
    assert [sup.share_of(oid, j).state for j in range(1, 6)] == [ShareState.REJECTED] * 2 + [ShareState.ACCEPTED] * 3


def test_openings_refuse_bad_requests_with_named_errors(world, keyed, secrets):
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    sig, home, record = signed.signature, centre_id(signed.home), keccak(b"record")
    fns = sup.contract.functions

    def ask(who, signature=sig, home_id=home, reason="abuse"):
        return sup.chain.transact(fns.requestOpening(signature, home_id, record, reason), who)

    member = world.accounts[OTHER]
    reverts("NotMember", ask, world.outsider)
    reverts("KeyNotReady", world.fresh().request_opening, member, sig, signed.home, record, "abuse")
    reverts("BadLength", ask, member, sig[:200])
    reverts("BadLength", ask, member, sig + bytes(4097 - len(sig)))
    reverts("UnknownSignatureVersion", ask, member, b"\x02" + sig[1:])
    reverts("ReasonTooLong", ask, member, sig, home, "x" * 513)
    reverts("UnknownHome", ask, member, sig, centre_id("nobody"))
    for bad in (OFF_CURVE, off_subgroup(), IDENTITY):
        reverts("InvalidPoint", ask, member, sig[:9] + bad + sig[105:])  # C1
        reverts("InvalidPoint", ask, member, sig[:105] + bad + sig[201:])  # C2
    ask(member, sig, home, "x" * 512)  # the longest reason
    oid = sup.opening_count()
    share = decryption_share(secrets[0], 1, sup.opening(oid).c1, oid)
    reverts("NotSupervisor", sup.submit_share, member, oid, share)
    reverts("NotSupervisor", sup.submit_share, world.outsider, oid, share)
    for unknown in (0, oid + 1):
        reverts("UnknownOpening", sup.submit_share, world.sup(1), unknown, share)
        reverts("UnknownOpening", sup.identify, member, unknown, b"\x01" * 32)
        reverts("UnknownOpening", sup.opening, unknown)
    assert sup.share_of(oid, 1).state == ShareState.NONE and sup.share_of(oid, 1).d == b""
    # a share of another ciphertext's pool (its proof binds the pool id) is rejected here
    other = decryption_share(secrets[0], 1, sup.opening(oid).c1, oid - 1)
    assert sup.submit_share(world.sup(1), oid, other).accepted is False


def test_gas_of_the_supervision_steps(world, keyed, secrets):
    """Ceilings on what a key generation (n = 5, t = 3) and an opening cost; the figures are in docs/ARCHITECTURE.md."""
    sup, fns, gas = keyed.sup, keyed.sup.contract.functions, dict(keyed.gas)
    signed = group_signature(sup.public_key())
    world.enrol(signed.home, keccak(b"e"))
    tx = sup.chain.transact
    receipt = tx(fns.requestOpening(signed.signature, centre_id(signed.home), keccak(b"r"), "abuse"), world.sup(1))
    gas["requestOpening"] = receipt["gasUsed"]
    oid = sup.opening_count()
    c1 = sup.opening(oid).c1
    shares = [decryption_share(secrets[j - 1], j, c1, oid) for j in range(1, 6)]
    gas["submitShare (rejected)"] = tx(fns.submitShare(oid, g1_raw(shares[0].d), shares[0].c, 1), world.sup(1))[
        "gasUsed"
    ]
    gas["submitShare (rejected, no point)"] = tx(
        fns.submitShare(oid, OFF_CURVE, shares[1].c, shares[1].z), world.sup(2)
    )["gasUsed"]
    for j in (3, 4):
        gas["submitShare (accepted)"] = tx(
            fns.submitShare(oid, g1_raw(shares[j - 1].d), shares[j - 1].c, shares[j - 1].z), world.sup(j)
        )["gasUsed"]
    gas["submitShare (opening)"] = tx(
        fns.submitShare(oid, g1_raw(shares[4].d), shares[4].c, shares[4].z), world.sup(5)
    )["gasUsed"]
    gas["identify"] = tx(fns.identify(oid, keccak(b"e")), world.accounts[signed.home])["gasUsed"]
    again = tx(fns.requestOpening(signed.signature, centre_id(signed.home), keccak(b"r"), "abuse"), world.sup(2))
    gas["requestOpening (its pool opened)"] = again["gasUsed"]  # opened as it is asked for
    print("Supervision gas (n = 5, t = 3):", gas)
    ceilings = {
        "register": 150_000,
        "deal": 850_000,
        "finalize": 800_000,
        "requestOpening": 450_000,
        "requestOpening (its pool opened)": 450_000,
        "submitShare (accepted)": 260_000,
        "submitShare (rejected)": 260_000,
        "submitShare (rejected, no point)": 320_000,
        "submitShare (opening)": 420_000,
        "identify": 70_000,
    }
    over = {step: gas[step] for step, cap in ceilings.items() if gas[step] > cap}
    assert not over, f"gas above the ceilings: {over}"


# -- the same on anvil ----------------------------------------------------------------------------------------------


def test_on_anvil_a_key_is_generated_and_a_signature_opened(anvil_url):
    world = make_world(anvil_url)
    run = start(world, Supervision.of(world.chain, world.deployment))
    for i in range(1, 6):
        deal(world, run, i)
    for i in range(1, 6):
        run.sup.acknowledge(world.sup(i))
    sup = run.sup
    Y, qualified = sup.finalize(world.sup(2))
    assert qualified == (1, 2, 3, 4, 5) and Y == run.public_key([1, 2, 3, 4, 5])
    xs = [run.secret_share(j, [1, 2, 3, 4, 5]) for j in range(1, 6)]
    assert all(sup.verification_key(j) == mul(x) for j, x in enumerate(xs, 1))
    signed = group_signature(Y, home=SUPERVISORS[2])
    world.enrol(signed.home, b"\x05" * 32)
    oid = request(world, sup, signed)
    c1 = sup.opening(oid).c1
    honest = [decryption_share(xs[j - 1], j, c1, oid) for j in range(1, 6)]
    # a refused point burns the gas its precompile call was given: estimated, sent, recorded as rejected
    assert sup.submit_raw_share(world.sup(1), oid, OFF_CURVE, honest[0].c, honest[0].z).accepted is False
    assert (
        sup.submit_raw_share(world.sup(2), oid, g1_raw(honest[1].d), honest[1].c, (honest[1].z + 1) % R).accepted
        is False
    )
    assert sup.share_of(oid, 1).state == sup.share_of(oid, 2).state == ShareState.REJECTED
    assert sup.submit_share(world.sup(3), oid, honest[2]).accepted
    assert sup.submit_share(world.sup(4), oid, honest[3]).tracing_key is None
    assert sup.submit_share(world.sup(5), oid, honest[4]).tracing_key == signed.T
    reverts("NotHome", sup.identify, world.sup(1), oid, b"\x05" * 32)
    sup.identify(world.accounts[signed.home], oid, b"\x05" * 32)
    assert sup.opening(oid).enrolment == b"\x05" * 32
