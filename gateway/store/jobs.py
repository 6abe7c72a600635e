"""The jobs half of the store: accepted jobs, their idempotency keys, their status and outcome.

A job is stored before it is acknowledged, with the order and grant it is
paid under (an order is accepted once) and the decision-log entry that
admitted it, in one transaction; completing it, storing its usage
record (books) and the key its sealed outputs open with is one transaction, so
a finished job never lacks the record it was billed with nor the key that
releases its result.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from gateway.store import checks, credit
from gateway.store.base import StoreBase, open_epoch_in
from gateway.store.books import NewRecord, RecordInput, as_new_record, insert_record
from gateway.store.decisions import NewDecision, insert_decision
from gateway.store.errors import IdempotencyConflict, JobNotFound, JobStateError, ReplayedOrder, StoreError

__all__ = ["ACTIVE_STATUSES", "COMPLETION_STATUSES", "JOB_STATUSES", "Job", "Jobs", "Payment", "SealedResult"]

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "denied")
ACTIVE_STATUSES = ("queued", "running")
"""Jobs in these states must be resumed after a restart."""
QUEUED_TAKEN = 1000
"""Queued jobs taken at a time by the process that runs them (the rest at its next look)."""
COMPLETION_STATUSES = ("succeeded", "failed", "timed_out")
"""The outcomes complete_job() accepts: the job ran here."""

_UPDATABLE = ("status", "serving_centre", "exit_code", "stdout_tail", "stderr_tail", "detail")


@dataclass(frozen=True)
class Payment:
    """What a job is paid under, as the payer signed it: the evidence the centre answers disputes with.

    `order` and `grant` are ledger.payment's to_dict(); `order_digest` is unique among jobs.
    """

    order: dict[str, Any]
    order_signature: bytes
    grant: dict[str, Any]
    grant_signature: bytes
    order_digest: bytes
    account: str
    """The payment account that signed the order: the one whose receipt releases the result."""

    def __post_init__(self) -> None:
        for name in ("order", "grant"):
            if not isinstance(getattr(self, name), dict):
                raise StoreError(f"{name} must be a dict (its to_dict())")
        checks.natural("the grant's amount", self.grant.get("amount"))  # what the job is owed for (store.credit)
        object.__setattr__(self, "order_signature", checks.raw_bytes("order_signature", self.order_signature))
        object.__setattr__(self, "grant_signature", checks.raw_bytes("grant_signature", self.grant_signature))
        object.__setattr__(self, "order_digest", bytes.fromhex(checks.hex32("order_digest", self.order_digest)))
        checks.text("account", self.account, max_len=64)


@dataclass(frozen=True)
class SealedResult:
    """A job's outputs sealed under a fresh key k, and H(k): k is released only against a receipt."""

    key: bytes
    lock_hash: bytes
    stdout: bytes
    stderr: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", bytes.fromhex(checks.hex32("key", self.key)))
        object.__setattr__(self, "lock_hash", bytes.fromhex(checks.hex32("lock_hash", self.lock_hash)))
        for name in ("stdout", "stderr"):
            object.__setattr__(self, name, checks.raw_bytes(name, getattr(self, name)))


@dataclass(frozen=True)
class Job:
    id: str
    idempotency_key: str | None
    principal: str
    home: str
    request: dict[str, Any]
    serving_centre: str
    status: str
    exit_code: int | None
    record_id: str | None
    stdout_tail: str | None
    stderr_tail: str | None
    detail: str | None
    created_at: int
    updated_at: int
    rates_version: int | None = None
    """The serving centre's rates version in force when it accepted the job: what it is priced at."""
    payment: Payment | None = None
    result: SealedResult | None = None
    receipt_signature: bytes | None = None
    """The payer's receipt for the job's record, once given: what the centre's claim on it rests on."""
    decision: str | None = None
    """The digest (64 hex) of the decision-log entry that admitted the job; None for jobs from before the log."""
    group_signature: bytes | None = None
    """The group signature an anonymous job was accepted under (its keccak256 is in the usage record); None for a
    signed-on job."""


def _status(value: Any, allowed: tuple[str, ...] = JOB_STATUSES) -> str:
    if value not in allowed:
        raise StoreError(f"status must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        principal=row["principal"],
        home=row["home"],
        request=json.loads(row["request"]),
        serving_centre=row["serving_centre"],
        status=row["status"],
        exit_code=row["exit_code"],
        record_id=row["record_id"],
        stdout_tail=row["stdout_tail"],
        stderr_tail=row["stderr_tail"],
        detail=row["detail"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        rates_version=row["rates_version"],
        payment=_payment(row),
        result=_result(row),
        receipt_signature=bytes.fromhex(row["receipt_sig"]) if row["receipt_sig"] else None,
        decision=row["decision"],
        group_signature=None if row["group_signature"] is None else bytes(row["group_signature"]),
    )


def _payment(row: sqlite3.Row) -> Payment | None:
    if row["order_digest"] is None:
        return None
    return Payment(
        order=json.loads(row["pay_order"]),
        order_signature=row["pay_order_sig"],
        grant=json.loads(row["pay_grant"]),
        grant_signature=row["pay_grant_sig"],
        order_digest=row["order_digest"],
        account=row["pay_account"],
    )


def _result(row: sqlite3.Row) -> SealedResult | None:
    if row["result_key"] is None:
        return None
    return SealedResult(row["result_key"], row["lock_hash"], row["sealed_stdout"], row["sealed_stderr"])


def _in_flight(db: sqlite3.Connection, row: sqlite3.Row, sign: int) -> None:
    """A job enters (+1) or leaves (-1) queued/running: what its record may bill is owed as in flight meanwhile
    (once it has left, its record, if any, is owed instead)."""
    credit.add(db, credit.home_key(row["home"]), credit.IN_FLIGHT, sign * int(row["credit"] or 0))


def same_request(stored: str, body: str) -> bool:
    """Whether a stored request and a new canonical body are one request, whatever spelling the row has."""
    return stored == body or checks.canonical_json("request", json.loads(stored)) == body


class Jobs(StoreBase):
    """Jobs and their completion (mixed into `Store`)."""

    def create_job(
        self,
        principal: str,
        home: str,
        request: dict[str, Any],
        serving_centre: str,
        idempotency_key: str | None = None,
        status: str = "queued",
        rates_version: int | None = None,
        payment: Payment | None = None,
        decision: NewDecision | None = None,
        group_signature: bytes | None = None,
        idempotency_scope: str | None = None,
        credit_line: credit.CreditLine | None = None,
        bills_at_most: int | None = None,
    ) -> tuple[Job, bool]:
        """Store a new job, or return the one created in this key's scope with this key.

        Returns (job, created). A retry with the same key and the same request
        body gets the original job back (created=False), with the rates version,
        payment and decision it was accepted under; the same key with a different body raises
        IdempotencyConflict. Keys are per `idempotency_scope`, the user they belong to (default:
        the principal; the node names the order's payment account for a session whose principal
        is a fresh pseudonym, so that a retry after a new sign-on finds its job); the same key
        from the same principal in another scope is IdempotencyConflict too. An order already
        accepted for another job raises ReplayedOrder.

        `decision`, the allow that admitted the request, is logged in the same
        transaction (in the open epoch) and named by the new job; a retry's own
        evaluation is logged too, the job keeps the entry that admitted it. When
        anything is refused (DuplicateDecision included) nothing is written: a
        refused request's entry is the caller's to log alone (log_decision).

        `group_signature` (bytes) is the group signature an anonymous job was accepted under, kept with its
        keccak256 (`job_by_group_signature`); a retry keeps the job's first one.

        While a new job is queued or running its home owes this centre what its record may bill at most:
        its grant, or `bills_at_most` (the job's price at its limits) when that is less (gateway.store.credit).
        With a `credit_line` for its home, a job that would take what the home owes past the line's limit
        raises CreditExceeded and nothing is written. A retry is never refused for credit: its job is owed
        for already.
        """
        checks.text("principal", principal, max_len=512)
        checks.text("home", home, max_len=512)
        checks.text("serving_centre", serving_centre, max_len=512)
        checks.text("idempotency_key", idempotency_key, optional=True, max_len=255)
        scope = principal if idempotency_scope is None else idempotency_scope
        checks.text("idempotency_scope", scope, max_len=512)
        _status(status)
        if rates_version is not None:
            checks.positive_int("rates_version", rates_version)
        if not isinstance(request, dict):
            raise StoreError("request must be a JSON object (dict)")
        if payment is not None and not isinstance(payment, Payment):
            raise StoreError("payment must be a Payment")
        if decision is not None and not isinstance(decision, NewDecision):
            raise StoreError("decision must be a NewDecision")
        if decision is not None and not decision.allowed:
            raise StoreError("a job is admitted by an allow; a deny is logged alone (log_decision), with no job")
        if credit_line is not None and not isinstance(credit_line, credit.CreditLine):
            raise StoreError("credit_line must be a CreditLine")
        if credit_line is not None and credit_line.home != home:
            raise StoreError(f"the credit line is {credit_line.home}'s, not the job's home {home}'s")
        if bills_at_most is not None:
            checks.natural("bills_at_most", bills_at_most)
        owed = 0 if payment is None else int(payment.grant["amount"])
        owed = owed if bills_at_most is None else min(owed, bills_at_most)
        signed = checks.group_signature(group_signature)
        body = checks.canonical_json("request", request)
        terms = (
            (None,) * 6
            if payment is None
            else (
                checks.canonical_json("order", payment.order),
                payment.order_signature.hex(),
                checks.canonical_json("grant", payment.grant),
                payment.grant_signature.hex(),
                payment.order_digest.hex(),
                payment.account,
            )
        )
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_scope = ? AND idempotency_key = ?", (scope, idempotency_key)
                ).fetchone()
                other = db.execute(
                    "SELECT id FROM jobs WHERE principal = ? AND idempotency_key = ?", (principal, idempotency_key)
                ).fetchone()
                if row is None and other is not None:
                    raise IdempotencyConflict(
                        f"idempotency key {idempotency_key!r} was already used for another order (job {other['id']}); "
                        "use a new key for a new request"
                    )
                if row is not None:
                    if not same_request(row["request"], body):
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was already used for a different request "
                            f"(job {row['id']}); use a new key for a new request"
                        )
                    if decision is not None:
                        insert_decision(db, decision, self._now())
                    return _job(row), False
            if payment is not None:
                seen = db.execute("SELECT id FROM jobs WHERE order_digest = ?", (terms[4],)).fetchone()
                if seen is not None:
                    raise ReplayedOrder(
                        f"this order was already accepted for job {seen['id']}: an order pays for one job; "
                        "sign a new order (with a fresh account) for a new job"
                    )
            if signed is not None:
                seen = db.execute(
                    "SELECT id FROM jobs WHERE group_signature_hash = ?", (keccak(signed).hex(),)
                ).fetchone()
                if seen is not None:
                    raise ReplayedOrder(
                        f"this group signature was already accepted for job {seen['id']}: a signature is over one "
                        "order, and an order pays for one job"
                    )
            if status in ACTIVE_STATUSES:
                if credit_line is not None:
                    credit.check(db, credit_line, owed)
                credit.add(db, credit.home_key(home), credit.IN_FLIGHT, owed)
            job_id = "job-" + secrets.token_hex(8)
            now = self._now()
            if decision is not None:
                insert_decision(db, decision, now)
            db.execute(
                "INSERT INTO jobs (id, idempotency_key, principal, home, request, serving_centre, status,"
                " created_at, updated_at, rates_version, pay_order, pay_order_sig, pay_grant, pay_grant_sig,"
                " order_digest, pay_account, decision, group_signature, group_signature_hash, idempotency_scope,"
                " credit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    idempotency_key,
                    principal,
                    home,
                    body,
                    serving_centre,
                    status,
                    now,
                    now,
                    rates_version,
                    *terms,
                    None if decision is None else decision.digest.hex(),
                    signed,
                    None if signed is None else keccak(signed).hex(),
                    None if idempotency_key is None else scope,
                    str(owed),
                ),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), True

    def owed(self, home_id: str, unpaid_from: int, paid: frozenset[int] = frozenset()) -> credit.Owed:
        """What the home with this centre id (hex) owes this centre: what its jobs not finished may bill, and its
        records billed from epoch `unpaid_from` on but in the epochs `paid` (gateway.store.credit)."""
        checks.hex32("home_id", home_id)
        checks.positive_int("unpaid_from", unpaid_from)
        with self._reading() as db:
            return credit.owed(db, home_id, unpaid_from, paid)

    def owing_homes(self) -> list[str]:
        """The ids (hex) of the homes that may owe this centre something: a job in flight or a record."""
        with self._reading() as db:
            return credit.homes(db)

    def job_by_key(self, scope: str, idempotency_key: str) -> Job | None:
        """The job created in this key scope (a principal, or the node's account scope) with this key, if any."""
        rows = self._read(
            "SELECT * FROM jobs WHERE idempotency_scope = ? AND idempotency_key = ?", (scope, idempotency_key)
        )
        return _job(rows[0]) if rows else None

    def job_by_group_signature(self, signature_hash: bytes | str) -> Job | None:
        """The anonymous job accepted under the group signature with this keccak256, if any."""
        rows = self._read(
            "SELECT * FROM jobs WHERE group_signature_hash = ?",
            (checks.hex32("signature hash", signature_hash),),
        )
        return _job(rows[0]) if rows else None

    def get_job(self, job_id: str) -> Job | None:
        """The job, or None if there is no such job."""
        if not isinstance(job_id, str):
            raise StoreError("job id must be a string")
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Change some of a job's mutable fields; returns the updated job.

        Updatable: status, serving_centre, exit_code, stdout_tail,
        stderr_tail, detail. The record link is set only by
        complete_job()/add_record(), with the record, so it cannot dangle.
        """
        unknown = sorted(set(fields) - set(_UPDATABLE))
        if unknown:
            raise StoreError(f"cannot update job field(s) {', '.join(unknown)}; updatable: {', '.join(_UPDATABLE)}")
        for name, value in fields.items():
            if name == "status":
                _status(value)
            elif name == "serving_centre":
                checks.text(name, value, max_len=512)
            elif name == "exit_code":
                checks.optional_int(name, value)
            else:
                checks.optional_str(name, value)
        with self._tx() as db:
            row = db.execute("SELECT status, home, credit FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            was, will = row["status"] in ACTIVE_STATUSES, fields.get("status", row["status"]) in ACTIVE_STATUSES
            if was != will:
                _in_flight(db, row, 1 if will else -1)
            if fields:
                names = list(fields)  # only names from _UPDATABLE reach the SQL
                assignments = ", ".join(f"{name} = ?" for name in names)
                db.execute(
                    f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",
                    (*(fields[name] for name in names), self._now(), job_id),
                )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def start_job(self, job_id: str) -> Job | None:
        """Mark a queued job running and return it; None when it is not queued (another worker took it, or it is
        done): of two takers only one starts it."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE jobs SET status = 'running', updated_at = ? WHERE id = ? AND status = 'queued'",
                (self._now(), job_id),
            ).rowcount
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone() if changed else None
        return None if row is None else _job(row)

    def jobs_in_status(self, status: str, *more: str) -> list[Job]:
        """Jobs in any of the given statuses, oldest first (e.g. queued/running, to resume after a restart)."""
        statuses = [_status(s) for s in (status, *more)]
        marks = ", ".join("?" for _ in statuses)
        rows = self._read(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY created_at, rowid", tuple(statuses))
        return [_job(r) for r in rows]

    def queued_job_ids(self, limit: int = QUEUED_TAKEN) -> list[str]:
        """The oldest queued jobs' ids: what a process that runs jobs takes from those other processes stored."""
        checks.positive_int("limit", limit)
        rows = self._read("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT ?", (limit,))
        return [r["id"] for r in rows]

    def list_jobs(self, principal: str | None = None, limit: int = 100) -> list[Job]:
        """Most recent jobs first, optionally of one principal."""
        checks.positive_int("limit", limit)
        if principal is None:
            rows = self._read("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                "SELECT * FROM jobs WHERE principal = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (principal, limit),
            )
        return [_job(r) for r in rows]

    def complete_job(
        self,
        job_id: str,
        status: str,
        exit_code: int | None,
        stdout_tail: str | None,
        stderr_tail: str | None,
        record: RecordInput | Callable[[int], RecordInput] | None = None,
        detail: str | None = None,
        result: SealedResult | None = None,
    ) -> Job:
        """Mark a queued/running job finished and store its usage record, atomically.

        `record` is a record already signed for the open epoch — a NewRecord
        or a tuple (UsageRecord, signature, leaf) — (EpochClosed if that
        epoch has closed meanwhile: re-sign and retry), or a function called
        *inside* the transaction with the open epoch number that builds and
        signs one, which cannot miss the epoch. `result`, the outputs sealed
        under k, is stored with it. If anything fails, nothing is
        written: the job keeps its old status.
        """
        _status(status, COMPLETION_STATUSES)
        checks.optional_int("exit_code", exit_code)
        checks.optional_str("stdout_tail", stdout_tail)
        checks.optional_str("stderr_tail", stderr_tail)
        checks.optional_str("detail", detail)
        if result is not None and not isinstance(result, SealedResult):
            raise StoreError("result must be a SealedResult")
        signed: NewRecord | None = None
        if record is not None and not callable(record):
            signed = as_new_record(record)  # bad input fails before anything is written
        with self._tx() as db:
            row = db.execute("SELECT status, home, credit FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if row["status"] not in ACTIVE_STATUSES:
                raise JobStateError(f"job {job_id} is already {row['status']}; only queued or running jobs complete")
            _in_flight(db, row, -1)
            now = self._now()
            db.execute(
                "UPDATE jobs SET status = ?, exit_code = ?, stdout_tail = ?, stderr_tail = ?,"
                " detail = COALESCE(?, detail), updated_at = ? WHERE id = ?",
                (status, exit_code, stdout_tail, stderr_tail, detail, now, job_id),
            )
            if callable(record):
                signed = as_new_record(record(open_epoch_in(db)))
            if signed is not None:
                insert_record(db, signed, job_id, now)
            if result is not None:
                db.execute(
                    "UPDATE jobs SET result_key = ?, lock_hash = ?, sealed_stdout = ?, sealed_stderr = ? WHERE id = ?",
                    (result.key.hex(), result.lock_hash.hex(), result.stdout.hex(), result.stderr.hex(), job_id),
                )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def add_receipt(self, job_id: str, signature: bytes) -> Job:
        """Keep the payer's receipt for the job's record (the first one given; a receipt is never replaced).

        Committed before the key is released, so the centre always holds what it was paid against.
        """
        sig = checks.raw_bytes("receipt signature", signature)
        with self._tx() as db:
            row = db.execute("SELECT record_id, result_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if row["record_id"] is None or row["result_key"] is None:
                raise JobStateError(f"job {job_id} has no usage record and sealed result to give a receipt for")
            db.execute("UPDATE jobs SET receipt_sig = COALESCE(receipt_sig, ?) WHERE id = ?", (sig.hex(), job_id))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)
