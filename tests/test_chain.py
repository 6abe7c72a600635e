"""The chain adapter behaves the same on the embedded chain and on anvil."""

from __future__ import annotations

import threading
import time

import pytest
from eth_abi import encode
from eth_account import Account

from ledger.chain import ChainError, ChainRevert, NoGasMoney, connect, decode_revert
from ledger.deploy import MemberSpec, Prices
from ledger.ids import centre_id


@pytest.fixture(params=["embedded", "anvil"])
def chain(request):
    if request.param == "embedded":
        return connect("embedded")
    return connect(request.getfixturevalue("anvil_url"))


def funded(chain, wei: int = 10**18):
    acct = Account.create()
    chain.fund(acct.address, wei)
    return acct


def test_connect_rejects_unknown_urls():
    with pytest.raises(ValueError):
        connect("ftp://example")
    with pytest.raises(ChainError):
        connect("http://127.0.0.1:9")  # nothing listens on the discard port


def test_fund_and_deploy(chain):
    acct = funded(chain, 12345)
    assert chain.w3.eth.get_balance(acct.address) == 12345
    owner = funded(chain)
    credit = chain.deploy("ConsortiumCredit", owner, [acct.address], [77])
    assert chain.w3.eth.get_code(credit.address) != b""
    assert credit.functions.balanceOf(acct.address).call() == 77
    assert credit.functions.totalSupply().call() == 77


def ledger_of(chain, owner):
    """A UsageLedger whose settlement only `owner` may set (its deployer): a custom error with an address."""
    return chain.deploy("UsageLedger", owner, Account.create().address, 60, 60, 0)


def test_reverts_carry_the_custom_error_name(chain):
    owner = funded(chain)
    credit = chain.deploy("ConsortiumCredit", owner, [owner.address], [10])
    ledger = ledger_of(chain, owner)
    other = funded(chain)
    with pytest.raises(ChainRevert) as info:
        chain.transact(ledger.functions.setSettlement(other.address), other)
    assert info.value.reason == "Unauthorized" and info.value.error_args == (other.address.lower(),)
    with pytest.raises(ChainRevert) as info:
        chain.transact(credit.functions.transfer(credit.address, 11), owner)
    assert info.value.reason == "ERC20InsufficientBalance"
    assert info.value.error_args[1:] == (10, 11)
    with pytest.raises(ChainRevert) as info:
        chain.call(ledger.functions.setSettlement(other.address))  # a call, not from the deployer
    assert info.value.reason == "Unauthorized"
    # a revert consumes no nonce: the next transaction goes through
    chain.transact(credit.functions.transfer(credit.address, 1), owner)
    assert credit.functions.balanceOf(credit.address).call() == 1


def test_custom_error_with_a_string_argument_keeps_its_name(chain):
    acct = Account.create()
    bad = MemberSpec("hpc-a", acct.address, "http://x", bytes(32), Prices(1, 1, 1)).as_tuple()
    bad = (bad[0], "HPC-A", *bad[2:])
    with pytest.raises(ChainRevert) as info:
        chain.deploy("Consortium", chain.dev_account, [bad], 1, 0)
    assert info.value.reason == "InvalidName" and info.value.error_args == ("HPC-A",)


def test_concurrent_senders_keep_nonces_in_order(chain):
    owner = funded(chain)
    other = funded(chain)
    credit = chain.deploy("ConsortiumCredit", owner, [owner.address, other.address], [1000, 1000])
    sink = Account.create().address
    errors: list[BaseException] = []

    def send(sender, n):
        try:
            for _ in range(n):
                chain.transact(credit.functions.transfer(sink, 1), sender)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - a thread's failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(who, 6)) for who in (owner, owner, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert credit.functions.balanceOf(sink).call() == 24
    assert chain.w3.eth.get_transaction_count(owner.address) == 13  # deploy + 12 transfers


def test_mine_advances_blocks(chain):
    before = chain.block_number()
    chain.mine(3)
    assert chain.block_number() == before + 3


def test_a_transaction_is_judged_at_the_time_of_the_block_it_goes_into(anvil_url):
    """anvil mines only on demand: its latest block can be seconds old. A transaction gated on time
    (settle once the dispute windows passed) is checked against the next block, as it will be mined,
    not against the last one, or it would never go through on a quiet chain."""
    chain = connect(anvil_url)
    sender = funded(chain)
    last = chain.w3.eth.get_block("latest")["timestamp"]
    time.sleep(2.2)  # now the next block is at least last + 2
    # init code: revert (INVALID) unless block.timestamp > last + 1, else deploy nothing
    code = "0x63" + (last + 1).to_bytes(4, "big").hex() + "4211600b57fe5b00"
    receipt = chain.transact(chain.w3.eth.contract(abi=[], bytecode=code).constructor(), sender)
    assert receipt["status"] == 1


def test_an_account_without_gas_money_is_told_so_and_nothing_is_sent(chain):
    """A member whose account was never funded (a centre admitted by vote, say) sends its first transaction:
    the node refuses it in its own words ("gas required exceeds allowance: 0" on anvil), the caller is told
    the account, its balance and how to fund it."""
    owner = funded(chain)
    ledger = ledger_of(chain, owner)
    empty = Account.create()
    before = chain.block_number()
    with pytest.raises(NoGasMoney) as info:
        chain.transact(ledger.functions.setSettlement(empty.address), empty)
    assert f"the account {empty.address} holds 0 wei" in str(info.value) and "fund it" in str(info.value)
    assert isinstance(info.value, ChainError) and not isinstance(info.value, ChainRevert)
    assert chain.block_number() == before and chain.w3.eth.get_transaction_count(empty.address) == 0


def test_decode_revert_standard_forms():
    assert decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["boom"])).reason == "boom"
    assert decode_revert(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11])).reason == "Panic(0x11)"
    assert decode_revert(b"").reason == "reverted without reason"
    assert decode_revert(b"\xde\xad\xbe\xef").reason == "unknown error 0xdeadbeef"
    from eth_utils import keccak

    err = decode_revert(keccak(text="AlreadySettled(uint64)")[:4] + encode(["uint64"], [9]))
    assert err.reason == "AlreadySettled" and err.error_args == (9,)
    assert str(err) == "reverted: AlreadySettled(9)"
    anchored = decode_revert(
        keccak(text="AlreadyAnchored(bytes32,uint64)")[:4] + encode(["bytes32", "uint64"], [centre_id("hpc-a"), 2])
    )
    assert anchored.reason == "AlreadyAnchored" and anchored.error_args == (centre_id("hpc-a"), 2)
    voided = decode_revert(
        keccak(text="GrantAlreadyAnswered(bytes32,bytes32)")[:4] + encode(["bytes32"] * 2, [b"g" * 32, b"l" * 32])
    )
    assert voided.reason == "GrantAlreadyAnswered" and voided.error_args == (b"g" * 32, b"l" * 32)


def test_a_transaction_reverting_when_mined_is_replayed_for_its_reason(chain):
    # Bypass the pre-flight check, as when state changes between check and inclusion.
    owner = funded(chain)
    credit = chain.deploy("ConsortiumCredit", owner, [owner.address], [10])
    tx = credit.functions.transfer(credit.address, 11).build_transaction(
        {"from": owner.address, "gas": 200_000, "chainId": chain.chain_id, **chain._fees()}
    )
    with pytest.raises(ChainRevert) as info:
        chain._send(tx, owner)
    assert info.value.reason == "ERC20InsufficientBalance" and info.value.error_args[1:] == (10, 11)
    chain.transact(credit.functions.transfer(credit.address, 1), owner)  # nonce stays in step
    assert chain.w3.eth.get_transaction_count(owner.address) == 3


def test_a_named_binding_reads_struct_fields_by_name(chain):
    """Readers name the fields they use; the default binding keeps web3's plain tuples and lists."""
    from ledger.deploy import bind, deploy_consortium

    deployer, member = funded(chain), funded(chain)
    spec = MemberSpec(
        name="hpc-a",
        account=member.address,
        gateway_url="http://hpc-a.example",
        token_key=b"\x01" * 32,
        prices=Prices(40_000, 7, 200_000),
    )
    deployment = deploy_consortium(chain, deployer, [spec], quorum=1, initial_credit=1_000_000)
    named, plain = bind(chain, deployment, named=True), bind(chain, deployment)
    got = chain.call(named.consortium.functions.member(centre_id("hpc-a")))
    assert (got.name, got.account, got.gatewayUrl) == ("hpc-a", member.address, "http://hpc-a.example") and got.active
    assert Prices.from_chain(got.prices) == spec.prices
    version = chain.call(named.consortium.functions.rates(centre_id("hpc-a"), 1))
    assert version.version == 1 and Prices.from_chain(version.prices) == spec.prices
    chain.transact(
        named.usage_ledger.functions.anchor(1, [centre_id("hpc-a")], [b"\x07" * 32], [3], [90], bytes(32), 0), member
    )
    claim = named.usage_ledger.functions.claimOf(1, centre_id("hpc-a"), centre_id("hpc-a")).call()
    assert (claim.root, claim.count, claim.total, claim.voided) == (b"\x07" * 32, 3, 90, False)
    anchor = named.usage_ledger.functions.anchorOf(centre_id("hpc-a"), 1).call()
    assert (anchor.anchored, anchor.recordCount) == (True, 3) and anchor.anchoredAt > 0
    assert plain.usage_ledger.functions.claimOf(1, centre_id("hpc-a"), centre_id("hpc-a")).call() == [
        b"\x07" * 32,
        3,
        90,
        False,
    ]


def test_the_sessions_anvil_holds_ether_for_every_consortium_of_a_run(anvil_url):
    """Each consortium brought up on the session's node funds its centres from the development account:
    anvil's default 10,000 ether ran out within one run of the suite."""
    from tests.fixtures.anvil import SESSION_ETHER

    chain = connect(anvil_url)
    assert chain.w3.eth.get_balance(chain.dev_account.address) > (SESSION_ETHER - 10**6) * 10**18
