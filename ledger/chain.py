"""One way to talk to a chain, embedded (eth-tester + py-evm) or JSON-RPC (anvil, Besu).

Transactions are always signed locally with a LocalAccount, so the same code path runs
against the in-process chain of the demo and tests and against a real node; reverts
surface as ChainRevert with the contract's custom error name on both backends.
"""

from __future__ import annotations

import ast
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration
from web3.types import BlockIdentifier, RPCEndpoint, RPCResponse, TxParams, TxReceipt

from ledger.artifacts import CONTRACT_NAMES, load_artifact
from ledger.primitives.hex import to_hex

try:  # eth-tester is only needed for the embedded backend
    from eth_tester.exceptions import TransactionFailed
except ImportError:  # pragma: no cover - eth-tester is a declared dependency

    class TransactionFailed(Exception):  # type: ignore[no-redef]
        pass


# anvil's first dev account (mnemonic "test test ... junk"), pre-funded on every anvil.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
POLL_LATENCY = 0.005
RECEIPT_TIMEOUT = 120.0
RPC_TIMEOUT = 15.0
"""Seconds a JSON-RPC request may take: past it the node is unavailable (ChainUnavailable) for this request."""
EMBEDDED_GAS = 12_000_000  # fixed limit on the embedded chain (block limit is 30M)
PLAIN_TRANSFER_GAS = 21_000  # the least any transaction costs
_EIP1559_FEES = ("maxFeePerGas", "maxPriorityFeePerGas")
_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")


class ChainError(Exception):
    """A chain operation failed for a reason other than a contract revert."""


class ChainUnavailable(ChainError):
    """The chain node does not answer (connection refused, reset or timed out): later it may.

    Never a verdict on the chain's contents: an index that cannot reach its node says so,
    and does not take the silence for another chain history.
    """


class NoGasMoney(ChainError):
    """The sender's account cannot pay for a transaction's gas: nothing was sent. Transient: it may be funded."""


class ChainRevert(ChainError):
    """A contract call or transaction reverted.

    `reason` is the custom error's name ("NotMember"), the require string, or
    "Panic(0x11)"; `error_args` holds the decoded error arguments, if any.
    """

    def __init__(self, reason: str, error_args: tuple = (), data: bytes | None = None) -> None:
        self.reason = reason
        self.error_args = tuple(error_args)
        self.data = data
        detail = f"{reason}({', '.join(_fmt(a) for a in self.error_args)})" if self.error_args else reason
        super().__init__(f"reverted: {detail}")


def _fmt(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return to_hex(value)
    return repr(value) if isinstance(value, str) else str(value)


@functools.cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    """selector -> (name, input types) for every custom error of the project's contracts (read once)."""
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in CONTRACT_NAMES:
        for item in load_artifact(name)["abi"]:
            if item.get("type") != "error":
                continue
            types = [_abi_type(i) for i in item.get("inputs", [])]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], types)
    return table


def _abi_type(param: dict) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple") :]
    return t


def decode_revert(data: bytes | str | None) -> ChainRevert:
    """Turns raw revert data into a ChainRevert with a readable reason."""
    if isinstance(data, str):
        data = bytes(HexBytes(data)) if data.startswith("0x") else None
    if not data:
        return ChainRevert("reverted without reason", (), data)
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            return ChainRevert(abi_decode(["string"], body)[0], (), data)
        if selector == _PANIC:
            return ChainRevert(f"Panic(0x{abi_decode(['uint256'], body)[0]:x})", (), data)
        errors = _error_table()
        if selector in errors:
            name, types = errors[selector]
            return ChainRevert(name, abi_decode(types, body) if types else (), data)
    except Exception:  # noqa: BLE001 - whatever the decoder makes of malformed data, keep the raw bytes readable
        pass
    return ChainRevert(f"unknown error {to_hex(data)}", (), data)


def _revert_from(exc: BaseException) -> ChainRevert | None:
    """ChainRevert for a backend's revert exception, None if exc is not a revert."""
    if isinstance(exc, ChainRevert):
        return exc
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            return decode_revert(data)
        message = exc.message or str(exc)
        return ChainRevert(message.removeprefix("execution reverted: ").removeprefix("execution reverted"))
    if isinstance(exc, TransactionFailed):
        arg = exc.args[0] if exc.args else None
        if isinstance(arg, Exception) and arg.args:
            arg = arg.args[0]
        if isinstance(arg, (bytes, bytearray)):
            return decode_revert(bytes(arg))
        if isinstance(arg, str):
            return _revert_from_text(arg)
        return ChainRevert("reverted without reason")
    return None


def _revert_from_text(text: str) -> ChainRevert:
    """web3's eth-tester provider reports reverts as "execution reverted: b'<repr>'"."""
    text = text.removeprefix("execution reverted").removeprefix(":").strip()
    if text[:2] in ("b'", 'b"'):
        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raw = None
        if isinstance(raw, bytes):
            return decode_revert(raw)
    if text.startswith("0x"):
        return decode_revert(text)
    return ChainRevert(text or "reverted without reason")


def _hex_reverts(method: Callable[..., Any]) -> Callable[..., Any]:
    """Keeps eth-tester's raw revert data intact as hex.

    web3's eth-tester provider ABI-decodes any revert data as Error(string) after
    dropping the selector, so a custom error with a string argument loses its name;
    handing it a hex string instead makes it pass the data through unchanged.
    """

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except TransactionFailed as exc:
            arg = exc.args[0] if exc.args else None
            if isinstance(arg, Exception) and arg.args:
                arg = arg.args[0]
            if isinstance(arg, (bytes, bytearray)):
                raise TransactionFailed(to_hex(arg)) from exc
            raise

    return wrapped


class _LockedTesterProvider(EthereumTesterProvider):
    """py-evm is not thread-safe: serialise every request on the embedded chain."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        if self.ethereum_tester is None:  # the base class always makes one; its class default is None
            raise ChainError("web3's EthereumTesterProvider made no EthereumTester")
        tester = self.tester = self.ethereum_tester
        for name in ("call", "estimate_gas"):
            setattr(tester, name, _hex_reverts(getattr(tester, name)))

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)


class _AnsweringHTTPProvider(HTTPProvider):
    """JSON-RPC over HTTP whose transport failures are ChainUnavailable, naming the node.

    A node that is down or unreachable is then one error everywhere (index, outbox, API),
    which callers tell apart from a revert or a chain that answers with other data.
    """

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ChainUnavailable(
                f"the chain node at {self.endpoint_uri} does not answer ({type(exc).__name__})"
            ) from None


class Chain:
    """A connected chain: web3 handle, local signing, per-sender nonces, revert decoding.

    The chain id and fee model are read on first use, not here, so a gateway can be
    built (and serve what needs no chain) while its node is down.
    """

    def __init__(self, w3: Web3, dev_key: str, embedded: bool) -> None:
        self.w3 = w3
        self.embedded = embedded
        self.dev_account: LocalAccount = Account.from_key(dev_key)
        self._nonces: dict[str, int] = {}
        self._sender_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @functools.cached_property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def known_chain_id(self) -> int | None:
        """The chain id, or None while the node has never answered (a check of it waits until it does)."""
        try:
            return self.chain_id
        except ChainUnavailable:
            return None

    @functools.cached_property
    def _eip1559(self) -> bool:
        return self.w3.eth.get_block("latest").get("baseFeePerGas") is not None

    def answers(self) -> bool:
        """Whether the node answers now (one cheap request)."""
        try:
            self.w3.eth.block_number  # noqa: B018 - the request is the point
        except Exception:  # noqa: BLE001 - any failure means: not now
            return False
        return True

    # -- contracts ---------------------------------------------------------------------
    def contract(self, name: str, address: str, *, named: bool = False) -> Contract:
        """A web3 contract object for a project contract at `address`.

        With `named`, a call returns a struct, or several outputs, as a named tuple
        (web3's `decode_tuples`), so readers name the fields they use
        (`member(id).call().gatewayUrl`) instead of counting positions.
        """
        return self.w3.eth.contract(
            address=to_checksum_address(address), abi=load_artifact(name)["abi"], decode_tuples=named
        )

    def deploy(self, name: str, sender: LocalAccount, *args: Any) -> Contract:
        """Deploys a project contract from its committed artifact; returns the bound contract."""
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.transact(factory.constructor(*args), sender)
        address = receipt["contractAddress"]
        if not address:
            raise ChainError(f"deploying {name} produced no contract address")
        return self.contract(name, address)

    # -- transactions ------------------------------------------------------------------
    def transact(self, fn: ContractFunction | ContractConstructor, sender: LocalAccount) -> TxReceipt:
        """Builds, signs locally, sends and waits for `fn`; raises ChainRevert on revert."""
        tx: dict[str, Any] = {"from": sender.address, "chainId": self.chain_id}
        try:
            tx = dict(fn.build_transaction(cast(TxParams, {**tx, "gas": EMBEDDED_GAS, **self._fees()})))
            if self.embedded:
                # py-evm estimates by binary search (~15 executions); one call finds reverts.
                self._preflight_embedded(tx)
            else:
                tx.pop("gas")
                # judged as the next block will run it: anvil mines on demand, so its latest block
                # can be older than a time-gated call (settle after the dispute windows) needs
                tx["gas"] = self.w3.eth.estimate_gas(cast(TxParams, tx), "pending") * 5 // 4 + 10_000
        except Exception as exc:
            revert = _revert_from(exc)
            if revert is not None:
                raise revert from exc
            short = self._gas_money_short(tx, sender.address, tx.get("gas"))  # the embedded chain's fixed limit
            if short is not None:
                raise short from exc
            raise
        return self._send(tx, sender)

    def _gas_money_short(self, tx: dict[str, Any], address: str, gas: int | None = None) -> NoGasMoney | None:
        """NoGasMoney when `address` cannot pay `tx`'s gas (its limit `gas` once set, as a node checks it when
        it takes a transaction) at the fee it offers; asked only after a transaction failed before it was mined
        (a node says so in its own words: "gas required exceeds allowance: 0", "insufficient funds")."""
        price = tx.get("maxFeePerGas", tx.get("gasPrice", 0))
        if not price:
            return None
        try:
            balance = self.w3.eth.get_balance(to_checksum_address(address))
            need = gas or PLAIN_TRANSFER_GAS
            if gas is None and balance >= price * need:  # this one's gas, then: estimated with no fee, as it costs
                unpriced = {k: v for k, v in tx.items() if k not in ("gas", "gasPrice", *_EIP1559_FEES)}
                need = self.w3.eth.estimate_gas(cast(TxParams, unpriced), "pending")
        except Exception:  # noqa: BLE001 - the first failure stands (a revert, the node gone, …)
            return None
        if balance >= price * need:
            return None
        return NoGasMoney(
            f"the account {address} holds {balance} wei, too little to pay for {need} gas at {price} wei: nothing "
            "was sent; fund it (`xcentre consortium fund`, or `xcentre deploy --fund-members`), or run the chain "
            "with a zero gas price"
        )

    def _preflight_embedded(self, tx: dict[str, Any]) -> None:
        """Runs `tx` as a call to find a revert before it is sent.

        eth-tester judges a call by its latest block, which, when the chain has been quiet, is
        older than the block the transaction will be mined in (stamped now). A call that
        reverts then is judged again once an empty block brings the chain's clock to now, so
        a time-gated call (settle after the dispute windows) is not refused for a stale clock.
        """
        try:
            self.w3.eth.call(_call_params(tx))
        except Exception:
            if self.w3.eth.get_block("latest")["timestamp"] >= int(time.time()):
                raise
            self.mine(1)
            self.w3.eth.call(_call_params(tx))

    def send_value(self, sender: LocalAccount, to: str, wei: int) -> TxReceipt:
        """A plain value transfer signed by `sender`."""
        tx = {
            "from": sender.address,
            "to": to_checksum_address(to),
            "value": int(wei),
            "gas": PLAIN_TRANSFER_GAS,
            "chainId": self.chain_id,
            **self._fees(),
        }
        return self._send(tx, sender)

    def fund(self, address: str, wei: int) -> TxReceipt:
        """Sends `wei` from the pre-funded dev account (eth-tester account 0 / anvil key 0)."""
        return self.send_value(self.dev_account, address, wei)

    def call(self, fn: ContractFunction, block: BlockIdentifier = "latest") -> Any:
        """fn.call() with reverts mapped to ChainRevert on both backends."""
        try:
            return fn.call(block_identifier=block)
        except Exception as exc:
            revert = _revert_from(exc)
            if revert is not None:
                raise revert from exc
            raise

    def mine(self, blocks: int = 1) -> None:
        """Mines empty blocks (anvil_mine on RPC: evm_mine [n] is misread by anvil)."""
        if self.embedded:
            self.w3.provider.ethereum_tester.mine_blocks(blocks)  # type: ignore[attr-defined]
        else:
            self.w3.provider.make_request(RPCEndpoint("anvil_mine"), [hex(blocks)])

    def block_number(self) -> int:
        return self.w3.eth.block_number

    # -- internals ---------------------------------------------------------------------
    def _fees(self) -> dict[str, int]:
        price = self.w3.eth.gas_price
        if self._eip1559:
            tip = min(price, 10**9)
            return {"maxFeePerGas": 2 * price + tip, "maxPriorityFeePerGas": tip}
        return {"gasPrice": price}

    def _lock_for(self, address: str) -> threading.Lock:
        with self._locks_guard:
            return self._sender_locks.setdefault(address, threading.Lock())

    def _send(self, tx: dict[str, Any], sender: LocalAccount) -> TxReceipt:
        address = sender.address
        with self._lock_for(address):
            for attempt in range(2):
                if address not in self._nonces:
                    self._nonces[address] = self.w3.eth.get_transaction_count(address, "pending")
                tx["nonce"] = self._nonces[address]
                signed = sender.sign_transaction(tx)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Exception as exc:
                    self._nonces.pop(address, None)  # resynchronise with the node
                    revert = _revert_from(exc)
                    if revert is not None:
                        raise revert from exc
                    if attempt == 0 and "nonce" in str(exc).lower():
                        continue
                    short = self._gas_money_short(tx, address, tx.get("gas"))
                    if short is not None:
                        raise short from exc
                    raise
                self._nonces[address] += 1
                break
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT, poll_latency=POLL_LATENCY)
        if receipt["status"] != 1:
            raise self._replay_revert(tx, receipt)
        return receipt

    def _replay_revert(self, tx: dict[str, Any], receipt: TxReceipt) -> ChainRevert:
        """Re-executes a failed transaction as a call to learn why it reverted.

        First on the state it ran on (the block before its own); then, for a revert that
        depends on the time (a proposal's expiry), at its own block, whose time it ran at.
        """
        for block in (receipt["blockNumber"] - 1, receipt["blockNumber"]):
            try:
                self.w3.eth.call(_call_params(tx), block_identifier=block)
            except Exception as exc:  # noqa: BLE001 - best effort: a replay that fails for another reason says nothing
                revert = _revert_from(exc)
                if revert is not None:
                    return revert
        return ChainRevert(f"transaction {receipt['transactionHash'].to_0x_hex()} reverted")


def _call_params(tx: dict[str, Any]) -> TxParams:
    """The fields of a transaction that an eth_call replays."""
    return cast(TxParams, {k: v for k, v in tx.items() if k in ("from", "to", "data", "value", "gas")})


def _is_connected(w3: Web3) -> bool:
    try:
        return bool(w3.is_connected())
    except ChainUnavailable:
        return False


def connect(url: str = "embedded", *, require_node: bool = True) -> Chain:
    """Connects to the in-process chain ("embedded") or a JSON-RPC node ("http://…").

    With `require_node` False a JSON-RPC node that does not answer yet is no error: the
    chain is read on first use, and each read while the node is down raises ChainUnavailable
    (a gateway starts so, serving from its local index).
    """
    if url == "embedded":
        tester = _LockedTesterProvider()
        w3 = Web3(tester)
        key = tester.tester.backend.account_keys[0]
        return Chain(w3, key.to_hex() if hasattr(key, "to_hex") else str(key), embedded=True)
    if url.startswith(("http://", "https://")):
        rpc = _AnsweringHTTPProvider(
            url,
            request_kwargs={"timeout": RPC_TIMEOUT},
            # a refused connection is asked again twice (a node restarting); a node that took the request and
            # did not answer in RPC_TIMEOUT is not asked again (web3 retries timeouts five times by default)
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=(ConnectionError, requests.ConnectionError), retries=2
            ),
        )
        w3 = Web3(rpc)
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
        if require_node and not _is_connected(w3):
            raise ChainError(f"no JSON-RPC node answers at {url}")
        return Chain(w3, ANVIL_DEV_KEY, embedded=False)
    raise ValueError(f"chain url must be 'embedded' or http(s)://…, got {url!r}")
