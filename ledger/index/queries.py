"""Reads of the index: each returns typed rows (rows.py), read by column name.

One class, a little over 400 lines, because every read shares one connection and
one lock (see below); split by table, the guarantee that a read sees one sync
window's state would have to be kept in several places.

Lists are read in one query per table (members with their rates in force, anchors
and then their claims, proposals and then their votes), never a query per row. Every
read holds the connection's lock, which a sync holds for a whole window, so what one
read returns is one window's state, never half of one.

Lookups take what callers are handed (a centre's name or bytes32 id, a presentation's
key id) and answer None for anything malformed, never an exception.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, TypeVar

from eth_utils import to_checksum_address

from ledger.deploy import Prices
from ledger.ids import centre_id
from ledger.index import schema
from ledger.index.rows import (
    AnchorInfo,
    ClaimInfo,
    CollateralInfo,
    DisputeInfo,
    EnrolmentInfo,
    IssuerKeyInfo,
    KeyProposalInfo,
    LateSettlementInfo,
    MemberInfo,
    PolicyInfo,
    ProposalInfo,
    RatesInfo,
    SettlementInfo,
)
from ledger.primitives.hex import HexError, bytes32, from_hex

_P = TypeVar("_P", ProposalInfo, KeyProposalInfo)

_MEMBERS = """
SELECT m.id, m.name, m.account, m.gateway_url, m.token_key, m.active,
       r.version AS rates_version, r.per_cpu_second, r.per_gpu_second, r.per_gib_hour
FROM members AS m
LEFT JOIN rates AS r ON r.centre = m.id AND r.version = (
    SELECT MAX(version) FROM rates WHERE centre = m.id AND effective_from <= :at
)
"""  # each member with the version in force at :at (the highest one in effect by then)

_RATES = "SELECT centre, version, effective_from, per_cpu_second, per_gpu_second, per_gib_hour, block FROM rates"
_POLICIES = "SELECT centre, version, policy_hash, schema_hash, published_at FROM policies"
_ANCHORS = """
SELECT centre, epoch, record_count, anchored_at, tx_hash, block, decision_root, decision_count,
       EXISTS (SELECT 1 FROM late_anchors AS l WHERE l.epoch = anchors.epoch AND l.centre = anchors.centre) AS late,
       EXISTS (SELECT 1 FROM late_settlements AS l WHERE l.epoch = anchors.epoch AND l.centre = anchors.centre)
           AS late_settled
FROM anchors
"""
_CLAIMS = """
SELECT c.creditor, c.debtor, c.epoch, c.root, c.count, c.amount, c.voided, a.anchored_at
FROM claims AS c JOIN anchors AS a ON a.centre = c.creditor AND a.epoch = c.epoch
"""
_DISPUTES = "SELECT id, centre, epoch, home, leaf, need_key, challenger, status, record, block FROM disputes"
_ISSUER_KEYS = "SELECT pk, key_id, valid_from, valid_until, centre, block FROM issuer_keys"


class IndexQueries:
    """What the index knows, read from its file; safe from any thread."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def _one(self, sql: str, params: dict[str, Any]) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- time -------------------------------------------------------------------

    @property
    def chain_time(self) -> int:
        """The timestamp of the last indexed block (0 before any sync).

        Validity windows on chain are in block time, which may run ahead of the
        local clock; judging them by the later of the two ends a key when the
        chain says it ended.
        """
        with self._lock:
            value = schema.read_meta(self._db, schema.LAST_BLOCK_TIME)
        return int(value) if value is not None else 0

    def now(self) -> int:
        """The time rates are judged at: the later of this machine's clock and the chain's.

        A version applies from its `effective_from` by whichever clock reaches it first,
        so a version in force on chain (eth-tester stamps blocks ahead of real time) is
        in force here too; both clocks only move forward.
        """
        return max(int(time.time()), self.chain_time)

    # -- members ----------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        """Active members in admission order (the contract's netting order)."""
        rows = self._all(_MEMBERS + " WHERE m.active = 1 ORDER BY m.admitted_block, m.admitted_log", {"at": self.now()})
        return [_member(r) for r in rows]

    def member(self, id_or_name: bytes | str) -> MemberInfo | None:
        """A member by bytes32 id or name, also a removed one (active=False); None if unknown."""
        key = _centre_key(id_or_name)
        if key is None:
            return None
        row = self._one(_MEMBERS + " WHERE m.id = :id", {"at": self.now(), "id": key})
        return _member(row) if row else None

    def member_by_account(self, account: str) -> MemberInfo | None:
        """The active member whose chain account is `account`, or None."""
        try:
            account = to_checksum_address(account)
        except (TypeError, ValueError):
            return None
        row = self._one(
            _MEMBERS + " WHERE m.account = :account AND m.active = 1", {"at": self.now(), "account": account}
        )
        return _member(row) if row else None

    def token_key(self, centre: str | bytes) -> bytes | None:
        """The token-signing key of an active member; None for unknown or removed centres.

        Shaped for auth.tokens.verify_token(key_for=index.token_key).
        """
        m = self.member(centre)
        return m.token_key if m is not None and m.active else None

    # -- rates ------------------------------------------------------------------

    def rates(self, centre: bytes | str, version: int) -> RatesInfo | None:
        """A centre's rates version by number (also of a removed centre); None if never published."""
        key = _centre_key(centre)
        if key is None or not isinstance(version, int) or isinstance(version, bool):
            return None
        row = self._one(_RATES + " WHERE centre = :centre AND version = :version", {"centre": key, "version": version})
        return _rates(row) if row else None

    def rates_history(self, centre: bytes | str) -> list[RatesInfo]:
        """Every rates version the centre published, oldest first (pending ones included)."""
        key = _centre_key(centre)
        if key is None:
            return []
        return [_rates(r) for r in self._all(_RATES + " WHERE centre = :centre ORDER BY version", {"centre": key})]

    def rates_in_force(self, centre: bytes | str, at: int) -> RatesInfo | None:
        """The version in force at `at` (UTC seconds): the highest one in effect by then, as
        `Consortium.ratesAt` decides; None when the centre has none in force (or is unknown)."""
        key = _centre_key(centre)
        if key is None:
            return None
        row = self._one(
            _RATES + " WHERE centre = :centre AND effective_from <= :at ORDER BY version DESC LIMIT 1",
            {"centre": key, "at": int(at)},
        )
        return _rates(row) if row else None

    # -- policies -----------------------------------------------------------------

    def policy(self, centre: bytes | str, version: int | None = None) -> PolicyInfo | None:
        """A centre's policy version by number, or its latest (None); None if it never published that one."""
        key = _centre_key(centre)
        if key is None:
            return None
        if version is None:
            row = self._one(_POLICIES + " WHERE centre = :centre ORDER BY version DESC LIMIT 1", {"centre": key})
        elif isinstance(version, int) and not isinstance(version, bool):
            row = self._one(
                _POLICIES + " WHERE centre = :centre AND version = :version", {"centre": key, "version": version}
            )
        else:
            return None
        return _policy(row) if row else None

    def policies(self, centre: bytes | str) -> list[PolicyInfo]:
        """Every policy version the centre published, oldest first."""
        key = _centre_key(centre)
        if key is None:
            return []
        return [_policy(r) for r in self._all(_POLICIES + " WHERE centre = :centre ORDER BY version", {"centre": key})]

    # -- anchors and settlements -------------------------------------------------

    def anchor(self, centre: bytes | str, epoch: int) -> AnchorInfo | None:
        """What `centre` anchored for `epoch`, or None."""
        key = _centre_key(centre)
        if key is None:
            return None
        anchors = self._anchors(int(epoch), key)
        return anchors[0] if anchors else None

    def anchors(self, epoch: int) -> list[AnchorInfo]:
        """Every anchor of `epoch`, in chain order."""
        return self._anchors(int(epoch), None)

    def _anchors(self, epoch: int, centre: bytes | None) -> list[AnchorInfo]:
        """The epoch's anchors (of one centre, or all), with their claims read in one more query."""
        params = {"epoch": epoch, "centre": centre}
        anchors_of = "" if centre is None else " AND centre = :centre"
        claims_of = "" if centre is None else " AND c.creditor = :centre"
        with self._lock:
            rows = self._db.execute(
                _ANCHORS + " WHERE epoch = :epoch" + anchors_of + " ORDER BY block, log_index", params
            ).fetchall()
            claims = self._db.execute(
                _CLAIMS + " WHERE c.epoch = :epoch" + claims_of + " ORDER BY c.creditor, c.position", params
            ).fetchall()
        by_creditor: dict[bytes, dict[bytes, ClaimInfo]] = {}
        for c in claims:
            claim = _claim(c)
            by_creditor.setdefault(claim.centre, {})[claim.home] = claim
        return [
            AnchorInfo(
                centre=bytes(r["centre"]),
                epoch=int(r["epoch"]),
                record_count=int(r["record_count"]),
                homes=by_creditor.get(bytes(r["centre"]), {}),
                anchored_at=int(r["anchored_at"]),
                tx_hash=r["tx_hash"],
                block=int(r["block"]),
                decision_root=bytes(r["decision_root"] or bytes(32)),
                decision_count=int(r["decision_count"]),
                late=bool(r["late"]),
                late_settled=bool(r["late_settled"]),
            )
            for r in rows
        ]

    def late_anchors(self, centre: bytes | str | None = None, *, unsettled: bool = False) -> list[AnchorInfo]:
        """Late anchors (of one centre, or all) in chain order; only those not late-settled yet if `unsettled`."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if centre is not None:
            key = _centre_key(centre)
            if key is None:
                return []
            clauses.append("l.centre = :centre")
            params["centre"] = key
        if unsettled:
            clauses.append(
                "NOT EXISTS (SELECT 1 FROM late_settlements AS s WHERE s.epoch = l.epoch AND s.centre = l.centre)"
            )
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._all(
            "SELECT l.centre, l.epoch FROM late_anchors AS l" + where + " ORDER BY l.block, l.log_index", params
        )
        return [a for r in rows for a in self._anchors(int(r["epoch"]), bytes(r["centre"]))]

    def claims_on(self, home: bytes | str, epoch: int | None = None) -> list[ClaimInfo]:
        """Other centres' claims on `home` (of one epoch, or all), voided ones included, in chain order."""
        key = _centre_key(home)
        if key is None:
            return []
        where = " WHERE c.debtor = :home AND c.creditor != :home"
        params: dict[str, Any] = {"home": key}
        if epoch is not None:
            where += " AND c.epoch = :epoch"
            params["epoch"] = int(epoch)
        rows = self._all(_CLAIMS + where + " ORDER BY a.block, a.log_index, c.position", params)
        return [_claim(r) for r in rows]

    def disputes(
        self, *, epoch: int | None = None, centre: bytes | str | None = None, open_only: bool = False
    ) -> list[DisputeInfo]:
        """Disputes in id order: of one epoch and/or one claimant, or only those still open."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if epoch is not None:
            clauses.append("epoch = :epoch")
            params["epoch"] = int(epoch)
        if centre is not None:
            key = _centre_key(centre)
            if key is None:
                return []
            clauses.append("centre = :centre")
            params["centre"] = key
        if open_only:
            clauses.append("status = 'open'")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return [_dispute(r) for r in self._all(_DISPUTES + where + " ORDER BY id", params)]

    def open_disputes(self, centre: bytes | str | None = None) -> list[DisputeInfo]:
        """Disputes not answered and not decided yet (of one claimant, or all)."""
        return self.disputes(centre=centre, open_only=True)

    def revealed_key(self, lock_hash: bytes | str) -> bytes | None:
        """The key k with keccak256(k) == lock_hash, if a claimant revealed it on chain; else None."""
        key = _bytes32(lock_hash)
        if key is None:
            return None
        row = self._one("SELECT key FROM revealed_keys WHERE lock_hash = :h", {"h": key})
        return bytes(row["key"]) if row else None

    def collateral(self, account: str) -> CollateralInfo:
        """An account's collateral in Settlement (all zero for an account that never deposited)."""
        try:
            account = to_checksum_address(account)
        except (TypeError, ValueError):
            return CollateralInfo(str(account), 0, 0, 0, 0)
        row = self._one("SELECT * FROM collateral WHERE account = :account", {"account": account})
        if row is None:
            return CollateralInfo(account, 0, 0, 0, 0)
        return CollateralInfo(
            account=account,
            balance=int(row["balance"]),
            locked=int(row["locked"]),
            pending=int(row["pending"]),
            unlock_epoch=int(row["unlock_epoch"]),
        )

    def shortfalls(self, epoch: int) -> dict[bytes, int]:
        """What each debtor of a settled epoch could not pay from its collateral at the epoch's own
        settlement (a late anchor's are in `late_settlements`)."""
        rows = self._all("SELECT debtor, unpaid FROM shortfalls WHERE epoch = :epoch", {"epoch": int(epoch)})
        return {bytes(r["debtor"]): int(r["unpaid"]) for r in rows}

    def shortfalls_by_debtor(self) -> dict[bytes, int]:
        """What each debtor left unpaid at every settlement so far, the epochs' and the late anchors' together."""
        rows = self._all(
            "SELECT debtor, unpaid FROM shortfalls UNION ALL SELECT debtor, unpaid FROM late_shortfalls", {}
        )
        unpaid: dict[bytes, int] = {}
        for r in rows:
            unpaid[bytes(r["debtor"])] = unpaid.get(bytes(r["debtor"]), 0) + int(r["unpaid"])
        return unpaid

    def settlement(self, epoch: int) -> SettlementInfo | None:
        """The settlement of `epoch`, or None if it is not settled (or not indexed yet)."""
        params = {"epoch": int(epoch)}
        with self._lock:
            row = self._db.execute("SELECT tx_hash, block FROM settlements WHERE epoch = :epoch", params).fetchone()
            if row is None:
                return None
            net = self._db.execute(
                "SELECT centre, net FROM net_positions WHERE epoch = :epoch ORDER BY position", params
            ).fetchall()
            transfers = self._db.execute(
                "SELECT debtor, creditor, amount FROM transfers WHERE epoch = :epoch ORDER BY block, log_index", params
            ).fetchall()
        return SettlementInfo(
            epoch=int(epoch),
            net={bytes(n["centre"]): int(n["net"]) for n in net},
            transfers=[(bytes(t["debtor"]), bytes(t["creditor"]), int(t["amount"])) for t in transfers],
            tx_hash=row["tx_hash"],
            block=int(row["block"]),
        )

    def late_settlements(self, epoch: int) -> list[LateSettlementInfo]:
        """The late anchors of `epoch` paid so far by `Settlement.settleLate`, in chain order."""
        params = {"epoch": int(epoch)}
        with self._lock:
            rows = self._db.execute(
                "SELECT centre, tx_hash, block FROM late_settlements WHERE epoch = :epoch ORDER BY block, log_index",
                params,
            ).fetchall()
            net = self._db.execute(
                "SELECT creditor, centre, net FROM late_net_positions WHERE epoch = :epoch ORDER BY creditor, position",
                params,
            ).fetchall()
            transfers = self._db.execute(
                "SELECT debtor, creditor, amount FROM late_transfers WHERE epoch = :epoch ORDER BY block, log_index",
                params,
            ).fetchall()
            short = self._db.execute(
                "SELECT creditor, debtor, unpaid FROM late_shortfalls"
                " WHERE epoch = :epoch AND creditor IS NOT NULL ORDER BY block, log_index",
                params,
            ).fetchall()
        out = []
        for r in rows:
            centre = bytes(r["centre"])
            out.append(
                LateSettlementInfo(
                    epoch=int(epoch),
                    centre=centre,
                    net={bytes(n["centre"]): int(n["net"]) for n in net if bytes(n["creditor"]) == centre},
                    transfers=[
                        (bytes(t["debtor"]), bytes(t["creditor"]), int(t["amount"]))
                        for t in transfers
                        if bytes(t["creditor"]) == centre
                    ],
                    shortfalls={bytes(x["debtor"]): int(x["unpaid"]) for x in short if bytes(x["creditor"]) == centre},
                    tx_hash=r["tx_hash"],
                    block=int(r["block"]),
                )
            )
        return out

    # -- governance -------------------------------------------------------------

    def proposals(self, open_only: bool = False) -> list[ProposalInfo]:
        """Governance proposals in id order (if open_only, those still taking votes at the last indexed
        block's time: neither executed nor expired)."""
        rows, voters = self._proposals("proposals", "votes", open_only)
        listed = [
            ProposalInfo(
                id=int(r["id"]),
                action=int(r["action"]),
                member_id=bytes(r["member_id"]),
                proposer=bytes(r["proposer"]),
                voters=voters.get(int(r["id"]), []),
                executed=bool(r["executed"]),
                block=int(r["block"]),
                created_at=_int_or_none(r["created_at"]),
            )
            for r in rows
        ]
        return self._taking_votes(listed) if open_only else listed

    def key_proposals(self, open_only: bool = False) -> list[KeyProposalInfo]:
        """Issuer key proposals in id order (if open_only, those still taking votes, as `proposals`)."""
        rows, voters = self._proposals("key_proposals", "key_votes", open_only)
        listed = [
            KeyProposalInfo(
                id=int(r["id"]),
                centre=bytes(r["centre"]),
                key_id=None if r["key_id"] is None else bytes(r["key_id"]),
                previous_valid_until=int(r["previous_valid_until"]),
                proposer=bytes(r["proposer"]),
                voters=voters.get(int(r["id"]), []),
                executed=bool(r["executed"]),
                block=int(r["block"]),
                created_at=_int_or_none(r["created_at"]),
            )
            for r in rows
        ]
        return self._taking_votes(listed) if open_only else listed

    def _taking_votes(self, listed: list[_P]) -> list[_P]:
        """The proposals not expired at the earliest time of a block after the last indexed one (a vote is mined in
        a later block than any the index has read)."""
        at = self.chain_time + 1
        return [p for p in listed if not p.expired(at)]

    def _proposals(
        self, proposals: str, votes: str, open_only: bool
    ) -> tuple[list[sqlite3.Row], dict[int, list[bytes]]]:
        """Proposal rows in id order and their voters in vote order, in two queries.

        `proposals` and `votes` are table names of this module ("proposals"/"votes" or
        "key_proposals"/"key_votes"), never input.
        """
        where = " WHERE executed = 0" if open_only else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM {proposals}{where} ORDER BY id").fetchall()
            votes_rows = self._db.execute(
                f"SELECT proposal_id, voter FROM {votes}"
                f" WHERE proposal_id IN (SELECT id FROM {proposals}{where})"
                " ORDER BY proposal_id, block, rowid"
            ).fetchall()
        voters: dict[int, list[bytes]] = {}
        for v in votes_rows:
            voters.setdefault(int(v["proposal_id"]), []).append(bytes(v["voter"]))
        return rows, voters

    # -- identity registry ------------------------------------------------------

    def issuer_keys(self, centre: bytes | str) -> list[IssuerKeyInfo]:
        """Every issuer key the centre ever had, oldest first (also of removed centres)."""
        key = _centre_key(centre)
        if key is None:
            return []
        rows = self._all(_ISSUER_KEYS + " WHERE centre = :centre ORDER BY block, log_index", {"centre": key})
        return [
            IssuerKeyInfo(
                pk=bytes(r["pk"]),
                key_id=bytes(r["key_id"]),
                valid_from=int(r["valid_from"]),
                valid_until=int(r["valid_until"]),
                centre=bytes(r["centre"]),
                block=int(r["block"]),
            )
            for r in rows
        ]

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
        row = self._one(
            "SELECT id, home, enrolled_at, revoked, revocation_epoch, block FROM enrolments"
            " WHERE home = :home AND id = :id",
            {"home": centre, "id": key},
        )
        if row is None:
            return None
        return EnrolmentInfo(
            id=bytes(row["id"]),
            home=bytes(row["home"]),
            enrolled_at=int(row["enrolled_at"]),
            revoked=bool(row["revoked"]),
            revocation_epoch=None if row["revocation_epoch"] is None else int(row["revocation_epoch"]),
            block=int(row["block"]),
        )

    def revocation_epoch(self, centre: bytes | str) -> int:
        """The home centre's current revocation epoch (0 before any revocation or if unknown)."""
        key = _centre_key(centre)
        if key is None:
            return 0
        row = self._one("SELECT epoch FROM revocation_epochs WHERE centre = :centre", {"centre": key})
        return int(row["epoch"]) if row else 0

    def revocation_epoch_at(self, centre: bytes | str, at: int) -> int:
        """The home centre's revocation epoch as it stood at time `at` (the last revocation whose block time is
        at most `at`; 0 before any). A revocation whose block time is not read yet counts as made long before."""
        key = _centre_key(centre)
        if key is None:
            return 0
        row = self._one(
            "SELECT MAX(epoch) AS epoch FROM revocations WHERE centre = :centre AND COALESCE(at, 0) <= :at",
            {"centre": key, "at": int(at)},
        )
        return int(row["epoch"]) if row and row["epoch"] is not None else 0


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _claim(row: sqlite3.Row) -> ClaimInfo:
    return ClaimInfo(
        centre=bytes(row["creditor"]),
        epoch=int(row["epoch"]),
        home=bytes(row["debtor"]),
        root=bytes(row["root"] or b""),
        count=int(row["count"]),
        total=int(row["amount"]),
        voided=bool(row["voided"]),
        anchored_at=int(row["anchored_at"]),
    )


def _dispute(row: sqlite3.Row) -> DisputeInfo:
    return DisputeInfo(
        id=int(row["id"]),
        centre=bytes(row["centre"]),
        epoch=int(row["epoch"]),
        home=bytes(row["home"]),
        index=int(row["leaf"]),
        need_key=bool(row["need_key"]),
        challenger=row["challenger"],
        status=row["status"],
        record=None if row["record"] is None else bytes(row["record"]),
        block=int(row["block"]),
    )


def _member(row: sqlite3.Row) -> MemberInfo:
    in_force = row["rates_version"] is not None
    return MemberInfo(
        id=bytes(row["id"]),
        name=row["name"],
        account=row["account"],
        gateway_url=row["gateway_url"],
        token_key=bytes(row["token_key"]),
        prices=_prices(row) if in_force else None,
        active=bool(row["active"]),
        rates_version=int(row["rates_version"]) if in_force else 0,
    )


def _policy(row: sqlite3.Row) -> PolicyInfo:
    return PolicyInfo(
        centre=bytes(row["centre"]),
        version=int(row["version"]),
        policy_hash=bytes(row["policy_hash"]),
        schema_hash=bytes(row["schema_hash"]),
        published_at=int(row["published_at"]),
    )


def _rates(row: sqlite3.Row) -> RatesInfo:
    return RatesInfo(
        centre=bytes(row["centre"]),
        version=int(row["version"]),
        effective_from=int(row["effective_from"]),
        prices=_prices(row),
        block=int(row["block"]),
    )


def _prices(row: sqlite3.Row) -> Prices:
    return Prices(int(row["per_cpu_second"]), int(row["per_gpu_second"]), int(row["per_gib_hour"]))


def _centre_key(id_or_name: Any) -> bytes | None:
    """bytes32 id for an id or a name; None when it cannot name a centre."""
    if isinstance(id_or_name, (bytes, bytearray)):
        return bytes(id_or_name) if len(id_or_name) == 32 else None
    if isinstance(id_or_name, str):
        try:
            return centre_id(id_or_name)
        except ValueError:
            return None
    return None


def _key_prefix(text: Any) -> bytes | None:
    """Bytes of a key id prefix given as hex (8..32 bytes), None when malformed."""
    try:
        prefix = from_hex(text, what="key id")
    except HexError:
        return None
    return prefix if 8 <= len(prefix) <= 32 else None


def _bytes32(value: Any) -> bytes | None:
    """bytes32 from bytes or 0x-hex; None when it is neither."""
    try:
        return bytes32(value)
    except HexError:
        return None
