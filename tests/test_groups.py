"""The home's group desk: joining a project's group, anonymous grants, identifying an opened signature.

The desk runs on real parts, as the grant desk's tests do: a real slapd for the users' groups (the
projects), a consortium deployed on the embedded chain and read through a real EventIndex (members,
rates, the home's issuer key and revocation epoch), a real gateway store, outbox and Payer, and the
real group-signature crypto (auth.group). The Supervision contract is a double here (`Supervisors`: the
joint key of a 2-of-3 sharing made in the test, and openings combined from real decryption shares);
tests/test_groups_gateway.py runs the desk at real gateways against the real contract.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from py_arkworks_bls12381 import G1Point, Scalar

from auth.bbs.encoding import R as ORDER
from auth.credentials import CredentialSchema, generate_issuer_key
from auth.directory import Directory
from auth.group.credential import (
    CREDENTIAL_PERIOD,
    GroupCredential,
    blind_sign,
    credential_expiry,
    issue_week,
    issuer_key_id,
    join_request,
    new_member_secret,
    tracing_key,
)
from auth.group.opening import combine, decryption_share
from auth.group.points import g1_raw, random_scalar
from auth.group.signature import order_message, quote_message, sign
from auth.tokens import PRESENTED, Claims, TokenIssuer, generate_key
from gateway.node.anonymous import SupervisionKey
from gateway.node.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PaymentRequired,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from gateway.node.groups import GroupDesk, OpeningFacts
from gateway.node.payer import Payer
from gateway.node.ratelimit import RateLimit
from gateway.node.signon import IssuerKey, SignOn
from gateway.store import Store
from gateway.store.groups import GroupBook
from gateway.store.holds import HoldBook
from ledger.chain import ChainError, ChainRevert
from ledger.deploy import bind
from ledger.ids import centre_id
from ledger.index import EventIndex
from ledger.outbox import DONE, FAILED, PENDING, Outbox
from ledger.payment import Grant, Order, grant_digest, order_digest, recover, sign_typed
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import domain_for
from tests.fixtures.members import embedded_members

HOME = "hpc-a"
SERVING = "cloud-b"
NOW = 1_900_000_000
ALLOCATIONS = {"physics": 1_000, "ml-project": 500}
USERS = [
    {"uid": "alice", "password": "alice-pw", "cn": "Alice", "employeeType": "staff"},
    {"uid": "bob", "password": "bob-pw", "cn": "Bob", "employeeType": "staff"},
    {"uid": "dave", "password": "dave-pw", "cn": "Dave", "employeeType": "staff"},
]
GROUPS = [
    {"cn": "physics", "members": ["alice", "bob"]},
    {"cn": "ml-project", "members": ["alice"]},
    {"cn": "biology", "members": ["dave"]},  # no allocation: no project
]
SCHEMA = CredentialSchema.parse((Path(__file__).parents[1] / "gateway/demo/data/credential_schema.toml").read_text())


@dataclass
class Supervisors:
    """The Supervision contract, as the desk reads it: a 2-of-3 sharing of x (Y = x·G) and its openings."""

    shares: dict[int, int] = field(default_factory=dict)
    key: G1Point | None = None
    openings: dict[int, OpeningFacts] = field(default_factory=dict)
    deployed: bool = True

    @classmethod
    def dealt(cls) -> Supervisors:
        a0, a1 = random_scalar(), random_scalar()
        return cls(shares={i: (a0 + a1 * i) % ORDER for i in (1, 2, 3)}, key=G1Point() * Scalar(a0))

    def public_key(self) -> G1Point | None:
        """Y as the contract's binding gives it: None until the key is generated."""
        return self.key

    def reader(self) -> SupervisionKey:
        """The key as a gateway reads it (None: a deployment without the contract)."""
        return SupervisionKey(self.public_key if self.deployed else None, recheck=0)

    def opening(self, opening: int) -> OpeningFacts | None:
        return self.openings.get(opening)

    def open(self, opening: int, signature: bytes, home: str = HOME, by: tuple[int, ...] = (1, 3)) -> None:
        """Two supervisors' decryption shares of the signature's ciphertext, combined to T (as the contract does)."""
        c1, c2 = G1Point.from_xy_bytes_be(signature[9:105]), G1Point.from_xy_bytes_be(signature[105:201])
        shares = [decryption_share(self.shares[i], i, c1, opening) for i in by]
        self.openings[opening] = OpeningFacts(home=home, opened=True, tracing_key=combine(c2, shares))


@pytest.fixture(scope="module")
def directory(slapd_factory) -> Directory:
    server = slapd_factory(users=USERS, groups=GROUPS, service_password="svc-pw")
    return Directory(server.url, server.base_dn, server.service_dn, server.service_password, centre=HOME)


@pytest.fixture(scope="module")
def chain_parts(tmp_path_factory):
    """Two members on the embedded chain with hpc-a's issuer key registered, read through a real index."""
    chain, accounts, deployment = embedded_members((HOME, SERVING), 9200)
    sk, pk = generate_issuer_key()
    registry = bind(chain, deployment).identity_registry.functions
    chain.transact(registry.setIssuerKey(pk, 0), accounts[HOME])
    index = EventIndex(tmp_path_factory.mktemp("index") / "index.db", chain, deployment)
    index.sync()
    return chain, accounts, deployment, index, IssuerKey(sk, pk)


@dataclass
class Desk:
    desk: GroupDesk
    store: Store
    outbox: Outbox
    signon: SignOn
    supervisors: Supervisors
    issuer: IssuerKey
    domain: object
    home_account: object
    clock: list[int]
    enrol_on_chain: object
    chain_and_deployment: tuple

    @property
    def holds(self) -> HoldBook:
        return HoldBook(self.store)

    @property
    def epoch(self) -> int:
        """The home's revocation epoch now (the module's chain is shared: a test may have revoked someone)."""
        return self.desk._index.revocation_epoch(HOME)


@pytest.fixture
def desk(tmp_path: Path, directory, chain_parts) -> Desk:
    chain, accounts, deployment, index, issuer = chain_parts
    store, outbox = Store(tmp_path / "gateway.db"), Outbox(tmp_path / "outbox.db")
    registry = bind(chain, deployment).identity_registry.functions

    def enrol(p: dict) -> str | None:  # the gateway's own handler's rule: "already enrolled" is done
        enrolment = from_hex(p["enrolment"], size=32)
        if registry.enrolment(centre_id(HOME), enrolment).call()[0]:
            return None
        return chain.transact(registry.enrol(enrolment), accounts[HOME])["transactionHash"].to_0x_hex()

    outbox.register("enrol", enrol)
    domain = domain_for(deployment)
    clock = [NOW]
    payer = Payer(
        name=HOME,
        account=accounts[HOME],
        domain=domain,
        index=index,
        directory=directory,
        book=HoldBook(store),
        allocations=ALLOCATIONS,
        collateral=type("Free", (), {"collateral": lambda self: 10**12})(),
        clock=lambda: clock[0],
    )
    signon = SignOn(
        name=HOME,
        schema=SCHEMA,
        issuer_key=issuer,
        enrolment_secret=b"\x07" * 32,
        directory=directory,
        index=index,
        outbox=outbox,
        tokens=TokenIssuer(HOME, generate_key()),
        requested=["department"],
    )
    supervisors = Supervisors.dealt()
    groups = GroupDesk(
        name=HOME,
        payer=payer,
        domain=domain,
        issuer_key=issuer,
        enrol=signon.enrol,
        index=index,
        book=GroupBook(store),
        outbox=outbox,
        supervision_key=supervisors.reader().get,
        openings=supervisors.opening,
        clock=lambda: clock[0],
    )
    yield Desk(
        groups, store, outbox, signon, supervisors, issuer, domain, accounts[HOME], clock, enrol, (chain, deployment)
    )
    outbox.close()
    store.close()


def session(uid: str, **change) -> Claims:
    """A password session at home, as CentreNode.authenticate returns it."""
    fields = {"iss": HOME, "aud": HOME, "sub": f"{uid}@{HOME}", "home": HOME} | change
    return Claims(**fields)


@dataclass
class Membership:
    sk: int
    credential: GroupCredential
    answer: dict

    def sign(self, desk: Desk, message: bytes) -> bytes:
        return sign(self.credential, self.sk, desk.issuer.pk, desk.supervisors.key, message)


def joined(desk: Desk, uid: str = "alice", project: str = "physics") -> Membership:
    sk = new_member_secret()
    answer = desk.desk.join(session(uid), join_request(sk, home=HOME, project=project, member=uid).to_dict())
    return Membership(sk, GroupCredential.from_dict(answer["credential"]), answer)


def signed_order(desk: Desk, max_price: int = 100, account=None, **change) -> tuple[dict, str, bytes]:
    """An order signed by a fresh payment account (or the one given), and its EIP-712 digest."""
    account = account or Account.create()
    fields = {
        "request": keccak(text=secrets.token_hex(8)),
        "centre": centre_id(SERVING),
        "rates_version": 1,
        "max_price": max_price,
        "deadline": NOW + 3600,
        "nonce": secrets.randbits(256),
    } | change
    order = Order(**fields)
    return order.to_dict(), to_hex(sign_typed(order, desk.domain, account.key)), order_digest(order, desk.domain)


def anonymous(desk: Desk, member: Membership, max_price: int = 100, **change) -> tuple[dict, str, str]:
    """A grant request's fields: an order and the member's group signature over its digest."""
    order, signature, digest = signed_order(desk, max_price, **change)
    return order, signature, to_hex(member.sign(desk, order_message(digest)))


def count(desk: Desk, table: str) -> int:
    return desk.store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# -- joining ----------------------------------------------------------------------------


def test_a_member_joins_with_a_key_the_home_signs_blindly_and_keeps_with_them(desk):
    alice = joined(desk)
    cred = alice.credential
    assert cred.verify(alice.sk, desk.issuer.pk) and (cred.project, cred.home) == ("physics", HOME)
    assert cred.key_id == issuer_key_id(desk.issuer.pk) and cred.revocation_epoch == desk.epoch
    assert cred.expires_at % CREDENTIAL_PERIOD == 0 and NOW + 7 * 86_400 < cred.expires_at <= NOW + 14 * 86_400
    assert alice.answer["supervision_key"] == to_hex(g1_raw(desk.supervisors.key))
    assert alice.answer["issuer_pk"] == to_hex(desk.issuer.pk)
    member = GroupBook(desk.store).member(tracing_key(alice.sk).to_compressed_bytes())
    enrolment = desk.signon.enrolment_id("alice")
    assert (member.uid, member.enrolment, member.project, member.expires_at) == (
        "alice",
        enrolment,
        "physics",
        cred.expires_at,
    )
    # the member's enrolment goes on chain, as a sign-on credential's does
    assert desk.outbox.item_by_key(f"enrol:{enrolment.hex()}") is not None


def test_no_credential_before_the_members_enrolment_is_on_chain(desk, monkeypatch):
    """An opening is identified only as an enrolment made before it was requested: a member who could sign
    before their enrolment landed could never be named on chain. So a first join waits for it, else 503."""
    monkeypatch.setattr(desk.signon, "_enrolment_secret", secrets.token_bytes(32))  # alice, never enrolled
    enrolment = desk.signon.enrolment_id("alice")
    chain_down = ChainError("no JSON-RPC node answers")

    def unreachable(p: dict) -> str | None:
        raise chain_down

    desk.outbox.register("enrol", unreachable)
    monkeypatch.setattr("gateway.node.groups.ENROL_WAIT", 0.2)
    sk = new_member_secret()
    request = join_request(sk, home=HOME, project="physics", member="alice").to_dict()
    with pytest.raises(Unavailable, match="not on chain yet"):
        desk.desk.join(session("alice"), request)
    assert desk.outbox.item_by_key(f"enrol:{enrolment.hex()}") is not None  # queued: housekeeping sends it
    desk.outbox.register("enrol", desk.enrol_on_chain)
    answer = desk.desk.join(session("alice"), request)  # the same join again, once the chain answers
    assert GroupCredential.from_dict(answer["credential"]).verify(sk, desk.issuer.pk)
    registry = bind(*desk.chain_and_deployment).identity_registry.functions
    assert registry.enrolment(centre_id(HOME), enrolment).call()[0]


def test_the_same_join_again_renews_the_credential_for_the_same_key(desk):
    sk = new_member_secret()
    request = join_request(sk, home=HOME, project="physics", member="alice").to_dict()
    first = desk.desk.join(session("alice"), request)
    assert desk.desk.join(session("alice"), request) == first  # a retry in the same week: the same credential
    desk.clock[0] += CREDENTIAL_PERIOD
    again = desk.desk.join(session("alice"), request)
    assert again["credential"]["expires_at"] == first["credential"]["expires_at"] + CREDENTIAL_PERIOD
    assert GroupCredential.from_dict(again["credential"]).verify(sk, desk.issuer.pk)
    assert count(desk, "group_members") == 1
    assert GroupBook(desk.store).members_of("alice")[0].expires_at == again["credential"]["expires_at"]


def test_members_joining_in_one_week_share_their_expiry(desk):
    """A signature discloses its credential's expiry: a per-join expiry would tell the home who joined when."""
    start = NOW - NOW % CREDENTIAL_PERIOD
    desk.clock[0] = start
    alice = joined(desk, "alice")
    desk.clock[0] = start + CREDENTIAL_PERIOD - 1
    bob = joined(desk, "bob")
    assert alice.credential.expires_at == bob.credential.expires_at == start + 2 * CREDENTIAL_PERIOD
    desk.clock[0] = start + CREDENTIAL_PERIOD
    assert joined(desk, "bob").credential.expires_at == start + 3 * CREDENTIAL_PERIOD


def test_a_member_may_join_each_of_their_projects(desk):
    for uid, project in (("alice", "physics"), ("alice", "ml-project"), ("bob", "physics")):
        joined(desk, uid, project)
    assert [m.project for m in GroupBook(desk.store).members_of("alice")] == ["physics", "ml-project"]


@pytest.mark.parametrize(
    "change",
    [
        {"amr": [PRESENTED], "sub": "0123456789abcdef@hpc-a"},  # a presentation: pseudonymous
        {"iss": SERVING, "aud": HOME},  # minted by another centre
        {"aud": SERVING},  # a token exchanged for another centre
    ],
)
def test_only_a_password_session_at_home_joins(desk, change):
    request = join_request(new_member_secret(), home=HOME, project="physics", member="alice").to_dict()
    with pytest.raises(Forbidden, match="password sign-on at your home centre"):
        desk.desk.join(session("alice", **change), request)
    assert count(desk, "group_members") == 0


def test_nobody_registers_another_members_key(desk):
    """The proof names the member: bob cannot register alice's T (with her proof, or any proof of his own)."""
    sk = new_member_secret()
    alices = join_request(sk, home=HOME, project="physics", member="alice").to_dict()
    with pytest.raises(Invalid, match=r"the join proof does not verify.*for bob at hpc-a"):
        desk.desk.join(session("bob"), alices)
    for other in (
        join_request(sk, home=SERVING, project="physics", member="bob"),  # a proof for another home
        join_request(sk, home=HOME, project="ml-project", member="bob"),  # another project, relabelled
    ):
        relabelled = other.to_dict() | {"project": "physics"}
        with pytest.raises(Invalid, match="the join proof does not verify"):
            desk.desk.join(session("bob"), relabelled)
    assert count(desk, "group_members") == 0
    desk.desk.join(session("alice"), alices)  # hers to register
    with pytest.raises(Conflict, match="this tracing key is already registered"):  # and then to nobody else
        desk.desk.join(session("bob"), join_request(sk, home=HOME, project="physics", member="bob").to_dict())
    with pytest.raises(Conflict, match="this tracing key is already registered"):  # nor to another of her projects
        desk.desk.join(session("alice"), join_request(sk, home=HOME, project="ml-project", member="alice").to_dict())
    assert [m.uid for m in GroupBook(desk.store).members_of("alice")] == ["alice"] and count(desk, "group_members") == 1
    assert desk.outbox.item_by_key(f"enrol:{desk.signon.enrolment_id('bob').hex()}") is None  # nothing for bob


def _good() -> dict:
    return join_request(new_member_secret(), home=HOME, project="physics", member="alice").to_dict()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (lambda: {}, "the join request is malformed"),
        (lambda: _good() | {"extra": 1}, "the join request is malformed"),
        (lambda: _good() | {"tracing_key": "0x1234"}, "the join request is malformed: tracing_key"),
        (lambda: _good() | {"tracing_key": "not hex"}, "the join request is malformed"),
        (lambda: _good() | {"tracing_key": "0x" + "00" * 48}, "not a point of G1"),
        (lambda: _good() | {"tracing_key": to_hex(G1Point.identity().to_compressed_bytes())}, "not a point of G1"),
        (lambda: _good() | {"proof": {"c": "0x" + "ff" * 32, "s": "0x01"}}, "the join request is malformed"),
        (lambda: _good() | {"proof": {"c": "0x01"}}, "the join request is malformed"),
        (lambda: _good() | {"project": "no such project!"}, "the join request is malformed"),
        (lambda: ["not", "an", "object"], "the join request is malformed"),
    ],
)
def test_a_malformed_join_request_is_refused_and_nothing_is_stored(desk, body, words):
    with pytest.raises(Invalid, match=words):
        desk.desk.join(session("alice"), body())
    assert count(desk, "group_members") == 0


def test_only_the_users_projects_with_an_allocation_are_joined(desk):
    for uid, project, error, words in (
        ("bob", "ml-project", Forbidden, r"'ml-project' is not one of your projects at hpc-a \(yours: physics\)"),
        ("dave", "biology", Forbidden, r"'biology' is not one of your projects at hpc-a \(yours: none\)"),
        ("alice", "Physics", Invalid, "the project is called 'physics' at hpc-a: join it by that name"),
    ):
        request = join_request(new_member_secret(), home=HOME, project=project, member=uid).to_dict()
        with pytest.raises(error, match=words):
            desk.desk.join(session(uid), request)
    assert count(desk, "group_members") == 0


def test_no_credential_until_the_supervisors_key_exists(desk):
    key, desk.supervisors.key = desk.supervisors.key, None
    with pytest.raises(Unavailable, match="the supervisors have not generated their key yet"):
        joined(desk)
    desk.supervisors.deployed = False  # a deployment from before the contract
    desk.desk._supervision_key = desk.supervisors.reader().get
    with pytest.raises(Unavailable, match="this consortium has no supervision contract"):
        joined(desk)
    assert count(desk, "group_members") == 0
    desk.supervisors.deployed, desk.supervisors.key = True, key
    desk.desk._supervision_key = desk.supervisors.reader().get
    joined(desk)


# -- anonymous grants ---------------------------------------------------------------------


def test_an_anonymous_grant_holds_on_the_project_and_names_no_member(desk):
    alice = joined(desk)
    order, order_signature, group_signature = anonymous(desk, alice, max_price=300)
    answer = desk.desk.grant(order, order_signature, group_signature)
    grant = Grant.from_dict(answer["grant"])
    assert recover(grant, desk.domain, bytes.fromhex(answer["grant_signature"][2:])) == desk.home_account.address
    assert grant.order == order_digest(Order.from_dict(order), desk.domain) and answer["project"] == "physics"
    assert (grant.amount, grant.home, grant.centre) == (300, centre_id(HOME), centre_id(SERVING))
    hold = desk.holds.hold(grant_digest(grant, desk.domain))
    assert (hold.status, hold.amount, hold.principal, hold.project) == ("held", 300, "anonymous:physics", "physics")
    assert desk.holds.project_figures("physics") == (300, 0)
    # it keeps the signature (whose T only t supervisors can decrypt), for the supervisors to open the hold by
    assert hold.group_signature == from_hex(group_signature)
    # nothing else the grant wrote names the member: not the uid, the enrolment or the tracing key
    traces = ("alice", desk.signon.enrolment_id("alice").hex(), tracing_key(alice.sk).to_compressed_bytes().hex())
    written = desk.store._db.execute("SELECT * FROM holds").fetchall()
    assert not [t for t in traces for row in written for v in row if t in str(v)]
    assert count(desk, "identifications") == 0 and count(desk, "jobs") == 0


def test_the_same_order_granted_twice_gets_the_same_grant(desk):
    alice = joined(desk)
    order, order_signature, group_signature = anonymous(desk, alice, max_price=400)
    first = desk.desk.grant(order, order_signature, group_signature)
    resigned = to_hex(alice.sign(desk, order_message(order_digest(Order.from_dict(order), desk.domain))))
    assert desk.desk.grant(order, order_signature, group_signature) == first
    assert desk.desk.grant(order, order_signature, resigned) == first  # another signature of it: unlinkable, same
    assert desk.holds.project_figures("physics") == (400, 0)


def test_members_of_one_project_share_its_budget(desk):
    alice, bob = joined(desk, "alice"), joined(desk, "bob")
    desk.desk.grant(*anonymous(desk, alice, max_price=600))
    with pytest.raises(PaymentRequired, match="physics has 400 available, less than the 500"):
        desk.desk.grant(*anonymous(desk, bob, max_price=500))
    desk.desk.grant(*anonymous(desk, bob, max_price=400))
    assert desk.holds.project_figures("physics") == (1000, 0)


def test_a_second_order_from_the_same_account_is_refused(desk):
    alice = joined(desk)
    account = Account.create()
    desk.desk.grant(*anonymous(desk, alice, account=account))
    with pytest.raises(Conflict, match="an account is for one order only"):
        desk.desk.grant(*anonymous(desk, alice, account=account))
    assert desk.holds.project_figures("physics") == (100, 0)


def _tamper(signature: str, at: int) -> str:
    raw = bytearray.fromhex(signature[2:])
    raw[at] ^= 0x01
    return to_hex(bytes(raw))


def test_a_bad_group_signature_is_refused_and_nothing_is_held(desk):
    alice = joined(desk)
    order, order_signature, good = anonymous(desk, alice)
    digest = order_digest(Order.from_dict(order), desk.domain)
    other = to_hex(alice.sign(desk, order_message(keccak(b"another order"))))
    quote = to_hex(alice.sign(desk, quote_message(digest)))  # the same digest, signed as something else
    cases = [
        ("not hex", "the group signature is refused"),
        ("0x", "the group signature is refused: it is 1 to 4096 bytes, not 0"),
        ("0x" + "01" * 4097, "the group signature is refused: it is 1 to 4096 bytes, not 4097"),
        (good[:-2], "malformed group signature"),
        ("0x02" + good[4:], "malformed group signature: version 2"),
        (other, "the group signature does not verify for this message"),
        (quote, "the group signature does not verify for this message"),
        (_tamper(good, len(good) // 2 - 100), "the group signature does not verify for this message"),  # proof
        (_tamper(good, 150), "malformed group signature: C2"),  # the ciphertext: off the curve
        (_tamper(good, 9 + 96 + 96 + 31), "the group signature does not verify for this message"),  # r^
        ("0x01" + "ee" * 8 + good[20:], "unknown issuer key eeeeeeeeeeeeeeee of hpc-a"),
    ]
    for signature, words in cases:
        with pytest.raises(
            Invalid if "bytes, not" in words or signature == "not hex" else Unauthenticated, match=words
        ):
            desk.desk.grant(order, order_signature, signature)
    for bad_order, bad_signature, words in (
        (order | {"max_price": -1}, order_signature, "the order is malformed"),
        (order, "0x" + "00" * 65, "the order's signature is refused"),
    ):
        with pytest.raises(Invalid, match=words):
            desk.desk.grant(bad_order, bad_signature, good)
    assert desk.holds.outstanding() == 0 and count(desk, "holds") == 0
    desk.desk.grant(order, order_signature, good)  # the good one still goes through


def _credential(desk: Desk, sk: int, **change) -> GroupCredential:
    """A credential of hpc-a's issuer key over sk's T with fields the home would not give today."""
    fields = {"project": "physics", "home": HOME, "revocation_epoch": desk.epoch, "expires_at": credential_expiry(NOW)}
    fields |= change
    T = tracing_key(sk)
    return GroupCredential(
        key_id=issuer_key_id(desk.issuer.pk),
        signature=blind_sign(desk.issuer.sk, desk.issuer.pk, T, **fields),
        **fields,
    )


def test_a_credential_of_another_home_an_old_epoch_or_expired_is_refused(desk):
    sk = new_member_secret()
    order, order_signature, digest = signed_order(desk)
    week = issue_week(credential_expiry(NOW))
    cases = [
        ({"home": SERVING}, "the group signature is by a member of cloud-b, not of hpc-a"),
        (
            {"revocation_epoch": 99},
            rf"revocation epoch 99, and hpc-a's .* at the start of its issue week \({week}\) is {desk.epoch}",
        ),
        ({"revocation_epoch": desk.epoch + 1}, "no member of that week has a later one"),  # one member's own epoch
        ({"expires_at": NOW}, f"the group credential expired at {NOW} \\(now {NOW}\\)"),
        ({"expires_at": credential_expiry(NOW) - 3600}, "not on a week boundary"),  # one member's own expiry
        ({"expires_at": credential_expiry(NOW) + CREDENTIAL_PERIOD}, "later than any credential issued now"),
        ({"project": "biology"}, "project biology has no allocation at hpc-a any more"),
    ]
    for change, words in cases:
        credential = _credential(desk, sk, **change)
        signature = sign(credential, sk, desk.issuer.pk, desk.supervisors.key, order_message(digest))
        with pytest.raises(Forbidden, match=words):
            desk.desk.grant(order, order_signature, to_hex(signature))
    assert count(desk, "holds") == 0


def test_after_a_revocation_every_credential_of_the_older_epoch_is_refused(desk, chain_parts):
    """The chain's clock is years behind the desk's here: the revocation was made before the desk's week began, so
    every credential of the week must carry the epoch it produced."""
    chain, accounts, deployment, index, _ = chain_parts
    alice = joined(desk)
    before = desk.epoch
    registry = bind(chain, deployment).identity_registry.functions
    enrolment = keccak(b"someone revoked")
    chain.transact(registry.enrol(enrolment), accounts[HOME])
    chain.transact(registry.revoke(enrolment), accounts[HOME])
    index.sync()
    epoch = index.revocation_epoch(HOME)
    assert epoch == before + 1
    with pytest.raises(
        Forbidden, match=rf"revocation epoch {before}, and hpc-a's .* issue week .* is {epoch} \(it predates"
    ):
        desk.desk.grant(*anonymous(desk, alice))
    renewed = Membership(
        alice.sk, GroupCredential.from_dict(desk.desk.join(session("alice"), _rejoin(alice))["credential"]), {}
    )
    assert renewed.credential.revocation_epoch == epoch
    desk.desk.grant(*anonymous(desk, renewed))


def test_a_revocation_reaches_what_the_home_issues_at_the_next_weeks_turn(desk, chain_parts):
    """A home that revokes mid-week (an enrolment of its own, free, at any second) cannot give whoever joins next an
    epoch of their own: every credential of the week carries the epoch the week began with, and a desk refuses any
    other; the credentials of the next week carry the new one."""
    chain, accounts, deployment, index, _ = chain_parts
    registry = bind(chain, deployment).identity_registry.functions
    enrolment = keccak(b"revoked mid-week")
    chain.transact(registry.enrol(enrolment), accounts[HOME])
    chain.transact(registry.revoke(enrolment), accounts[HOME])
    index.sync()
    desk.clock[0] = index.chain_time  # just after the revocation, in its week
    week = issue_week(credential_expiry(desk.clock[0]))
    began, live = index.revocation_epoch_at(HOME, week), index.revocation_epoch(HOME)
    assert began < live
    alice = joined(desk)
    assert alice.credential.revocation_epoch == began
    desk.desk.grant(*anonymous(desk, alice, deadline=desk.clock[0] + 600))
    sk = new_member_secret()
    own = _credential(desk, sk, revocation_epoch=live, expires_at=credential_expiry(desk.clock[0]))
    order, order_signature, digest = signed_order(desk, deadline=desk.clock[0] + 600)
    signature = to_hex(sign(own, sk, desk.issuer.pk, desk.supervisors.key, order_message(digest)))
    with pytest.raises(Forbidden, match=f"revocation epoch {live}, .* is {began} \\(no member of that week"):
        desk.desk.grant(order, order_signature, signature)
    desk.clock[0] = week + CREDENTIAL_PERIOD  # the next week's turn
    renewed = Membership(
        alice.sk, GroupCredential.from_dict(desk.desk.join(session("alice"), _rejoin(alice))["credential"]), {}
    )
    assert renewed.credential.revocation_epoch == live
    desk.desk.grant(*anonymous(desk, renewed, deadline=desk.clock[0] + 600))


def test_a_home_that_holds_another_key_than_its_weeks_issues_no_group_credential(desk):
    """Group credentials of a week are all under the key the home had on chain when the week began: a home that
    rotated since (here: it holds a key never published) answers 503 until the next week, and stores nothing."""
    desk.desk._issuer = IssuerKey(*generate_issuer_key())
    sk = new_member_secret()
    turn = issue_week(credential_expiry(NOW)) + CREDENTIAL_PERIOD
    with pytest.raises(
        Unavailable,
        match=rf"issued under the key in force at the week's start \(key {issuer_key_id(desk.issuer.pk)}, and hpc-a "
        rf"now issues with key {issuer_key_id(desk.desk._issuer.pk)}\); join again after {turn} \(",
    ):
        desk.desk.join(session("alice"), join_request(sk, home=HOME, project="physics", member="alice").to_dict())
    assert GroupBook(desk.store).member(tracing_key(sk).to_compressed_bytes()) is None


def _rejoin(member: Membership) -> dict:
    return join_request(member.sk, home=HOME, project=member.credential.project, member="alice").to_dict()


def test_an_expired_credential_is_refused_and_a_renewed_one_granted(desk):
    alice = joined(desk)
    desk.clock[0] = alice.credential.expires_at
    order, order_signature, group_signature = anonymous(desk, alice, deadline=desk.clock[0] + 600)
    with pytest.raises(Forbidden, match="the group credential expired"):
        desk.desk.grant(order, order_signature, group_signature)
    renewed = Membership(
        alice.sk, GroupCredential.from_dict(desk.desk.join(session("alice"), _rejoin(alice))["credential"]), {}
    )
    desk.desk.grant(*anonymous(desk, renewed, deadline=desk.clock[0] + 600))


def test_a_burst_of_grant_requests_from_one_address_is_cut_off_before_any_verification(desk, monkeypatch):
    """The grant route takes no session and a group signature costs pairings to verify: past a burst from one network
    address it answers 429 with the wait before it verifies (or holds) anything; another address goes on."""
    import gateway.node.groups as groups

    verified = []
    real = groups.verify
    monkeypatch.setattr(groups, "verify", lambda *a, **k: verified.append(1) or real(*a, **k))
    desk.desk._limit = RateLimit(0.001, 2)
    alice = joined(desk)
    for _ in range(2):
        desk.desk.grant(*anonymous(desk, alice), client="192.0.2.1")
    with pytest.raises(TooManyRequests, match=r"from one network address.*nothing was verified") as caught:
        desk.desk.grant(*anonymous(desk, alice), client="192.0.2.1")
    assert caught.value.retry_after > 0 and len(verified) == 2
    assert desk.holds.project_figures("physics") == (200, 0)
    desk.desk.grant(*anonymous(desk, alice), client="192.0.2.2")
    assert len(verified) == 3


def test_no_anonymous_grant_without_the_supervisors_key(desk):
    alice = joined(desk)
    fields = anonymous(desk, alice)
    desk.supervisors.key = None
    desk.desk._supervision_key = desk.supervisors.reader().get  # a gateway started before the key was generated
    with pytest.raises(Unavailable, match="the supervisors have not generated their key yet"):
        desk.desk.grant(*fields)
    assert count(desk, "holds") == 0


# -- identification -------------------------------------------------------------------------


def test_an_opened_signature_is_mapped_to_its_member_and_queued_for_the_chain(desk):
    alice, bob = joined(desk, "alice"), joined(desk, "bob")
    order, order_signature, group_signature = anonymous(desk, bob)
    desk.desk.grant(order, order_signature, group_signature)
    desk.supervisors.open(5, bytes.fromhex(group_signature[2:]))
    answer = desk.desk.identify(5)
    enrolment = to_hex(desk.signon.enrolment_id("bob"))
    assert answer == {"opening": 5, "uid": "bob", "enrolment": enrolment, "project": "physics"}
    kept = GroupBook(desk.store).identification(5)
    assert (kept.uid, kept.tracing_key) == ("bob", tracing_key(bob.sk).to_compressed_bytes())
    item = desk.outbox.item_by_key("identify:5")
    assert (item.kind, item.payload) == ("identify", {"opening": 5, "enrolment": enrolment})
    assert desk.desk.identify(5) == answer  # again: the same, queued once
    assert count(desk, "identifications") == 1 and alice.credential.project == "physics"


def test_asking_again_after_the_chain_refused_an_identification_sends_it_again(desk):
    """A revert is final for the write that met it; the operator asking again is a new decision (as a
    revocation's): the same write is queued again, not left failed behind the same answer."""
    bob = joined(desk, "bob")
    desk.supervisors.open(6, bob.sign(desk, order_message(keccak(b"an order"))))
    answers = iter([ChainRevert("NotHome", (6,)), "0x" + "ab" * 32])  # the chain write's double: refused, then taken

    def send(payload: dict) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    desk.outbox.register("identify", send)
    answer = desk.desk.identify(6)
    desk.outbox.drain()
    item = desk.outbox.item_by_key("identify:6")
    assert (item.status, item.last_error) == (FAILED, "NotHome")
    assert desk.desk.identify(6) == answer  # the same identification, its write queued again
    assert desk.outbox.item(item.id).status == PENDING
    desk.outbox.drain()
    assert desk.outbox.item(item.id).status == DONE
    assert desk.desk.identify(6) == answer and desk.outbox.item(item.id).status == DONE  # done stays done


def test_identify_refuses_an_unopened_opening_another_homes_and_an_unknown_key(desk):
    alice = joined(desk)
    signature = alice.sign(desk, order_message(keccak(b"an order")))
    desk.supervisors.openings[1] = OpeningFacts(home=HOME, opened=False, tracing_key=None)
    desk.supervisors.open(2, signature, home=SERVING)
    stranger = sign(_credential(desk, sk := new_member_secret()), sk, desk.issuer.pk, desk.supervisors.key, b"x" * 32)
    desk.supervisors.open(3, stranger)  # a credential the home signed, for a key nobody registered
    cases = [
        (1, Conflict, "opening 1 is not opened yet"),
        (2, Forbidden, "opening 2 is of a signature by a member of another home"),
        (3, NotFound, "no member of hpc-a has this tracing key"),
        (4, NotFound, "there is no opening 4 on chain"),
    ]
    for opening, error, words in cases:
        with pytest.raises(error, match=words):
            desk.desk.identify(opening)
    desk.desk._openings = None
    with pytest.raises(Unavailable, match="this consortium has no supervision contract"):
        desk.desk.identify(2)
    assert count(desk, "identifications") == 0 and desk.outbox.item_by_key("identify:2") is None


def test_an_opening_with_fewer_shares_than_the_threshold_reveals_nobody(desk):
    alice = joined(desk)
    signature = alice.sign(desk, order_message(keccak(b"an order")))
    desk.supervisors.open(9, signature, by=(2,))  # one share of a 2-of-3 key: not T
    with pytest.raises(NotFound, match="no member of hpc-a has this tracing key"):
        desk.desk.identify(9)
    desk.supervisors.open(9, signature, by=(2, 3))
    assert desk.desk.identify(9)["uid"] == "alice"
