"""How each chain event changes the index's tables: one handler per event, in a table.

`PROJECTIONS[contract][event]` is the handler of that contract's event (two contracts
may emit events of the same name). A handler runs inside the transaction of its sync
window, after the event itself was recorded (and only the first time: an event already
in the `events` table is never projected again), so it writes plain rows and never
commits. Columns are always named, so a table may gain columns without touching the
handlers of the others. To index a new event: write `_my_event(db, ev)` and add
it to the table; `tests/test_index.py` fails while an event of the ABIs has no handler.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak, to_checksum_address


@dataclass(frozen=True)
class Event:
    """A decoded log: which contract and event, its arguments by name, and where it is."""

    contract: str
    name: str
    args: Mapping[str, Any]
    block: int
    log_index: int
    tx_hash: str
    time: int | None = None
    """The block's time, read only for the events in TIMED (None for the others)."""


Handler = Callable[[sqlite3.Connection, Event], None]

#: The events whose handlers need their block's time (which a log does not carry): the sync reads it for them.
TIMED = frozenset(
    {("IdentityRegistry", "Revoked"), ("Consortium", "ProposalCreated"), ("IdentityRegistry", "IssuerKeyProposed")}
)


def project(db: sqlite3.Connection, ev: Event) -> None:
    """Applies `ev` to the tables; an event without a handler changes nothing."""
    handler = PROJECTIONS.get(ev.contract, {}).get(ev.name)
    if handler is not None:
        handler(db, ev)


def _insert(db: sqlite3.Connection, table: str, row: Mapping[str, Any], *, conflict: str = "REPLACE") -> None:
    """INSERT OR <conflict> of one row given by column name (table and columns come from this module)."""
    columns = ", ".join(row)
    values = ", ".join(f":{c}" for c in row)
    db.execute(f"INSERT OR {conflict} INTO {table} ({columns}) VALUES ({values})", dict(row))


# -- Consortium ------------------------------------------------------------------


def _member_admitted(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    _insert(
        db,
        "members",
        {
            "id": bytes(a["id"]),
            "name": a["name"],
            "account": to_checksum_address(a["account"]),
            "gateway_url": a["gatewayUrl"],
            "token_key": bytes(a["tokenKey"]),
            "active": 1,
            "admitted_block": ev.block,
            "admitted_log": ev.log_index,
            "updated_block": ev.block,
            "removed_block": None,
        },
    )


def _member_removed(db: sqlite3.Connection, ev: Event) -> None:
    member = bytes(ev.args["id"])
    db.execute(
        "UPDATE members SET active = 0, removed_block = :block, updated_block = :block WHERE id = :id",
        {"block": ev.block, "id": member},
    )


def _member_updated(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    db.execute(
        "UPDATE members SET gateway_url = :url, token_key = :key, updated_block = :block WHERE id = :id",
        {"url": a["gatewayUrl"], "key": bytes(a["tokenKey"]), "block": ev.block, "id": bytes(a["id"])},
    )


def _rates_published(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    prices = a["prices"]  # the Prices struct, decoded by field name
    _insert(
        db,
        "rates",
        {
            "centre": bytes(a["id"]),
            "version": int(a["version"]),
            "effective_from": int(a["effectiveFrom"]),
            "per_cpu_second": str(int(prices["perCpuSecond"])),  # TEXT: uint256 exceeds SQLite's integers
            "per_gpu_second": str(int(prices["perGpuSecond"])),
            "per_gib_hour": str(int(prices["perGibHour"])),
            "block": ev.block,
        },
    )


def _policy_published(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    _insert(
        db,
        "policies",
        {
            "centre": bytes(a["id"]),
            "version": int(a["version"]),
            "policy_hash": bytes(a["policyHash"]),
            "schema_hash": bytes(a["schemaHash"]),
            "published_at": int(a["publishedAt"]),
            "block": ev.block,
        },
    )


def _proposal_created(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    _insert(
        db,
        "proposals",
        {
            "id": int(a["proposalId"]),
            "action": int(a["action"]),
            "member_id": bytes(a["memberId"]),
            "proposer": bytes(a["proposer"]),
            "executed": 0,
            "block": ev.block,
            "tx_hash": ev.tx_hash,
            "created_at": ev.time,  # its expiry is this + PROPOSAL_LIFETIME
        },
    )


# -- UsageLedger and Settlement --------------------------------------------------


def _epoch_anchored(db: sqlite3.Connection, ev: Event) -> None:
    """One anchor: a claim per home (sum-tree root, leaf count, total); the centre's own home is
    anchored for the audit, never claimed (the contract's `standing` is 0 for it). The anchor
    also commits the centre's decision log of the epoch (its Merkle root and entry count)."""
    a = ev.args
    centre, epoch = bytes(a["centre"]), int(a["epoch"])
    homes = list(zip(a["homes"], a["roots"], a["counts"], a["totals"], strict=True))
    _insert(
        db,
        "anchors",
        {
            "centre": centre,
            "epoch": epoch,
            "record_count": sum(int(count) for _, _, count, _ in homes),
            "anchored_at": int(a["anchoredAt"]),
            "tx_hash": ev.tx_hash,
            "block": ev.block,
            "log_index": ev.log_index,
            "decision_root": bytes(a["decisionRoot"]),
            "decision_count": int(a["decisionCount"]),
        },
    )
    for position, (home, root, count, total) in enumerate(homes):
        _insert(
            db,
            "claims",
            {
                "epoch": epoch,
                "creditor": centre,
                "debtor": bytes(home),
                "position": position,
                "root": bytes(root),
                "count": int(count),
                "amount": str(int(total)),
                "voided": 0,
            },
        )


def _anchored_late(db: sqlite3.Connection, ev: Event) -> None:
    """The anchor just indexed (its EpochAnchored comes first, in the same transaction) is late: its
    claims are out of the epoch's netting and wait for `Settlement.settleLate`."""
    a = ev.args
    row = {"centre": bytes(a["centre"]), "epoch": int(a["epoch"]), "block": ev.block, "log_index": ev.log_index}
    _insert(db, "late_anchors", {**row, "tx_hash": ev.tx_hash})


def _disputed(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    _insert(
        db,
        "disputes",
        {
            "id": int(a["id"]),
            "centre": bytes(a["centre"]),
            "epoch": int(a["epoch"]),
            "home": bytes(a["home"]),
            "leaf": int(a["index"]),
            "need_key": int(bool(a["needKey"])),
            "challenger": to_checksum_address(a["challenger"]),
            "status": "open",
            "record": None,
            "block": ev.block,
            "tx_hash": ev.tx_hash,
        },
    )


def _dispute_answered(db: sqlite3.Connection, ev: Event) -> None:
    """An answered dispute; a key revealed in the answer is kept by its lock hash, for the user to read."""
    a = ev.args
    dispute, record, key = int(a["id"]), bytes(a["recordDigest"]), bytes(a["key"])
    db.execute(
        "UPDATE disputes SET status = 'answered', record = :record WHERE id = :id", {"record": record, "id": dispute}
    )
    if any(key):
        row = {"lock_hash": keccak(key), "key": key, "record": record, "dispute_id": dispute, "block": ev.block}
        _insert(db, "revealed_keys", row, conflict="IGNORE")


def _claim_voided(db: sqlite3.Connection, ev: Event) -> None:
    """A voided claim stands for nothing; its disputes still open are decided with it."""
    a = ev.args
    claim = {"centre": bytes(a["centre"]), "epoch": int(a["epoch"]), "home": bytes(a["home"])}
    db.execute("UPDATE claims SET voided = 1 WHERE epoch = :epoch AND creditor = :centre AND debtor = :home", claim)
    db.execute(
        "UPDATE disputes SET status = 'voided'"
        " WHERE epoch = :epoch AND centre = :centre AND home = :home AND status = 'open'",
        claim,
    )


# -- Settlement: collateral ------------------------------------------------------


def _add_collateral(db: sqlite3.Connection, account: str, **deltas: int) -> None:
    """Adds to an account's collateral figures (TEXT: uint256 exceeds SQLite's integers)."""
    account = to_checksum_address(account)
    db.execute("INSERT OR IGNORE INTO collateral (account) VALUES (:account)", {"account": account})
    row = db.execute("SELECT * FROM collateral WHERE account = :account", {"account": account}).fetchone()
    values = {column: str(int(row[column]) + delta) for column, delta in deltas.items()}
    if values:
        sets = ", ".join(f"{column} = :{column}" for column in values)
        db.execute(f"UPDATE collateral SET {sets} WHERE account = :account", {**values, "account": account})


def _deposited(db: sqlite3.Connection, ev: Event) -> None:
    _add_collateral(db, ev.args["account"], balance=int(ev.args["amount"]))


def _withdrawal_requested(db: sqlite3.Connection, ev: Event) -> None:
    """The event carries the account's whole pending withdrawal, unlocked after `unlockEpoch` settles."""
    a = ev.args
    _add_collateral(db, a["account"])
    db.execute(
        "UPDATE collateral SET pending = :pending, unlock_epoch = :epoch WHERE account = :account",
        {
            "pending": str(int(a["amount"])),
            "epoch": int(a["unlockEpoch"]),
            "account": to_checksum_address(a["account"]),
        },
    )


def _withdrawn(db: sqlite3.Connection, ev: Event) -> None:
    """The withdrawal is paid out (at most what was pending) and the request ends."""
    account = to_checksum_address(ev.args["account"])
    _add_collateral(db, account, balance=-int(ev.args["amount"]))
    db.execute("UPDATE collateral SET pending = '0', unlock_epoch = 0 WHERE account = :account", {"account": account})


def _bond_locked(db: sqlite3.Connection, ev: Event) -> None:
    _add_collateral(db, ev.args["account"], locked=int(ev.args["amount"]))


def _bond_unlocked(db: sqlite3.Connection, ev: Event) -> None:
    _add_collateral(db, ev.args["account"], locked=-int(ev.args["amount"]))


def _bond_slashed(db: sqlite3.Connection, ev: Event) -> None:
    """A lost bond leaves its owner's locked collateral for the winner's free collateral."""
    amount = int(ev.args["amount"])
    _add_collateral(db, ev.args["from"], locked=-amount, balance=-amount)
    _add_collateral(db, ev.args["to"], balance=amount)


def _member_account(db: sqlite3.Connection, member: bytes) -> str | None:
    row = db.execute("SELECT account FROM members WHERE id = :id", {"id": member}).fetchone()
    return None if row is None else str(row["account"])


def _epoch_settled(db: sqlite3.Connection, ev: Event) -> None:
    epoch = int(ev.args["epoch"])
    _insert(db, "settlements", {"epoch": epoch, "tx_hash": ev.tx_hash, "block": ev.block})
    for position, (centre, net) in enumerate(zip(ev.args["centres"], ev.args["net"], strict=True)):
        _insert(
            db,
            "net_positions",
            {
                "epoch": epoch,
                "centre": bytes(centre),
                "position": position,
                "net": str(int(net)),
            },
        )


def _settled_already(db: sqlite3.Connection, epoch: int) -> bool:
    """Whether `epoch`'s own settlement is indexed. Settle emits its transfers and shortfalls before its
    EpochSettled, and settleLate runs only on a settled epoch: so one seen after it is a late settlement's."""
    return db.execute("SELECT 1 FROM settlements WHERE epoch = :epoch", {"epoch": epoch}).fetchone() is not None


def _settlement_transfer(db: sqlite3.Connection, ev: Event) -> None:
    """A transfer of an epoch's settlement, or of a late anchor's (kept apart: its payee is that anchor's centre)."""
    a = ev.args
    _insert(
        db,
        "late_transfers" if _settled_already(db, int(a["epoch"])) else "transfers",
        {
            "epoch": int(a["epoch"]),
            "block": ev.block,
            "log_index": ev.log_index,
            "debtor": bytes(a["from"]),
            "creditor": bytes(a["to"]),
            "amount": str(int(a["amount"])),
            "tx_hash": ev.tx_hash,
        },
        conflict="IGNORE",
    )
    debtor, creditor = _member_account(db, bytes(a["from"])), _member_account(db, bytes(a["to"]))
    if debtor is not None and creditor is not None:  # settlement moves members' internal collateral
        _add_collateral(db, debtor, balance=-int(a["amount"]))
        _add_collateral(db, creditor, balance=int(a["amount"]))


def _shortfall(db: sqlite3.Connection, ev: Event) -> None:
    """A debtor short of collateral: at the epoch's settlement, or at a late anchor's (kept apart, so
    neither overwrites the other; its creditor is named by the LateClaimsSettled that follows)."""
    a = ev.args
    epoch = int(a["epoch"])
    row = {"epoch": epoch, "debtor": bytes(a["debtor"]), "unpaid": str(int(a["unpaid"]))}
    if not _settled_already(db, epoch):
        _insert(db, "shortfalls", row)
        return
    _insert(db, "late_shortfalls", {**row, "block": ev.block, "log_index": ev.log_index, "creditor": None})


def _late_claims_settled(db: sqlite3.Connection, ev: Event) -> None:
    """A late anchor's claims paid: what moved for its centre and each home, after its transfers and shortfalls."""
    a = ev.args
    epoch, creditor = int(a["epoch"]), bytes(a["centre"])
    row = {"epoch": epoch, "centre": creditor, "tx_hash": ev.tx_hash, "block": ev.block, "log_index": ev.log_index}
    _insert(db, "late_settlements", row)
    for position, (centre, net) in enumerate(zip(a["centres"], a["net"], strict=True)):
        _insert(
            db,
            "late_net_positions",
            {"epoch": epoch, "creditor": creditor, "centre": bytes(centre), "position": position, "net": str(int(net))},
        )
    db.execute(
        "UPDATE late_shortfalls SET creditor = :creditor WHERE epoch = :epoch AND creditor IS NULL",
        {"creditor": creditor, "epoch": epoch},
    )


# -- IdentityRegistry ------------------------------------------------------------


def _issuer_key_set(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    _insert(
        db,
        "issuer_keys",
        {
            "centre": bytes(a["centre"]),
            "key_id": bytes(a["keyId"]),
            "pk": bytes(a["pk"]),
            "valid_from": int(a["validFrom"]),
            "valid_until": 0,  # open-ended until an IssuerKeyEnds
            "block": ev.block,
            "log_index": ev.log_index,
        },
    )


def _issuer_key_ends(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    db.execute(
        "UPDATE issuer_keys SET valid_until = :until WHERE centre = :centre AND key_id = :key_id",
        {"until": int(a["validUntil"]), "centre": bytes(a["centre"]), "key_id": bytes(a["keyId"])},
    )


def _issuer_key_proposed(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    key_id = bytes(a["keyId"])
    _insert(
        db,
        "key_proposals",
        {
            "id": int(a["proposalId"]),
            "centre": bytes(a["centre"]),
            "key_id": key_id if any(key_id) else None,  # zero: revoke the centre's keys
            "previous_valid_until": int(a["previousValidUntil"]),
            "proposer": bytes(a["proposer"]),
            "executed": 0,
            "block": ev.block,
            "tx_hash": ev.tx_hash,
            "created_at": ev.time,  # its expiry is this + PROPOSAL_LIFETIME
        },
    )


def _enrolled(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    _insert(
        db,
        "enrolments",
        {
            "id": bytes(a["enrolmentId"]),
            "home": bytes(a["home"]),
            "enrolled_at": int(a["enrolledAt"]),
            "revoked": 0,
            "revocation_epoch": None,
            "block": ev.block,
            "revoked_block": None,
        },
        conflict="IGNORE",
    )


def _revoked(db: sqlite3.Connection, ev: Event) -> None:
    a = ev.args
    row = {
        "id": bytes(a["enrolmentId"]),
        "home": bytes(a["home"]),
        "epoch": int(a["revocationEpoch"]),
        "block": ev.block,
    }
    db.execute(
        "UPDATE enrolments SET revoked = 1, revocation_epoch = :epoch, revoked_block = :block"
        " WHERE home = :home AND id = :id",
        row,
    )
    db.execute(
        "INSERT INTO revocation_epochs (centre, epoch) VALUES (:home, :epoch)"
        " ON CONFLICT (centre) DO UPDATE SET epoch = MAX(epoch, excluded.epoch)",
        row,
    )
    _insert(db, "revocations", {"centre": row["home"], "epoch": row["epoch"], "at": ev.time, "block": ev.block})


def _nothing(db: sqlite3.Connection, ev: Event) -> None:
    """An event the index keeps (in `events`) but that changes none of its tables."""


# -- Governed (Consortium and IdentityRegistry each) --------------------------------


def _governance(votes: str, proposals: str) -> dict[str, Handler]:
    """The handlers of one governed contract's shared events, writing its own two tables."""

    def voted(db: sqlite3.Connection, ev: Event) -> None:
        row = {"proposal_id": int(ev.args["proposalId"]), "voter": bytes(ev.args["voter"]), "block": ev.block}
        _insert(db, votes, row, conflict="IGNORE")

    def executed(db: sqlite3.Connection, ev: Event) -> None:
        db.execute(f"UPDATE {proposals} SET executed = 1 WHERE id = :id", {"id": int(ev.args["proposalId"])})

    return {"Voted": voted, "ProposalExecuted": executed}


PROJECTIONS: dict[str, dict[str, Handler]] = {
    "Consortium": {
        "MemberAdmitted": _member_admitted,
        "MemberRemoved": _member_removed,
        "MemberUpdated": _member_updated,
        "RatesPublished": _rates_published,
        "PolicyPublished": _policy_published,
        "ProposalCreated": _proposal_created,
        **_governance("votes", "proposals"),
        "QuorumChanged": _nothing,  # read from the contract (quorum()) when needed
        "MemberFunded": _nothing,  # the credit minted is an ERC-20 balance, not collateral
        "CreditSet": _nothing,  # deployment wiring, like SettlementSet
    },
    "UsageLedger": {
        "EpochAnchored": _epoch_anchored,
        "Disputed": _disputed,
        "DisputeAnswered": _dispute_answered,
        "ClaimVoided": _claim_voided,
        "AnchoredLate": _anchored_late,
        "SettlementSet": _nothing,  # deployment wiring: the Settlement address is in the deployment already
        "EIP712DomainChanged": _nothing,  # OpenZeppelin's EIP712: never emitted by this contract
    },
    "Settlement": {
        "Deposited": _deposited,
        "WithdrawalRequested": _withdrawal_requested,
        "Withdrawn": _withdrawn,
        "BondLocked": _bond_locked,
        "BondUnlocked": _bond_unlocked,
        "BondSlashed": _bond_slashed,
        "EpochSettled": _epoch_settled,
        "SettlementTransfer": _settlement_transfer,
        "Shortfall": _shortfall,
        "LateClaimsSettled": _late_claims_settled,
    },
    "IdentityRegistry": {
        "IssuerKeySet": _issuer_key_set,
        "IssuerKeyEnds": _issuer_key_ends,
        "IssuerKeyProposed": _issuer_key_proposed,
        **_governance("key_votes", "key_proposals"),
        "Enrolled": _enrolled,
        "Revoked": _revoked,
    },
}
"""contract name -> event name -> handler; the contracts listed are the ones the index follows."""
