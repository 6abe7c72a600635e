"""A centre's gateway node: the flow of one job, from token to signed usage record.

Over 400 lines because it is that flow, read best in one place, top to bottom;
the work of each step is done by its own module (sign-on, policy, store,
executor, pricing, records, epochs).

The HTTP layer (gateway.api.app) only translates requests into calls here, so the
same node serves the API, the demo and the tests.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils import keccak, to_canonical_address, to_checksum_address
from joserfc import jws

from auth.directory import Directory
from auth.group.credential import credential_expiry, issue_week
from auth.group.points import g1_raw
from auth.group.signature import signature_hash
from auth.policy import Subject
from auth.tokens import PASSWORD, Claims, TokenError, TokenIssuer, VerifiedTokens, verify_token
from gateway.api.schemas import (
    CREDIT_LIMIT,
    JOB_SIGNATURE_SKEW,
    AnonymousQuote,
    AnonymousSubmission,
    EpochClosure,
    GroupSignatureView,
    JobQuote,
    JobRequest,
    JobSubmission,
    JobView,
    LoginResponse,
    PlacementRequest,
    ReceiptResponse,
    RevokeResponse,
    SealedOutputs,
    SignedRecord,
    job_message,
)
from gateway.books.epochs import EpochCloser
from gateway.jobs.executor import Execution, Executor, ExecutorError, Limits
from gateway.jobs.placement import Candidate, rank_centres
from gateway.jobs.pricing import cap_to_limits, max_price, price
from gateway.node import orders
from gateway.node.anonymous import AnonymousDesk, SupervisionKey, job_request_digest, pseudonymous
from gateway.node.credit import CreditDesk
from gateway.node.decisions import DecisionLog
from gateway.node.errors import (
    Conflict,
    Forbidden,
    Invalid,
    Misdirected,
    NotFound,
    PaymentRequired,
    Unauthenticated,
    Unavailable,
    disk_refusal,
)
from gateway.node.group_rules import week_issuer_key
from gateway.node.groups import GroupDesk
from gateway.node.payer import Payer
from gateway.node.peers import Peers
from gateway.node.policies import DecisionDesk, Evaluated, PolicyKeeper
from gateway.node.signon import SignOn
from gateway.store import IdempotencyConflict, Job, ReplayedOrder, SealedResult, Store, StoreError
from gateway.store.credit import CreditExceeded
from ledger import lock
from ledger.chain import ChainUnavailable
from ledger.ids import centre_id
from ledger.index import EventIndex, RatesInfo
from ledger.payment import Grant, InvalidSignature, Receipt, grant_digest, recover
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.records import Domain, UsageRecord, record_digest, record_leaf, sign_record

log = logging.getLogger(__name__)

#: Seconds an answer of the executor's capacity is reused for (GET /v1/capacity is public).
CAPACITY_FRESH_FOR = 1.0

#: Seconds before a job whose start hit a full or read-only disk is taken again, and a back waits after a round
#: of taking queued jobs failed, so that its log is not flooded.
QUEUED_RETRY = 5.0

#: How a job that a restart interrupted before it finished is described (never a bare "failed").
INTERRUPTED = "interrupted at a gateway restart before it finished, refunded"

#: What a job's owner sees of its usage record.
USAGE_FIELDS = ("epoch", "cpu_millis", "wall_millis", "max_rss_kib", "gpu_millis", "price")


@dataclass(frozen=True)
class JobSignature:
    """The order's payment account acting for its own job: its EIP-191 signature of job_message(centre, job, at)."""

    at: int
    signature: str


@dataclass
class NodeParts:
    """Everything a node is made of; built by gateway.node.assemble from a configuration."""

    name: str
    account: LocalAccount
    index: EventIndex
    store: Store
    directory: Directory
    policy: PolicyKeeper
    """The Cedar policy served: the latest version this centre published on chain."""
    decisions: DecisionDesk
    """Evaluates the policy; every evaluation is an entry of the decision log, stored before the answer."""
    decision_log: DecisionLog
    issuer: TokenIssuer
    executor: Executor
    epochs: EpochCloser
    signon: SignOn
    peers: Peers
    domain: Domain
    operator_key: str
    workers: int = 4
    payer: Payer | None = None
    """The home's grant desk (gateway.node.payer): grants, holds, balances, complaints of its own users."""
    groups: GroupDesk | None = None
    """The home's group desk (gateway.node.groups): joins, anonymous grants, identifications of openings."""
    credit_share: Fraction | None = None
    """The part of a home's free collateral it may owe this centre; None: 1 / (active members - 1)
    (gateway.node.credit)."""


class CentreNode:
    """One member centre: sign-on, placement, execution, signed records, epochs."""

    def __init__(self, parts: NodeParts, *, runs_jobs: bool = True) -> None:
        """`runs_jobs` False: a front process's node (gateway.api.fronts), which stores the jobs it accepts
        queued and leaves them to the back process's node, the one that runs jobs and keeps the books."""
        self.parts = parts
        self.name = parts.name
        self.runs_jobs = runs_jobs
        self._pool = ThreadPoolExecutor(max_workers=parts.workers, thread_name_prefix=f"{parts.name}-job")
        self._in_flight: set[str] = set()  # jobs handed to the pool and not yet done with: each goes once
        self._in_flight_lock = threading.Lock()
        self._held_back: dict[str, float] = {}  # job -> when to try again: its start hit a full or read-only disk
        self._stopping = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._taker: threading.Thread | None = None
        self._capacity_lock = threading.Lock()
        self._capacity: tuple[float, dict | None] = (0.0, None)
        self._verified_tokens = VerifiedTokens()  # a session's token signature is checked once
        self.credit = CreditDesk(parts.name, parts.index, parts.store, parts.credit_share)
        self.anonymous = AnonymousDesk(
            parts.name, parts.index, parts.domain, SupervisionKey.from_chain(parts.index.chain, parts.index.deployment)
        )

    # -- lifecycle ---------------------------------------------------------------

    def start(self, interval: float = 1.0, *, take_queued: float | None = None) -> None:
        """Catch up with the chain and keep up with it; resume the jobs a restart interrupted.

        `take_queued` (seconds): also run, that often, the queued jobs other processes stored (the back
        process of a gateway with fronts). Raises PolicyStartError, before anything else starts, when the
        policy files are not the policy version this centre last published on chain.
        """
        try:
            self.parts.index.sync()
        except ChainUnavailable as exc:  # serve from the index as it stands; housekeeping catches up
            index = self.parts.index
            if index.last_block < index.deployment.start_block:  # nothing to serve from: members, keys, policy
                raise ChainUnavailable(
                    f"{exc}, and {self.name} has never read the chain: its first start needs it"
                ) from None
            log.warning("%s: %s; starting from the local index (block %d)", self.name, exc, index.last_block)
        self.parts.policy.start()
        self.parts.signon.publish_issuer_key()
        self.parts.epochs.start_on_clock()
        self.parts.epochs.resend_anchors()
        with contextlib.suppress(ChainUnavailable):  # logged by housekeeping's first round
            self.parts.epochs.flush()
        self._housekeeper = threading.Thread(
            target=self._housekeeping, args=(interval,), name=f"{self.name}-housekeeping", daemon=True
        )
        self._housekeeper.start()
        store = self.parts.store
        for job in store.jobs_in_status("running"):  # a crash left them: finished runs are billed, others refunded
            self._dispatch(job.id, self._recover)
        for job in store.jobs_in_status("queued"):
            self._dispatch(job.id, self._run)
        if take_queued is not None:
            self._taker = threading.Thread(
                target=self._taking, args=(take_queued,), name=f"{self.name}-take-queued", daemon=True
            )
            self._taker.start()

    def start_front(self, interval: float = 1.0) -> None:
        """Serve submissions beside the process that owns the books: follow the policy it publishes, nothing else.

        The back process keeps the index, the outbox and the epochs and runs the jobs; a front only reads
        them. Raises PolicyStartError as `start` does."""
        if self.runs_jobs:
            raise ValueError("a front's node runs no jobs: make it with runs_jobs=False")
        self.parts.policy.start()
        self._housekeeper = threading.Thread(
            target=self._following_policy, args=(interval,), name=f"{self.name}-front-policy", daemon=True
        )
        self._housekeeper.start()

    def stop(self) -> None:
        """Stop after the running jobs; queued jobs stay queued in the store and run after the next start."""
        self._stopping.set()
        for thread in (self._housekeeper, self._taker):
            if thread:
                thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.parts.peers.close()

    def _dispatch(self, job_id: str, task: Callable[[str], None]) -> None:
        """Hand a job to the pool once: a job already handed (accepted here, then seen queued) is not again."""
        if not self.runs_jobs:
            return
        with self._in_flight_lock:
            if job_id in self._in_flight:
                return
            self._in_flight.add(job_id)

        def done(_: object) -> None:
            with self._in_flight_lock:
                self._in_flight.discard(job_id)

        try:
            self._pool.submit(task, job_id).add_done_callback(done)
        except RuntimeError:  # the pool is shut down: the job stays queued for the next start
            done(None)

    def _take_queued(self) -> None:
        now = time.monotonic()
        for job_id in self.parts.store.queued_job_ids():
            if self._held_back.get(job_id, now) <= now:
                self._held_back.pop(job_id, None)
                self._dispatch(job_id, self._run)

    def _taking(self, every: float) -> None:
        """Run the jobs front processes accept: they store them queued, this process runs them."""
        while not self._stopping.wait(every):
            try:
                self._take_queued()
            except Exception as exc:  # noqa: BLE001 - the data disk or a busy store: the next round
                log.warning("%s: queued jobs not taken: %s", self.name, exc)
                self._stopping.wait(QUEUED_RETRY)

    def _following_policy(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                self.parts.policy.refresh()
            except Exception as exc:  # noqa: BLE001 - the index is being written: the next round
                log.warning("%s: policy not refreshed: %s", self.name, exc)

    def _housekeeping(self, interval: float) -> None:
        """Follow the chain, send what the outbox holds, settle epochs that became ready."""
        while not self._stopping.wait(interval):
            try:
                self.parts.epochs.housekeeping()
            except Exception as exc:  # noqa: BLE001 - the chain may be briefly unreachable: try again next round
                log.warning("%s: housekeeping failed: %s", self.name, exc)
            self._sweep_runs()

    # -- identity ----------------------------------------------------------------

    def login(self, username: str, password: str) -> LoginResponse:
        """Password sign-on at the user's home centre: the password goes nowhere else."""
        signon = self.parts.signon
        entry = signon.bind(username, password)
        # The same attribute names as a credential's, so one policy serves both sign-ons.
        attributes = signon.schema.from_directory(entry.attributes, entry.groups)
        principal = f"{entry.uid}@{self.name}"
        token = self.parts.issuer.issue(
            principal, self.name, attributes, revocation_epoch=self.parts.index.revocation_epoch(self.name)
        )
        return LoginResponse(
            token=token, principal=principal, home=self.name, audience=self.name, expires_at=_claims(token)["exp"]
        )

    def exchange(self, claims: Claims, audience: str) -> LoginResponse:
        """A token for another member, for a user signed on here at home with a password (token exchange).

        Home is the authority for its own people, so it alone may vouch for them to
        another centre; the new token carries the same attributes and never outlives
        the session it comes from.
        """
        if claims.presented or claims.iss != self.name or claims.home != self.name:
            raise Forbidden(
                f"only your home centre exchanges tokens, and only for a password sign-on there; "
                f"with a credential, sign on at {audience} with a fresh presentation"
            )
        member = self.parts.index.member(audience)
        if member is None or not member.active:
            raise Invalid(f"{audience!r} is not a member centre")
        try:
            token = self.parts.issuer.issue(
                claims.sub,
                self.name,
                claims.attrs,
                audience=audience,
                expires_at=claims.exp,
                revocation_epoch=self.parts.index.revocation_epoch(self.name) if claims.rev is None else claims.rev,
            )
        except ValueError as exc:  # the session is in its last seconds (past exp, within the leeway)
            raise Unauthenticated(f"session token refused: {exc}; log in again") from None
        return LoginResponse(
            token=token, principal=claims.sub, home=self.name, audience=audience, expires_at=_claims(token)["exp"]
        )

    def authenticate(self, token: str | None) -> Claims:
        """Check a session token meant for this centre against its issuer's key in the local index."""
        if not token:
            raise Unauthenticated("a session token is required: sign on at this centre first")
        try:
            claims = verify_token(
                token,
                self.parts.index.token_key,
                audience=self.name,
                revocation_epoch_for=self.parts.index.revocation_epoch,
                cache=self._verified_tokens,
            )
        except TokenError as exc:
            raise Unauthenticated(f"session token refused: {exc.reason}") from None
        own = not claims.presented and claims.home == self.name
        if own and self.parts.signon.is_revoked(claims.sub.rsplit("@", 1)[0]):
            # The chain may not have the revocation yet (queued), so the revocation epoch still
            # matches: home refuses its revoked user's sessions, as it refuses their password.
            raise Unauthenticated(f"session token refused: the enrolment of {claims.sub} at {self.name} is revoked")
        return claims

    def credential(self, username: str, password: str) -> dict:
        return self.parts.signon.issue(username, password)

    def auth_request(self) -> dict:
        return self.parts.signon.request().to_dict()

    def present(self, presentation: dict) -> dict:
        token, disclosed = self.parts.signon.present(presentation)
        claims = _claims(token)
        return {
            "token": token,
            "principal": claims["sub"],
            "home": claims["home"],
            "audience": claims["aud"],
            "expires_at": claims["exp"],
            "disclosed": disclosed,
        }

    def revoke(self, username: str) -> RevokeResponse:
        """Revoke one of this home's users; the answer says whether the chain took it (see SignOn.revoke)."""
        result = self.parts.signon.revoke(username)
        if result.status == "done":
            try:  # this home's next credentials carry the new revocation epoch at once
                self.parts.index.sync()
            except Exception as exc:  # noqa: BLE001 - housekeeping catches up within a second
                log.warning("%s: index not synced after a revocation: %s", self.name, exc)
        return result

    # -- jobs --------------------------------------------------------------------

    def submit(
        self,
        claims: Claims,
        submission: JobSubmission,
        idempotency_key: str | None,
        client: str | None = None,
        group_signature: bytes | None = None,
    ) -> JobView:
        """Accept a job for this centre, if its policy allows it and its order and grant pay for it.

        A gateway serves only its own centre: it never carries a user's authority to
        another member. Placement across centres is the client's (see `placement`):
        it signs on at the centre it picks and submits there. `group_signature` is an
        anonymous job's (`anonymous_submit`), kept with the job for the supervisors.
        """
        request = submission.request()
        self._check_centre(request)
        if idempotency_key is not None:
            earlier = self.parts.store.job_by_key(
                self._key_scope(claims, submission.order, submission.order_signature), idempotency_key
            )
            if earlier is not None:  # decided before anything runs: a retry never starts a second job
                return self._retry(earlier, request, idempotency_key)
        if group_signature is not None:
            used = self.parts.store.job_by_group_signature(signature_hash(group_signature))
            if used is not None:  # its order is spent too: refused before the policy decides anything
                raise Conflict(
                    f"replayed order: this group signature was already used for job {used.id}; an order pays for "
                    "one job: sign a new order (with a fresh account) and sign it again"
                )
        allowed = self._authorise(claims, request, "submit", client)
        signed = orders.Signed(
            submission.order, submission.order_signature, submission.grant, submission.grant_signature
        )
        return self._accept(claims, request, signed, idempotency_key, allowed, group_signature)

    def _key_scope(self, claims: Claims, order: dict, order_signature: str) -> str:
        """Whose an idempotency key is: the user a password session names (uid@home), else the order's payment
        account. A presented or anonymous session's principal is a fresh pseudonym at each sign-on, so a retry
        after a new sign-on would otherwise start a second job; the account is the one authority that outlives
        the session (it also acts for its job, `JobSignature`), and only its key holder can sign its orders."""
        if claims.amr == [PASSWORD]:
            return claims.sub
        account = orders.payment_account(order, order_signature, self.parts.domain)  # kept for check_payment
        # None: not a signed order, which the payment check refuses before anything is stored
        return claims.sub if account is None else f"account:{account}"

    def anonymous_submit(
        self, submission: AnonymousSubmission, idempotency_key: str | None, client: str | None = None
    ) -> JobView:
        """`submit` for a member of a project who signs the order with a group signature instead of signing on.

        The claims name only a pseudonym (the signature's hash), the home and the project; the
        job keeps the signature, and its usage record names the signature's hash.
        """
        verified = self.anonymous.for_order(submission.order, submission.group_signature, client)
        return self.submit(verified.claims, submission, idempotency_key, client, verified.signature)

    def anonymous_quote(self, body: AnonymousQuote, client: str | None = None) -> JobQuote:
        """`quote` for a job request carrying a group signature over it, instead of a session."""
        verified = self.anonymous.for_quote(body.request, body.group_signature, client)
        return self.quote(verified.claims, body.request, client)

    def group_signature(self, signature_hash_hex: str) -> GroupSignatureView:
        """A group signature kept here, by its hash: a job's run here (what its usage record names) or, at a home,
        an anonymous grant's hold; with the order digest it signs (the transaction an opening names) and the job's
        record digest. For a supervisor asking for an opening, and for auditors."""
        wanted = bytes.fromhex(signature_hash_hex.removeprefix("0x"))
        job = self.parts.store.job_by_group_signature(wanted)
        if job is not None and job.group_signature is not None and job.payment is not None:
            record = record_digest(self._record(job)[0], self.parts.domain) if job.record_id else None
            return GroupSignatureView(
                signature_hash=to_hex(wanted),
                group_signature=to_hex(job.group_signature),
                order=to_hex(job.payment.order_digest),
                record=None if record is None else to_hex(record),
            )
        hold = None if self.parts.payer is None else self.parts.payer.book.hold_by_group_signature(wanted)
        if hold is not None and hold.group_signature is not None:
            return GroupSignatureView(
                signature_hash=to_hex(wanted),
                group_signature=to_hex(hold.group_signature),
                order="0x" + hold.order_digest,
                record=None,
            )
        raise NotFound(f"no job or grant at {self.name} was made under a group signature with hash 0x{wanted.hex()}")

    def quote(self, claims: Claims, request: JobRequest, client: str | None = None) -> JobQuote:
        """What this centre takes the job at now, after the checks a submission gets (its centre, the session,
        the policy, the credit its home has here): asked before the user's home holds anything, so a job refused
        here costs no hold.

        Advisory, and nothing of it is stored but the policy's decision (in the decision log): the order
        signed for it and the home's grant are what bind, and `submit` checks everything again.
        """
        self._check_centre(request)
        allowed = self._authorise(claims, request, "quote", client)
        self.parts.decisions.keep(allowed)
        rates = self._rates_in_force()
        res = request.resources
        cost = max_price(request.walltime, res.cores, res.memory_mib, res.gpus, rates.prices)
        line = self.credit.line(claims.home)
        if line is not None:
            owed = self.credit.owed(claims.home)
            if owed.total + cost > line.limit:  # the submission checks again, in the job's own transaction
                raise self._past_line(claims.home, line.limit, cost)
        return JobQuote(centre=self.name, rates_version=rates.version, max_price=cost, decision=allowed.id)

    def _check_centre(self, request: JobRequest) -> None:
        """421 for a request meant for another centre (or for "auto"): this gateway serves only its own."""
        if request.centre not in (None, self.name):
            raise self._misdirected(request.centre)

    def _rates_in_force(self) -> RatesInfo:
        """The rates version a job accepted now is priced at; 503 while none is in force."""
        rates = self.parts.index.rates_in_force(self.name, self.parts.index.now())
        if rates is None:
            raise Unavailable(f"{self.name} has no published rates in force, so it cannot price a job; try again later")
        return rates

    def _misdirected(self, centre: str) -> Misdirected:
        if centre == "auto":
            return Misdirected(
                f"{self.name} serves only its own jobs: placement is made by the client "
                "(POST /v1/placement ranks the centres; `xcentre submit --centre auto` does it for you)"
            )
        member = self.parts.index.member(centre)
        if member is None or not member.active:
            names = ", ".join(sorted(m.name for m in self.parts.index.members()))
            return Misdirected(f"unknown centre {centre!r}; members are {names}")
        return Misdirected(
            f"this is {self.name}'s gateway: sign on at {centre} ({member.gateway_url}) and submit "
            "there; no member submits on a user's behalf"
        )

    def placement(self, request: PlacementRequest) -> list[Candidate]:
        """The member centres ranked for a job: free capacity first, then by maximum price.

        Advisory only: each centre still authorises the job itself when the client submits there.
        """
        members = self.parts.index.members()
        free = self.parts.peers.capacities([m.name for m in members if m.name != self.name])
        free[self.name] = self.capacity()["free_cpus"]
        return rank_centres(members, request, self.name, free)

    def members(self) -> dict:
        """Every active member, its gateway URL and account, from the chain: where a client of this home may go,
        whose signature its records carry; and the domain a client signs its orders and receipts in."""
        domain = self.parts.domain
        return {
            "members": [
                {"centre": m.name, "gateway_url": m.gateway_url, "account": to_checksum_address(m.account)}
                for m in self.parts.index.members()
            ],
            "domain": {"chain_id": domain.chain_id, "verifying_contract": domain.verifying_contract},
        }

    def supervision(self, home: str | None = None, expires_at: int | None = None) -> dict:
        """What a member compares their home's answer to a join with, as this centre reads the chain (public): the
        supervisors' key, committee and threshold, this gateway's clock (the one homes issue expiries by) and, for
        `home`, its current issuer key and what every group credential of one week carries: the issuer key and the
        revocation epoch it had when the week began (group_rules), for the week a credential expiring at
        `expires_at` was issued in, else for a credential issued now. A home answering otherwise singles its
        member out."""
        key = self.anonymous.key.get()
        committee, threshold = self.anonymous.key.committee()
        index = self.parts.index
        facts: dict = {
            "supervision_key": to_hex(g1_raw(key)),
            "committee": list(committee),
            "threshold": threshold,
            "now": index.now(),
            "home": None,
        }
        if home is not None:
            member = index.member(home)
            if member is None or not member.active:
                names = ", ".join(sorted(m.name for m in index.members()))
                raise NotFound(f"{home} is not a member centre (members are {names})")
            current = index.current_issuer_key(home)
            week = issue_week(credential_expiry(facts["now"]) if expires_at is None else expires_at)
            of_week = week_issuer_key(index.issuer_keys(home), week)
            facts["home"] = {
                "centre": home,
                "issuer_key": None if current is None else to_hex(current.pk),
                "key_id": None if current is None else current.short_id,
                "week_start": week,
                "group_issuer_key": None if of_week is None else to_hex(of_week.pk),
                "group_key_id": None if of_week is None else of_week.short_id,
                "revocation_epoch": index.revocation_epoch_at(home, week),
            }
        return facts

    def fresh_capacity(self) -> dict | None:
        """`capacity()`'s answer while it is fresh, else None; never waits (for the executor or a lock), so it may
        be answered on the server's event loop."""
        asked_at, answer = self._capacity  # one tuple, replaced whole
        if answer is None or time.monotonic() - asked_at > CAPACITY_FRESH_FOR:
            return None
        return dict(answer)

    def capacity(self) -> dict:
        """What this centre can take now, for other gateways' placement.

        Public, so answered from what the executor said within the last CAPACITY_FRESH_FOR
        seconds: a flood of requests never reaches the executor (at a Slurm centre, `sinfo`
        against slurmctld) more than once a second.
        """
        with self._capacity_lock:
            asked_at, answer = self._capacity
            if answer is None or time.monotonic() - asked_at > CAPACITY_FRESH_FOR:
                capacity = self.parts.executor.capacity()
                answer = {"centre": self.name, "total_cpus": capacity.total_cpus, "free_cpus": capacity.free_cpus}
                self._capacity = (time.monotonic(), answer)
            return dict(answer)

    def _authorise(self, claims: Claims, request: JobRequest, kind: str, client: str | None = None) -> Evaluated:
        """The allow of this centre's Cedar policy for the job and this session, its entry not stored yet;
        or, its entry stored, 403 with the policy's reasons and the entry's id.

        `client` (the network address) bounds a presented session's decisions together with every other
        presented session's from there: each sign-on is a fresh pseudonym, so one person signing on again
        would otherwise get a fresh allowance each time."""
        now = int(time.time())
        subject = Subject(
            claims.sub, claims.home, {k: v for k, v in claims.attrs.items() if k != "groups"}, self._groups(claims)
        )
        res = request.resources
        resource = {"queue": res.queue, "centre": self.name, "gpu_type": res.gpu_type, "data_class": res.data_class}
        context = {
            "walltime": request.walltime,
            "cores": res.cores,
            "memory_mib": res.memory_mib,
            "gpus": res.gpus,
            "hour": time.gmtime(now).tm_hour,
        }
        digest = job_request_digest(request, self.name)  # what the order signs
        evaluated = self.parts.decisions.evaluate(
            kind=kind,
            request=digest,
            subject=subject,
            resource=resource,
            context=context,
            now=now,
            client=client if pseudonymous(claims) else None,
        )
        if not evaluated.decision.allowed:
            raise self.parts.decisions.refuse(evaluated)
        return evaluated

    def _retry(self, earlier: Job, request: JobRequest, key: str) -> JobView:
        """The job a retry refers to, or 409 when the key was used for a different request."""
        asked = request.model_dump()
        same = {k: v for k, v in earlier.request.items() if k != "centre"} == {
            k: v for k, v in asked.items() if k != "centre"
        }
        if not same:
            raise Conflict(
                f"idempotency key {key!r} was already used for a different request (job {earlier.id}); "
                "use a new key for a new request"
            )
        return self._view(earlier)

    def _groups(self, claims: Claims) -> list[str]:
        """Home groups as `cn@home` (plain `cn` too for this centre's own people), plus local LDAP groups."""
        home_groups = [g for g in str(claims.attrs.get("groups", "")).split(",") if g]
        groups = {f"{g}@{claims.home}" for g in home_groups}
        if claims.home == self.name:
            groups.update(home_groups)
        if not pseudonymous(claims):  # a presented sign-on or a group signature: no directory entry to look up
            groups.update(self.parts.directory.groups_of(claims.sub))
        return sorted(groups)

    def _accept(
        self,
        claims: Claims,
        request: JobRequest,
        signed: orders.Signed,
        idempotency_key: str | None,
        allowed: Evaluated,
        group_signature: bytes | None = None,
    ) -> JobView:
        """Store the job with the rates version in force now, the order and grant that pay for it and the
        policy's allow that admitted it (one transaction); refused after all, the allow is stored alone.

        The job is priced at that version, whatever is published later, and at most at the grant.
        The grant is checked against the home's member account in the index: the home is not asked.
        """
        try:
            job, created = self._store_job(claims, request, signed, idempotency_key, allowed, group_signature)
        except Exception:
            self.parts.decisions.keep(allowed)
            raise
        if created:
            self._dispatch(job.id, self._run)
        return self._view(job)

    def _store_job(
        self,
        claims: Claims,
        request: JobRequest,
        signed: orders.Signed,
        idempotency_key: str | None,
        allowed: Evaluated,
        group_signature: bytes | None = None,
    ) -> tuple[Job, bool]:
        """Check the order and grant, then store the job with them and its allow: (job, created)."""
        body = request.model_dump() | {"centre": self.name}
        index = self.parts.index
        rates = self._rates_in_force()
        home = index.member(claims.home)
        res = request.resources
        accepted = orders.check_payment(
            signed,
            orders.Job(body, request.walltime, res.cores, res.memory_mib, res.gpus),
            orders.Terms(
                self.name,
                rates.version,
                rates.prices,
                claims.home,
                to_checksum_address(home.account) if home is not None and home.active else None,
            ),
            now=int(time.time()),
            domain=self.parts.domain,
        )
        try:
            job, created = self.parts.store.create_job(
                claims.sub,
                claims.home,
                body,
                self.name,
                idempotency_key=idempotency_key,
                rates_version=rates.version,
                payment=accepted.payment,
                decision=allowed.entry,
                group_signature=group_signature,
                idempotency_scope=claims.sub if claims.amr == [PASSWORD] else f"account:{accepted.account}",
                credit_line=self.credit.line(claims.home),
                bills_at_most=accepted.cost,
            )
        except CreditExceeded as exc:
            raise self._past_line(claims.home, exc.line.limit, exc.amount) from None
        except ReplayedOrder as exc:
            raise Conflict(f"replayed order: {exc}") from None
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from None
        return job, created

    def _past_line(self, home: str, limit: int, amount: int) -> PaymentRequired:
        """The refusal of a job that may bill `amount` when `home`'s credit line here does not fit it: naming
        only the line and the job's own amount, never what others owe."""
        share = self.credit.share()
        part = "" if share == 1 else f"{share.numerator}/{share.denominator} of "
        return PaymentRequired(
            f"{self.name} takes {home}'s jobs while what {home} owes it stays within a credit of {limit} now "
            f"({part}{home}'s free collateral on chain), and this job, which may bill {amount}, does not fit beside "
            f"what it owes: {self.name} takes it again as settlement pays {home}'s earlier jobs, or once {home} "
            "deposits more collateral; or run the job at another centre",
            reasons=[CREDIT_LIMIT, f"limit: {limit}", f"this job may bill: {amount}"],
        )

    def job(self, caller: Claims | JobSignature, job_id: str) -> JobView:
        return self._view(self._own_job(caller, job_id))

    def _own_job(self, caller: Claims | JobSignature, job_id: str) -> Job:
        """The job, if `caller` is its session's principal or its order's payment account (by a fresh signature).

        The account is an authority of its own job because a session ends (a new sign-on is a new
        pseudonym) while the wallet keeps the account's key until the result is opened.
        """
        job = self.parts.store.get_job(job_id)
        if isinstance(caller, JobSignature):
            if job is None:
                raise NotFound(f"no job {job_id} at {self.name}")
            self._check_job_signature(job, caller)
            return job
        if job is None or job.principal != caller.sub:
            raise NotFound(f"no job {job_id} of yours at {self.name}")
        return job

    def _check_job_signature(self, job: Job, caller: JobSignature) -> None:
        now = int(time.time())
        if abs(now - caller.at) > JOB_SIGNATURE_SKEW:
            raise Unauthenticated(
                f"job signature refused: signed at {caller.at}, {now - caller.at:+d} s from {self.name}'s clock; "
                f"it is good for {JOB_SIGNATURE_SKEW} s either side: sign again"
            )
        if job.payment is None:
            raise Unauthenticated(f"job signature refused: job {job.id} has no order, so no account acts for it")
        message = encode_defunct(text=job_message(self.name, job.id, caller.at))
        try:
            signer = Account.recover_message(message, signature=from_hex(caller.signature, size=65))
        except (HexError, ValueError, BadSignature) as exc:
            raise Unauthenticated(f"job signature refused: not a valid signature ({exc})") from None
        if signer != job.payment.account:
            raise Unauthenticated(
                f"job signature refused: it is {signer}'s, not that of the account that signed job {job.id}'s order"
            )

    def receipt(self, caller: Claims | JobSignature, job_id: str, signature: str) -> ReceiptResponse:
        """The key k of the job's sealed outputs, for the payer's receipt of its usage record.

        The receipt must be the order's account's signature of Receipt(record digest); it is
        stored durably before k is released, so the centre holds what it is paid against.
        """
        job = self._own_job(caller, job_id)
        if job.record_id is None or job.result is None or job.payment is None:
            raise Conflict(f"job {job_id} has no usage record to give a receipt for ({job.status})")
        digest = record_digest(self._record(job)[0], self.parts.domain)
        try:
            signer = recover(Receipt(record=digest), self.parts.domain, from_hex(signature, what="signature"))
        except (InvalidSignature, HexError) as exc:
            raise Invalid(
                f"receipt is not for this record: its signature is not valid ({exc}); no key released"
            ) from None
        if signer != job.payment.account:
            raise Invalid(
                f"receipt is not for this record: Receipt({to_hex(digest)}) must be signed by the order's account "
                f"{job.payment.account}, not {signer}; no key released"
            )
        self.parts.store.add_receipt(job.id, from_hex(signature))
        return ReceiptResponse(job=job.id, record=to_hex(digest), key=to_hex(job.result.key))

    def _record(self, job: Job) -> tuple[UsageRecord, bytes]:
        """The job's signed usage record, as stored."""
        stored = self.parts.store.record(job.record_id) if job.record_id else None
        if stored is None:  # written in the transaction that named it: the store is damaged
            raise StoreError(f"job {job.id} names usage record {job.record_id}, which the store does not hold")
        return UsageRecord.from_json(stored.record), stored.signature_bytes

    def _view(self, job: Job) -> JobView:
        usage = record = sealed = None
        if job.record_id:
            usage_record, signature = self._record(job)
            data = usage_record.to_dict()
            usage = {key: data[key] for key in USAGE_FIELDS}
            digest = record_digest(usage_record, self.parts.domain)
            record = SignedRecord(data=data, digest=to_hex(digest), signature=to_hex(signature))
        if job.result is not None:
            sealed = SealedOutputs(stdout=to_hex(job.result.stdout), stderr=to_hex(job.result.stderr))
        return JobView(
            id=job.id,
            status=job.status,
            principal=job.principal,
            serving_centre=job.serving_centre,
            submitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.created_at)),
            exit_code=job.exit_code,
            record_id=job.record_id and "0x" + job.record_id,
            stdout_tail=None if sealed else job.stdout_tail,
            stderr_tail=None if sealed else job.stderr_tail,
            usage=usage,
            order=to_hex(job.payment.order_digest) if job.payment else None,
            record=record,
            lock_hash=to_hex(job.result.lock_hash) if job.result else None,
            sealed=sealed,
            receipted=job.receipt_signature is not None,
            decision=self._decision_id(job),
            detail=None if job.record_id else job.detail,
        )

    def _decision_id(self, job: Job) -> str | None:
        """The id of the entry that admitted the job (its owner's to fetch with GET /v1/decisions/{id})."""
        stored = self.parts.store.decision_by_digest(job.decision) if job.decision else None
        return None if stored is None else "0x" + stored.id

    def _run(self, job_id: str) -> None:
        """A worker's task: run the job and complete it; never leave it `running` behind.

        The pool keeps a task's exception to itself, so whatever goes wrong is
        logged here and the job is completed as failed, with the reason; except
        a full or read-only data disk, which cannot store that either: the job
        stays `running` with its run on disk, and the next start completes it.
        """
        try:
            self._execute(job_id)
        except Exception as exc:
            if disk_refusal(exc) is not None:  # the data disk is full or read-only: its run is kept on disk
                self._held_back[job_id] = time.monotonic() + QUEUED_RETRY  # if it is still queued, not at once
                log.error(
                    "%s: job %s left running until the next start, which completes it: %s", self.name, job_id, exc
                )
                return
            log.exception("%s: job %s failed in the gateway", self.name, job_id)
            try:
                self.parts.store.complete_job(job_id, "failed", None, "", "", detail=f"gateway error: {exc}")
            except StoreError:  # already completed, or gone: nothing left to mark
                pass
            except Exception as again:  # noqa: BLE001 - the data disk: left running, its run kept for the next start
                log.error("%s: job %s left running: %s", self.name, job_id, again)
            else:
                self._release_run(job_id)

    def _execute(self, job_id: str) -> None:
        store = self.parts.store
        job = store.start_job(job_id)
        if job is None:  # taken already, or no longer queued
            return
        request = JobRequest.model_validate(job.request)
        late = self._too_late(job, request)
        if late:
            store.complete_job(job_id, "failed", None, "", "", detail=late)
            return
        try:
            res = request.resources
            execution = self.parts.executor.run(  # named by the job: a run that outlives a crash of ours is found
                request.command, request.walltime, limits=Limits(res.cores, res.memory_mib, res.gpus), key=job_id
            )
        except ExecutorError as exc:  # a job that cannot start is a failed job, not a dead worker
            log.warning("job %s could not start: %s", job_id, exc)
            store.complete_job(job_id, "failed", None, "", "", detail=f"could not start: {exc}")
            self._release_run(job_id)
            return
        except Exception as exc:  # noqa: BLE001 - the executor lost the job (cancelled, node failure): nothing metered, no bill
            log.warning("job %s ended without a result: %s", job_id, exc)
            disk = disk_refusal(exc)
            why = f"not started, unbilled: {disk.message}" if disk else f"ended without a result, unbilled: {exc}"
            store.complete_job(job_id, "failed", None, "", "", detail=why)
            self._release_run(job_id)
            return
        self._finish_run(job, request, execution)

    def _recover(self, job_id: str) -> None:
        """A job a crash left `running`: completed and billed when its run finished (its launcher's result on
        disk, waiting for a launcher still running), else refunded, saying so (`_refund_interrupted`)."""
        store = self.parts.store
        job = store.get_job(job_id)
        if job is None or job.status != "running":
            return
        recover = getattr(self.parts.executor, "recover", None)
        try:
            execution = recover(job_id) if recover is not None else None
        except Exception as exc:  # noqa: BLE001 - a result that is not a launcher's: nothing to bill
            log.warning("%s: job %s left no usable result at the restart: %s", self.name, job_id, exc)
            execution = None
        try:
            if execution is None:
                self._refund_interrupted(job)
            else:
                log.info("%s: job %s finished while the gateway was down: completed and billed", self.name, job_id)
                self._finish_run(job, JobRequest.model_validate(job.request), execution)
        except Exception as exc:
            if disk_refusal(exc) is not None:  # as in `_run`: left running, its run kept, for the next start to bill
                log.error(
                    "%s: job %s left running until the next start, which completes it: %s", self.name, job_id, exc
                )
                return
            log.exception("%s: job %s could not be recovered", self.name, job_id)
            try:
                store.complete_job(job_id, "failed", None, "", "", detail=f"gateway error at a restart: {exc}")
            except StoreError:
                pass
        self._release_run(job_id)

    def _refund_interrupted(self, job: Job) -> None:
        """Complete a job that a restart interrupted before it finished: no record, nothing billed, and its hold
        released: at once when this centre is the payer's home, else by the home when the order's deadline
        has passed with no record (`Payer.expire`)."""
        released = "by your home once the order's deadline passes"
        payer = self.parts.payer
        if payer is not None and job.home == self.name and job.payment is not None:
            try:
                payer.refund(grant_digest(Grant.from_dict(job.payment.grant), self.parts.domain))
                released = "now"
            except Exception as exc:  # noqa: BLE001 - the deadline releases it anyway
                log.warning("%s: the hold of interrupted job %s was not released now: %s", self.name, job.id, exc)
        self.parts.store.complete_job(
            job.id,
            "failed",
            None,
            "",
            "",
            detail=f"{INTERRUPTED}: nothing is billed (no usage record) and the hold on your project is released "
            f"{released}; submit it again if you still need it",
        )

    def _release_run(self, job_id: str) -> None:
        """The job is final and stored: its run's folder may go (after the executor's retention)."""
        release = getattr(self.parts.executor, "release", None)
        if release is None:
            return
        try:
            release(job_id)
        except Exception as exc:  # noqa: BLE001 - the sweep or the next restart's recovery tries again
            log.warning("%s: the folder of job %s was not released: %s", self.name, job_id, exc)

    def _sweep_runs(self) -> None:
        sweep = getattr(self.parts.executor, "sweep", None)
        if sweep is None:
            return
        try:
            sweep()
        except Exception as exc:  # noqa: BLE001 - next round
            log.warning("%s: job folders not swept: %s", self.name, exc)

    def _finish_run(self, job: Job, request: JobRequest, execution: Execution) -> None:
        """Complete a job whose run ended with `execution`: priced, signed and billed; then release its run."""
        store = self.parts.store
        job_id = job.id
        status = "timed_out" if execution.timed_out else ("succeeded" if execution.exit_code == 0 else "failed")
        try:
            self._complete_with_record(job, request, execution, status)
        except Exception as exc:  # it ran, but cannot be billed: say so rather than claim success
            if disk_refusal(exc) is not None:  # the run stays on disk, the job running: the next start bills it
                log.error("%s: job %s ran, but its completion cannot be stored (%s)", self.name, job_id, exc)
                raise
            log.exception("%s: job %s ran but its usage record could not be made", self.name, job_id)
            store.complete_job(
                job_id,
                "failed",
                execution.exit_code,
                execution.stdout_tail,
                execution.stderr_tail,
                detail=f"the job ran ({status}) but its usage record could not be made: {exc}",
            )
        self._release_run(job_id)

    def _too_late(self, job: Job, request: JobRequest) -> str | None:
        """Why a job may not start now: it could not end by its order's deadline (then it is never billed)."""
        if job.payment is None:
            return None
        deadline = int(job.payment.order["deadline"])
        latest_end = int(time.time()) + request.walltime + orders.DEADLINE_MARGIN
        if latest_end <= deadline:
            return None
        return (
            f"not started, unbilled: it waited here until it could no longer end by its order's deadline ({deadline}); "
            "your home refunds the hold"
        )

    def _complete_with_record(self, job: Job, request: JobRequest, execution: Execution, status: str) -> None:
        """Price and sign the job's usage record, seal its outputs under a fresh key k, and store all of it
        with the job's completion, in one transaction.

        The price is at the rates version the job was accepted under, which the record names,
        so that rates published while it ran never apply to it and an auditor can recompute it;
        it never exceeds the grant. The record names the order, the grant and keccak256(k): the
        payer gets k for a receipt of it (`receipt`).
        """
        rates = self.parts.index.rates(self.name, job.rates_version) if job.rates_version else None
        if rates is None:
            raise LookupError(
                f"the rates version it was accepted under ({job.rates_version or 'none recorded'}) is not among "
                f"{self.name}'s published rates, so it cannot be priced"
            )
        if job.payment is None:
            raise LookupError("it was accepted without an order and a grant, so nobody pays for it")
        res = request.resources
        # Bill what was metered, never more than the job's limits allow, nor more than the home granted.
        metered = cap_to_limits(execution, request.walltime, res.cores, res.memory_mib, res.gpus)
        deadline = int(job.payment.order["deadline"])
        if metered.ended_at > deadline:
            # No answer to a dispute of such a record exists (the contract refuses an order's job that ended
            # after its deadline), and one unanswerable leaf voids the centre's whole claim on that home.
            log.warning(
                "%s: job %s ended at %d, after its order's deadline %d: unbilled",
                self.name,
                job.id,
                metered.ended_at,
                deadline,
            )
            self.parts.store.complete_job(
                job.id,
                status,
                execution.exit_code,
                execution.stdout_tail,
                execution.stderr_tail,
                detail=f"ran late, unbilled: it ended at {metered.ended_at}, after its order's deadline {deadline}, "
                "so this centre records no usage for it; your home refunds the hold",
            )
            return
        amount = min(price(metered, rates.prices), int(job.payment.grant["amount"]))
        job_ref = keccak(text=f"{self.name}/{job.id}")
        domain = self.parts.domain
        payment = job.payment
        order_ref = payment.order_digest
        grant_ref = grant_digest(Grant.from_dict(job.payment.grant), domain)
        key = lock.new_key()
        sealed = SealedResult(
            key=key,
            lock_hash=lock.lock_hash(key),
            stdout=lock.seal(key, execution.stdout_tail.encode("utf-8", "surrogateescape")),
            stderr=lock.seal(key, execution.stderr_tail.encode("utf-8", "surrogateescape")),
        )

        def signed_record(epoch: int) -> tuple[UsageRecord, bytes, bytes]:
            record = UsageRecord(
                record_id=job_ref,
                job_id=job_ref,
                serving_centre=centre_id(self.name),
                home_centre=centre_id(job.home),
                user=_account_word(payment.account),
                epoch=epoch,
                started_at=metered.started_at,
                ended_at=metered.ended_at,
                cpu_millis=metered.cpu_millis,
                wall_millis=metered.wall_millis,
                max_rss_kib=metered.max_rss_kib,
                gpu_millis=metered.gpu_millis,
                rates_version=rates.version,
                price=amount,
                order=order_ref,
                grant=grant_ref,
                lock_hash=sealed.lock_hash,
                decision=bytes.fromhex(job.decision) if job.decision else bytes(32),  # the admitting entry's digest
                group_signature=signature_hash(job.group_signature) if job.group_signature else bytes(32),
            )
            return record, sign_record(record, domain, self.parts.account.key), record_leaf(record, domain)

        self.parts.store.complete_job(
            job.id, status, execution.exit_code, None, None, record=signed_record, result=sealed
        )

    # -- epochs and audit --------------------------------------------------------

    def check_operator(self, key: str | None) -> None:
        if not key or not hmac.compare_digest(key.encode(), self.parts.operator_key.encode()):
            raise Unauthenticated("this operation needs the centre's operator key (X-Operator-Key)")

    def close_epoch(self, epoch: int | None = None) -> EpochClosure:
        return self.parts.epochs.close(epoch)

    def epoch_audit(self, epoch: int) -> dict:
        return self.parts.epochs.audit_view(epoch)

    def usage_proof(self, record_id: str) -> dict:
        proof = self.parts.epochs.proof(record_id)
        if proof is None:
            raise NotFound(f"no usage record {record_id} at {self.name}")
        return proof


def _account_word(account: str) -> bytes:
    """A record's `user`: the order's payment account, fresh per order, left-padded to 32 bytes.

    Never a hash of the principal: a uid@home is guessable, and one value per user would link all of
    a user's jobs in the public records.
    """
    return to_canonical_address(account).rjust(32, b"\x00")


def _claims(token: str) -> dict:
    """The claims of a token this node has just minted (no need to verify its own signature)."""
    return json.loads(jws.extract_compact(token.encode()).payload)
