"""The serving centre's check of a group signature (gateway.node.anonymous), on doubles of the index and the chain.

The signatures are real (auth.group), made with a real blind-issued credential and a
supervision key from a local run of the DKG; only the index (issuer keys, revocation
epochs, the clock) and the chain read of the key are doubles. The same refusals over
HTTP, on a real consortium with the Supervision contract, are in test_anonymous_jobs.py.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace

import pytest
from eth_utils import keccak

from auth import bbs
from auth.credentials import key_id
from auth.group.credential import credential_expiry, issue_group_credential, issue_week, join_request, new_member_secret
from auth.group.dkg import run_local
from auth.group.signature import order_message, quote_message, sign, signature_hash
from auth.tokens import Claims
from gateway.api.schemas import JobRequest
from gateway.node import group_rules
from gateway.node.anonymous import GROUP, AnonymousDesk, SupervisionKey, job_request_digest, pseudonymous
from gateway.node.errors import Forbidden, Invalid, TooManyRequests, Unauthenticated, Unavailable
from gateway.node.ratelimit import RateLimit
from ledger.deploy import Deployment
from ledger.ids import centre_id
from ledger.index.rows import IssuerKeyInfo
from ledger.payment import Order, order_digest
from ledger.primitives.hex import to_hex
from ledger.records import Domain

NOW = 1_800_000_000
DOMAIN = Domain(chain_id=31337, verifying_contract="0x5FC8d32690cc91D4c39d9d3abcBD16989F875707")
WEEK = 7 * 24 * 3600
REQUEST = JobRequest(command=["true"], walltime=60)


@dataclass
class Index:
    """What the desk reads of the index: issuer keys by (home, key id), revocation epochs, the clock."""

    keys: dict[str, bytes] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    time: int = NOW

    def now(self) -> int:
        return self.time

    def issuer_key(self, centre: str, key_id_prefix_hex: str, at: int) -> bytes | None:
        pk = self.keys.get(centre)
        return pk if pk is not None and key_id(pk).startswith(key_id_prefix_hex) else None

    def issuer_keys(self, centre: str) -> list[IssuerKeyInfo]:
        pk = self.keys.get(centre)
        return [] if pk is None else [IssuerKeyInfo(pk=pk, key_id=keccak(pk), valid_from=0, valid_until=0)]

    def revocation_epoch(self, centre: str) -> int:
        return self.epochs.get(centre, 0)

    def revocation_epoch_at(self, centre: str, at: int) -> int:
        return self.epochs.get(centre, 0)  # no revocation in the weeks these tests sign in


@dataclass(frozen=True)
class Member:
    sk: int
    issuer_pk: bytes
    credential: object


def issuer() -> tuple[bytes, bytes]:
    sk = bbs.SHA256.keygen(secrets.token_bytes(32))
    return sk, bbs.SHA256.sk_to_pk(sk)


EXPIRES = credential_expiry(NOW)
"""The expiry of every credential issued at NOW."""


def member(issuer_key: tuple[bytes, bytes], *, home="hpc-a", project="physics", epoch=2, expires_at=EXPIRES):
    sk = new_member_secret()
    request = join_request(sk, home=home, project=project, member="alice")
    credential = issue_group_credential(
        *issuer_key, request, home=home, member="alice", revocation_epoch=epoch, expires_at=expires_at
    )
    return Member(sk, issuer_key[1], credential)


@pytest.fixture(scope="module")
def world():
    Y, _ = run_local(3, 2)
    home_key = issuer()
    index = Index(keys={"hpc-a": home_key[1]}, epochs={"hpc-a": 2})
    return Y, home_key, index


def desk(world, index: Index | None = None) -> AnonymousDesk:
    Y, _, own = world
    return AnonymousDesk("cloud-b", index or own, DOMAIN, SupervisionKey(lambda: Y))


def order(centre: str = "cloud-b", request: JobRequest = REQUEST) -> Order:
    return Order(
        request=job_request_digest(request, centre),
        centre=centre_id(centre),
        rates_version=1,
        max_price=10**6,
        deadline=NOW + 3600,
        nonce=secrets.randbits(256),
    )


def signed_order(world, who: Member, what: Order | None = None) -> tuple[Order, bytes]:
    what = what or order()
    return what, sign(who.credential, who.sk, who.issuer_pk, world[0], order_message(order_digest(what, DOMAIN)))


# -- what a valid signature stands for --------------------------------------------------------------------------


def test_a_valid_order_signature_gives_claims_that_name_only_a_pseudonym_its_home_and_project(world):
    alice = member(world[1])
    o, sig = signed_order(world, alice)
    verified = desk(world).for_order(o.to_dict(), to_hex(sig))
    claims = verified.claims
    assert verified.signature == sig and verified.signed.hash == signature_hash(sig)
    assert claims.sub == f"{signature_hash(sig)[:8].hex()}@hpc-a" and claims.home == "hpc-a"
    assert claims.attrs == {"groups": "physics"} and claims.amr == [GROUP]
    assert (claims.iss, claims.aud) == ("cloud-b", "cloud-b")
    assert pseudonymous(claims) and not claims.presented
    assert "alice" not in repr(claims)
    # two signatures of one member over one order are two pseudonyms
    _, again = signed_order(world, alice, o)
    assert desk(world).for_order(o.to_dict(), to_hex(again)).claims.sub != claims.sub


def test_a_quote_signature_signs_the_request_as_this_centre_takes_it(world):
    alice = member(world[1])
    sig = sign(
        alice.credential, alice.sk, alice.issuer_pk, world[0], quote_message(job_request_digest(REQUEST, "cloud-b"))
    )
    assert desk(world).for_quote(REQUEST, to_hex(sig)).claims.home == "hpc-a"
    # the same request named for this centre explicitly is the same request
    assert desk(world).for_quote(REQUEST.model_copy(update={"centre": "cloud-b"}), to_hex(sig)).claims.amr == [GROUP]
    other = REQUEST.model_copy(update={"walltime": 61})
    with pytest.raises(Unauthenticated, match="does not verify for this message"):
        desk(world).for_quote(other, to_hex(sig))


def test_signed_on_sessions_are_pseudonymous_only_when_presented():
    base = Claims(iss="a", aud="a", sub="u@a", home="a")
    assert not pseudonymous(base)
    assert pseudonymous(replace(base, amr=["bbs"])) and pseudonymous(replace(base, amr=[GROUP]))


# -- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [20, 110, 240, -40, -1])
def test_a_tampered_signature_is_refused(world, at):
    """A byte flipped in the ciphertext (C1 at 9.., C2 at 105..), the disclosed fields or the proof."""
    o, sig = signed_order(world, member(world[1]))
    tampered = bytearray(sig)
    tampered[at] ^= 0x01
    with pytest.raises(Unauthenticated, match="group signature refused"):
        desk(world).for_order(o.to_dict(), to_hex(bytes(tampered)))


def test_disclosed_fields_cannot_be_rewritten(world):
    """Another project spelt into the disclosed JSON (same length): the proof binds the fields."""
    o, sig = signed_order(world, member(world[1], project="physics"))
    forged = sig.replace(b'"project":"physics"', b'"project":"biology"')
    assert forged != sig
    with pytest.raises(Unauthenticated, match="does not verify"):
        desk(world).for_order(o.to_dict(), to_hex(forged))


def test_a_signature_over_another_message_is_refused(world):
    alice = member(world[1])
    mine, sig = signed_order(world, alice)
    for other in (order(centre="hpc-c"), order(request=REQUEST.model_copy(update={"command": ["false"]})), order()):
        with pytest.raises(Unauthenticated, match="does not verify for this message"):
            desk(world).for_order(other.to_dict(), to_hex(sig))
    # a quote's signature over the same digest is not an order's: the messages are tagged
    as_quote = sign(alice.credential, alice.sk, alice.issuer_pk, world[0], quote_message(order_digest(mine, DOMAIN)))
    with pytest.raises(Unauthenticated, match="does not verify"):
        desk(world).for_order(mine.to_dict(), to_hex(as_quote))


def test_a_signature_under_another_supervision_key_is_refused(world):
    """Encrypted for supervisors other than this consortium's: nobody here could open it."""
    alice = member(world[1])
    elsewhere, _ = run_local(3, 2)
    o = order()
    sig = sign(alice.credential, alice.sk, alice.issuer_pk, elsewhere, order_message(order_digest(o, DOMAIN)))
    with pytest.raises(Unauthenticated, match="does not verify"):
        desk(world).for_order(o.to_dict(), to_hex(sig))


def test_an_expired_credential_is_refused(world):
    alice = member(world[1])
    o, sig = signed_order(world, alice)
    late = Index(keys=world[2].keys, epochs=world[2].epochs, time=alice.credential.expires_at)
    with pytest.raises(Forbidden, match=r"expired at \d+ .*join project physics at hpc-a again"):
        desk(world, late).for_order(o.to_dict(), to_hex(sig))
    assert desk(world).for_order(o.to_dict(), to_hex(sig))  # a second earlier it was good


def test_a_credential_from_before_a_revocation_at_its_home_is_refused(world):
    o, sig = signed_order(world, member(world[1], epoch=1))
    week = issue_week(EXPIRES)
    with pytest.raises(
        Forbidden,
        match=rf"revocation epoch 1, and hpc-a's revocation epoch at the start of its issue week \({week}\) is 2 "
        r"\(it predates a revocation",
    ):
        desk(world).for_order(o.to_dict(), to_hex(sig))
    # nor one ahead of the home's on chain (a home could give each member an epoch of their own): it is taken once
    # this centre's index has the home's revocation
    o, sig = signed_order(world, member(world[1], epoch=3))
    with pytest.raises(Forbidden, match=r"revocation epoch 3, and hpc-a's revocation epoch at .* is 2 \(no member"):
        desk(world).for_order(o.to_dict(), to_hex(sig))
    caught_up = Index(keys=world[2].keys, epochs={"hpc-a": 3})
    assert desk(world, caught_up).for_order(o.to_dict(), to_hex(sig)).signed.revocation_epoch == 3


def test_an_expiry_is_taken_up_to_the_one_a_credential_issued_now_gets(world):
    """Week boundaries in the future, at most credential_expiry(now): the two expiries members of a home can hold."""
    for expires_at in (credential_expiry(NOW), credential_expiry(NOW) - WEEK):
        o, sig = signed_order(world, member(world[1], expires_at=expires_at))
        assert desk(world).for_order(o.to_dict(), to_hex(sig)).claims.exp == expires_at
    for expires_at, words in (
        (credential_expiry(NOW) + WEEK, "later than any credential issued now"),
        (credential_expiry(NOW) - 3600, "not on a week boundary"),
    ):
        o, sig = signed_order(world, member(world[1], expires_at=expires_at))
        with pytest.raises(Forbidden, match=words):
            desk(world).for_order(o.to_dict(), to_hex(sig))


def test_a_burst_from_one_address_is_cut_off_before_any_signature_is_verified(world, monkeypatch):
    """Verifying a group signature costs pairings (~5 ms) and anyone may send one: past a burst from one network
    address the desk answers 429 with the wait, before it parses or verifies anything; another address goes on."""
    import gateway.node.anonymous as anonymous

    verified = []
    real = anonymous.verify
    monkeypatch.setattr(anonymous, "verify", lambda *a, **k: verified.append(1) or real(*a, **k))
    limited = AnonymousDesk("cloud-b", world[2], DOMAIN, SupervisionKey(lambda: world[0]), limit=RateLimit(0.001, 2))
    alice = member(world[1])
    o, sig = signed_order(world, alice)
    quoted = to_hex(
        sign(
            alice.credential, alice.sk, alice.issuer_pk, world[0], quote_message(job_request_digest(REQUEST, "cloud-b"))
        )
    )
    limited.for_order(o.to_dict(), to_hex(sig), client="192.0.2.1")
    limited.for_quote(REQUEST, quoted, client="192.0.2.1")
    assert len(verified) == 2
    for attempt in (
        lambda: limited.for_order(o.to_dict(), to_hex(sig), client="192.0.2.1"),
        lambda: limited.for_quote(REQUEST, "0x" + "01" * 300, client="192.0.2.1"),
    ):
        with pytest.raises(TooManyRequests, match=r"from one network address.*nothing was verified") as caught:
            attempt()
        assert caught.value.retry_after > 0
    assert len(verified) == 2
    assert limited.for_order(o.to_dict(), to_hex(sig), client="192.0.2.2").claims.home == "hpc-a"
    assert len(verified) == 3


def test_a_desk_verifies_only_so_many_signatures_from_all_addresses_together(world, monkeypatch):
    """Addresses are cheap to whoever holds many (a botnet, many /64s): past the desk's own bound (about what two
    cores verify) every address gets 429 before any verification, whatever its own bucket holds."""
    import gateway.node.anonymous as anonymous

    verified = []
    real = anonymous.verify
    monkeypatch.setattr(anonymous, "verify", lambda *a, **k: verified.append(1) or real(*a, **k))
    limited = AnonymousDesk("cloud-b", world[2], DOMAIN, SupervisionKey(lambda: world[0]), overall=RateLimit(0.001, 2))
    o, sig = signed_order(world, member(world[1]))
    for n in range(2):
        limited.for_order(o.to_dict(), to_hex(sig), client=f"192.0.2.{n}")
    with pytest.raises(TooManyRequests, match=r"from all addresses together.*nothing was verified") as caught:
        limited.for_order(o.to_dict(), to_hex(sig), client="198.51.100.7")
    assert caught.value.retry_after > 0 and len(verified) == 2
    assert group_rules.DESK_VERIFICATIONS_PER_SECOND == 300 and group_rules.DESK_VERIFICATION_BURST == 600


def test_a_signature_by_a_home_the_index_does_not_know_is_refused(world):
    stranger = member(issuer(), home="edge-x")
    o, sig = signed_order(world, stranger)
    with pytest.raises(Unauthenticated, match=r"unknown issuer key .* of edge-x"):
        desk(world).for_order(o.to_dict(), to_hex(sig))
    # nor may a known home's name be used with another issuer key
    impostor = member(issuer(), home="hpc-a")
    o, sig = signed_order(world, impostor)
    with pytest.raises(Unauthenticated, match=r"unknown issuer key .* of hpc-a"):
        desk(world).for_order(o.to_dict(), to_hex(sig))


@pytest.mark.parametrize(
    ("order_data", "signature", "error"),
    [
        ({"centre": "cloud-b"}, "0x01", "the order is malformed"),
        (None, "0x1", "group_signature"),
        (None, "0x" + "01" * 300, "malformed group signature"),
    ],
)
def test_malformed_input_is_refused_with_what_is_wrong(world, order_data, signature, error):
    kind = Invalid if "group signature" not in error else Unauthenticated
    with pytest.raises(kind, match=error):
        desk(world).for_order(order_data or order().to_dict(), signature)


# -- the supervision key ----------------------------------------------------------------------------------------


def test_without_a_supervision_contract_anonymous_jobs_are_unavailable(world):
    o, sig = signed_order(world, member(world[1]))
    none = AnonymousDesk("cloud-b", world[2], DOMAIN, SupervisionKey(None))
    for _ in range(2):
        with pytest.raises(Unavailable, match="no supervision contract"):
            none.for_order(o.to_dict(), to_hex(sig))


def test_a_deployment_described_before_supervision_takes_no_anonymous_jobs():
    old = Deployment(5, "0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20, "0x" + "04" * 20, 0)
    assert old.supervision is None
    with pytest.raises(Unavailable, match="no supervision contract"):
        SupervisionKey.from_chain(None, old).get()  # nothing is read: the description says there is none


def test_the_key_is_read_until_it_is_generated_then_never_again(world):
    Y = world[0]
    reads, clock, answer = [], [0.0], [None]
    key = SupervisionKey(lambda: reads.append(1) or answer[0], recheck=5.0, clock=lambda: clock[0])
    with pytest.raises(Unavailable, match="not generated their key yet"):
        key.get()
    clock[0] = 4.0
    answer[0] = Y
    with pytest.raises(Unavailable, match="not generated"):  # asked again only after the recheck time
        key.get()
    assert len(reads) == 1
    clock[0] = 5.0
    assert key.get() == Y and len(reads) == 2
    clock[0] = 1000.0
    assert key.get() == Y and len(reads) == 2  # kept for good: one contract, one key


def test_a_chain_that_does_not_answer_is_unavailable_not_an_error(world):
    def down() -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(Unavailable, match="cannot be read from the chain now: connection refused"):
        SupervisionKey(down).get()
