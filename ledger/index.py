"""Local index of a consortium's chain events, so gateways never read the chain on the hot path.

`EventIndex.sync()` fetches the logs of the deployment's contracts from the last
indexed block + 1 up to the head, in block windows, decodes them with the contract
ABIs and applies them in (block, log index) order to SQLite tables: members (current
state), every published rates version of every member, proposals and votes, anchors and their claims, settlements and their
transfers, and from the IdentityRegistry the issuer keys with their validity windows,
key proposals and votes, enrolments and each home's revocation epoch. The last indexed block (and its hash) is written in the same transaction
as the rows of its window, so a crash or a second sync never duplicates or loses an
event, and a new EventIndex on the same file resumes where the last one stopped.

The stored block hash also guards against pointing an old index file at another
chain that reuses the same addresses (a fresh embedded chain does): that raises
IndexMismatch instead of silently mixing two histories. Chain reorganisations are
not handled; use `confirmations` on chains without instant finality (Besu QBFT and
anvil/eth-tester are final at once).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from eth_utils import to_checksum_address
from hexbytes import HexBytes

from ledger.chain import Chain
from ledger.db import open_durable
from ledger.deploy import Deployment, Prices, bind
from ledger.ids import centre_id

DEFAULT_WINDOW = 2_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    block      INTEGER NOT NULL,
    log_index  INTEGER NOT NULL,
    tx_hash    TEXT    NOT NULL,
    contract   TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    args       TEXT    NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE TABLE IF NOT EXISTS members (
    id            BLOB PRIMARY KEY,
    name          TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    gateway_url   TEXT    NOT NULL,
    token_key     BLOB    NOT NULL,
    active        INTEGER NOT NULL,
    admitted_block INTEGER NOT NULL,
    admitted_log   INTEGER NOT NULL,
    updated_block  INTEGER NOT NULL,
    removed_block  INTEGER
);
CREATE TABLE IF NOT EXISTS rates (
    centre         BLOB    NOT NULL,
    version        INTEGER NOT NULL,
    effective_from INTEGER NOT NULL,
    per_cpu_second TEXT    NOT NULL,
    per_gpu_second TEXT    NOT NULL,
    per_gib_hour   TEXT    NOT NULL,
    block          INTEGER NOT NULL,
    PRIMARY KEY (centre, version)
);
CREATE TABLE IF NOT EXISTS proposals (
    id         INTEGER PRIMARY KEY,
    action     INTEGER NOT NULL,
    member_id  BLOB    NOT NULL,
    proposer   BLOB    NOT NULL,
    executed   INTEGER NOT NULL DEFAULT 0,
    block      INTEGER NOT NULL,
    tx_hash    TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    proposal_id INTEGER NOT NULL,
    voter       BLOB    NOT NULL,
    block       INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, voter)
);
CREATE TABLE IF NOT EXISTS anchors (
    centre       BLOB    NOT NULL,
    epoch        INTEGER NOT NULL,
    root         BLOB    NOT NULL,
    record_count INTEGER NOT NULL,
    tx_hash      TEXT    NOT NULL,
    block        INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    PRIMARY KEY (centre, epoch)
);
CREATE TABLE IF NOT EXISTS claims (
    epoch    INTEGER NOT NULL,
    creditor BLOB    NOT NULL,
    debtor   BLOB    NOT NULL,
    position INTEGER NOT NULL,
    amount   TEXT    NOT NULL,
    PRIMARY KEY (epoch, creditor, debtor)
);
CREATE TABLE IF NOT EXISTS settlements (
    epoch    INTEGER PRIMARY KEY,
    tx_hash  TEXT    NOT NULL,
    block    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS net_positions (
    epoch    INTEGER NOT NULL,
    centre   BLOB    NOT NULL,
    position INTEGER NOT NULL,
    net      TEXT    NOT NULL,
    PRIMARY KEY (epoch, centre)
);
CREATE TABLE IF NOT EXISTS transfers (
    epoch     INTEGER NOT NULL,
    block     INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    debtor    BLOB    NOT NULL,
    creditor  BLOB    NOT NULL,
    amount    TEXT    NOT NULL,
    tx_hash   TEXT    NOT NULL,
    PRIMARY KEY (block, log_index)
);
CREATE TABLE IF NOT EXISTS issuer_keys (
    centre      BLOB    NOT NULL,
    key_id      BLOB    NOT NULL,
    pk          BLOB    NOT NULL,
    valid_from  INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,  -- 0: current, open-ended
    block       INTEGER NOT NULL,
    log_index   INTEGER NOT NULL,
    PRIMARY KEY (centre, key_id)
);
CREATE TABLE IF NOT EXISTS key_proposals (
    id                   INTEGER PRIMARY KEY,
    centre               BLOB    NOT NULL,
    key_id               BLOB,             -- NULL: revoke the centre's keys
    previous_valid_until INTEGER NOT NULL,
    proposer             BLOB    NOT NULL,
    executed             INTEGER NOT NULL DEFAULT 0,
    block                INTEGER NOT NULL,
    tx_hash              TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS key_votes (
    proposal_id INTEGER NOT NULL,
    voter       BLOB    NOT NULL,
    block       INTEGER NOT NULL,
    PRIMARY KEY (proposal_id, voter)
);
CREATE TABLE IF NOT EXISTS enrolments (
    id               BLOB    NOT NULL,
    home             BLOB    NOT NULL,
    enrolled_at      INTEGER NOT NULL,
    revoked          INTEGER NOT NULL DEFAULT 0,
    revocation_epoch INTEGER,
    block            INTEGER NOT NULL,
    revoked_block    INTEGER,
    PRIMARY KEY (home, id)  -- an id means something only at its home
);
CREATE TABLE IF NOT EXISTS revocation_epochs (
    centre BLOB PRIMARY KEY,
    epoch  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_epoch ON transfers (epoch, block, log_index);
CREATE INDEX IF NOT EXISTS anchors_epoch ON anchors (epoch, block, log_index);
"""


class EventIndexError(Exception):
    """Base of the event index's errors."""


class IndexMismatch(EventIndexError):
    """The index file belongs to another deployment or another chain history."""


@dataclass(frozen=True)
class RatesInfo:
    """One published version of a centre's rates: for jobs accepted from `effective_from` on."""

    centre: bytes
    version: int
    effective_from: int  # UTC seconds
    prices: Prices
    block: int = 0


@dataclass(frozen=True)
class MemberInfo:
    """A member centre as the chain last described it, with the rates in force when asked."""

    id: bytes
    name: str
    account: str
    gateway_url: str
    token_key: bytes
    prices: Prices | None  # of the rates version in force at EventIndex.now(); None if none is
    active: bool
    rates_version: int = 0  # that version's number (0 with prices None)


@dataclass(frozen=True)
class AnchorInfo:
    """One centre's anchored epoch: Merkle root, record count and claims on debtors."""

    centre: bytes
    epoch: int
    root: bytes
    record_count: int
    claims: dict[bytes, int]  # debtor id -> amount, in anchoring order
    tx_hash: str
    block: int


@dataclass(frozen=True)
class SettlementInfo:
    """A settled epoch: net positions in netting order and the transfers made."""

    epoch: int
    net: dict[bytes, int]  # centre id -> net (positive: it was owed)
    transfers: list[tuple[bytes, bytes, int]]  # (debtor, creditor, amount) in order
    tx_hash: str
    block: int


@dataclass(frozen=True)
class ProposalInfo:
    """A governance proposal and who voted for it."""

    id: int
    action: int  # 0 admit, 1 remove
    member_id: bytes
    proposer: bytes
    voters: list[bytes] = field(default_factory=list)
    executed: bool = False
    block: int = 0


@dataclass(frozen=True)
class IssuerKeyInfo:
    """A centre's credential issuer key and its validity window (chain block times).

    Valid at time t iff valid_from <= t and (valid_until == 0 or t < valid_until).
    """

    pk: bytes
    key_id: bytes  # keccak256(pk); presentations name a key by key_id[:8].hex()
    valid_from: int
    valid_until: int  # 0: the current key, open-ended
    centre: bytes = b""
    block: int = 0

    def valid_at(self, at: int) -> bool:
        """Whether a credential signed with this key may be presented at time `at`.

        Only the end of the window counts: `valid_from` is a block timestamp, and a
        chain's clock may run ahead of the verifier's (eth-tester stamps blocks mined
        within the same second a second apart), so a key just registered must not
        look "not yet valid".
        """
        return self.valid_until == 0 or at < self.valid_until

    @property
    def short_id(self) -> str:
        """The presentation's key_id: hex of the first 8 bytes of key_id."""
        return self.key_id[:8].hex()


@dataclass(frozen=True)
class EnrolmentInfo:
    """A user's pseudonymous enrolment at its home centre; (home, id) names it."""

    id: bytes
    home: bytes
    enrolled_at: int
    revoked: bool
    revocation_epoch: int | None  # the home's epoch this revocation produced; None if not revoked
    block: int


@dataclass(frozen=True)
class KeyProposalInfo:
    """A governance proposal to set (key_id) or revoke (key_id None) a centre's issuer key."""

    id: int
    centre: bytes
    key_id: bytes | None
    previous_valid_until: int
    proposer: bytes
    voters: list[bytes] = field(default_factory=list)
    executed: bool = False
    block: int = 0


def _hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()


def _plain(value: Any) -> Any:
    """JSON-able form of decoded event args (bytes -> 0x hex, big ints stay ints)."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _prices(p: Any) -> Prices:
    if hasattr(p, "items"):
        return Prices(int(p["perCpuSecond"]), int(p["perGpuSecond"]), int(p["perGibHour"]))
    return Prices.from_tuple(p)


class EventIndex:
    """SQLite index of one deployment's events; reads are safe from any thread."""

    def __init__(
        self,
        path: str | Path,
        chain: Chain,
        deployment: Deployment,
        *,
        window: int = DEFAULT_WINDOW,
        confirmations: int = 0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1 block")
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self.path = str(path)
        self.chain = chain
        self.deployment = deployment
        self.window = window
        self.confirmations = confirmations
        contracts = bind(chain, deployment)
        sources = {
            "Consortium": contracts.consortium,
            "UsageLedger": contracts.usage_ledger,
            "Settlement": contracts.settlement,
        }
        if contracts.identity_registry is not None:
            sources["IdentityRegistry"] = contracts.identity_registry
        self._addresses = [to_checksum_address(c.address) for c in sources.values()]
        # (address, topic0) -> (contract name, event object able to decode the log)
        self._decoders: dict[tuple[str, bytes], tuple[str, Any]] = {}
        for name, contract in sources.items():
            for event in contract.events:
                topic = bytes(HexBytes(event.topic))
                self._decoders[(contract.address.lower(), topic)] = (name, event())
        self._db = open_durable(self.path, _SCHEMA)
        self._lock = threading.RLock()  # guards the connection
        self._sync_lock = threading.Lock()  # one sync at a time
        self._check_deployment()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.last_error: BaseException | None = None

    # -- bookkeeping ------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _check_deployment(self) -> None:
        fields = {
            "chain_id": self.deployment.chain_id,
            "consortium": self.deployment.consortium.lower(),
            "usage_ledger": self.deployment.usage_ledger.lower(),
            "settlement": self.deployment.settlement.lower(),
        }
        if self.deployment.identity_registry is not None:
            fields["identity_registry"] = self.deployment.identity_registry.lower()
        ident = json.dumps(fields, sort_keys=True)
        with self._lock:
            stored = self._meta("deployment")
            if stored is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('deployment', ?)", (ident,))
            elif stored != ident:
                raise IndexMismatch(f"{self.path} indexes another deployment: {stored}")

    @property
    def last_block(self) -> int:
        """The last block whose events are in the index (start_block - 1 before any sync)."""
        value = self._meta("last_block")
        return int(value) if value is not None else self.deployment.start_block - 1

    @property
    def chain_time(self) -> int:
        """The timestamp of the last indexed block (0 before any sync).

        Validity windows on chain are in block time, which may run ahead of the
        local clock; judging them by the later of the two ends a key when the
        chain says it ended.
        """
        value = self._meta("last_block_time")
        return int(value) if value is not None else 0

    # -- syncing ----------------------------------------------------------------

    def sync(self) -> int:
        """Indexes every new event up to the head (minus confirmations); returns how many."""
        with self._sync_lock:
            w3 = self.chain.w3
            last = self.last_block
            self._check_history(last)
            head = w3.eth.block_number - self.confirmations
            applied = 0
            start = last + 1
            while start <= head:
                end = min(start + self.window - 1, head)
                # camelCase keys: web3 8 passes the filter through unchanged and anvil
                # rejects "from_block" (eth-tester accepts both).
                logs = w3.eth.get_logs(
                    {"address": self._addresses, "fromBlock": start, "toBlock": end}
                )
                end_block = w3.eth.get_block(end)
                applied += self._apply_window(logs, end, _hex(end_block["hash"]), int(end_block["timestamp"]))
                start = end + 1
            return applied

    def _check_history(self, last: int) -> None:
        stored = self._meta("last_block_hash")
        if stored is None:
            return
        try:
            actual = _hex(self.chain.w3.eth.get_block(last)["hash"])
        except Exception as exc:  # the chain is shorter than the index
            raise IndexMismatch(
                f"{self.path} has indexed block {last}, which this chain does not have"
            ) from exc
        if actual != stored:
            raise IndexMismatch(
                f"{self.path} was built from another chain history (block {last} hash differs)"
            )

    def _apply_window(self, logs: list, end: int, end_hash: str, end_time: int) -> int:
        decoded = []
        for log in logs:
            key = (str(log["address"]).lower(), bytes(log["topics"][0]) if log["topics"] else b"")
            if key not in self._decoders:
                continue  # an event this index does not keep (e.g. from a future ABI)
            contract, event = self._decoders[key]
            decoded.append((contract, event.process_log(log)))
        decoded.sort(key=lambda item: (item[1]["blockNumber"], item[1]["logIndex"]))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                applied = 0
                last_vote: tuple[str, int] | None = None
                for contract, ev in decoded:
                    block, log_index = int(ev["blockNumber"]), int(ev["logIndex"])
                    tx = _hex(ev["transactionHash"])
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                        (block, log_index, tx, contract, ev["event"],
                         json.dumps(_plain(dict(ev["args"])), sort_keys=True)),
                    )
                    if cur.rowcount == 0:
                        continue  # already applied
                    applied += 1
                    last_vote = self._apply(ev, block, log_index, tx, last_vote)
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_block', ?)", (str(end),)
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_block_hash', ?)",
                    (end_hash,),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_block_time', ?)",
                    (str(end_time),),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return applied

    def _apply(
        self, ev: Any, block: int, log_index: int, tx: str, last_vote: tuple[str, int] | None
    ) -> tuple[str, int] | None:
        a = ev["args"]
        name = ev["event"]
        db = self._db
        if name == "MemberAdmitted":
            db.execute(
                "INSERT OR REPLACE INTO members VALUES (?,?,?,?,?,1,?,?,?,NULL)",
                (bytes(a["id"]), a["name"], to_checksum_address(a["account"]), a["gatewayUrl"],
                 bytes(a["tokenKey"]), block, log_index, block),
            )
            self._mark_executed(last_vote, tx, bytes(a["id"]), 0)
        elif name == "MemberRemoved":
            db.execute(
                "UPDATE members SET active = 0, removed_block = ?, updated_block = ? WHERE id = ?",
                (block, block, bytes(a["id"])),
            )
            self._mark_executed(last_vote, tx, bytes(a["id"]), 1)
        elif name == "MemberUpdated":
            db.execute(
                "UPDATE members SET gateway_url = ?, token_key = ?, updated_block = ? WHERE id = ?",
                (a["gatewayUrl"], bytes(a["tokenKey"]), block, bytes(a["id"])),
            )
        elif name == "RatesPublished":
            p = _prices(a["prices"])
            db.execute(
                "INSERT OR REPLACE INTO rates VALUES (?,?,?,?,?,?,?)",
                (bytes(a["id"]), int(a["version"]), int(a["effectiveFrom"]), str(p.per_cpu_second),
                 str(p.per_gpu_second), str(p.per_gib_hour), block),
            )
        elif name == "ProposalCreated":
            db.execute(
                "INSERT OR REPLACE INTO proposals VALUES (?,?,?,?,0,?,?)",
                (int(a["proposalId"]), int(a["action"]), bytes(a["memberId"]),
                 bytes(a["proposer"]), block, tx),
            )
        elif name == "Voted":
            db.execute(
                "INSERT OR IGNORE INTO votes VALUES (?,?,?)",
                (int(a["proposalId"]), bytes(a["voter"]), block),
            )
            return (tx, int(a["proposalId"]))
        elif name == "EpochAnchored":
            centre, epoch = bytes(a["centre"]), int(a["epoch"])
            db.execute(
                "INSERT OR REPLACE INTO anchors VALUES (?,?,?,?,?,?,?)",
                (centre, epoch, bytes(a["root"]), int(a["recordCount"]), tx, block, log_index),
            )
            for pos, (debtor, amount) in enumerate(zip(a["debtors"], a["amounts"])):
                db.execute(
                    "INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?)",
                    (epoch, centre, bytes(debtor), pos, str(int(amount))),
                )
        elif name == "EpochSettled":
            epoch = int(a["epoch"])
            db.execute("INSERT OR REPLACE INTO settlements VALUES (?,?,?)", (epoch, tx, block))
            for pos, (centre, net) in enumerate(zip(a["centres"], a["net"])):
                db.execute(
                    "INSERT OR REPLACE INTO net_positions VALUES (?,?,?,?)",
                    (epoch, bytes(centre), pos, str(int(net))),
                )
        elif name == "SettlementTransfer":
            db.execute(
                "INSERT OR IGNORE INTO transfers VALUES (?,?,?,?,?,?,?)",
                (int(a["epoch"]), block, log_index, bytes(a["from"]), bytes(a["to"]),
                 str(int(a["amount"])), tx),
            )
        elif name == "IssuerKeySet":
            db.execute(
                "INSERT OR REPLACE INTO issuer_keys VALUES (?,?,?,?,0,?,?)",
                (bytes(a["centre"]), bytes(a["keyId"]), bytes(a["pk"]), int(a["validFrom"]),
                 block, log_index),
            )
        elif name == "IssuerKeyEnds":
            db.execute(
                "UPDATE issuer_keys SET valid_until = ? WHERE centre = ? AND key_id = ?",
                (int(a["validUntil"]), bytes(a["centre"]), bytes(a["keyId"])),
            )
        elif name == "IssuerKeyProposed":
            key_id = bytes(a["keyId"])
            db.execute(
                "INSERT OR REPLACE INTO key_proposals VALUES (?,?,?,?,?,0,?,?)",
                (int(a["proposalId"]), bytes(a["centre"]), key_id if any(key_id) else None,
                 int(a["previousValidUntil"]), bytes(a["proposer"]), block, tx),
            )
        elif name == "IssuerKeyVoted":
            db.execute(
                "INSERT OR IGNORE INTO key_votes VALUES (?,?,?)",
                (int(a["proposalId"]), bytes(a["voter"]), block),
            )
        elif name == "IssuerKeyProposalExecuted":
            db.execute(
                "UPDATE key_proposals SET executed = 1 WHERE id = ?", (int(a["proposalId"]),)
            )
        elif name == "Enrolled":
            db.execute(
                "INSERT OR IGNORE INTO enrolments VALUES (?,?,?,0,NULL,?,NULL)",
                (bytes(a["enrolmentId"]), bytes(a["home"]), int(a["enrolledAt"]), block),
            )
        elif name == "Revoked":
            epoch = int(a["revocationEpoch"])
            db.execute(
                "UPDATE enrolments SET revoked = 1, revocation_epoch = ?, revoked_block = ?"
                " WHERE home = ? AND id = ?",
                (epoch, block, bytes(a["home"]), bytes(a["enrolmentId"])),
            )
            db.execute(
                "INSERT INTO revocation_epochs VALUES (?, ?) ON CONFLICT (centre)"
                " DO UPDATE SET epoch = MAX(epoch, excluded.epoch)",
                (bytes(a["home"]), epoch),
            )
        return last_vote

    def _mark_executed(
        self, last_vote: tuple[str, int] | None, tx: str, member_id: bytes, action: int
    ) -> None:
        # A proposal executes inside the transaction of its deciding vote.
        if last_vote is None or last_vote[0] != tx:
            return
        self._db.execute(
            "UPDATE proposals SET executed = 1 WHERE id = ? AND member_id = ? AND action = ?",
            (last_vote[1], member_id, action),
        )

    # -- following --------------------------------------------------------------

    def follow(
        self, interval: float = 1.0, on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        """Syncs every `interval` seconds in a daemon thread until stop().

        Errors (node unreachable …) do not end the thread: they are kept in
        `last_error` and passed to `on_error`, and the next round tries again.
        """
        if self._follower is not None and self._follower.is_alive():
            return
        self._stop.clear()
        self._follower = threading.Thread(
            target=self._follow, args=(interval, on_error), name="xcentre-index", daemon=True
        )
        self._follower.start()

    def _follow(self, interval: float, on_error: Callable[[BaseException], None] | None) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
                self.last_error = None
            except Exception as exc:
                self.last_error = exc
                if on_error is not None:
                    on_error(exc)
            self._stop.wait(interval)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stops the follower thread (a sync in progress finishes first)."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout)
            self._follower = None

    def close(self) -> None:
        """Stops following and closes the database."""
        self.stop()
        with self._lock:
            self._db.close()

    # -- queries ----------------------------------------------------------------

    def now(self) -> int:
        """The time rates are judged at: the later of this machine's clock and the chain's.

        A version applies from its `effective_from` by whichever clock reaches it first,
        so a version in force on chain (eth-tester stamps blocks ahead of real time) is
        in force here too; both clocks only move forward.
        """
        return max(int(time.time()), self.chain_time)

    def members(self) -> list[MemberInfo]:
        """Active members in admission order (the contract's netting order)."""
        at = self.now()
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM members WHERE active = 1 ORDER BY admitted_block, admitted_log"
            ).fetchall()
            return [self._member(r, at) for r in rows]

    def member(self, id_or_name: bytes | str) -> MemberInfo | None:
        """A member by bytes32 id or name, also a removed one (active=False); None if unknown."""
        key = _centre_key(id_or_name)
        if key is None:
            return None
        at = self.now()
        with self._lock:
            row = self._db.execute("SELECT * FROM members WHERE id = ?", (key,)).fetchone()
            return self._member(row, at) if row else None

    def _member(self, row: tuple, at: int) -> MemberInfo:
        rates = self.rates_in_force(bytes(row[0]), at)
        return MemberInfo(
            id=bytes(row[0]),
            name=row[1],
            account=row[2],
            gateway_url=row[3],
            token_key=bytes(row[4]),
            prices=rates.prices if rates else None,
            active=bool(row[5]),
            rates_version=rates.version if rates else 0,
        )

    # -- rates ------------------------------------------------------------------

    def rates(self, centre: bytes | str, version: int) -> RatesInfo | None:
        """A centre's rates version by number (also of a removed centre); None if never published."""
        key = _centre_key(centre)
        if key is None or not isinstance(version, int) or isinstance(version, bool):
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RATES} FROM rates WHERE centre = ? AND version = ?", (key, version)
            ).fetchone()
        return _rates(row) if row else None

    def rates_history(self, centre: bytes | str) -> list[RatesInfo]:
        """Every rates version the centre published, oldest first (pending ones included)."""
        key = _centre_key(centre)
        if key is None:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RATES} FROM rates WHERE centre = ? ORDER BY version", (key,)
            ).fetchall()
        return [_rates(r) for r in rows]

    def rates_in_force(self, centre: bytes | str, at: int) -> RatesInfo | None:
        """The version in force at `at` (UTC seconds): the highest one in effect by then, as
        `Consortium.ratesAt` decides; None when the centre has none in force (or is unknown)."""
        key = _centre_key(centre)
        if key is None:
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RATES} FROM rates WHERE centre = ? AND effective_from <= ?"
                " ORDER BY version DESC LIMIT 1",
                (key, int(at)),
            ).fetchone()
        return _rates(row) if row else None

    def member_by_account(self, account: str) -> MemberInfo | None:
        """The active member whose chain account is `account`, or None."""
        try:
            account = to_checksum_address(account)
        except (TypeError, ValueError):
            return None
        at = self.now()
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM members WHERE account = ? AND active = 1", (account,)
            ).fetchone()
            return self._member(row, at) if row else None

    def token_key(self, centre: str | bytes) -> bytes | None:
        """The token-signing key of an active member; None for unknown or removed centres.

        Shaped for auth.tokens.verify_token(key_for=index.token_key).
        """
        m = self.member(centre)
        return m.token_key if m is not None and m.active else None

    def anchor(self, centre: bytes | str, epoch: int) -> AnchorInfo | None:
        """What `centre` anchored for `epoch`, or None."""
        key = _centre_key(centre)
        if key is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT centre, epoch, root, record_count, tx_hash, block FROM anchors"
                " WHERE centre = ? AND epoch = ?",
                (key, int(epoch)),
            ).fetchone()
            return self._anchor(row) if row else None

    def anchors(self, epoch: int) -> list[AnchorInfo]:
        """Every anchor of `epoch`, in chain order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT centre, epoch, root, record_count, tx_hash, block FROM anchors"
                " WHERE epoch = ? ORDER BY block, log_index",
                (int(epoch),),
            ).fetchall()
            return [self._anchor(r) for r in rows]

    def _anchor(self, row: tuple) -> AnchorInfo:
        claims = self._db.execute(
            "SELECT debtor, amount FROM claims WHERE epoch = ? AND creditor = ? ORDER BY position",
            (row[1], row[0]),
        ).fetchall()
        return AnchorInfo(
            centre=bytes(row[0]),
            epoch=int(row[1]),
            root=bytes(row[2]),
            record_count=int(row[3]),
            claims={bytes(d): int(a) for d, a in claims},
            tx_hash=row[4],
            block=int(row[5]),
        )

    def settlement(self, epoch: int) -> SettlementInfo | None:
        """The settlement of `epoch`, or None if it is not settled (or not indexed yet)."""
        with self._lock:
            row = self._db.execute(
                "SELECT tx_hash, block FROM settlements WHERE epoch = ?", (int(epoch),)
            ).fetchone()
            if row is None:
                return None
            net = self._db.execute(
                "SELECT centre, net FROM net_positions WHERE epoch = ? ORDER BY position",
                (int(epoch),),
            ).fetchall()
            transfers = self._db.execute(
                "SELECT debtor, creditor, amount FROM transfers WHERE epoch = ?"
                " ORDER BY block, log_index",
                (int(epoch),),
            ).fetchall()
        return SettlementInfo(
            epoch=int(epoch),
            net={bytes(c): int(n) for c, n in net},
            transfers=[(bytes(d), bytes(c), int(a)) for d, c, a in transfers],
            tx_hash=row[0],
            block=int(row[1]),
        )

    def proposals(self, open_only: bool = False) -> list[ProposalInfo]:
        """Governance proposals in id order (only those not executed yet if open_only)."""
        sql = "SELECT id, action, member_id, proposer, executed, block FROM proposals"
        if open_only:
            sql += " WHERE executed = 0"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id").fetchall()
            result = []
            for r in rows:
                result.append(
                    ProposalInfo(
                        id=int(r[0]), action=int(r[1]), member_id=bytes(r[2]),
                        proposer=bytes(r[3]), voters=self._voters("votes", r[0]),
                        executed=bool(r[4]), block=int(r[5]),
                    )
                )
        return result


    # -- identity registry ------------------------------------------------------

    def issuer_keys(self, centre: bytes | str) -> list[IssuerKeyInfo]:
        """Every issuer key the centre ever had, oldest first (also of removed centres)."""
        key = _centre_key(centre)
        if key is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT pk, key_id, valid_from, valid_until, centre, block FROM issuer_keys"
                " WHERE centre = ? ORDER BY block, log_index",
                (key,),
            ).fetchall()
        return [_issuer_key(r) for r in rows]

    def current_issuer_key(self, centre: bytes | str) -> IssuerKeyInfo | None:
        """The centre's current (open-ended) issuer key, or None."""
        keys = [k for k in self.issuer_keys(centre) if k.valid_until == 0]
        return keys[-1] if keys else None

    def issuer_key(self, centre: bytes | str, key_id_prefix_hex: str, at: int) -> bytes | None:
        """The public key of `centre` whose key id starts with the given hex (the
        presentation's key_id: 8 bytes = 16 hex digits, "0x" optional, at least 8 bytes)
        if it is valid at time `at` and the centre is an active member; else None.

        Never raises on malformed input: it is fed with what a presentation claims.
        """
        prefix = _key_prefix(key_id_prefix_hex)
        member = self.member(centre)
        if prefix is None or member is None or not member.active:
            return None
        try:
            at = int(at)
        except (TypeError, ValueError):
            return None
        for k in self.issuer_keys(member.id):
            if k.key_id.startswith(prefix) and k.valid_at(at):
                return k.pk
        return None

    def enrolment(self, home: bytes | str, enrolment_id: bytes | str) -> EnrolmentInfo | None:
        """A home's enrolment by bytes32 id (or its 0x-hex), or None if that home has none.

        The home is part of the key: the same id enrolled by another member is another
        enrolment, so it can neither stand in for this one nor hide it.
        """
        centre, key = _centre_key(home), _bytes32(enrolment_id)
        if centre is None or key is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, home, enrolled_at, revoked, revocation_epoch, block FROM enrolments"
                " WHERE home = ? AND id = ?",
                (centre, key),
            ).fetchone()
        if row is None:
            return None
        return EnrolmentInfo(
            id=bytes(row[0]),
            home=bytes(row[1]),
            enrolled_at=int(row[2]),
            revoked=bool(row[3]),
            revocation_epoch=None if row[4] is None else int(row[4]),
            block=int(row[5]),
        )

    def revocation_epoch(self, centre: bytes | str) -> int:
        """The home centre's current revocation epoch (0 before any revocation or if unknown)."""
        key = _centre_key(centre)
        if key is None:
            return 0
        with self._lock:
            row = self._db.execute(
                "SELECT epoch FROM revocation_epochs WHERE centre = ?", (key,)
            ).fetchone()
        return int(row[0]) if row else 0

    def key_proposals(self, open_only: bool = False) -> list[KeyProposalInfo]:
        """Issuer key proposals in id order (only those not executed yet if open_only)."""
        sql = (
            "SELECT id, centre, key_id, previous_valid_until, proposer, executed, block"
            " FROM key_proposals"
        )
        if open_only:
            sql += " WHERE executed = 0"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id").fetchall()
            result = []
            for r in rows:
                result.append(
                    KeyProposalInfo(
                        id=int(r[0]), centre=bytes(r[1]),
                        key_id=None if r[2] is None else bytes(r[2]),
                        previous_valid_until=int(r[3]), proposer=bytes(r[4]),
                        voters=self._voters("key_votes", r[0]), executed=bool(r[5]),
                        block=int(r[6]),
                    )
                )
        return result

    def _voters(self, table: str, proposal_id: int) -> list[bytes]:
        """Who voted for a proposal, in vote order; `table` is "votes" or "key_votes" (never input)."""
        rows = self._db.execute(
            f"SELECT voter FROM {table} WHERE proposal_id = ? ORDER BY block, rowid", (proposal_id,)
        ).fetchall()
        return [bytes(v[0]) for v in rows]


def _issuer_key(row: tuple) -> IssuerKeyInfo:
    return IssuerKeyInfo(
        pk=bytes(row[0]),
        key_id=bytes(row[1]),
        valid_from=int(row[2]),
        valid_until=int(row[3]),
        centre=bytes(row[4]),
        block=int(row[5]),
    )


def _key_prefix(text: Any) -> bytes | None:
    """Bytes of a key id prefix given as hex (8..32 bytes), None when malformed."""
    if not isinstance(text, str):
        return None
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not 16 <= len(digits) <= 64 or len(digits) % 2 or not _is_hex(digits):
        return None
    return bytes.fromhex(digits)


def _bytes32(value: Any) -> bytes | None:
    """bytes32 from bytes or 0x-hex; None when it is neither."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) if len(value) == 32 else None
    if isinstance(value, str):
        digits = value[2:] if value[:2].lower() == "0x" else value
        if len(digits) != 64 or not _is_hex(digits):
            return None
        return bytes.fromhex(digits)
    return None


def _is_hex(digits: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in digits)


def _centre_key(id_or_name: bytes | str) -> bytes | None:
    """bytes32 id for an id or a name; None when it cannot name a centre."""
    if isinstance(id_or_name, (bytes, bytearray)):
        return bytes(id_or_name) if len(id_or_name) == 32 else None
    if isinstance(id_or_name, str):
        try:
            return centre_id(id_or_name)
        except ValueError:
            return None
    return None


_RATES = "centre, version, effective_from, per_cpu_second, per_gpu_second, per_gib_hour, block"


def _rates(row: tuple) -> RatesInfo:
    return RatesInfo(
        centre=bytes(row[0]),
        version=int(row[1]),
        effective_from=int(row[2]),
        prices=Prices(int(row[3]), int(row[4]), int(row[5])),
        block=int(row[6]),
    )


__all__ = [
    "AnchorInfo",
    "EventIndex",
    "EnrolmentInfo",
    "EventIndexError",
    "IndexMismatch",
    "IssuerKeyInfo",
    "KeyProposalInfo",
    "MemberInfo",
    "RatesInfo",
    "ProposalInfo",
    "SettlementInfo",
]
