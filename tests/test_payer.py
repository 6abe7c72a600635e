"""The payer home's grant desk: grants held against projects' allocations, and how holds end.

The desk runs on real parts: a real slapd for the users' groups (the projects), a
consortium deployed on the embedded chain and read through a real EventIndex (members,
rates), a real gateway store. Sessions are Claims as the node's authenticate() returns
them; the module's last tests sign on with a password over HTTP at a real gateway
(anvil, slapd) and ask for grants and balances there. The home's free collateral is
a fixed figure in the desk's own tests (the CollateralSource interface), so each test
chooses it; at the real gateway it comes from the index.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from auth.directory import Directory
from auth.tokens import PRESENTED, Claims
from gateway.node.errors import Conflict, Forbidden, Invalid, NotFound, PaymentRequired, Unauthenticated
from gateway.node.payer import Payer
from gateway.store import Store
from gateway.store.holds import HoldBook, HoldStateError, UnknownHold
from ledger.ids import centre_id
from ledger.index import EventIndex
from ledger.payment import MAX_DEADLINE_AHEAD, Grant, Order, grant_digest, order_digest, recover, sign_typed
from ledger.primitives.hex import to_hex
from ledger.records import UsageRecord, domain_for, record_digest
from tests.fixtures.consortium import PASSWORDS, start_consortium
from tests.fixtures.members import embedded_members

HOME = "hpc-a"
SERVING = "cloud-b"
NOW = 1_900_000_000
ALLOCATIONS = {"physics": 1_000, "ml-project": 500, "empty": 0}
USERS = [
    {"uid": "alice", "password": "alice-pw", "cn": "Alice", "employeeType": "staff"},
    {"uid": "bob", "password": "bob-pw", "cn": "Bob", "employeeType": "staff"},
    {"uid": "carol", "password": "carol-pw", "cn": "Carol", "employeeType": "staff"},
    {"uid": "dave", "password": "dave-pw", "cn": "Dave", "employeeType": "staff"},
]
GROUPS = [
    {"cn": "physics", "members": ["alice", "bob"]},
    {"cn": "ml-project", "members": ["alice"]},
    {"cn": "biology", "members": ["dave"]},  # a group with no allocation: no project
]


@dataclass
class FixedCollateral:
    """The home's free collateral, as the test sets it (a CollateralSource)."""

    free: int = 10**12

    def collateral(self) -> int:
        return self.free


@pytest.fixture(scope="module")
def directory(slapd_factory) -> Directory:
    server = slapd_factory(users=USERS, groups=GROUPS, service_password="svc-pw")
    return Directory(server.url, server.base_dn, server.service_dn, server.service_password, centre=HOME)


@pytest.fixture(scope="module")
def consortium_chain(tmp_path_factory):
    """Two members on the embedded chain, read through a real index."""
    chain, accounts, deployment = embedded_members((HOME, SERVING), 9100)
    index = EventIndex(tmp_path_factory.mktemp("index") / "index.db", chain, deployment)
    index.sync()
    return accounts, deployment, index


@dataclass
class Desk:
    payer: Payer
    store: Store
    collateral: FixedCollateral
    home_account: object
    domain: object


@pytest.fixture
def desk(tmp_path: Path, directory, consortium_chain) -> Desk:
    accounts, deployment, index = consortium_chain
    store = Store(tmp_path / "gateway.db")
    collateral = FixedCollateral()
    payer = Payer(
        name=HOME,
        account=accounts[HOME],
        domain=domain_for(deployment),
        index=index,
        directory=directory,
        book=HoldBook(store),
        allocations=ALLOCATIONS,
        collateral=collateral,
        clock=lambda: NOW,
    )
    yield Desk(payer, store, collateral, accounts[HOME], domain_for(deployment))
    store.close()


def session(uid: str, **change) -> Claims:
    """A password session at home, as CentreNode.authenticate returns it."""
    fields = {"iss": HOME, "aud": HOME, "sub": f"{uid}@{HOME}", "home": HOME} | change
    return Claims(**fields)


def signed_order(desk: Desk, max_price: int = 100, account=None, **change) -> tuple[dict, str, object]:
    """An order over a job request, signed by a fresh payment account (or the one given)."""
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
    return order.to_dict(), to_hex(sign_typed(order, desk.domain, account.key)), account


def figures(desk: Desk, project: str = "physics") -> dict:
    return desk.payer.balance(session("alice"), project)["project"]


# -- a grant ---------------------------------------------------------------------------


def test_a_grant_is_signed_by_the_homes_member_account_over_the_order(desk):
    order, signature, account = signed_order(desk, max_price=300)
    answer = desk.payer.grant(session("bob"), order, signature)
    grant = Grant.from_dict(answer["grant"])
    parsed = Order.from_dict(order)
    assert recover(grant, desk.domain, bytes.fromhex(answer["grant_signature"][2:])) == desk.home_account.address
    assert grant.order == order_digest(parsed, desk.domain) and answer["order"] == to_hex(grant.order)
    assert grant.account == account.address and grant.home == centre_id(HOME) and grant.centre == centre_id(SERVING)
    assert (grant.amount, grant.deadline) == (300, parsed.deadline) and answer["project"] == "physics"
    hold = desk.payer.book.hold(grant_digest(grant, desk.domain))
    assert (hold.status, hold.amount, hold.principal, hold.centre) == ("held", 300, "bob@hpc-a", SERVING)
    assert figures(desk) == {"name": "physics", "allocation": 1000, "held": 300, "spent": 0, "available": 700}


def test_the_hold_is_committed_before_the_grant_is_returned(desk, tmp_path):
    order, signature, _ = signed_order(desk)
    answer = desk.payer.grant(session("bob"), order, signature)
    with Store(tmp_path / "gateway.db") as reopened:  # another connection: only committed rows show
        hold = HoldBook(reopened).hold_for_order(answer["order"])
    assert hold is not None and hold.status == "held" and "0x" + hold.grant_signature == answer["grant_signature"]


def test_the_same_order_again_gets_the_same_grant_and_holds_once(desk):
    order, signature, _ = signed_order(desk, max_price=400)
    first = desk.payer.grant(session("bob"), order, signature)
    desk.collateral.free = 0  # whatever changed since, a retry is the grant already given
    assert desk.payer.grant(session("bob"), order, signature) == first
    assert figures(desk)["held"] == 400


def test_a_second_order_from_the_same_account_is_refused(desk):
    order, signature, account = signed_order(desk)
    desk.payer.grant(session("bob"), order, signature)
    again, again_signature, _ = signed_order(desk, account=account)
    with pytest.raises(Conflict, match=r"already paid for order .*an account is for one order only"):
        desk.payer.grant(session("bob"), again, again_signature)
    assert figures(desk)["held"] == 100


def test_an_order_granted_to_one_user_is_refused_to_another(desk):
    order, signature, _ = signed_order(desk)
    desk.payer.grant(session("bob"), order, signature)
    with pytest.raises(Conflict, match="granted before, to another user"):
        desk.payer.grant(session("alice"), order, signature, "physics")
    assert len(desk.payer.book.holds_of("alice@hpc-a")) == 0


# -- refusals ------------------------------------------------------------------------


def test_over_the_allocation_is_402_with_the_figures_and_holds_nothing(desk):
    desk.payer.grant(session("bob"), *signed_order(desk, max_price=900)[:2])
    with pytest.raises(PaymentRequired, match="physics has 100 available, less than the 101") as refused:
        desk.payer.grant(session("bob"), *signed_order(desk, max_price=101)[:2])
    assert refused.value.reasons == ["allocation: 1000", "held: 900", "spent: 0", "available: 100", "asked: 101"]
    desk.payer.grant(session("bob"), *signed_order(desk, max_price=100)[:2])  # exactly what is left
    assert figures(desk)["available"] == 0


def test_a_home_whose_collateral_is_committed_grants_nothing(desk):
    desk.collateral.free = 250
    desk.payer.grant(session("bob"), *signed_order(desk, max_price=200)[:2])
    with pytest.raises(PaymentRequired, match="the home's collateral is committed") as refused:
        desk.payer.grant(session("alice"), *signed_order(desk, max_price=100)[:2], "ml-project")
    assert refused.value.reasons == ["collateral: 250", "outstanding: 200", "asked: 100"]
    assert figures(desk, "ml-project")["held"] == 0


@pytest.mark.parametrize(
    "change",
    [
        {"amr": [PRESENTED], "sub": "0123456789abcdef@hpc-a"},  # a presentation: pseudonymous
        {"iss": SERVING, "aud": HOME},  # minted by another centre
        {"home": SERVING, "sub": "carol@cloud-b"},  # another home's user
        {"aud": SERVING},  # a token exchanged for another centre
    ],
)
def test_only_a_password_session_at_home_gets_a_grant(desk, change):
    with pytest.raises(Forbidden, match="password sign-on at your home centre"):
        desk.payer.grant(session("bob", **change), *signed_order(desk)[:2])
    with pytest.raises(Forbidden, match="password sign-on at your home centre"):
        desk.payer.balance(session("bob", **change))
    assert desk.payer.book.outstanding() == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"centre": centre_id("nowhere")}, "which is not an active member centre"),
        ({"rates_version": 7}, "rates version 7 of cloud-b, which cloud-b has not published"),
        ({"deadline": NOW}, f"deadline {NOW} has passed"),
        ({"deadline": NOW - 5}, "has passed"),
        ({"deadline": NOW + MAX_DEADLINE_AHEAD + 1}, "is more than 7 days out"),
    ],
)
def test_an_order_the_home_cannot_grant_is_refused_by_name(desk, change, words):
    with pytest.raises(Invalid, match=words):
        desk.payer.grant(session("bob"), *signed_order(desk, **change)[:2])
    assert desk.payer.book.outstanding() == 0


def test_an_order_at_the_furthest_deadline_is_granted(desk):
    desk.payer.grant(session("bob"), *signed_order(desk, deadline=NOW + MAX_DEADLINE_AHEAD)[:2])


@pytest.mark.parametrize(
    ("order_change", "signature", "words"),
    [
        ({}, "0x" + "00" * 65, "signature is refused"),
        ({}, "0x1234", "signature is refused"),
        ({}, "not hex", "signature is refused"),
        ({"max_price": -1}, None, "the order is malformed"),
        ({"nonce": "1"}, None, "the order is malformed"),
        ({"extra": 1}, None, "the order is malformed"),
    ],
)
def test_a_malformed_order_or_signature_is_refused(desk, order_change, signature, words):
    order, good, _ = signed_order(desk)
    with pytest.raises(Invalid, match=words):
        desk.payer.grant(session("bob"), order | order_change, signature or good)
    assert desk.payer.book.outstanding() == 0


def test_a_high_s_twin_of_a_signature_is_refused(desk):
    order, signature, _ = signed_order(desk)
    raw = bytes.fromhex(signature[2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = raw[:32] + (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big") + bytes([55 - raw[64]])
    with pytest.raises(Invalid, match="high s"):
        desk.payer.grant(session("bob"), order, to_hex(twin))


# -- projects ------------------------------------------------------------------------


def test_the_project_is_one_of_the_users_groups_with_an_allocation(desk):
    alice = session("alice")
    with pytest.raises(Invalid, match=r"several projects \(ml-project, physics\): name the one to charge"):
        desk.payer.grant(alice, *signed_order(desk)[:2])
    answer = desk.payer.grant(alice, *signed_order(desk, max_price=50)[:2], "ML-Project")  # cns ignore case
    assert answer["project"] == "ml-project" and figures(desk, "ml-project")["held"] == 50
    with pytest.raises(Forbidden, match=r"'biology' is not one of your projects at hpc-a \(yours: ml-project, physics"):
        desk.payer.grant(alice, *signed_order(desk)[:2], "biology")
    for uid in ("carol", "dave"):  # no group; a group with no allocation
        with pytest.raises(Forbidden, match=f"{uid}@hpc-a belongs to no project with an allocation at hpc-a"):
            desk.payer.grant(session(uid), *signed_order(desk)[:2])
    assert desk.payer.book.outstanding() == 50


def test_a_project_allocated_nothing_grants_nothing(desk, directory):
    desk.payer._allocations = {"physics": 0}
    with pytest.raises(PaymentRequired, match="physics has 0 available"):
        desk.payer.grant(session("bob"), *signed_order(desk, max_price=1)[:2])
    desk.payer.grant(session("bob"), *signed_order(desk, max_price=0)[:2])  # a free job holds nothing


def test_two_grants_racing_for_the_last_of_an_allocation_one_wins(desk):
    desk.payer.grant(session("bob"), *signed_order(desk, max_price=400)[:2])
    orders = [signed_order(desk, max_price=600)[:2] for _ in range(8)]
    start = threading.Barrier(len(orders))
    won: list[dict] = []
    refused: list[Exception] = []

    def ask(order: dict, signature: str) -> None:
        start.wait()
        try:
            won.append(desk.payer.grant(session("bob"), order, signature))
        except PaymentRequired as exc:
            refused.append(exc)

    threads = [threading.Thread(target=ask, args=o) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert figures(desk) == {"name": "physics", "allocation": 1000, "held": 1000, "spent": 0, "available": 0}


# -- how a hold ends ---------------------------------------------------------------


def granted(desk: Desk, uid: str = "bob", max_price: int = 100, **change) -> bytes:
    answer = desk.payer.grant(session(uid), *signed_order(desk, max_price=max_price, **change)[:2])
    return grant_digest(Grant.from_dict(answer["grant"]), desk.domain)


def test_a_settled_record_spends_its_price_and_releases_the_rest(desk):
    one, two = granted(desk, max_price=300), granted(desk, max_price=200)
    outcome = desk.payer.settle_holds([(one, 120), (keccak(b"not ours"), 5)])
    assert outcome.paid == [one.hex()] and outcome.unknown == [keccak(b"not ours").hex()]
    assert figures(desk) == {"name": "physics", "allocation": 1000, "held": 200, "spent": 120, "available": 680}
    again = desk.payer.settle_holds([(one, 120), (one, 121), (two, 201)])  # a retry; a second price; above the hold
    assert again.already == [one.hex()] and again.refused == [one.hex(), two.hex()] and again.paid == []
    assert desk.payer.book.hold(one).price == 120 and desk.payer.book.hold(two).status == "held"
    user = desk.payer.balance(session("bob"))
    assert user["user"] == {"principal": "bob@hpc-a", "held": 200, "spent": 120}
    assert [(h["status"], h["price"]) for h in user["holds"]] == [("held", None), ("paid", 120)]


def test_a_voided_claims_hold_is_refunded_and_a_paid_one_cannot_be(desk):
    one, two = granted(desk, max_price=300), granted(desk, max_price=200)
    assert desk.payer.refund(one).status == "refunded"
    assert desk.payer.refund(one).status == "refunded"  # again: nothing changes
    desk.payer.settle_holds([(two, 200)])
    with pytest.raises(HoldStateError, match="is paid"):
        desk.payer.refund(two)
    with pytest.raises(UnknownHold):
        desk.payer.refund(keccak(b"never granted"))
    assert figures(desk) == {"name": "physics", "allocation": 1000, "held": 0, "spent": 200, "available": 800}


def test_holds_no_record_can_claim_any_more_expire(desk):
    soon, later = granted(desk, deadline=NOW + 60), granted(desk, deadline=NOW + 3600)
    assert desk.payer.expire(NOW + 60 + 100, booking_delay=100) == []  # not after deadline + delay yet
    expired = desk.payer.expire(NOW + 60 + 101, booking_delay=100)
    assert [h.grant_digest for h in expired] == [soon.hex()] and expired[0].status == "refunded"
    assert desk.payer.book.hold(later).status == "held" and figures(desk)["held"] == 100
    # a claim anchored in time and settled later pays it after all: the book follows the chain
    assert desk.payer.settle_holds([(soon, 40)]).paid == [soon.hex()]
    assert figures(desk) == {"name": "physics", "allocation": 1000, "held": 100, "spent": 40, "available": 860}


# -- complaints and keys ----------------------------------------------------------


def record_for(desk: Desk, grant: bytes, /, **change) -> dict:
    hold = desk.payer.book.hold(grant)
    fields = {
        "record_id": keccak(b"r" + grant),
        "job_id": keccak(b"j" + grant),
        "serving_centre": centre_id(SERVING),
        "home_centre": centre_id(HOME),
        "user": keccak(b"someone"),
        "epoch": 1,
        "started_at": NOW,
        "ended_at": NOW + 10,
        "cpu_millis": 1,
        "wall_millis": 1,
        "max_rss_kib": 1,
        "gpu_millis": 0,
        "rates_version": 1,
        "price": 10,
        "order": bytes.fromhex(hold.order_digest),
        "grant": grant,
        "lock_hash": keccak(b"k"),
        "decision": keccak(b"d" + grant),
    } | change
    return UsageRecord(**fields).to_dict()


def test_a_user_complains_once_about_a_record_of_their_grant(desk):
    grant = granted(desk)
    record = record_for(desk, grant)
    view = desk.payer.complain(session("bob"), record)
    digest = record_digest(UsageRecord.from_dict(record), desk.domain)
    assert view == {"record": to_hex(digest), "grant": to_hex(grant), "status": "open"}
    assert desk.payer.complain(session("bob"), record) == view
    assert [c.record_digest for c in desk.payer.book.complaints("open")] == [digest.hex()]
    desk.payer.book.mark_disputed(digest)
    assert (
        desk.payer.book.complaints("open") == [] and desk.payer.complain(session("bob"), record)["status"] == "disputed"
    )


def test_a_user_complains_once_per_grant_whatever_records_they_make_up(desk):
    """A record is the user's own word here (no signature is checked): one complaint per grant, or a user could
    store made-up records for their grant without end (and have the watcher look each one up every round)."""
    grant = granted(desk)
    first = desk.payer.complain(session("bob"), record_for(desk, grant))
    for n in range(3):
        with pytest.raises(Conflict, match=r"complained about grant 0x\w+ already"):
            desk.payer.complain(session("bob"), record_for(desk, grant, record_id=keccak(b"made up %d" % n)))
    assert [c.record_digest for c in desk.payer.book.complaints()] == [first["record"][2:]]
    assert desk.payer.complain(session("bob"), record_for(desk, grant)) == first  # the same one again: as before


def test_a_complaint_about_a_record_not_of_the_users_grants_is_refused(desk):
    grant = granted(desk)
    with pytest.raises(NotFound, match="granted no order of yours"):
        desk.payer.complain(session("alice"), record_for(desk, grant))
    with pytest.raises(NotFound, match="granted no order of yours"):
        desk.payer.complain(session("bob"), record_for(desk, grant, grant=keccak(b"other")))
    with pytest.raises(Invalid, match=r"bills .*, not hpc-a"):
        desk.payer.complain(session("bob"), record_for(desk, grant, home_centre=centre_id(SERVING)))
    with pytest.raises(Invalid, match="another order than the one its grant was for"):
        desk.payer.complain(session("bob"), record_for(desk, grant, order=keccak(b"other")))
    with pytest.raises(Invalid, match="the record is malformed"):
        desk.payer.complain(session("bob"), {"price": 1})
    assert desk.payer.book.complaints() == []


def anonymously_granted(desk: Desk, account) -> bytes:
    """An order of `account` granted as GroupDesk.grant does once a group signature checked: unnamed."""
    order, signature, _ = signed_order(desk, account=account)
    answer = desk.payer.hold_and_sign("anonymous:physics", order, signature, lambda: ("physics", 1_000))
    return grant_digest(Grant.from_dict(answer["grant"]), desk.domain)


def signed_complaint(desk: Desk, record: dict, account, at: int = NOW) -> tuple[dict, int, str]:
    digest = to_hex(record_digest(UsageRecord.from_dict(record), desk.domain))
    signed = account.sign_message(encode_defunct(text=f"xcentre complain {HOME} {digest} {at}"))
    return record, at, "0x" + bytes(signed.signature).hex()


def test_an_anonymous_orders_account_complains_for_its_record_only(desk):
    """No session: the order's account signs, within 120 s of the home's clock, for a record of its own
    anonymous hold; the complaint is the hold's (`anonymous:physics`), and the same one again is as before."""
    account = Account.create()
    grant = anonymously_granted(desk, account)
    record = record_for(desk, grant)
    for at in (NOW - 121, NOW + 121):
        with pytest.raises(Unauthenticated, match="sign again"):
            desk.payer.complain_anonymously(*signed_complaint(desk, record, account, at))
    with pytest.raises(Forbidden, match="not by the account that signed"):
        desk.payer.complain_anonymously(*signed_complaint(desk, record, Account.create()))
    with pytest.raises(Unauthenticated, match="not a valid signature"):
        desk.payer.complain_anonymously(record, NOW, "0x" + "00" * 65)
    with pytest.raises(NotFound, match="granted no order under grant"):
        desk.payer.complain_anonymously(*signed_complaint(desk, record_for(desk, grant, grant=keccak(b"x")), account))
    with pytest.raises(Invalid, match="another order"):
        desk.payer.complain_anonymously(*signed_complaint(desk, record_for(desk, grant, order=keccak(b"x")), account))
    with pytest.raises(Invalid, match="the record is malformed"):
        desk.payer.complain_anonymously({"price": 1}, NOW, signed_complaint(desk, record, account)[2])
    assert desk.payer.book.complaints() == []
    view = desk.payer.complain_anonymously(*signed_complaint(desk, record, account, NOW - 120))
    assert view["status"] == "open"
    assert desk.payer.complain_anonymously(*signed_complaint(desk, record, account)) == view  # the same again
    assert [c.principal for c in desk.payer.book.complaints()] == ["anonymous:physics"]


def test_a_signed_on_users_order_account_cannot_complain_without_them(desk):
    account = Account.create()
    answer = desk.payer.grant(session("bob"), *signed_order(desk, account=account)[:2])
    record = record_for(desk, grant_digest(Grant.from_dict(answer["grant"]), desk.domain))
    with pytest.raises(Forbidden, match="signed-on user's order"):
        desk.payer.complain_anonymously(*signed_complaint(desk, record, account))
    assert desk.payer.book.complaints() == []


class RevealingIndex:
    """The real index, plus keys revealed on chain (a double for what a dispute's answer would bring)."""

    def __init__(self, index, revealed: dict[bytes, bytes]) -> None:
        self._index, self._revealed = index, revealed

    def revealed_key(self, lock_hash: bytes) -> bytes | None:
        return self._revealed.get(lock_hash)

    def __getattr__(self, name):
        return getattr(self._index, name)


def test_a_key_revealed_on_chain_is_found_by_its_lock_hash(desk):
    with pytest.raises(NotFound, match="was revealed on chain"):
        desk.payer.revealed_key(to_hex(keccak(b"k" * 32)))  # the real index: nothing revealed
    k = secrets.token_bytes(32)
    desk.payer._index = RevealingIndex(desk.payer._index, {keccak(k): k, keccak(b"x" * 32): b"y" * 32})
    assert desk.payer.revealed_key(to_hex(keccak(k))) == {"lock_hash": to_hex(keccak(k)), "key": to_hex(k)}
    with pytest.raises(NotFound):  # a key that does not open its lock is none
        desk.payer.revealed_key(to_hex(keccak(b"x" * 32)))


# -- over HTTP, at a real gateway --------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("payer"))
    running.stop_centre(HOME)
    running.start_centre(HOME, allocations={"physics": 1_000_000_000})
    yield running
    running.stop()


def http_order(running, max_price: int, **extra) -> dict:
    """A grant request's body: an order signed by a fresh account (cloud-b's rates version 1, ten minutes)."""
    domain = domain_for(running.deployment)
    order = Order(
        request=keccak(text="a job"),
        centre=centre_id(SERVING),
        rates_version=1,
        max_price=max_price,
        deadline=int(running.centres[HOME].node.parts.index.now()) + 600,
        nonce=secrets.randbits(256),
    )
    return {"order": order.to_dict(), "order_signature": to_hex(sign_typed(order, domain, Account.create().key))}


def test_a_user_signed_on_at_home_gets_a_grant_and_sees_the_balance(gateway):
    with httpx.Client(base_url=gateway.url(HOME)) as http:
        token = http.post("/v1/login", json={"username": "alice", "password": PASSWORDS["alice"]}).json()["token"]
        body = http_order(gateway, 250_000, project="physics")
        assert http.post("/v1/grants", json=body).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        answer = http.post("/v1/grants", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        grant = Grant.from_dict(answer.json()["grant"])
        signer = recover(grant, domain_for(gateway.deployment), bytes.fromhex(answer.json()["grant_signature"][2:]))
        assert signer == gateway.centres[HOME].account.address
        assert http.post("/v1/grants", json=body, headers=headers).json() == answer.json()  # idempotent
        balance = http.get("/v1/balance", headers=headers).json()
        assert balance["project"] == {
            "name": "physics",
            "allocation": 1_000_000_000,
            "held": 250_000,
            "spent": 0,
            "available": 999_750_000,
        }
        assert [(h["status"], h["amount"]) for h in balance["holds"]] == [("held", 250_000)]
        over = http.post("/v1/grants", json=http_order(gateway, 10**9), headers=headers)
        assert over.status_code == 402 and "available: 999750000" in over.json()["reasons"], over.text
        missing = http.get("/v1/keys/0x" + "ab" * 32)
        assert missing.status_code == 404 and "revealed on chain" in missing.json()["error"]


def test_a_token_exchanged_for_another_centre_gets_no_grant_anywhere(gateway):
    headers = {"Authorization": f"Bearer {gateway.login('alice', HOME, at=SERVING)}"}
    with httpx.Client(base_url=gateway.url(HOME)) as at_home:
        assert at_home.post("/v1/grants", json=http_order(gateway, 1), headers=headers).status_code == 401
    with httpx.Client(base_url=gateway.url(SERVING)) as elsewhere:
        there = elsewhere.post("/v1/grants", json=http_order(gateway, 1), headers=headers)
    assert there.status_code == 403 and "password sign-on at your home centre" in there.json()["error"]
