"""Attacks by a hostile member centre on anonymous transactions under supervision (issue 10).

The trust model under attack: "anonymity opens only with t of n, on the record; the issuer cannot frame; no
member acts for another's users". Each test plays one hostile member (a home, a serving centre, a requester)
against the real parts: the Supervision contract on the embedded chain with a real key generation, the
supervisor's client (gateway.client.supervising), the serving centre's check (gateway.node.anonymous) and the
`xcentre` command line on the session's consortium. What the hostile member runs is its own code: a hostile
gateway here is a small HTTP server answering as that member chooses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_utils import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import to_scalar
from auth.credentials import generate_issuer_key
from auth.group import ciphertext, combine, decryption_share, dkg, g1_from_raw, g1_raw, random_scalar, signature_hash
from auth.group.credential import tracing_key
from auth.group.opening import Share
from auth.group.signature import C1_AT, R_HAT_AT
from gateway.client.supervising import SupervisionUnusable, SupervisorState, share
from gateway.client.wallet import Wallet
from gateway.node import groups as home_groups
from gateway.node.errors import Forbidden
from gateway.node.signon import IssuerKey
from ledger.primitives.hex import to_hex
from tests.fixtures.consortium import PASSWORDS
from tests.test_anonymous import NOW, WEEK, Index, desk, issuer, member, signed_order
from tests.test_cli import run_cli
from tests.test_contracts import advance
from tests.test_supervision_contract import (
    OTHER,
    SUPERVISORS,
    T3,
    WINDOW,
    Run,
    World,
    deal,
    group_signature,
    make_world,
    start,
)

# -- the committee: five supervisors, t = 3, an honest key generation on the embedded chain ---------------------


@pytest.fixture(scope="module")
def world() -> World:
    return make_world("embedded")


@pytest.fixture(scope="module")
def keyed(world: World) -> Run:
    run = start(world, world.fresh())
    for i in range(1, 6):
        deal(world, run, i)
    for i in range(1, 6):
        run.sup.acknowledge(world.sup(i))
    run.sup.finalize(world.sup(1))
    return run


@pytest.fixture(scope="module")
def secrets(keyed: Run) -> list[int]:
    """x_1..x_5, as each supervisor decrypted and checked them."""
    return [keyed.secret_share(j, [1, 2, 3, 4, 5]) for j in range(1, 6)]


# -- a hostile member's gateway ---------------------------------------------------------------------------------


class HostileGateway:
    """A member's gateway that serves, for GET /v1/anonymous/signatures/{hash}, whatever its operator put there."""

    def __init__(self) -> None:
        self.served: dict[str, dict] = {}
        served = self.served

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                wanted = self.path.rsplit("/", 1)[-1]
                body = served.get(wanted)
                data = json.dumps(body if body is not None else {"error": "no such signature"}).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, signature: bytes, record: bytes) -> None:
        self.served[to_hex(signature_hash(signature))] = {
            "group_signature": to_hex(signature),
            "record": to_hex(record),
        }


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileGateway]:
    gateway = HostileGateway()
    yield gateway
    gateway.server.shutdown()


def supervisor_state(tmp_path: Path, world: World, keyed: Run, secrets: list[int], j: int) -> Path:
    """Supervisor j's state file as its key generation left it (x_j checked on chain by `share`)."""
    path = tmp_path / f"sup-{j}.json"
    SupervisorState(keyed.sup.address, world.chain.chain_id, j, keyed.keys[j - 1].e, secret_share=secrets[j - 1]).save(
        path
    )
    return path


def honest_shares(tmp_path, world, keyed, secrets, opening: int, serving: str, gateway: str) -> list[object]:
    """Supervisors 1..3 (the threshold) each run `share` as the CLI does; what each did, or its refusal."""
    outcomes: list[object] = []
    for j in (1, 2, 3):
        try:
            outcomes.append(
                share(
                    keyed.sup,
                    world.deployment,
                    world.sup(j),
                    SUPERVISORS[j - 1],
                    supervisor_state(tmp_path, world, keyed, secrets, j),
                    opening,
                    serving=serving,
                    gateway=gateway,
                )
            )
        except SupervisionUnusable as exc:
            outcomes.append(exc)
    return outcomes


# -- framing through an opening: supervisors share for what a gateway serves, unverified -------------------------


def test_a_home_cannot_get_a_ciphertext_of_its_members_key_opened_as_a_transaction_of_theirs(
    tmp_path, world, keyed, secrets, hostile
):
    """The home knows each member's T from their join. It encrypts a victim's T under the supervisors' key itself,
    puts that ciphertext into a signature-shaped blob (its own credential's proof bytes, never checked), serves it
    from its gateway as the signature of an abused job's record and asks for the opening. Honest supervisors must
    not share: the blob is no group signature over that record's order, and the record names another signature."""
    sup, home = keyed.sup, OTHER
    victim_T = tracing_key(random_scalar())  # what the home recorded at the victim's join
    Y = sup.public_key()
    own = group_signature(Y, home=home).signature  # a real signature by a credential the home issued itself
    r = random_scalar()
    c1, c2 = G1Point() * to_scalar(r), victim_T + Y * to_scalar(r)
    blob = own[:C1_AT] + g1_raw(c1) + g1_raw(c2) + own[R_HAT_AT:]
    abused_record = keccak(b"the record of someone else's abused job")
    hostile.serve(blob, abused_record)
    opening = sup.request_opening(world.accounts[home], blob, home, abused_record, "abuse report 42")

    outcomes = honest_shares(tmp_path, world, keyed, secrets, opening, home, hostile.url)

    framed = sup.opening(opening)
    assert framed.tracing_key != victim_T, f"the home framed its member: opening {opening} opened to their T"
    assert all(isinstance(o, SupervisionUnusable) for o in outcomes), outcomes


def test_a_serving_centre_cannot_get_another_jobs_signer_opened_for_a_record(tmp_path, world, keyed, secrets, hostile):
    """A hostile serving centre ran two anonymous jobs, by members A and B. Asked about A's abused job, it serves
    B's (valid) signature as that record's and requests the opening with A's record: B would be opened, on the
    record, for what A did. A supervisor must check the signature against the record (its groupSignature hash and
    its order), not against what the serving centre says the record is."""
    sup, serving = keyed.sup, OTHER
    Y = sup.public_key()
    b = group_signature(Y)  # B's signature over B's order, at `serving`
    record_of_a = keccak(b"A's record: its order, its groupSignature = hash of A's signature")
    hostile.serve(b.signature, record_of_a)
    opening = sup.request_opening(world.accounts[serving], b.signature, b.home, record_of_a, "A's job mined coins")

    outcomes = honest_shares(tmp_path, world, keyed, secrets, opening, serving, hostile.url)

    o = sup.opening(opening)
    assert not (o.opened and o.tracing_key == b.T), "B was opened for A's transaction"
    assert all(isinstance(x, SupervisionUnusable) for x in outcomes), outcomes


# -- opening without an opening: shares of one ciphertext given to two openings ----------------------------------


def test_shares_given_to_two_openings_of_one_ciphertext_never_reveal_it_off_the_record(world, keyed, secrets):
    """D_i = x_i·C1 does not depend on the opening, so t − 1 shares given to one opening and one more given to
    another opening of the same C1 combine into T while neither opening is opened, and the home is never asked
    to identify it. Either a ciphertext is opened once (a second request for it refused, or the same opening),
    or whatever the public shares of one C1 reveal is an opening on record."""
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    c1, c2 = ciphertext(signed.signature)
    first = sup.request_opening(world.accounts[OTHER], signed.signature, signed.home, keccak(b"record"), "weak reason")
    for j in (1, 2):  # two of three supervisors agree; the third refuses this request
        sup.submit_share(world.sup(j), first, decryption_share(secrets[j - 1], j, c1, first))
    # the same C1 in another request (another reason, a blob with another hash)
    again = signed.signature[:-1] + bytes([signed.signature[-1] ^ 1])
    try:
        second = sup.request_opening(world.accounts[OTHER], again, signed.home, keccak(b"record"), "another reason")
    except Exception:  # noqa: BLE001 - refused: one opening per ciphertext, as it should be
        return
    if second != first:  # a share's proof binds the pool of its C1 (the id of the first opening of it)
        sup.submit_share(world.sup(3), second, decryption_share(secrets[2], 3, c1, sup.opening(second).pool))
    public = []
    for oid in {first, second}:
        for j in range(1, 6):
            info = sup.share_of(oid, j)
            if info.state.name == "ACCEPTED":
                public.append(Share(j, g1_from_raw(info.d), info.c, info.z))
    indexes = {s.index for s in public}
    assert len(indexes) >= 3
    revealed = combine(c2, list({s.index: s for s in public}.values()))
    assert revealed == signed.T  # anyone can compute this from the chain …
    on_record = [sup.opening(oid) for oid in {first, second}]
    assert any(o.opened and o.tracing_key == signed.T for o in on_record), (
        "T is public from the shares on chain, but no opening on record is opened"
    )


# -- withholding: one supervisor blocks the key generation for good -------------------------------------------------


def test_one_supervisor_who_never_registers_cannot_block_the_key_generation_forever(world):
    """Dealing opens only when every supervisor registered, and registration has no deadline: one hostile
    supervisor (not n − t + 1 of them) that never registers keeps the consortium from ever having a supervision
    key, so no anonymous job is ever taken. Past a registration deadline the registered supervisors (at least t)
    must be able to go on."""
    sup = world.fresh()
    keys = [dkg.EncryptionKey.new() for _ in SUPERVISORS]
    for i in range(1, 5):  # supervisor 5 withholds
        sup.register(world.sup(i), keys[i - 1].raw())
    advance(world.chain, 3 * WINDOW)  # long past any window the committee was given
    dealer = dkg.Dealer.new(T3)
    slots = [dkg.encrypt_share(dealer.share_for(j), 1, j, keys[j - 1].E) for j in range(1, 5)] + [bytes(128)]
    sup.deal(world.sup(1), dealer.commitments_raw(), b"".join(slots))  # WrongPhase today, for ever


# -- the record of an identification --------------------------------------------------------------------------


def test_a_home_cannot_identify_an_opening_as_an_enrolment_it_never_made(world, keyed, secrets):
    """After an opening the home records which enrolment T belongs to. The contract takes any non-zero bytes32:
    an enrolment the home never enrolled (or another home's id) goes on the record as the author."""
    sup = keyed.sup
    signed = group_signature(sup.public_key())
    c1, _ = ciphertext(signed.signature)
    oid = sup.request_opening(world.accounts[OTHER], signed.signature, signed.home, keccak(b"record"), "abuse")
    for j in (1, 2, 3):
        sup.submit_share(world.sup(j), oid, decryption_share(secrets[j - 1], j, c1, oid))
    assert sup.opening(oid).opened
    never_enrolled = keccak(b"nobody the home ever enrolled")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do (UnknownEnrolment expected)
        sup.identify(world.accounts[signed.home], oid, never_enrolled)
    assert sup.opening(oid).enrolment != never_enrolled


# -- a home tags its members through what every signature discloses -----------------------------------------------


@pytest.fixture(scope="module")
def tagging():
    from auth.group.dkg import run_local

    Y, _ = run_local(3, 2)
    home_key = issuer()
    return Y, home_key, Index(keys={"hpc-a": home_key[1]}, epochs={"hpc-a": 2})


def test_the_serving_centre_refuses_a_revocation_epoch_ahead_of_the_homes(tagging):
    """Every signature discloses its credential's revocation epoch; the serving centre refuses an epoch behind the
    home's but takes any epoch ahead of it. A home that gives each member its own future epoch (current + k)
    reads the member off every anonymous job: the anonymity set is one."""
    _, home_key, index = tagging
    tagged = member(home_key, epoch=index.epochs["hpc-a"] + 17)  # member number 17
    o, sig = signed_order(tagging, tagged)
    with pytest.raises(Forbidden, match="revocation"):
        desk(tagging).for_order(o.to_dict(), to_hex(sig))


@pytest.mark.parametrize(
    "expires_at",
    [
        (NOW // WEEK + 2) * WEEK + 17 * 3600,  # hour-floored, but this member's own hour: not a week boundary
        (NOW // WEEK + 60) * WEEK,  # a week boundary more than a year out: nobody else's expiry
    ],
    ids=["off-the-week", "far-future"],
)
def test_the_serving_centre_refuses_an_expiry_no_honest_home_issues(tagging, expires_at):
    """Expiries are the anonymity set (docs/ANONYMITY.md: week boundaries, at most two weeks out). The serving
    centre takes any future expiry, so a home that gives members expiries of their own links every signature."""
    _, home_key, index = tagging
    tagged = member(home_key, epoch=index.epochs["hpc-a"], expires_at=expires_at)
    o, sig = signed_order(tagging, tagged)
    with pytest.raises(Forbidden, match="expir"):
        desk(tagging).for_order(o.to_dict(), to_hex(sig))


# -- the member's client takes the home's word for what its signatures disclose and encrypt under ---------------


HOME = "hpc-a"


@pytest.fixture
def alice_wallet(consortium, tmp_path) -> Path:
    path = tmp_path / "xcentre" / "wallet.json"
    login = ["login", "--gateway", consortium.url(HOME), "--user", "alice", "--password-stdin", "--wallet", path]
    code, _, err = run_cli(login, stdin=PASSWORDS["alice"] + "\n")
    assert code == 0, err
    return path


def join(wallet: Path) -> tuple[int, str, str]:
    argv = ["group", "join", "--project", "physics", "--user", "alice", "--password-stdin", "--wallet", wallet]
    return run_cli(argv, stdin=PASSWORDS["alice"] + "\n")


def hostile_home(consortium, monkeypatch, how: str) -> None:
    """hpc-a, alice's home, answers her join as a home that wants to know which of its members signs."""
    desk = consortium.centres[HOME].node.parts.groups
    if how == "supervision key":  # a key whose secret the home holds: it decrypts T from every signature
        own = G1Point() * to_scalar(random_scalar())
        monkeypatch.setattr(desk, "_supervision_key", lambda: own)
    elif how == "issuer key":  # a key for this member alone: its key id, disclosed in every signature, names her
        monkeypatch.setattr(desk, "_issuer", IssuerKey(*generate_issuer_key()))
    else:  # an expiry for this member alone, disclosed in every signature
        monkeypatch.setattr(home_groups, "credential_expiry", lambda now: (now // WEEK + 2) * WEEK + 17 * 3600)


@pytest.mark.parametrize("how", ["supervision key", "issuer key", "expiry"])
def test_a_member_refuses_a_membership_made_to_single_them_out(consortium, alice_wallet, monkeypatch, how):
    """`xcentre group join` keeps the supervisors' key, the issuer key and the expiry the home answers without
    comparing them with the chain's key, the home's current issuer key on chain and the expiry every member of
    that week gets. Each lets the home learn which member placed an anonymous grant or job."""
    hostile_home(consortium, monkeypatch, how)
    before = Wallet.load(alice_wallet).groups
    code, out, _ = join(alice_wallet)
    kept = Wallet.load(alice_wallet).groups
    assert code != 0 and kept == before, f"kept a membership with the home's own {how}: {out}"
