"""Which issuer keys of a home a group signature may be under (gateway.node.group_rules), on the real chain.

Every signature discloses its credential's issuer key id. The chain lets a home keep any number of keys valid
at once (each rotation ends the previous key when the home says), so a home that rotated for each joining member
and kept every old key alive would read the member off the key id. Desks take only the home's latest key and the
one it replaced, that one while the chain still holds it valid and for at most CREDENTIAL_PERIOD after it was
replaced. Here: a real consortium on the embedded chain, a home that rotates its key three times keeping every old
key valid for a year, read through a real EventIndex; the desk is the real serving-side AnonymousDesk.
"""

from __future__ import annotations

import pytest
from eth_account import Account

from auth.credentials import generate_issuer_key
from auth.group.credential import CREDENTIAL_PERIOD, credential_expiry, issuer_key_id
from auth.group.dkg import run_local
from auth.group.signature import order_message, sign
from auth.tokens import generate_key, public_key_bytes
from gateway.node.anonymous import AnonymousDesk, SupervisionKey
from gateway.node.errors import Forbidden
from gateway.node.group_rules import group_issuer_key, usable_issuer_keys
from ledger.chain import connect
from ledger.deploy import DEFAULT_RATE_NOTICE, MemberSpec, Prices, bind, deploy_consortium
from ledger.index import EventIndex
from ledger.index.rows import IssuerKeyInfo
from ledger.payment import order_digest
from ledger.primitives.hex import to_hex
from ledger.records import domain_for
from tests.test_anonymous import member, order

HOME, SERVING = "hpc-a", "cloud-b"
YEAR = 365 * 24 * 3600


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """hpc-a's keys K1, K2, K3 (current), each rotation keeping the old key valid for a year; the index of them."""
    chain = connect("embedded")
    accounts = {name: Account.create() for name in (HOME, SERVING)}
    for account in (*accounts.values(), deployer := Account.create()):
        chain.fund(account.address, 10**20)
    members = [
        MemberSpec(
            name=name,
            account=account.address,
            gateway_url=f"http://127.0.0.1:{9300 + i}",
            token_key=public_key_bytes(generate_key()),
            prices=Prices(per_cpu_second=10, per_gpu_second=0, per_gib_hour=1),
        )
        for i, (name, account) in enumerate(accounts.items())
    ]
    deployment = deploy_consortium(chain, deployer, members, 2, 10**9, rate_notice=DEFAULT_RATE_NOTICE)
    registry = bind(chain, deployment).identity_registry.functions
    keys = [generate_issuer_key() for _ in range(3)]
    for _, pk in keys:
        chain.transact(registry.setIssuerKey(pk, chain.w3.eth.get_block("latest")["timestamp"] + YEAR), accounts[HOME])
    index = EventIndex(tmp_path_factory.mktemp("index") / "index.db", chain, deployment)
    index.sync()
    return index, keys, domain_for(deployment)


def kid(pk: bytes) -> str:
    return issuer_key_id(pk)


def test_the_chain_holds_every_key_valid_but_group_signatures_take_the_latest_two(rotated):
    index, keys, _ = rotated
    (_, k1), (_, k2), (_, k3) = keys
    now = index.now()
    assert all(index.issuer_key(HOME, kid(pk), now) == pk for pk in (k1, k2, k3))  # what a presentation may use
    assert group_issuer_key(index, HOME, kid(k3), now) == k3
    assert group_issuer_key(index, HOME, kid(k2), now) == k2  # replaced moments ago: its credentials still serve
    with pytest.raises(Forbidden, match=rf"issuer key {kid(k1)} of hpc-a, which is neither its current one nor"):
        group_issuer_key(index, HOME, kid(k1), now)
    assert group_issuer_key(index, HOME, "00" * 8, now) is None  # no such key: the signature's own refusal
    assert group_issuer_key(index, "edge-x", kid(k3), now) is None


def test_the_replaced_key_serves_for_one_period_after_its_replacement_whatever_end_the_home_set(rotated):
    index, keys, _ = rotated
    (_, k2), (_, k3) = keys[1], keys[2]
    replaced_at = index.current_issuer_key(HOME).valid_from
    assert group_issuer_key(index, HOME, kid(k2), replaced_at + CREDENTIAL_PERIOD - 1) == k2
    with pytest.raises(Forbidden, match="join again"):
        group_issuer_key(index, HOME, kid(k2), replaced_at + CREDENTIAL_PERIOD)
    assert group_issuer_key(index, HOME, kid(k3), replaced_at + CREDENTIAL_PERIOD) == k3


def test_usable_keys_are_the_latest_and_its_predecessor_while_valid_and_recently_replaced():
    def key(n: int, valid_from: int, valid_until: int = 0) -> IssuerKeyInfo:
        return IssuerKeyInfo(pk=bytes([n]) * 96, key_id=bytes([n]) * 32, valid_from=valid_from, valid_until=valid_until)

    k1, k2, k3 = key(1, 0, 10**9), key(2, 100, 200), key(3, 150)
    assert usable_issuer_keys([], 120) == []
    assert usable_issuer_keys([key(1, 0)], 10**9) == [key(1, 0)]
    assert usable_issuer_keys([k1, k2, k3], 160) == [k3, k2]
    assert usable_issuer_keys([k1, k2, k3], 200) == [k3]  # k2's overlap is over
    assert usable_issuer_keys([k1, key(2, 100, 10**9), k3], 150 + CREDENTIAL_PERIOD) == [k3]  # a week after
    ended = key(3, 150, 300)  # every key ended (a leaked key revoked by the consortium): none after its end
    assert usable_issuer_keys([k1, k2, ended], 299) == [ended] and usable_issuer_keys([k1, k2, ended], 300) == []


def test_the_serving_desk_refuses_a_signature_under_a_key_the_home_replaced_twice(rotated):
    index, keys, domain = rotated
    Y, _ = run_local(3, 2)
    desk = AnonymousDesk(SERVING, index, domain, SupervisionKey(lambda: Y))
    expires = credential_expiry(index.now())
    epoch = index.revocation_epoch(HOME)
    for i, issuer in enumerate(keys):
        alice = member(issuer, epoch=epoch, expires_at=expires)
        o = order(centre=SERVING)
        signature = to_hex(sign(alice.credential, alice.sk, alice.issuer_pk, Y, order_message(order_digest(o, domain))))
        if i == 0:
            with pytest.raises(Forbidden, match="neither its current one nor"):
                desk.for_order(o.to_dict(), signature)
        else:
            assert desk.for_order(o.to_dict(), signature).signed.key_id == kid(issuer[1])
