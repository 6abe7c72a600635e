"""A centre's gateway node: the flow of one job, from token to signed usage record.

The HTTP layer (gateway.app) only translates requests into calls here, so the
same node serves the API, the demo and the tests.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from joserfc import jws

from auth.directory import Directory, DirectoryError, DirectoryUnavailable
from auth.policy import Decision, PolicyEngine, Subject
from auth.tokens import Claims, TokenError, TokenIssuer, verify_token
from gateway.epochs import EpochCloser
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from gateway.executor import Execution, LocalExecutor
from gateway.forwarding import Peers, PeerDenied
from gateway.placement import rank_centres
from gateway.pricing import cap_to_limits, price
from gateway.schemas import EpochClosure, JobRequest, JobView, LoginResponse
from gateway.signon import SignOn
from gateway.store import IdempotencyConflict, Job, Store, StoreError
from ledger.ids import centre_id, user_id
from ledger.index import EventIndex
from ledger.records import Domain, UsageRecord, record_leaf, sign_record

log = logging.getLogger(__name__)

#: What a job's owner sees of its usage record.
USAGE_FIELDS = ("epoch", "cpu_millis", "wall_millis", "max_rss_kib", "gpu_millis", "price")


@dataclass
class NodeParts:
    """Everything a node is made of; built by gateway.assemble from a configuration."""

    name: str
    account: LocalAccount
    index: EventIndex
    store: Store
    directory: Directory
    policy: PolicyEngine
    issuer: TokenIssuer
    executor: LocalExecutor
    epochs: EpochCloser
    signon: SignOn
    peers: Peers
    domain: Domain
    operator_key: str
    workers: int = 4


class CentreNode:
    """One member centre: sign-on, placement, execution, signed records, epochs."""

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts
        self.name = parts.name
        self._pool = ThreadPoolExecutor(max_workers=parts.workers, thread_name_prefix=f"{parts.name}-job")
        self._stopping = threading.Event()
        self._housekeeper: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self, interval: float = 1.0) -> None:
        """Catch up with the chain and keep up with it; resume the jobs a restart interrupted."""
        self.parts.index.sync()
        self.parts.signon.publish_issuer_key()
        self.parts.epochs.resend_anchors()
        self.parts.epochs.flush()
        self._housekeeper = threading.Thread(
            target=self._housekeeping, args=(interval,), name=f"{self.name}-housekeeping", daemon=True
        )
        self._housekeeper.start()
        store = self.parts.store
        for job in store.jobs_in_status("running"):
            store.complete_job(job.id, "failed", None, "", "", detail="interrupted by a gateway restart")
        for job in store.jobs_in_status("queued"):
            self._pool.submit(self._run, job.id)

    def stop(self) -> None:
        """Stop after the running jobs; queued jobs stay queued in the store and run after the next start."""
        self._stopping.set()
        if self._housekeeper:
            self._housekeeper.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.parts.peers.close()

    def _housekeeping(self, interval: float) -> None:
        """Follow the chain, send what the outbox holds, settle epochs that became ready."""
        while not self._stopping.wait(interval):
            try:
                self.parts.epochs.flush()
                self.parts.epochs.catch_up()
            except Exception as exc:  # the chain may be briefly unreachable: try again next round
                log.warning("%s: housekeeping failed: %s", self.name, exc)

    # -- identity ----------------------------------------------------------------

    def login(self, username: str, password: str) -> LoginResponse:
        """Password sign-on at the user's home centre: the password goes nowhere else."""
        try:
            entry = self.parts.directory.authenticate(username, password)
        except DirectoryUnavailable:
            raise
        except DirectoryError:
            raise Unauthorized("unknown user or wrong password") from None
        signon = self.parts.signon
        if signon.is_revoked(entry.uid):
            raise Forbidden(f"the enrolment of {entry.uid} at {self.name} is revoked")
        # The same attribute names as a credential's, so one policy serves both sign-ons.
        attributes = signon.schema.from_directory(entry.attributes, entry.groups)
        principal = f"{entry.uid}@{self.name}"
        token = self.parts.issuer.issue(
            principal, self.name, attributes, revocation_epoch=self.parts.index.revocation_epoch(self.name)
        )
        return LoginResponse(token=token, principal=principal, home=self.name, expires_at=_claims(token)["exp"])

    def authenticate(self, token: str | None) -> Claims:
        """Check a session token from any member centre against its key in the local index."""
        if not token:
            raise Unauthorized("a session token is required: log in at your home centre first")
        try:
            return verify_token(token, self.parts.index.token_key, revocation_epoch_for=self.parts.index.revocation_epoch)
        except TokenError as exc:
            raise Unauthorized(f"session token refused: {exc.reason}") from None

    def credential(self, username: str, password: str) -> dict:
        return self.parts.signon.issue(username, password)

    def auth_request(self) -> dict:
        return self.parts.signon.request().to_dict()

    def present(self, presentation: dict) -> dict:
        token, disclosed = self.parts.signon.present(presentation)
        claims = _claims(token)
        return {"token": token, "principal": claims["sub"], "home": claims["home"], "expires_at": claims["exp"],
                "disclosed": disclosed}

    def revoke(self, username: str) -> dict:
        result = self.parts.signon.revoke(username)
        self.parts.epochs.flush()
        return result

    # -- jobs --------------------------------------------------------------------

    def submit(self, claims: Claims, token: str, request: JobRequest, idempotency_key: str | None) -> JobView:
        """Place a job on a centre that accepts it: run it here or forward it."""
        if idempotency_key is not None:
            earlier = self.parts.store.job_by_key(claims.sub, idempotency_key)
            if earlier is not None:  # decided before placement: a retry must not start a job anywhere
                return self._retry(earlier, token, request, idempotency_key)
        members = self.parts.index.members()
        try:
            candidates = rank_centres(members, request, self.name)
        except LookupError as exc:
            raise BadRequest(str(exc)) from None
        refusals: list[str] = []
        for centre in candidates:
            if centre == self.name:
                decision = self._authorise(claims, request)
                if decision.allowed:
                    return self._accept(claims, request, idempotency_key)
                refusals.extend(f"{centre}: {reason}" for reason in decision.reasons)
                continue
            try:
                return self._forward(claims, token, request, centre, idempotency_key)
            except PeerDenied as exc:  # the peer names itself in its reasons
                refusals.extend(exc.reasons)
        raise Forbidden("no member centre accepts this job", reasons=refusals)

    def _authorise(self, claims: Claims, request: JobRequest) -> Decision:
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
            "hour": time.gmtime().tm_hour,
        }
        decision = self.parts.policy.decide(subject, "submit", resource, context)
        for error in decision.errors:
            log.warning("policy evaluation error at %s: %s", self.name, error)
        return decision

    def _retry(self, earlier: Job, token: str, request: JobRequest, key: str) -> JobView:
        """The job a retry refers to, or 409 when the key was used for a different request."""
        asked = request.model_dump()
        same = {k: v for k, v in earlier.request.items() if k != "centre"} == {
            k: v for k, v in asked.items() if k != "centre"
        } and request.centre in ("auto", earlier.serving_centre)
        if not same:
            raise Conflict(
                f"idempotency key {key!r} was already used for a different request (job {earlier.id}); "
                "use a new key for a new request"
            )
        remote = self.parts.peers.fetch(earlier.forwarded_url, token) if earlier.forwarded_url else None
        return self._view(earlier, remote=remote)

    def _groups(self, claims: Claims) -> list[str]:
        """Home groups as `cn@home` (plain `cn` too for this centre's own people), plus local LDAP groups."""
        home_groups = [g for g in str(claims.attrs.get("groups", "")).split(",") if g]
        groups = {f"{g}@{claims.home}" for g in home_groups}
        if claims.home == self.name:
            groups.update(home_groups)
        if not claims.presented:  # a presented sign-on is pseudonymous: no directory entry to look up
            groups.update(self.parts.directory.groups_of(claims.sub))
        return sorted(groups)

    def _accept(self, claims: Claims, request: JobRequest, idempotency_key: str | None) -> JobView:
        body = request.model_dump() | {"centre": self.name}
        try:
            job, created = self.parts.store.create_job(
                claims.sub, claims.home, body, self.name, idempotency_key=idempotency_key
            )
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from None
        if created:
            self._pool.submit(self._run, job.id)
        return self._view(job)

    def _forward(self, claims: Claims, token: str, request: JobRequest, centre: str, key: str | None) -> JobView:
        body = request.model_dump() | {"centre": centre}
        remote = self.parts.peers.submit(centre, token, body, key)
        try:
            job, _ = self.parts.store.create_job(
                claims.sub, claims.home, body, centre, idempotency_key=key,
                status="forwarded", forwarded_url=remote["url"],
            )
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from None
        return self._view(job, remote=remote)

    def job(self, claims: Claims, token: str, job_id: str) -> JobView:
        job = self.parts.store.get_job(job_id)
        if job is None or job.principal != claims.sub:
            raise NotFound(f"no job {job_id} of yours at {self.name}")
        remote = self.parts.peers.fetch(job.forwarded_url, token) if job.forwarded_url else None
        return self._view(job, remote=remote)

    def _view(self, job: Job, remote: dict | None = None) -> JobView:
        usage = None
        if job.record_id:
            record = self.parts.store.record(job.record_id).data
            usage = {key: record[key] for key in USAGE_FIELDS}
        return JobView(
            id=job.id, status=job.status, principal=job.principal, serving_centre=job.serving_centre,
            submitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.created_at)),
            exit_code=job.exit_code, record_id=job.record_id and "0x" + job.record_id,
            stdout_tail=job.stdout_tail, stderr_tail=job.stderr_tail, forwarded_url=job.forwarded_url,
            usage=usage, remote=remote,
        )

    def _run(self, job_id: str) -> None:
        """A worker's task: run the job and complete it; never leave it `running` behind.

        The pool keeps a task's exception to itself, so whatever goes wrong is
        logged here and the job is completed as failed, with the reason.
        """
        try:
            self._execute(job_id)
        except Exception as exc:
            log.exception("%s: job %s failed in the gateway", self.name, job_id)
            try:
                self.parts.store.complete_job(job_id, "failed", None, "", "", detail=f"gateway error: {exc}")
            except StoreError:  # already completed, or gone: nothing left to mark
                pass

    def _execute(self, job_id: str) -> None:
        store = self.parts.store
        job = store.update_job(job_id, status="running")
        request = JobRequest.model_validate(job.request)
        try:
            execution = self.parts.executor.run(request.command, request.walltime)
        except Exception as exc:  # a job that cannot start is a failed job, not a dead worker
            log.warning("job %s could not start: %s", job_id, exc)
            store.complete_job(job_id, "failed", None, "", "", detail=f"could not start: {exc}")
            return
        status = "timed_out" if execution.timed_out else ("succeeded" if execution.exit_code == 0 else "failed")
        try:
            self._complete_with_record(job, request, execution, status)
        except Exception as exc:  # it ran, but cannot be billed: say so rather than claim success
            log.exception("%s: job %s ran but its usage record could not be made", self.name, job_id)
            store.complete_job(
                job_id, "failed", execution.exit_code, execution.stdout_tail, execution.stderr_tail,
                detail=f"the job ran ({status}) but its usage record could not be made: {exc}",
            )

    def _complete_with_record(self, job: Job, request: JobRequest, execution: Execution, status: str) -> None:
        """Price and sign the job's usage record and store it with the job's completion, in one transaction."""
        res = request.resources
        # Bill what was metered, never more than the job's limits allow.
        metered = cap_to_limits(execution, request.walltime, res.cores, res.memory_mib, res.gpus)
        amount = price(metered, self.parts.index.member(self.name).prices)
        job_ref = keccak(text=f"{self.name}/{job.id}")

        def signed_record(epoch: int) -> tuple[UsageRecord, bytes, bytes]:
            record = UsageRecord(
                record_id=job_ref,
                job_id=job_ref,
                serving_centre=centre_id(self.name),
                home_centre=centre_id(job.home),
                user=user_id(job.principal),
                epoch=epoch,
                started_at=metered.started_at,
                ended_at=metered.ended_at,
                cpu_millis=metered.cpu_millis,
                wall_millis=metered.wall_millis,
                max_rss_kib=metered.max_rss_kib,
                gpu_millis=metered.gpu_millis,
                price=amount,
            )
            domain = self.parts.domain
            return record, sign_record(record, domain, self.parts.account.key), record_leaf(record, domain)

        self.parts.store.complete_job(
            job.id, status, execution.exit_code, execution.stdout_tail, execution.stderr_tail, record=signed_record
        )

    # -- epochs and audit --------------------------------------------------------

    def check_operator(self, key: str | None) -> None:
        if not key or not hmac.compare_digest(key.encode(), self.parts.operator_key.encode()):
            raise Unauthorized("this operation needs the centre's operator key (X-Operator-Key)")

    def close_epoch(self, epoch: int | None = None) -> EpochClosure:
        return self.parts.epochs.close(epoch)

    def epoch_audit(self, epoch: int) -> dict:
        return self.parts.epochs.audit_view(epoch)

    def epoch_records(self, epoch: int) -> list[dict]:
        return self.parts.epochs.records(epoch)

    def usage_proof(self, record_id: str) -> dict:
        proof = self.parts.epochs.proof(record_id)
        if proof is None:
            raise NotFound(f"no usage record {record_id} at {self.name}")
        return proof


def _claims(token: str) -> dict:
    """The claims of a token this node has just minted (no need to verify its own signature)."""
    return json.loads(jws.extract_compact(token.encode()).payload)
