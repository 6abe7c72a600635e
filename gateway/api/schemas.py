"""The HTTP API's request and response bodies.

Validation lives here so that every handler receives well-formed input and a
malformed request is refused before anything is stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from gateway.node.errors import Invalid
from ledger.payment import MAX_DEADLINE_AHEAD
from ledger.primitives.names import CENTRE_NAME_PATTERN, CENTRE_NAME_RULE

USERNAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CENTRE = f"^(auto|{CENTRE_NAME_RULE})$"
CENTRE_NAME = CENTRE_NAME_PATTERN
LABEL = r"^[a-z0-9-]{1,32}$"
"""A queue, GPU type or data class name, as centres' Cedar policies name them."""
MAX_WALLTIME = MAX_DEADLINE_AHEAD - 3600
"""A week less an hour: a job's order is due at most a week out (its home and the serving centre refuse later
deadlines), and its deadline leaves the wallet's slack (`ORDER_SLACK`) and minutes of clock skew after the walltime."""
MAX_EPOCH = 2**53 - 1
"""The highest epoch the API names: the largest integer every JSON reader holds exactly (the store goes to 2**63-1)."""
RECORD_ID = r"^(0x)?[0-9a-fA-F]{64}$"
"""A usage record id as job views show it: 32 bytes in hex, with or without 0x."""
MAX_COMMAND_CHARS = 65_536
"""The most characters a job's argv may have in all: what is stored, forwarded and exec'd."""


IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,128}$"
"""An Idempotency-Key: 1 to 128 visible ASCII characters (a UUID, say), the same bytes from every client."""


def check_idempotency_key(value: str | None) -> str | None:
    """The key of a POST that may be retried, refused (400) before anything is stored or started."""
    if value is not None and not re.fullmatch(IDEMPOTENCY_KEY, value):
        raise Invalid(
            f"the Idempotency-Key header must be 1 to 128 visible ASCII characters (a UUID will do), "
            f"not {value!r:.40}; nothing was stored"
        )
    return value


def _whole(value: object) -> object:
    """30.0 is the integer 30, as JSON Schema says; 30.5, true and "30" stay what they are, and are refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = Annotated[int, BeforeValidator(_whole)]
"""An integer field of a request: a JSON number without a fraction, never a boolean or a string."""


class Strict(BaseModel):
    """A request body: no unknown fields, and no coercion (JSON true is not 1, "30" is not 30; see Whole)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class LoginRequest(Strict):
    username: str = Field(pattern=USERNAME, description="The user's uid at their home centre.")
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    token: str
    principal: str
    home: str
    audience: str = Field(description="the one centre that accepts this token")
    expires_at: int


class ExchangeRequest(Strict):
    audience: str = Field(pattern=CENTRE_NAME, description="the member centre the new token is for")


class CredentialResponse(BaseModel):
    home: str
    credential: dict = Field(description="the BBS credential: keep it in your wallet, never send it")
    issuer_pk: str = Field(description="the home centre's issuer public key (hex), as registered on chain")
    schema_: dict = Field(alias="schema", description="the consortium's credential schema the credential follows")


class PresentRequest(Strict):
    presentation: dict = Field(description="a selective-disclosure proof answering this centre's request")


class SignOnResponse(LoginResponse):
    disclosed: dict[str, str]


class RevokeRequest(Strict):
    username: str = Field(pattern=USERNAME)


class RevokeResponse(BaseModel):
    """What became of a revocation: on chain (200), or queued behind a chain that has not taken it yet (202)."""

    username: str = Field(description="the user, as the directory spells the uid")
    enrolment: str = Field(description="the user's enrolment id at this home (0x-hex)")
    revoked: bool = Field(description="true only once the revocation is mined on chain")
    status: Literal["done", "queued"] = Field(
        description="done: mined; queued: not on chain yet, sent again until it is "
        "(the user is refused at home meanwhile)"
    )
    tx_hash: str | None = Field(description="the revocation's transaction, when this request sent it")
    detail: str


class Resources(Strict):
    cores: Whole = Field(default=1, ge=1, le=1024)
    memory_mib: Whole = Field(default=1024, ge=1, le=4 * 1024 * 1024)
    gpus: Whole = Field(default=0, ge=0, le=64)
    queue: str = Field(default="cpu", pattern=LABEL)
    gpu_type: str = Field(default="none", pattern=LABEL)
    data_class: str = Field(default="public", pattern=LABEL)


class PlacementRequest(Strict):
    walltime: Whole = Field(ge=1, le=MAX_WALLTIME, description="walltime limit in seconds")
    resources: Resources = Field(default_factory=Resources)


class Candidate(BaseModel):
    centre: str
    gateway_url: str
    max_price: int = Field(description="the most the job can cost there, at its current rates")
    rates_version: int = Field(description="the version of its rates in force now: what an order for it names")
    free_cpus: int | None = Field(description="free CPUs the centre reported just now; null if it did not answer")


class Placement(BaseModel):
    candidates: list[Candidate] = Field(description="every member, best first: room for the job, then price")


class Member(BaseModel):
    centre: str
    gateway_url: str = Field(description="the member's gateway, as registered on chain")
    account: str = Field(description="the member's chain account: what signs its usage records and grants")


class PaymentDomain(BaseModel):
    chain_id: int
    verifying_contract: str = Field(
        description="the UsageLedger: orders, grants, receipts and records are signed for it"
    )


class Members(BaseModel):
    members: list[Member] = Field(description="every active member centre, in admission order")
    domain: PaymentDomain = Field(description="the EIP-712 domain every order, grant, receipt and record is signed in")


class Capacity(BaseModel):
    centre: str
    total_cpus: int
    free_cpus: int


class JobRequest(PlacementRequest):
    command: list[str] = Field(min_length=1, max_length=256, description="argv, run without a shell")
    centre: str | None = Field(
        default=None,
        pattern=CENTRE,
        description="the centre that is to run the job: this gateway's own (the default); any other answers 421",
    )

    @field_validator("command")
    @classmethod
    def _runnable(cls, argv: list[str]) -> list[str]:
        """Refused here, a job that could never start is never stored or forwarded."""
        if not argv[0]:
            raise ValueError("the command (its first element) must not be empty")
        if any("\x00" in arg for arg in argv):
            raise ValueError("the command's arguments must not contain NUL bytes")
        if sum(len(arg) for arg in argv) > MAX_COMMAND_CHARS:
            raise ValueError(f"the command may have at most {MAX_COMMAND_CHARS} characters in all")
        for arg in argv:  # a lone surrogate (JSON "\ud800") can be neither stored nor passed to exec
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("the command's arguments must be valid UTF-8 text") from None
        return argv


SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
"""A 65-byte signature r ‖ s ‖ v, 0x-hex."""

JOB_SIGNATURE_HEADER = "X-Job-Signature"
JOB_SIGNATURE = r"^[0-9]{1,12}:0x[0-9a-fA-F]{130}$"
"""`<unix time>:<signature>`: the order's payment account acting for its own job, without a session."""

JOB_SIGNATURE_SKEW = 120
"""Seconds a job signature is good for, either side of the centre's clock."""

CREDIT_LIMIT = "credit-limit"
"""The first reason of a 402 to a job whose grant would take its home past the credit this centre gives it
(gateway.node.credit): the job may run at another centre, or here once settlement pays the home's debts."""


def job_message(centre: str, job_id: str, at: int) -> str:
    """What a job's payment account signs (EIP-191 personal_sign) to read the job or give its receipt: the
    account is the user's one-time key for that order, so it links nothing a session would not."""
    return f"xcentre job {centre} {job_id} {at}"


def complaint_message(home: str, record_digest: str, at: int) -> str:
    """What an anonymous job's payment account signs (EIP-191 personal_sign) to complain at `home` that it got no
    key for the record with this digest (0x and 64 lowercase hex digits): a member without a session there has
    only the order's account to speak for the job, as at the serving centre."""
    return f"xcentre complain {home} {record_digest} {at}"


DECISION_ID = r"^0x[0-9a-fA-F]{32}$"
"""A decision-log entry's id: 16 random bytes, 0x-hex; whoever holds it may fetch the entry."""
DECISION_DIGEST = r"^0x[0-9a-fA-F]{64}$"
"""A decision-log entry's digest (ledger.decisions.entry_digest), 0x-hex: what a usage record's `decision` names."""

AUDIT_SIGNATURE_HEADER = "X-Audit-Signature"
AUDIT_SIGNATURE = JOB_SIGNATURE
"""`<unix time>:<signature>`: one of the centre's auditors' chain accounts, asking for an epoch's decision log."""

AUDIT_SIGNATURE_SKEW = 300
"""Seconds an audit signature stays good after the time it names (by the centre's clock)."""

AUDIT_SIGNATURE_AHEAD = 30
"""Seconds the time an audit signature names may be ahead of the centre's clock: clock drift, no more, so a
signature cannot be made to last longer than AUDIT_SIGNATURE_SKEW."""

AUDIT_PAGE = 10_000
"""Most entries of a decision log in one answer (and the default): 100,000 entries come in 10 pages of a few MB."""
MAX_SEQ = 2**53 - 1
"""The largest `after` of a page of a decision log or of an epoch's usage records (a store seq, a JSON-safe
integer)."""
RECORDS_PAGE = 2_000
"""Most usage records in one page of GET /v1/audit/epochs/{e}/records (and the default): a few MB; a
million-record epoch comes in 500 pages, each one indexed query."""
EVIDENCE_PAGE = 1_024
"""Most records in one page of a claim's evidence, GET /v1/epochs/{e}/evidence (and the default): ~3.5 MB, eight
blocks of a kept sum tree (`gateway.books.kept_trees.BLOCK`), so pages from `after=0` hash no block twice."""


def audit_message(centre: str, epoch: int | str, at: int) -> str:
    """What an auditor's chain account signs (EIP-191 personal_sign) to read `centre`'s decision log of `epoch`,
    or, with an entry's digest (0x and 64 lowercase hex digits) for `epoch`, that one entry: bound to what it
    opens, so a header seen once opens no other epoch's log and no other entry."""
    return f"xcentre-audit:{centre}:{epoch}:{at}"


class JobSubmission(JobRequest):
    """A job request and what pays for it: the user's order over the request and its home's grant."""

    order: dict = Field(description="the Order (ledger.payment, snake_case) signed by a fresh payment account")
    order_signature: str = Field(pattern=SIGNATURE, description="the order's EIP-712 signature")
    grant: dict = Field(description="the Grant of the user's home for that order (POST /v1/grants at home)")
    grant_signature: str = Field(pattern=SIGNATURE, description="the grant's signature by the home's member account")

    def request(self) -> JobRequest:
        """The job request alone: what the order's request digest covers (with `centre` set)."""
        return JobRequest.model_validate(self.model_dump(include=set(JobRequest.model_fields)))


class JobQuote(BaseModel):
    """What the serving centre takes a job at now, having checked it as a submission (nothing stored)."""

    centre: str = Field(description="the centre that quotes: an order for the job names it")
    rates_version: int = Field(description="the version of its rates in force now: what an order for it names")
    max_price: int = Field(description="the most the job can cost here at its limits: an order's maximum price")
    decision: str = Field(
        description="the id of the policy's allow in this centre's decision log (GET /v1/decisions/{id})"
    )


GROUP_SIGNATURE = r"^0x([0-9a-fA-F]{2}){201,4096}$"
"""A group signature (auth.group.signature), 201 to 4096 bytes, 0x-hex."""
SIGNATURE_HASH = r"^0x[0-9a-fA-F]{64}$"
"""keccak256 of a group signature, 0x-hex: what an anonymous job's usage record names (`group_signature`)."""


class AnonymousQuote(Strict):
    """A job request signed by a member of a project instead of a session: what the centre takes it at."""

    request: JobRequest
    group_signature: str = Field(
        pattern=GROUP_SIGNATURE,
        description="a group signature over quote_message(the request's digest with `centre` this centre)",
    )


class AnonymousSubmission(JobSubmission):
    """A job submission signed by a member of a project instead of a session: the order carries a group signature."""

    group_signature: str = Field(
        pattern=GROUP_SIGNATURE, description="a group signature over order_message(the order's EIP-712 digest)"
    )


class GroupSignatureView(BaseModel):
    """A group signature a centre keeps (a job it ran, or at a home an anonymous grant's hold), for the supervisors
    who may ask to open it, and auditors. Unchecked by its reader until verified over `order`."""

    signature_hash: str = Field(description="keccak256 of the signature: what the job's usage record names")
    group_signature: str = Field(description="the signature, 0x-hex (its bytes 9 to 201 are the ciphertext C1, C2)")
    order: str = Field(
        description="the EIP-712 digest of the order it signs (over order_message(digest)): the transaction an "
        "opening names, and what the job's usage record names as `order`"
    )
    record: str | None = Field(
        description="the EIP-712 digest of the job's usage record; null while the job has none (running, or not "
        "billed) and for a grant's hold"
    )


class SignedRecord(BaseModel):
    data: dict = Field(description="the usage record (ledger.records.UsageRecord, snake_case)")
    digest: str = Field(description="its EIP-712 digest: what a receipt names")
    signature: str = Field(description="the serving centre's signature of it")


class SealedOutputs(BaseModel):
    stdout: str = Field(description="the stdout tail sealed under k (ledger.lock), 0x-hex")
    stderr: str = Field(description="the stderr tail sealed under k, 0x-hex")


class JobView(BaseModel):
    id: str
    status: str
    principal: str
    serving_centre: str
    submitted_at: str
    exit_code: int | None = None
    record_id: str | None = None
    stdout_tail: str | None = Field(default=None, description="only for a job that was not billed (no record)")
    stderr_tail: str | None = Field(default=None, description="only for a job that was not billed (no record)")
    usage: dict | None = Field(default=None, description="metered usage and price, once the job has run")
    order: str | None = Field(default=None, description="the digest of the order the job runs under")
    record: SignedRecord | None = Field(default=None, description="the signed usage record, once the job has run")
    lock_hash: str | None = Field(default=None, description="keccak256(k): the receipt for the record releases k")
    sealed: SealedOutputs | None = Field(default=None, description="the outputs, sealed under k")
    receipted: bool = Field(default=False, description="whether the payer's receipt for the record is held")
    decision: str | None = Field(
        default=None, description="the id of the policy's allow that admitted the job (GET /v1/decisions/{id})"
    )
    detail: str | None = Field(
        default=None,
        description="only for a job that was not billed (no record): why it ended so, e.g. interrupted at a "
        "gateway restart before it finished, refunded",
    )


class ReceiptRequest(Strict):
    signature: str = Field(pattern=SIGNATURE, description="the order's account's signature of Receipt(record digest)")


class ReceiptResponse(BaseModel):
    job: str
    record: str = Field(description="the digest of the record the receipt is for")
    key: str = Field(description="k, 32 bytes 0x-hex: opens the sealed outputs; keccak256(k) is the lock hash")


class CloseEpochRequest(Strict):
    epoch: Annotated[int, Field(ge=1, le=MAX_EPOCH), BeforeValidator(_whole)] | None = Field(
        default=None, description="the epoch to close; a retry naming an epoch already closed gets its closure"
    )


class HomeClaim(BaseModel):
    root: str | None = Field(description="root of the sum tree of the home's records (None: closed before sum trees)")
    count: int | None
    total: int


class EpochClosure(BaseModel):
    centre: str
    epoch: int
    record_count: int
    homes: dict[str, HomeClaim] = Field(description="per payer home (own users' too): the sum tree anchored")
    claims: dict[str, int] = Field(description="what this centre claims from each other home")
    anchored: bool
    settled: bool
    decision_root: str = Field(description="the Merkle root of the epoch's decision log (0x0…0: no decision)")
    decision_count: int = Field(description="how many decisions (allows and denies) the epoch's log holds")


class HomeCreditView(BaseModel):
    """One home's credit line at this centre and what it owes (amounts in the credit's smallest unit)."""

    home: str
    limit: int = Field(description="what the home may owe this centre now: free collateral x share - defaulted")
    free_collateral: int = Field(description="the home's free collateral in Settlement, as the index has it")
    share: str = Field(description="the part of the free collateral lent on, as a fraction (e.g. 1/2)")
    defaulted: int = Field(description="what the home left unpaid at settlements so far (Shortfall), never lent on")
    owed_in_flight: int = Field(description="the most the home's jobs queued or running here may bill")
    owed_billed: int = Field(description="the home's records here in epochs not paid yet")
    unpaid_from: int = Field(description="this centre's oldest epoch not paid yet")


class PolicyView(BaseModel):
    """A version of the centre's Cedar policy: check its texts against the hashes on chain (ledger.policies)."""

    centre: str
    version: int = Field(description="the version number on chain (Consortium.policy)")
    policy_hash: str = Field(description="sha256 of the policy text (UTF-8), as published on chain")
    schema_hash: str = Field(description="sha256 of the schema text, or 0x0…0 for none")
    published_at: int = Field(description="when the version was published on chain, in force from then")
    policy: str = Field(description="the Cedar policy text")
    schema_: str | None = Field(alias="schema", description="the Cedar schema text, if the centre has one")


class DecisionView(BaseModel):
    """One entry of the decision log and, once its epoch is closed, its proof (ledger.decisions.verify_entry)."""

    entry: dict = Field(description="the entry (ledger.decisions): request, principal, resource, context, decision")
    digest: str = Field(description="keccak256 of the entry's canonical JSON: what a usage record's `decision` names")
    epoch: int = Field(description="the epoch whose log holds it")
    closed: bool = Field(description="whether that epoch is closed here (its log's root fixed)")
    proof: list[str] | None = Field(description="the Merkle proof of the entry in the epoch's log, once closed")
    root: str | None = Field(description="the root of the epoch's log as closed here")
    anchored_root: str | None = Field(description="the root this centre anchored on chain for the epoch, once anchored")
    anchored: bool = Field(description="whether the anchored root and count are those of the log as closed here")


class DecisionLogView(BaseModel):
    """A page of a closed epoch's decision log, for auditors: re-evaluate each entry with the published policy
    version. Follow `next` (as `after`) until it is null; the entries of all pages make the log."""

    centre: str
    epoch: int
    root: str = Field(description="the root of the whole log (ledger.decisions.log_root), as anchored")
    count: int = Field(description="the number of entries of the whole log")
    entries: list[dict] = Field(description="this page's entries, in the order stored")
    next: int | None = Field(description="the `after` of the next page; null on the last page")


class PublishedRecord(BaseModel):
    """A usage record as this centre signed it (UsageRecord.to_dict()) and its EIP-712 signature."""

    record: dict = Field(description="the usage record (ledger.records.UsageRecord)")
    signature: str = Field(description="the serving centre's EIP-712 signature of it, 0x-hex")


class RecordPage(BaseModel):
    """A page of this centre's usage records of an epoch, in store order (lapsed records, in no claim, left out).
    Follow `next` (as `after`) until it is null; the records of all pages of a closed epoch are its leaves, each
    home's in the order of its sum tree (ledger.audit.verify_records)."""

    records: list[PublishedRecord] = Field(description="this page's records, in the order stored")
    next: int | None = Field(description="the `after` of the next page; null on the last page")


class EvidencePage(BaseModel):
    """A page of the evidence of this centre's claim on one home for a closed epoch, in leaf order: each record with
    its leaf `index`, order, grant, their signatures, the receipt (or null) and its sum proof
    (ledger.evidence.RecordEvidence). Follow `next` (as `after`) until it is null: the pages make the claim's leaves
    0 .. count - 1, its anchored count."""

    records: list[dict] = Field(description="this page's records' evidence, in leaf order")
    next: int | None = Field(description="the `after` of the next page; null on the last page")


class AuditedDecision(BaseModel):
    """One entry of a closed epoch's decision log, found by its digest, for auditors: a usage record may name an
    allow of an earlier epoch. Check `proof` against the root the centre anchored for `epoch`
    (UsageLedger.decisionsOf) with ledger.decisions.verify_entry."""

    centre: str
    epoch: int = Field(description="the epoch whose log holds the entry")
    digest: str = Field(description="keccak256 of the entry's canonical JSON, as asked")
    entry: dict = Field(description="the entry (ledger.decisions)")
    proof: list[str] = Field(description="the Merkle proof of the entry in that epoch's log")
    root: str = Field(description="the root of that epoch's log as closed here")


PROJECT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A project: the cn of an LDAP group at the user's home that has an allocation."""
LOCK_HASH = r"^0x[0-9a-fA-F]{64}$"


class GrantRequest(Strict):
    """At the user's home: hold an order's maximum price against one of the user's projects."""

    order: dict = Field(description="the Order (ledger.payment, snake_case), signed by a fresh payment account")
    order_signature: str = Field(pattern=SIGNATURE, description="the order's EIP-712 signature by that account")
    project: str | None = Field(
        default=None, pattern=PROJECT, description="the project to charge; needed only for a member of several"
    )


class GrantResponse(BaseModel):
    grant: dict = Field(description="the Grant (ledger.payment, snake_case): submit it with the order")
    grant_signature: str = Field(description="the grant's signature by the home's member account, 0x-hex")
    order: str = Field(description="the order's digest")
    project: str = Field(description="the project the hold is charged to")


class AnonymousGrantRequest(Strict):
    """At a member's home, with no session: hold an order's maximum price on the project a group signature proves."""

    order: dict = Field(description="the Order (ledger.payment, snake_case), signed by a fresh payment account")
    order_signature: str = Field(pattern=SIGNATURE, description="the order's EIP-712 signature by that account")
    group_signature: str = Field(
        pattern=GROUP_SIGNATURE,
        description="a group signature over order_message(the order's EIP-712 digest) by a credential of this home",
    )


SCALAR = r"^0x[0-9a-fA-F]{64}$"
"""A scalar of BLS12-381's group order, 32 bytes 0x-hex."""


class JoinProof(Strict):
    c: str = Field(pattern=SCALAR, description="the Schnorr proof's challenge")
    s: str = Field(pattern=SCALAR, description="the Schnorr proof's response")


class GroupJoinRequest(Strict):
    """At home, signed on with a password: join one of your projects' groups (auth.group.credential.JoinRequest)."""

    project: str = Field(pattern=PROJECT, description="the project (as your home names it) whose group to join")
    tracing_key: str = Field(
        pattern=r"^0x[0-9a-fA-F]{96}$", description="T = sk·H_0 for your secret sk, a compressed G1 point, 0x-hex"
    )
    proof: JoinProof = Field(description="a proof of knowing sk, bound to this home, the project and your uid")


class GroupJoinResponse(BaseModel):
    credential: dict = Field(
        description="the group credential (auth.group.credential.GroupCredential), signed blindly over T: keep it "
        "with sk in your wallet"
    )
    supervision_key: str = Field(description="the supervisors' joint key Y (96 bytes raw, 0x-hex): sign under it")
    issuer_pk: str = Field(description="this home's issuer public key that signed the credential, 0x-hex")


class HomeKeys(BaseModel):
    """What every member of one home who joins in one week has in common in their group credentials, as the chain
    says: it depends only on the home and the week, never on when in the week a member joined."""

    centre: str
    issuer_key: str | None = Field(
        description="its current issuer public key (0x-hex): what its sign-on credentials are signed with; null "
        "before it published one"
    )
    key_id: str | None = Field(description="that key's id, as credentials name it (16 hex digits)")
    week_start: int = Field(
        description="the start of the week these facts are for (Unix seconds): the week a credential expiring at "
        "`expires_at` was issued in, or, without it, the week of this gateway's clock"
    )
    group_issuer_key: str | None = Field(
        description="the issuer key the home had when that week began (0x-hex; if it had none then, the first it "
        "set that week): what every group credential of the week is signed with; null if none"
    )
    group_key_id: str | None = Field(description="that key's id, as group credentials and signatures name it")
    revocation_epoch: int = Field(
        description="its revocation epoch as it stood when that week began: what every group credential of the "
        "week carries (a revocation reaches group credentials at the next week's turn)"
    )


class SupervisionView(BaseModel):
    """What a member compares their home's answer to a join with, at a gateway other than the home's: a supervision
    key, issuer key, epoch or expiry other than these would single the member out to their home."""

    supervision_key: str = Field(description="the supervisors' joint key Y from the chain (96 bytes raw, 0x-hex)")
    committee: list[str] = Field(description="the supervisors, by centre name (supervisor i is the i-th)")
    threshold: int = Field(description="how many supervisors' shares open a signature")
    now: int = Field(
        description="this gateway's clock (Unix seconds; the later of its machine's and the chain's): a credential "
        "issued now expires at the first week boundary more than a week after it"
    )
    home: HomeKeys | None = Field(description="the home asked for with `?home=`; null without it")


class IdentificationView(BaseModel):
    """Whom an opened signature's tracing key belongs to, as this home mapped it (and records on chain)."""

    opening: int
    uid: str = Field(description="the member, as this home's directory names them")
    enrolment: str = Field(description="the member's enrolment id (0x-hex): what Supervision.identify records")
    project: str = Field(description="the project whose group the key joined")


class ProjectBalance(BaseModel):
    name: str
    allocation: int
    held: int = Field(description="reserved by grants not yet paid or refunded")
    spent: int = Field(description="paid: prices of records in settled claims")
    available: int = Field(description="allocation - held - spent")


class UserBalance(BaseModel):
    principal: str
    held: int
    spent: int


class HoldView(BaseModel):
    order: str
    grant: str
    project: str
    centre: str = Field(description="the serving centre the order is for")
    amount: int = Field(description="the hold: the order's maximum price")
    deadline: int
    status: Literal["held", "paid", "refunded"]
    price: int | None = Field(description="what was paid, once paid")


class Balance(BaseModel):
    project: ProjectBalance
    user: UserBalance
    holds: list[HoldView] = Field(description="the user's holds, most recent first (at most 100)")


class ComplaintRequest(Strict):
    record: dict = Field(description="the usage record (snake_case) whose key the serving centre did not release")


class AnonymousComplaintRequest(Strict):
    """At the home of an anonymous job's payer, with no session: the order's account says it got no key."""

    record: dict = Field(description="the usage record (snake_case) whose key the serving centre did not release")
    at: int = Field(
        ge=0,
        le=MAX_EPOCH,
        description=f"when it was signed (Unix seconds; good {JOB_SIGNATURE_SKEW} s either side of the home's clock)",
    )
    signature: str = Field(
        pattern=SIGNATURE,
        description="the EIP-191 signature, by the account that signed the record's order, of "
        "`xcentre complain <home> <record digest, 0x and lowercase hex> <at>`",
    )


class ComplaintView(BaseModel):
    record: str = Field(description="the record's digest")
    grant: str
    status: Literal["open", "disputed"] = Field(description="open: the home's watcher disputes it on chain")


class RevealedKey(BaseModel):
    lock_hash: str
    key: str = Field(description="k, revealed on chain by the serving centre: opens the sealed outputs")
