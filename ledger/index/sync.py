"""Following the chain: fetch the indexed contracts' logs in block windows and apply them.

Each window (at most `window` blocks, up to the head minus `confirmations`) is fetched
with one `eth_getLogs`, decoded with the contract ABIs and applied in (block, log
index) order in one transaction, together with the window's last block, its hash and
its time, so a crash or a second sync never duplicates or loses an event and a new
index on the same file resumes where the last one stopped.

The stored block hash also guards against pointing an old index file at another chain
that reuses the same addresses (a fresh embedded chain does): that raises IndexMismatch
instead of silently mixing two histories. Only a chain that answers can mismatch: a node
that does not answer raises `ledger.chain.ChainUnavailable`, and the index keeps serving
what it holds until a later sync reaches the node. Chain reorganisations are not followed; use
`confirmations` on chains without instant finality (Besu QBFT and anvil/eth-tester are
final at once).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from hexbytes import HexBytes

from ledger.chain import Chain, ChainUnavailable
from ledger.db import transaction
from ledger.deploy import Deployment, bind
from ledger.index import schema
from ledger.index.projections import PROJECTIONS, TIMED, Event, project
from ledger.primitives.canonical import canonical_json
from ledger.primitives.hex import to_hex


class EventIndexError(Exception):
    """Base of the event index's errors."""


class IndexMismatch(EventIndexError):
    """The index file belongs to another deployment or another chain history."""


@dataclass(frozen=True)
class BlockRef:
    """The last block of a window, written beside its events."""

    number: int
    hash: str  # 0x-hex
    timestamp: int  # UTC seconds


class LogReader:
    """Reads and decodes the logs of a deployment's indexed contracts (those in PROJECTIONS)."""

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        self.chain = chain
        contracts = bind(chain, deployment)
        bound = {
            "Consortium": contracts.consortium,
            "UsageLedger": contracts.usage_ledger,
            "Settlement": contracts.settlement,
            "IdentityRegistry": contracts.identity_registry,  # None in deployments without one
        }
        self.addresses: list[ChecksumAddress] = []
        # (address, topic0) -> (contract name, event object able to decode the log)
        self._decoders: dict[tuple[str, bytes], tuple[str, Any]] = {}
        for name in PROJECTIONS:
            contract = bound[name]
            if contract is None:
                continue
            self.addresses.append(to_checksum_address(contract.address))
            for event in contract.all_events():
                topic = bytes(HexBytes(event.topic))
                self._decoders[(contract.address.lower(), topic)] = (name, event)

    def head(self) -> int:
        return int(self.chain.w3.eth.block_number)

    def block(self, number: int) -> BlockRef:
        block = self.chain.w3.eth.get_block(number)
        return BlockRef(number, to_hex(block["hash"]), int(block["timestamp"]))

    def events(self, start: int, end: int) -> list[Event]:
        """The decoded events of blocks start..end in chain order (logs of unknown events skipped)."""
        # camelCase keys: web3 8 passes the filter through unchanged and anvil
        # rejects "from_block" (eth-tester accepts both).
        logs = self.chain.w3.eth.get_logs({"address": self.addresses, "fromBlock": start, "toBlock": end})
        events = []
        times: dict[int, int] = {}  # block -> its time, read once for the few events that need it (TIMED)
        for log in logs:
            key = (str(log["address"]).lower(), bytes(log["topics"][0]) if log["topics"] else b"")
            if key not in self._decoders:
                continue  # an event this index does not keep (e.g. from a future ABI)
            contract, decoder = self._decoders[key]
            ev = decoder.process_log(log)
            block = int(ev["blockNumber"])
            timed = (contract, ev["event"]) in TIMED
            if timed and block not in times:
                times[block] = self.block(block).timestamp
            events.append(
                Event(
                    contract=contract,
                    name=ev["event"],
                    args=ev["args"],
                    block=block,
                    log_index=int(ev["logIndex"]),
                    tx_hash=to_hex(ev["transactionHash"]),
                    time=times[block] if timed else None,
                )
            )
        events.sort(key=lambda e: (e.block, e.log_index))
        return events


class ChainSync:
    """Writes a deployment's events into an index file; one sync at a time."""

    def __init__(
        self,
        db: sqlite3.Connection,
        lock: threading.RLock,
        reader: LogReader,
        deployment: Deployment,
        *,
        path: str,
        window: int,
        confirmations: int,
    ) -> None:
        self._db = db
        self._lock = lock  # guards the connection, shared with the readers
        self._sync_lock = threading.Lock()
        self._synced_from = float("-inf")  # time.monotonic() when the last sync that finished began
        self.reader = reader
        self.deployment = deployment
        self.path = path
        self.window = window
        self.confirmations = confirmations
        self.head_seen: int | None = None  # the chain's head at the last sync that reached the node
        self.reachable: bool | None = None  # whether the last sync reached the node (None: none tried yet)
        self.last_error: Exception | None = None  # what the last sync failed with; None after one that did not
        self._claim_file()

    def _claim_file(self) -> None:
        """Marks a new file as this deployment's; refuses a file of another deployment."""
        ident = {
            "chain_id": self.deployment.chain_id,
            "consortium": self.deployment.consortium.lower(),
            "usage_ledger": self.deployment.usage_ledger.lower(),
            "settlement": self.deployment.settlement.lower(),
        }
        if self.deployment.identity_registry is not None:
            ident["identity_registry"] = self.deployment.identity_registry.lower()
        with self._lock:
            stored = schema.read_meta(self._db, schema.DEPLOYMENT)
            if stored is None:
                schema.write_meta(self._db, schema.DEPLOYMENT, canonical_json(ident))
            elif json.loads(stored) != ident:
                raise IndexMismatch(f"{self.path} indexes another deployment: {stored}")

    @property
    def last_block(self) -> int:
        """The last block whose events are in the index (start_block - 1 before any sync)."""
        with self._lock:
            value = schema.read_meta(self._db, schema.LAST_BLOCK)
        return int(value) if value is not None else self.deployment.start_block - 1

    def sync(self, *, unless_within: float | None = None) -> int:
        """Indexes every new event up to the head (minus confirmations); returns how many.

        With `unless_within`, nothing is asked (0) if a sync that began at most that many seconds before this
        call has finished (also one this call waited for): what it read is then at most that far behind the
        chain as of the call, and a public route that shows the latest chain state asks the chain at most that
        often however many requests it gets. A sync is timed from its start, when it reads the chain's head.
        """
        called = time.monotonic()
        with self._sync_lock:
            if unless_within is not None and called - self._synced_from <= unless_within:
                return 0
            started = time.monotonic()
            try:
                applied = self._sync()
            except Exception as exc:
                if isinstance(exc, ChainUnavailable):
                    self.reachable = False
                self.last_error = exc
                raise
            self.last_error = None
            self._synced_from = started
            return applied

    def _sync(self) -> int:
        last = self.last_block
        self._check_history(last)
        self._fill_revocation_times()
        self._fill_proposal_times()
        self.head_seen = self.reader.head()
        self.reachable = True
        head = self.head_seen - self.confirmations
        applied = 0
        start = last + 1
        while start <= head:
            end = min(start + self.window - 1, head)
            events = self.reader.events(start, end)
            applied += self._apply_window(events, self.reader.block(end))
            start = end + 1
        return applied

    def _check_history(self, last: int) -> None:
        with self._lock:
            stored = schema.read_meta(self._db, schema.LAST_BLOCK_HASH)
        if stored is None:
            return
        try:
            actual = self.reader.block(last).hash
        except ChainUnavailable:
            raise  # silence is no verdict on the chain's history: the next round asks again
        except Exception as exc:  # the chain answers, and is shorter than the index
            raise IndexMismatch(f"{self.path} has indexed block {last}, which this chain does not have") from exc
        if actual != stored:
            raise IndexMismatch(f"{self.path} was built from another chain history (block {last} hash differs)")

    def _fill_revocation_times(self) -> None:
        """Reads the block time of each revocation indexed before the index kept it (schema step 4)."""
        with self._lock:
            blocks = [int(r[0]) for r in self._db.execute("SELECT DISTINCT block FROM revocations WHERE at IS NULL")]
        if not blocks:
            return
        times = {block: self.reader.block(block).timestamp for block in blocks}
        with self._lock, transaction(self._db):
            self._db.executemany(
                "UPDATE revocations SET at = :at WHERE block = :block AND at IS NULL",
                [{"at": at, "block": block} for block, at in times.items()],
            )

    def _fill_proposal_times(self) -> None:
        """Reads the block time of each proposal indexed before the index kept it (schema step 6)."""
        tables = ("proposals", "key_proposals")  # this module's names, never input
        with self._lock:
            blocks = {
                int(r[0])
                for table in tables
                for r in self._db.execute(f"SELECT DISTINCT block FROM {table} WHERE created_at IS NULL")
            }
        if not blocks:
            return
        times = {block: self.reader.block(block).timestamp for block in sorted(blocks)}
        with self._lock, transaction(self._db):
            for table in tables:
                self._db.executemany(
                    f"UPDATE {table} SET created_at = :at WHERE block = :block AND created_at IS NULL",
                    [{"at": at, "block": block} for block, at in times.items()],
                )

    def _apply_window(self, events: list[Event], end: BlockRef) -> int:
        """Records and projects the events new to the index, then moves the last block to `end`."""
        applied = 0
        with self._lock, transaction(self._db):
            for ev in events:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events (block, log_index, tx_hash, contract, event, args)"
                    " VALUES (:block, :log_index, :tx_hash, :contract, :event, :args)",
                    {
                        "block": ev.block,
                        "log_index": ev.log_index,
                        "tx_hash": ev.tx_hash,
                        "contract": ev.contract,
                        "event": ev.name,
                        "args": canonical_json(_plain(dict(ev.args))),
                    },
                )
                if cur.rowcount == 0:
                    continue  # already applied
                applied += 1
                project(self._db, ev)
            schema.write_meta(self._db, schema.LAST_BLOCK, str(end.number))
            schema.write_meta(self._db, schema.LAST_BLOCK_HASH, end.hash)
            schema.write_meta(self._db, schema.LAST_BLOCK_TIME, str(end.timestamp))
        return applied


class Follower:
    """Calls `step` every `interval` seconds in a daemon thread until stop().

    Errors (node unreachable …) do not end the thread: they are kept in `last_error`
    and passed to `on_error`, and the next round tries again.
    """

    def __init__(self, step: Callable[[], object], name: str) -> None:
        self._step = step
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None

    def start(self, interval: float, on_error: Callable[[BaseException], None] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval, on_error), name=self._name, daemon=True)
        self._thread.start()

    def _run(self, interval: float, on_error: Callable[[BaseException], None] | None) -> None:
        while not self._stop.is_set():
            try:
                self._step()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - any failure is reported, and the next round retries
                self.last_error = exc
                if on_error is not None:
                    on_error(exc)
            self._stop.wait(interval)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stops the thread (a step in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def _plain(value: Any) -> Any:
    """JSON-able form of decoded event args (bytes -> 0x hex, big ints stay ints)."""
    if isinstance(value, (bytes, bytearray)):
        return to_hex(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
