"""Which issuer key of a home a group signature may be under (gateway.node.group_rules), on the real chain.

Every signature discloses its credential's issuer key id. The chain lets a home set a key at any second and keep
any number of keys valid at once, so a home that set a key just before one member's join and another just after
would read that member off the key id. Desks take, for a credential, only the key the home had when the
credential's issue week began (the week its expiry names): a rotation takes effect for groups at the next week.
Here: a real consortium on the embedded chain, a home that set K1 last week and rotates to K2 and K3 this week,
keeping every old key valid for a year, read through a real EventIndex; the desk is the real serving-side
AnonymousDesk.
"""

from __future__ import annotations

import pytest

from auth.credentials import generate_issuer_key
from auth.group.credential import CREDENTIAL_PERIOD, credential_expiry, issue_week, issuer_key_id
from auth.group.dkg import run_local
from auth.group.signature import order_message, sign
from gateway.node.anonymous import AnonymousDesk, SupervisionKey
from gateway.node.errors import Forbidden
from gateway.node.group_rules import group_issuer_key, week_issuer_key
from ledger.deploy import bind
from ledger.index import EventIndex
from ledger.index.rows import IssuerKeyInfo
from ledger.payment import order_digest
from ledger.primitives.hex import to_hex
from ledger.records import domain_for
from tests.fixtures.members import embedded_members
from tests.test_anonymous import member, order
from tests.test_contracts import advance

HOME, SERVING = "hpc-a", "cloud-b"
WEEK = CREDENTIAL_PERIOD
YEAR = 365 * 24 * 3600


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """hpc-a set K1 last week; an hour into this week it set K2, then K3 (current), each rotation keeping the old
    key valid for a year; the index of them, and the expiry of a credential issued last week."""
    chain, accounts, deployment = embedded_members((HOME, SERVING), 9300)
    registry = bind(chain, deployment).identity_registry.functions
    keys = [generate_issuer_key() for _ in range(3)]

    def set_key(pk: bytes) -> None:
        chain.transact(registry.setIssuerKey(pk, chain.w3.eth.get_block("latest")["timestamp"] + YEAR), accounts[HOME])

    set_key(keys[0][1])
    last_week = credential_expiry(chain.w3.eth.get_block("latest")["timestamp"])
    at = chain.w3.eth.get_block("latest")["timestamp"]
    advance(chain, (at // WEEK + 1) * WEEK + 3600 - at)  # an hour into the next week
    for _, pk in keys[1:]:
        set_key(pk)
    index = EventIndex(tmp_path_factory.mktemp("index") / "index.db", chain, deployment)
    index.sync()
    return index, keys, domain_for(deployment), last_week


def kid(pk: bytes) -> str:
    return issuer_key_id(pk)


def test_the_chain_holds_every_key_valid_but_a_weeks_group_credentials_take_the_key_it_began_with(rotated):
    index, keys, _, last_week = rotated
    (_, k1), (_, k2), (_, k3) = keys
    now = index.now()
    this_week = credential_expiry(now)
    assert all(index.issuer_key(HOME, kid(pk), now) == pk for pk in (k1, k2, k3))  # what a presentation may use
    assert group_issuer_key(index, HOME, kid(k1), this_week, now) == k1
    for pk in (k2, k3):  # set in the course of the week: whoever joined under them would be singled out
        with pytest.raises(Forbidden, match=rf"under issuer key {kid(pk)} of hpc-a, but .* \(key {kid(k1)}\)"):
            group_issuer_key(index, HOME, kid(pk), this_week, now)
    # last week's credentials: K1, the first key hpc-a set in that week (it had none when the week began)
    assert group_issuer_key(index, HOME, kid(k1), last_week, now) == k1
    with pytest.raises(Forbidden, match="join again"):
        group_issuer_key(index, HOME, kid(k3), last_week, now)
    assert group_issuer_key(index, HOME, "00" * 8, this_week, now) is None  # no such key: the signature's own refusal
    assert group_issuer_key(index, "edge-x", kid(k1), this_week, now) is None


def test_a_rotation_takes_effect_for_groups_at_the_next_weeks_turn(rotated):
    index, keys, _, _ = rotated
    (_, k1), (_, k2), (_, k3) = keys
    turn = (index.now() // WEEK + 1) * WEEK
    next_week = credential_expiry(turn)
    assert group_issuer_key(index, HOME, kid(k3), next_week, turn) == k3  # the newest key when that week began
    for pk in (k1, k2):
        with pytest.raises(Forbidden, match=f"key {kid(k3)}"):
            group_issuer_key(index, HOME, kid(pk), next_week, turn)
    # credentials of this week still serve under K1 until they expire
    assert group_issuer_key(index, HOME, kid(k1), credential_expiry(turn - 1), turn) == k1


def test_a_weeks_key_is_the_newest_in_force_when_it_began_or_else_the_first_set_during_it():
    def key(n: int, valid_from: int, valid_until: int = 0) -> IssuerKeyInfo:
        return IssuerKeyInfo(pk=bytes([n]) * 96, key_id=bytes([n]) * 32, valid_from=valid_from, valid_until=valid_until)

    start = 10 * WEEK
    k1, k2 = key(1, start - 100, start + 50), key(2, start - 50)  # both valid at the start: the newest
    assert week_issuer_key([], start) is None
    assert week_issuer_key([k1, k2], start) == k2
    assert week_issuer_key([k1, k2, key(3, start + 10)], start) == k2  # set during the week: the next week's
    assert week_issuer_key([k1, key(2, start - 50, start)], start) == k1  # k2 ended just as the week began
    ended = key(1, start - 100, start - 10)  # every key ended before the week (revoked by the consortium)
    assert week_issuer_key([ended], start) is None
    assert week_issuer_key([ended, key(2, start + 10), key(3, start + 20)], start) == key(2, start + 10)
    assert week_issuer_key([key(1, start + WEEK)], start) is None  # the next week's first key is not this one's
    assert week_issuer_key([key(1, start)], start) == key(1, start)


def test_the_serving_desk_takes_a_signature_only_under_the_key_its_week_began_with(rotated):
    index, keys, domain, _ = rotated
    Y, _ = run_local(3, 2)
    desk = AnonymousDesk(SERVING, index, domain, SupervisionKey(lambda: Y))
    expires = credential_expiry(index.now())
    epoch = index.revocation_epoch_at(HOME, issue_week(expires))
    for i, issuer in enumerate(keys):
        alice = member(issuer, epoch=epoch, expires_at=expires)
        o = order(centre=SERVING)
        signature = to_hex(sign(alice.credential, alice.sk, alice.issuer_pk, Y, order_message(order_digest(o, domain))))
        if i == 0:
            assert desk.for_order(o.to_dict(), signature).signed.key_id == kid(issuer[1])
        else:
            with pytest.raises(Forbidden, match="a key set in the course of a week would single out"):
                desk.for_order(o.to_dict(), signature)
