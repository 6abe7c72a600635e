"""The gateway's HTTP API: one FastAPI app per centre, a thin layer over CentreNode.

Every error body is `{"error": "...", "reasons": [...]}` (a refusal by the policy adds
`"decision"`, its entry's id) so that clients and people read refusals the same way,
and every route declares each status it can answer (`responses=errors.responses(...)`):
tests/test_openapi.py holds the app to it.

What parses a request only (the bearer token, the Idempotency-Key, the operator key) is
`async def`, so it runs on the event loop; what blocks (the session check reads the index
and the store, every route calls the node) runs in the thread pool. FastAPI also checks a
sync route's answer against its response model in a hop of its own, so the routes of a
submission and of sign-on are `async def` and hand the node's call to the pool themselves
(`run_in_threadpool`): a submission makes two thread hops, its session and its route, where
it made five. The session stays a dependency so that its refusal (401) still comes before
the body's and the headers' (422, 400). The pool is bounded
(`threads`, anyio's default limiter, set when the app starts): a few threads keep the
loop and the requests from fighting over the GIL.
"""

import asyncio
import math
import pathlib
import re
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from auth.directory import DirectoryUnavailable
from auth.group.credential import CREDENTIAL_PERIOD, INT_MAX
from auth.tokens import Claims
from gateway.api.errors import responses, status_of
from gateway.api.limits import MAX_HEAD_BYTES, PASSED_ON_SLACK, RequestLimits
from gateway.api.metrics import FrontTimings, install_front_timer, install_metrics
from gateway.api.schemas import (
    AUDIT_PAGE,
    AUDIT_SIGNATURE,
    AUDIT_SIGNATURE_AHEAD,
    AUDIT_SIGNATURE_HEADER,
    AUDIT_SIGNATURE_SKEW,
    DECISION_DIGEST,
    DECISION_ID,
    EVIDENCE_PAGE,
    IDEMPOTENCY_KEY,
    JOB_SIGNATURE,
    JOB_SIGNATURE_HEADER,
    JOB_SIGNATURE_SKEW,
    LOCK_HASH,
    MAX_EPOCH,
    MAX_SEQ,
    PROJECT,
    RECORD_ID,
    RECORDS_PAGE,
    SIGNATURE_HASH,
    AnonymousComplaintRequest,
    AnonymousGrantRequest,
    AnonymousQuote,
    AnonymousSubmission,
    AuditedDecision,
    Balance,
    Candidate,
    Capacity,
    CloseEpochRequest,
    ComplaintRequest,
    ComplaintView,
    CredentialResponse,
    DecisionLogView,
    DecisionView,
    EpochClosure,
    EvidencePage,
    ExchangeRequest,
    GrantRequest,
    GrantResponse,
    GroupJoinRequest,
    GroupJoinResponse,
    GroupSignatureView,
    HomeCreditView,
    IdentificationView,
    JobQuote,
    JobRequest,
    JobSubmission,
    JobView,
    LoginRequest,
    LoginResponse,
    Members,
    Placement,
    PlacementRequest,
    PolicyView,
    PresentRequest,
    ReceiptRequest,
    ReceiptResponse,
    RecordPage,
    RevealedKey,
    RevokeRequest,
    RevokeResponse,
    SignOnResponse,
    SupervisionView,
    check_idempotency_key,
)
from gateway.node.centre import CentreNode, JobSignature
from gateway.node.errors import Refusal, TooManyRequests, Unauthenticated, Unavailable, disk_refusal
from gateway.node.groups import GroupDesk
from gateway.node.payer import Payer
from gateway.node.policies import PolicyRefused
from ledger.chain import ChainUnavailable
from ledger.primitives.names import CENTRE_NAME_PATTERN

SESSION = HTTPBearer(
    auto_error=False,
    scheme_name="session",
    description="a session token from a sign-on at this centre (or one exchanged for it at home)",
)
OPERATOR = APIKeyHeader(
    name="X-Operator-Key", auto_error=False, scheme_name="operator", description="the centre's operator key"
)


DEFAULT_THREADS = 8
"""Threads serving blocking work (sync dependencies and routes) by default; anyio's own default is 40."""

MAX_THREADS = 256
"""The most threads an app may be given: more would only add threads fighting over the GIL."""


PageAfter = Annotated[
    int, Query(ge=0, le=MAX_SEQ, description="0 for the first page, then the `next` of the page before")
]
"""Where a page of a long listing starts: the `next` of the page before (a store seq), 0 for the first."""


def page_limit(most: int, noun: str) -> Any:
    """The `limit` query of a paged listing: from 1 to `most` (the default)."""
    return Query(ge=1, le=most, description=f"most {noun} in this page (at most {most})")


def check_threads(threads: int) -> int:
    """`threads` if it is a whole number of threads from 1 to MAX_THREADS; ValueError, saying so, otherwise."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    return threads


def create_app(
    node: CentreNode,
    *,
    threads: int = DEFAULT_THREADS,
    front_timings: pathlib.Path | None = None,
    front: bool = False,
) -> FastAPI:
    """The gateway app of `node`, whose blocking work runs on at most `threads` threads once it starts.

    `front_timings`: the folder where a gateway's front processes write their submission timings
    (gateway.api.fronts). The back's app counts them in its GET /metrics; a `front`'s app writes its own
    there (about once a second while it runs) instead of serving /metrics.
    """
    check_threads(threads)
    if front and front_timings is None:
        raise ValueError("a front's app needs the folder its submission timings go to (front_timings)")

    # GET /v1/capacity never waits for the pool: a placement at a peer holds one of the peer's threads while it
    # waits for this answer, so two gateways whose pools an outsider fills with placements would wait out each
    # other's timeout. Answered on the loop while fresh; a refresh (a Slurm centre's `sinfo`) on a thread of its own,
    # one for each time the app runs (an app may be started again after it stopped).
    capacity_refresh: list[ThreadPoolExecutor] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The limiter is the event loop's own (anyio keeps one per loop), so it is set from within the loop.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        refresh = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{node.name}-capacity")
        capacity_refresh.append(refresh)
        if timings is not None:
            timings.start()
        try:
            yield
        finally:
            capacity_refresh.remove(refresh)
            refresh.shutdown(wait=False)
            if timings is not None:
                timings.close()

    app = FastAPI(
        title=f"xcentre gateway · {node.name}",
        version="0.1.0",
        description="A member centre's gateway: sign-on, job dispatch, metering, epochs and audit.",
        lifespan=lifespan,
    )

    # a back behind fronts takes a head a front passed on, which may have grown by the headers the front writes
    behind_fronts = front_timings is not None and not front
    app.add_middleware(RequestLimits, max_head=MAX_HEAD_BYTES + (PASSED_ON_SLACK if behind_fronts else 0))
    if front and front_timings is not None:  # the submission latency, written for the back's GET /metrics
        timings: FrontTimings | None = install_front_timer(app, front_timings)
    else:  # GET /metrics, GET /v1/health, and the submission latency it measures
        timings = None
        install_metrics(app, node, front_timings)

    @app.exception_handler(Refusal)
    async def refused(_: Request, exc: Refusal) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.message, "reasons": exc.reasons}
        if isinstance(exc, PolicyRefused):  # the deny's entry in the decision log, signed: the refused user's proof
            body |= {"decision": exc.decision, "entry": exc.entry, "signature": exc.signature}
        headers = {"Retry-After": str(math.ceil(exc.retry_after))} if isinstance(exc, TooManyRequests) else None
        return JSONResponse(body, status_code=status_of(exc), headers=headers)

    @app.exception_handler(sqlite3.Error)
    @app.exception_handler(OSError)
    async def disk_error(request: Request, exc: Exception) -> JSONResponse:
        """A full data disk is 507, a read-only one 503 (`disk_refusal`); the write rolled back. Anything else
        stays a server error."""
        refusal = disk_refusal(exc)
        if refusal is None:
            raise exc
        return await refused(request, refusal)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own refusals (no such path, method not allowed, a body that does not parse) in our shape."""
        return JSONResponse({"error": str(exc.detail), "reasons": []}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DirectoryUnavailable)
    async def directory_down(_: Request, exc: DirectoryUnavailable) -> JSONResponse:
        return JSONResponse(
            {"error": f"the directory of {node.name} is unavailable: {exc}", "reasons": ["directory-unavailable"]},
            status_code=503,
        )

    @app.exception_handler(ChainUnavailable)
    async def chain_down(_: Request, exc: ChainUnavailable) -> JSONResponse:
        return JSONResponse(
            {
                "error": f"the chain node of {node.name} is unavailable: {_no_url_secrets(str(exc))}; what needs no "
                "chain is still served",
                "reasons": ["chain-unavailable"],
            },
            status_code=503,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [_describe(e) for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(reasons), "reasons": reasons}, status_code=422)

    # Pure parsing is async (on the loop, no thread hop); a dependency that reads the index or the store is sync.
    async def bearer(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(SESSION)]) -> str | None:
        return credentials.credentials.strip() if credentials else None

    def session(token: Annotated[str | None, Depends(bearer)]) -> Claims:
        return node.authenticate(token)

    async def operator(key: Annotated[str | None, Security(OPERATOR)]) -> None:
        node.check_operator(key)  # a constant-time compare with the configured key: no I/O

    def job_caller(
        token: Annotated[str | None, Depends(bearer)],
        signature: Annotated[
            str | None,
            Header(
                alias=JOB_SIGNATURE_HEADER,
                description="instead of a session: `<unix time>:<0x signature>`, the order's payment account's "
                "EIP-191 signature of `xcentre job <centre> <job id> <unix time>`, good for "
                f"{JOB_SIGNATURE_SKEW} s either side of the centre's clock",
                json_schema_extra={"pattern": JOB_SIGNATURE},
            ),
        ] = None,
    ) -> Claims | JobSignature:
        """The job's session, or its order's account (a session ends; the wallet keeps the account's key)."""
        if signature is None:
            return node.authenticate(token)
        at, _, sig = signature.strip().partition(":")
        if not re.fullmatch(JOB_SIGNATURE, signature.strip()):
            raise Unauthenticated(f"{JOB_SIGNATURE_HEADER} must be '<unix time>:0x<65-byte signature>'")
        return JobSignature(at=int(at), signature=sig)

    async def retry_key(
        idempotency_key: Annotated[
            str | None,
            Header(
                description="makes the POST safe to retry: the same key and body answer with the same job",
                json_schema_extra={"pattern": IDEMPOTENCY_KEY, "minLength": 1, "maxLength": 128},
            ),
        ] = None,
    ) -> str | None:
        return check_idempotency_key(idempotency_key)

    @app.post("/v1/login", response_model=LoginResponse, tags=["identity"], responses=responses(401, 403, 422, 503))
    async def login(body: LoginRequest) -> LoginResponse:
        """Password sign-on at the user's home centre; the token is good here (exchange it for other centres)."""
        return await run_in_threadpool(node.login, body.username, body.password)

    @app.post("/v1/tokens", response_model=LoginResponse, tags=["identity"], responses=responses(401, 403, 422))
    async def exchange(body: ExchangeRequest, claims: Annotated[Claims, Depends(session)]) -> LoginResponse:
        """At home: a token for another member, for a user who signed on here with a password."""
        return await run_in_threadpool(node.exchange, claims, body.audience)

    @app.post(
        "/v1/credentials",
        response_model=CredentialResponse,
        tags=["identity"],
        responses=responses(
            401,
            403,
            422,
            503,
            descriptions={400: "the directory's attributes of this user do not fit the credential schema"},
        ),
    )
    def credential(body: LoginRequest) -> dict:
        """At the user's home centre: a BBS credential over their live directory attributes."""
        return node.credential(body.username, body.password)

    @app.get("/v1/auth/request", tags=["identity"], responses=responses())
    def auth_request() -> dict:
        """A one-time presentation request: the attributes this centre needs and a fresh nonce."""
        return node.auth_request()

    @app.post(
        "/v1/auth/present",
        response_model=SignOnResponse,
        tags=["identity"],
        responses=responses(
            422,
            descriptions={
                401: "the presentation is refused: `error` names the check that failed and why",
                503: "this centre has taken as many sign-ons as it can check for replays: try again",
            },
        ),
    )
    async def present(body: PresentRequest) -> dict:
        """Sign on with a presentation: a session token carrying only the disclosed attributes."""
        return await run_in_threadpool(node.present, body.presentation)

    revoke_answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "revoked on chain: every member refuses the user once the event reaches it"},
        202: {
            "model": RevokeResponse,
            "description": "not on chain yet (the chain did not take it within a few "
            "seconds): queued and sent again until it lands; the user is refused at home meanwhile",
        },
    }

    @app.post(
        "/v1/enrolments/revoke",
        response_model=RevokeResponse,
        tags=["identity"],
        dependencies=[Depends(operator)],
        responses=revoke_answers
        | responses(
            422,
            descriptions={
                400: "the user has no enrolment at this centre",
                401: "the operator key is missing or wrong",
                409: "the chain refused the revocation (its revert reason in `reasons`): nothing changed on chain; "
                "asking again sends it again",
                503: "the directory is unavailable",
            },
        ),
    )
    def revoke(body: RevokeRequest, response: Response) -> RevokeResponse:
        """Revoke one of this centre's users on chain, and say whether the chain took it."""
        result = node.revoke(body.username)
        if not result.revoked:
            response.status_code = 202
        return result

    @app.post(
        "/v1/jobs",
        response_model=JobView,
        status_code=202,
        tags=["jobs"],
        responses=responses(
            401,
            421,
            422,
            429,
            descriptions={
                503: "the directory or chain is unavailable, no rates are in force, or this centre's policy files "
                "are not yet the version it published on chain (both hashes in `error`)",
                400: "the Idempotency-Key header is not 1 to 128 visible ASCII characters; or the order is for "
                "another centre or request, expired, or its deadline leaves no room for the walltime; or the grant "
                "does not match the order; or a signature is not valid. Nothing was stored but the policy's decision",
                402: "the order's maximum price or the grant is below what the job may cost here at its limits",
                403: "this centre's policy refuses the job (its reasons in `reasons`, its entry in the decision log "
                "in `decision`), or the grant is from another home than the user's",
                409: "the order names another rates version than the one in force here; or it was already used "
                "(replayed); or the idempotency key was used for another request",
            },
        ),
    )
    async def submit(
        body: JobSubmission,
        claims: Annotated[Claims, Depends(session)],
        idempotency_key: Annotated[str | None, Depends(retry_key)],
        request: Request,
    ) -> JobView:
        """Submit a job to this centre with its order and grant; it runs here if the policy allows it."""
        return await run_in_threadpool(node.submit, claims, body, idempotency_key, client=_address(request))

    @app.post(
        "/v1/jobs/quote",
        response_model=JobQuote,
        tags=["jobs"],
        responses=responses(
            401,
            421,
            422,
            429,
            descriptions={
                403: "this centre's policy refuses the job (its reasons in `reasons`, its entry in the decision log "
                "in `decision`): ask no grant for it",
                503: "this centre has no rates in force, so it cannot price a job; or its policy files are not "
                "yet the version it published on chain (both hashes in `error`)",
            },
        ),
    )
    async def quote(body: JobRequest, claims: Annotated[Claims, Depends(session)], request: Request) -> JobQuote:
        """Before asking home for a grant: whether this centre takes the job (the checks of a submission) and
        its rates version and maximum price, for the order. Nothing is stored but the policy's decision; the
        submission checks again."""
        return await run_in_threadpool(node.quote, claims, body, client=_address(request))

    anonymous_refusals = {
        401: "the group signature is refused: malformed, by an issuer key the consortium does not know, or not "
        "over this request or order (what failed is in `error`)",
        403: "the group signature's credential expired, has an expiry no credential issued now has, or carries a "
        "revocation epoch or issuer key other than its home's when the credential's issue week began; or this "
        "centre's policy refuses the job for that project (its reasons in `reasons`, its entry in `decision`)",
    }

    @app.post(
        "/v1/anonymous/quote",
        response_model=JobQuote,
        tags=["anonymous"],
        responses=responses(
            421,
            422,
            429,
            descriptions=anonymous_refusals
            | {
                503: "the consortium has no supervision contract or its supervisors have not generated their key "
                "yet; or no rates are in force here; or this centre's policy files are not yet the version it "
                "published on chain",
            },
        ),
    )
    async def anonymous_quote(body: AnonymousQuote, request: Request) -> JobQuote:
        """`POST /v1/jobs/quote` for a member of a project who signs the request with a group signature instead of
        signing on: the policy decides for the project and home the signature proves, and learns nobody."""
        return await run_in_threadpool(node.anonymous_quote, body, client=_address(request))

    @app.post(
        "/v1/anonymous/jobs",
        response_model=JobView,
        status_code=202,
        tags=["anonymous"],
        responses=responses(
            421,
            422,
            429,
            descriptions=anonymous_refusals
            | {
                400: "the Idempotency-Key header is not 1 to 128 visible ASCII characters; or the order is "
                "malformed, for another centre or request, expired, or its deadline leaves no room for the "
                "walltime; or the grant does not match the order; or a signature is not valid. Nothing was stored "
                "but the policy's decision",
                402: "the order's maximum price or the grant is below what the job may cost here at its limits",
                409: "replayed order: the order or its group signature was already used (retry with the same "
                "Idempotency-Key to get that job); or the order names another rates version than the one in force "
                "here; or the idempotency key was used for another request",
                503: "the consortium has no supervision contract or its supervisors have not generated their key "
                "yet; or the chain is unavailable, no rates are in force, or this centre's policy files are not yet "
                "the version it published on chain",
            },
        ),
    )
    async def anonymous_submit(
        body: AnonymousSubmission,
        idempotency_key: Annotated[str | None, Depends(retry_key)],
        request: Request,
    ) -> JobView:
        """`POST /v1/jobs` with a group signature over the order instead of a session: the job runs and is paid as
        any other, its usage record names the signature's hash, and the centre keeps the signature for the
        supervisors. Follow the job with its order's account (`X-Job-Signature`)."""
        return await run_in_threadpool(node.anonymous_submit, body, idempotency_key, client=_address(request))

    @app.get(
        "/v1/anonymous/signatures/{signature_hash}",
        response_model=GroupSignatureView,
        tags=["anonymous"],
        responses=responses(404, 422),
    )
    def group_signature(signature_hash: Annotated[str, Path(pattern=SIGNATURE_HASH)]) -> GroupSignatureView:
        """A group signature kept here, by its hash: a job's accepted here (its usage record names it) or, at a home,
        an anonymous grant's; with the order digest it signs (the transaction an opening names) and the job's
        record digest (public: for the supervisors who may ask to open it, and for auditors)."""
        return node.group_signature(signature_hash)

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=responses(401, 404, 422))
    async def job(job_id: str, caller: Annotated[Claims | JobSignature, Depends(job_caller)]) -> JobView:
        return await run_in_threadpool(node.job, caller, job_id)

    @app.post(
        "/v1/jobs/{job_id}/receipt",
        response_model=ReceiptResponse,
        tags=["jobs"],
        responses=responses(
            401,
            404,
            422,
            descriptions={
                400: "receipt is not for this record: not the order's account's signature of Receipt(record "
                "digest); no key released",
                409: "the job has no usage record yet (still running, or not billed)",
            },
        ),
    )
    def receipt(
        job_id: str, body: ReceiptRequest, caller: Annotated[Claims | JobSignature, Depends(job_caller)]
    ) -> ReceiptResponse:
        """The key of the job's sealed outputs, for the payer's receipt of its usage record."""
        return node.receipt(caller, job_id, body.signature)

    @app.post("/v1/placement", response_model=Placement, tags=["jobs"], responses=responses(422))
    def placement(body: PlacementRequest) -> Placement:
        """Every member centre ranked for a job (room first, then price): where a client should try to submit."""
        return Placement(candidates=[Candidate(**asdict(c)) for c in node.placement(body)])

    @app.get("/v1/members", response_model=Members, tags=["jobs"], responses=responses())
    def members() -> dict:
        """Every member centre, its gateway URL and account, as on chain, and the payment domain: a client asks its
        home where each member is."""
        return node.members()

    @app.get("/v1/capacity", response_model=Capacity, tags=["jobs"], responses=responses())
    async def capacity() -> dict:
        """How many CPUs this centre has free now (public, for placement)."""
        fresh = node.fresh_capacity()
        if fresh is not None:
            return fresh
        if not capacity_refresh:  # an app called without being started (no lifespan): the shared pool
            return await run_in_threadpool(node.capacity)
        return await asyncio.get_running_loop().run_in_executor(capacity_refresh[-1], node.capacity)

    @app.get(
        "/v1/supervision",
        response_model=SupervisionView,
        tags=["anonymous"],
        responses=responses(
            404,
            422,
            descriptions={
                404: "`home` is not a member centre",
                503: "the consortium has no supervision contract, its supervisors have not generated their key yet, "
                "or the chain does not answer",
            },
        ),
    )
    def supervision(
        home: Annotated[str | None, Query(pattern=CENTRE_NAME_PATTERN)] = None,
        expires_at: Annotated[
            int | None,
            Query(
                ge=2 * CREDENTIAL_PERIOD,
                le=INT_MAX,
                multiple_of=CREDENTIAL_PERIOD,
                description="a group credential's expiry (a week boundary): `home`'s facts for the week it was "
                "issued in; without it, for a credential issued now",
            ),
        ] = None,
    ) -> dict:
        """Public: the supervisors' key, committee and threshold, and for `home` its current issuer key and what
        every group credential of one week carries (the issuer key and revocation epoch it had when the week began),
        as this centre reads the chain. A member joining at home (`xcentre group join`) compares the home's answer
        with this at another member's gateway, so that the home cannot single them out."""
        return node.supervision(home, expires_at)

    @app.post(
        "/v1/epochs/close",
        response_model=EpochClosure,
        status_code=202,
        tags=["epochs"],
        dependencies=[Depends(operator)],
        responses=responses(401, 422, descriptions={409: "the epoch named is not the open one, nor closed"}),
    )
    def close_epoch(body: CloseEpochRequest | None = None) -> EpochClosure:
        """Close the open epoch at once (202): the closure is committed and its anchor queued; the anchor goes
        on chain from the outbox (`anchored` once it is: ask again naming the epoch), the settlement after."""
        return node.close_epoch(body.epoch if body else None)

    @app.get(
        "/v1/credit",
        response_model=list[HomeCreditView],
        tags=["payment"],
        dependencies=[Depends(operator)],
        responses=responses(401),
    )
    def credit() -> list[HomeCreditView]:
        """Each other member's credit line here and what it owes now (the operator's: it tells when each home's
        users compute here and for how much)."""
        return [
            HomeCreditView(
                home=c.home,
                limit=c.limit,
                free_collateral=c.free_collateral,
                share=str(c.share),
                defaulted=c.defaulted,
                owed_in_flight=c.owed.in_flight,
                owed_billed=c.owed.billed,
                unpaid_from=c.unpaid_from,
            )
            for c in node.credit.lines()
        ]

    @app.get(
        "/v1/epochs/{epoch}/evidence",
        response_model=EvidencePage,
        tags=["epochs"],
        responses=responses(422, descriptions={409: "the epoch is not closed here yet: its trees are not fixed"}),
    )
    def epoch_evidence(
        epoch: Annotated[int, Path(ge=1, le=MAX_EPOCH)],
        home: Annotated[str, Query(pattern=CENTRE_NAME_PATTERN)],
        after: PageAfter = 0,
        limit: Annotated[int, page_limit(EVIDENCE_PAGE, "records")] = EVIDENCE_PAGE,
    ) -> dict:
        """The records of this centre's claim on `home` for the epoch, page by page in leaf order, each with its
        leaf index and the order, grant, receipt and sum proof it rests on (public: anyone may check a claim and
        dispute a leaf). Follow `next` as `after` until it is null."""
        return node.parts.epochs.evidence(epoch, home, after, limit)

    @app.get("/v1/audit/epochs/{epoch}", tags=["audit"], responses=responses(422))
    def audit_epoch(epoch: Annotated[int, Path(ge=1, le=MAX_EPOCH)]) -> dict:
        """Roots, counts, claims and net positions of an epoch, as anchored on chain."""
        return node.epoch_audit(epoch)

    @app.get("/v1/audit/epochs/{epoch}/records", response_model=RecordPage, tags=["audit"], responses=responses(422))
    def audit_records(
        epoch: Annotated[int, Path(ge=1, le=MAX_EPOCH)],
        after: PageAfter = 0,
        limit: Annotated[int, page_limit(RECORDS_PAGE, "records")] = RECORDS_PAGE,
    ) -> dict:
        """This centre's signed usage records of an epoch, page by page in store order, for auditors to recompute
        its anchored sum trees (public). Follow `next` as `after` until it is null."""
        return node.parts.epochs.records(epoch, after, limit)

    @app.get("/v1/audit/usage/{record_id}", tags=["audit"], responses=responses(404, 422))
    def audit_usage(record_id: Annotated[str, Path(pattern=RECORD_ID)]) -> dict:
        """One signed usage record and its Merkle proof against the anchored root."""
        return node.usage_proof(record_id)

    @app.get("/v1/policy", response_model=PolicyView, tags=["policy"], responses=responses(404))
    def policy() -> dict:
        """The Cedar policy this centre decides with, its version and hashes on chain (public: check the texts
        against the hashes on chain, `ledger.policies.verify_text`)."""
        return node.parts.policy.view()

    @app.get("/v1/policy/{version}", response_model=PolicyView, tags=["policy"], responses=responses(404, 422))
    def policy_version(version: Annotated[int, Path(ge=1, le=MAX_EPOCH)]) -> dict:
        """A version of this centre's policy this gateway served (404 for one it never served)."""
        return node.parts.policy.view(version)

    @app.get(
        "/v1/decisions/{entry_id}",
        response_model=DecisionView,
        tags=["policy"],
        responses=responses(404, 422),
    )
    def decision(entry_id: Annotated[str, Path(pattern=DECISION_ID)]) -> dict:
        """One entry of the decision log, and once its epoch is closed its Merkle proof against the log's root
        (public: the id is the capability its principal was given with the answer)."""
        return node.parts.decision_log.entry(entry_id)

    @app.get(
        "/v1/audit/decisions/{epoch}",
        response_model=DecisionLogView,
        tags=["audit"],
        responses=responses(
            422,
            descriptions={
                401: f"no {AUDIT_SIGNATURE_HEADER}, or one that is malformed, stale, for another epoch or not "
                "by one of this centre's auditors",
                409: "the epoch is not closed here yet: its decision log is not fixed",
            },
        ),
    )
    def audit_decisions(
        epoch: Annotated[int, Path(ge=1, le=MAX_EPOCH)],
        signature: Annotated[
            str | None,
            Header(
                alias=AUDIT_SIGNATURE_HEADER,
                description="`<unix time>:<0x signature>`: the EIP-191 signature, by the chain account of one of "
                "this centre's auditors (its configuration's `auditors`), of `xcentre-audit:<centre>:<epoch>:<unix "
                f"time>`, good from {AUDIT_SIGNATURE_AHEAD} s ahead of the centre's clock to "
                f"{AUDIT_SIGNATURE_SKEW} s behind it",
                json_schema_extra={"pattern": AUDIT_SIGNATURE},
            ),
        ] = None,
        after: PageAfter = 0,
        limit: Annotated[int, page_limit(AUDIT_PAGE, "entries")] = AUDIT_PAGE,
    ) -> dict:
        """Every decision of a closed epoch, page by page, for this centre's auditors only (the log names every
        requester's attributes): check it against the anchored root and re-evaluate each one with the policy
        version it names (`xcentre audit decisions`). Follow `next` as `after` until it is null."""
        return node.parts.decision_log.audit(epoch, signature, after, limit)

    @app.get(
        "/v1/audit/decisions/by-digest/{digest}",
        response_model=AuditedDecision,
        tags=["audit"],
        responses=responses(
            404,
            422,
            descriptions={
                401: f"no {AUDIT_SIGNATURE_HEADER}, or one that is malformed, stale, for another entry or not "
                "by one of this centre's auditors",
                409: "the entry's epoch is not closed here yet: its log's root is not fixed",
            },
        ),
    )
    def audit_decision(
        digest: Annotated[str, Path(pattern=DECISION_DIGEST)],
        signature: Annotated[
            str | None,
            Header(
                alias=AUDIT_SIGNATURE_HEADER,
                description="`<unix time>:<0x signature>`: the EIP-191 signature, by the chain account of one of "
                "this centre's auditors, of `xcentre-audit:<centre>:<digest, 0x and lowercase hex>:<unix time>`, "
                f"good from {AUDIT_SIGNATURE_AHEAD} s ahead of the centre's clock to {AUDIT_SIGNATURE_SKEW} s "
                "behind it",
                json_schema_extra={"pattern": AUDIT_SIGNATURE},
            ),
        ] = None,
    ) -> dict:
        """The entry of this centre's decision log with this digest (what a usage record's `decision` names), its
        epoch and its Merkle proof, for this centre's auditors only: check the proof against the root anchored for
        that epoch (UsageLedger.decisionsOf). A record may name an allow of an earlier epoch than its own."""
        return node.parts.decision_log.by_digest(digest, signature)

    def payer() -> Payer:
        if node.parts.payer is None:
            raise Unavailable(f"{node.name}'s gateway keeps no grant desk")
        return node.parts.payer

    home_session = {401: "no session token, or one not for this centre", 503: "the directory or chain is unavailable"}

    @app.post(
        "/v1/grants",
        response_model=GrantResponse,
        tags=["payment"],
        responses=responses(
            422,
            descriptions=home_session
            | {
                400: "the order is malformed, its signature does not recover, its centre is no member, its rates "
                "version is unpublished, its deadline is past or more than 7 days out, or the user belongs to "
                "several projects and named none; nothing was held",
                402: "the hold does not fit: the project's available allocation or the home's free collateral "
                "(the figures are in `reasons`); nothing was held",
                403: "not a password sign-on at home, or the project named is not the user's",
                409: "the order's account paid for another order (an account is for one order), or the order was "
                "granted to someone else",
            },
        ),
    )
    async def grant(body: GrantRequest, claims: Annotated[Claims, Depends(session)]) -> dict:
        """At the user's home: hold the order's maximum price on their project and sign the grant (idempotent)."""
        return await run_in_threadpool(payer().grant, claims, body.order, body.order_signature, body.project)

    @app.get(
        "/v1/balance",
        response_model=Balance,
        tags=["payment"],
        responses=responses(
            422,
            descriptions=home_session
            | {
                400: "the user belongs to several projects: name one (?project=)",
                403: "not a password sign-on at home, or no project of the user's",
            },
        ),
    )
    def balance(
        claims: Annotated[Claims, Depends(session)],
        project: Annotated[str | None, Query(pattern=PROJECT)] = None,
    ) -> dict:
        """At the user's home: the project's allocation, held, spent and available; the user's holds."""
        return payer().balance(claims, project)

    @app.post(
        "/v1/complaints",
        response_model=ComplaintView,
        tags=["payment"],
        responses=responses(
            404,
            422,
            descriptions=home_session
            | {
                400: "the record is malformed, bills another home, or names another order than its grant's",
                403: "not a password sign-on at home",
                409: "a complaint about this grant exists already, for another record",
            },
        ),
    )
    def complain(body: ComplaintRequest, claims: Annotated[Claims, Depends(session)]) -> dict:
        """At the user's home: the serving centre kept the key of this record; the home disputes it on chain."""
        return payer().complain(claims, body.record)

    @app.post(
        "/v1/anonymous/complaints",
        response_model=ComplaintView,
        tags=["anonymous"],
        responses=responses(
            404,
            422,
            descriptions={
                400: "the record is malformed, bills another home, or names another order than its grant's; "
                "nothing was stored",
                401: f"the signature is not valid, or was made more than {JOB_SIGNATURE_SKEW} s from the home's "
                "clock (sign again)",
                403: "the signature is not by the account that signed the order of the record's grant (or not over "
                "this record), or the grant is a signed-on user's (complain at /v1/complaints with their session)",
                409: "a complaint about this grant exists already, for another record",
                503: "this gateway keeps no grant desk",
            },
        ),
    )
    def anonymous_complain(body: AnonymousComplaintRequest) -> dict:
        """At an anonymous job's home, with no session: its order's account got no key for this record; the home
        disputes it on chain (needKey), as for /v1/complaints. The member stays unnamed: the account is the
        order's own, fresh for it."""
        return payer().complain_anonymously(body.record, body.at, body.signature)

    @app.get("/v1/keys/{lock_hash}", response_model=RevealedKey, tags=["payment"], responses=responses(404, 422, 503))
    def revealed_key(lock_hash: Annotated[str, Path(pattern=LOCK_HASH)]) -> dict:
        """A result key revealed on chain (answering a dispute), by its lock hash keccak256(k)."""
        return payer().revealed_key(lock_hash)

    def groups() -> GroupDesk:
        if node.parts.groups is None:
            raise Unavailable(f"{node.name}'s gateway keeps no group desk")
        return node.parts.groups

    no_key = "the consortium has no supervision contract, or its supervisors have not generated their key yet"

    @app.post(
        "/v1/groups/join",
        response_model=GroupJoinResponse,
        tags=["anonymous"],
        responses=responses(
            422,
            descriptions={
                400: "the join request's tracing key is not a point of G1, its proof does not verify for this home, "
                "the project and your uid, or the project is spelt otherwise here; nothing was stored",
                401: "no session token, or one not for this centre",
                403: "not a password sign-on at home, or the project is not one of yours with an allocation",
                409: "this tracing key is already registered (by someone else, or for another project)",
                503: "the directory or chain is unavailable; the home no longer holds the issuer key it had when the "
                "week began (group credentials follow a rotation at the next week's turn; the answer says when); "
                "or " + no_key,
            },
        ),
    )
    def group_join(body: GroupJoinRequest, claims: Annotated[Claims, Depends(session)]) -> dict:
        """At the user's home: join a project's group with a tracing key you prove the secret of; the home keeps
        the key with you and signs a group credential over it blindly (the same request again renews it)."""
        return groups().join(claims, body.model_dump())

    @app.post(
        "/v1/anonymous/grants",
        response_model=GrantResponse,
        tags=["anonymous"],
        responses=responses(
            422,
            429,
            descriptions={
                400: "the order is malformed, its signature does not recover, its centre is no member, its rates "
                "version is unpublished or its deadline is past or more than 7 days out; nothing was held",
                401: "the group signature is refused: malformed, by an issuer key not known, or not over this order",
                402: "the hold does not fit the project's available allocation or the home's free collateral "
                "(the figures are in `reasons`); nothing was held",
                403: "the group signature is by a member of another home; its credential expired, has an expiry no "
                "credential issued now has, or carries a revocation epoch or issuer key other than this home's when "
                "the credential's issue week began; or its project has no allocation any more",
                409: "the order's account paid for another order, or the order was granted to someone else",
                503: "the chain is unavailable; or " + no_key,
            },
        ),
    )
    def anonymous_grant(body: AnonymousGrantRequest, request: Request) -> dict:
        """At a member's home, with no session: hold the order's maximum price on the project the group signature
        proves and sign the grant, as /v1/grants does, never learning which member asked (idempotent per order)."""
        return groups().grant(body.order, body.order_signature, body.group_signature, client=_address(request))

    @app.post(
        "/v1/supervision/identify/{opening}",
        response_model=IdentificationView,
        tags=["anonymous"],
        dependencies=[Depends(operator)],
        responses=responses(
            422,
            descriptions={
                401: "the operator key is missing or wrong",
                403: "the opening is of a signature by another home's member: that home identifies it",
                404: "there is no such opening on chain, or no member of this home has the tracing key it revealed",
                409: "the opening is not opened yet (fewer accepted shares than the threshold)",
                503: "the chain is unavailable, or the consortium has no supervision contract",
            },
        ),
    )
    def identify(opening: Annotated[int, Path(ge=1, le=MAX_EPOCH)]) -> dict:
        """At the opened signature's home (operator): the member its tracing key belongs to, kept here and recorded
        on chain with the member's enrolment id (Supervision.identify, through the outbox)."""
        return groups().identify(opening)

    return app


def _address(request: Request) -> str | None:
    """The client's network address, which bounds the decisions of its pseudonymous sessions together."""
    return request.client.host if request.client else None


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


#: A URL's scheme, its credentials (user:password@, to the last '@': a password may hold one) and host, and
#: its path, query and fragment.
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/?#]*@)?([^\s/?#@)]*)[^\s)]*")


def _no_url_secrets(text: str) -> str:
    """`text` with each URL cut to its scheme and host: a chain node's URL may carry credentials (user:password@)
    or an API key in its path, which an answer to anyone must not show (the operator's log has the URL)."""
    return _URL.sub(r"\1\2", text)
