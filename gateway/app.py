"""The gateway's HTTP API: one FastAPI app per centre, a thin layer over CentreNode.

Every error body is `{"error": "...", "reasons": [...]}` so that clients and
people read refusals the same way.
"""

from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from auth.directory import DirectoryUnavailable
from auth.tokens import Claims
from gateway.errors import GatewayError
from gateway.limits import BodyLimits
from gateway.node import CentreNode
from gateway.schemas import (
    CloseEpochRequest,
    CredentialResponse,
    EpochClosure,
    JobRequest,
    JobView,
    LoginRequest,
    LoginResponse,
    PresentRequest,
    RevokeRequest,
    SignOnResponse,
)


def create_app(node: CentreNode) -> FastAPI:
    app = FastAPI(
        title=f"xcentre gateway · {node.name}",
        version="0.1.0",
        description="A member centre's gateway: sign-on, job dispatch, metering, epochs and audit.",
    )

    app.add_middleware(BodyLimits)

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "reasons": exc.reasons}, status_code=exc.status)

    @app.exception_handler(DirectoryUnavailable)
    async def directory_down(_: Request, exc: DirectoryUnavailable) -> JSONResponse:
        return JSONResponse({"error": f"the directory is unavailable: {exc}", "reasons": []}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [_describe(e) for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(reasons), "reasons": reasons}, status_code=422)

    def bearer(authorization: Annotated[str | None, Header()] = None) -> str | None:
        if authorization and authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        return None

    def session(token: Annotated[str | None, Depends(bearer)]) -> Claims:
        return node.authenticate(token)

    def operator(x_operator_key: Annotated[str | None, Header()] = None) -> None:
        node.check_operator(x_operator_key)

    @app.post("/v1/login", response_model=LoginResponse, tags=["identity"])
    def login(body: LoginRequest) -> LoginResponse:
        """Password sign-on at the user's home centre; the token is accepted by every member."""
        return node.login(body.username, body.password)

    @app.post("/v1/credentials", response_model=CredentialResponse, tags=["identity"])
    def credential(body: LoginRequest) -> dict:
        """At the user's home centre: a BBS credential over their live directory attributes."""
        return node.credential(body.username, body.password)

    @app.get("/v1/auth/request", tags=["identity"])
    def auth_request() -> dict:
        """A one-time presentation request: the attributes this centre needs and a fresh nonce."""
        return node.auth_request()

    @app.post("/v1/auth/present", response_model=SignOnResponse, tags=["identity"])
    def present(body: PresentRequest) -> dict:
        """Sign on with a presentation: a session token carrying only the disclosed attributes."""
        return node.present(body.presentation)

    @app.post("/v1/enrolments/revoke", tags=["identity"], dependencies=[Depends(operator)])
    def revoke(body: RevokeRequest) -> dict:
        """Revoke one of this centre's users: every member refuses them once the event reaches it."""
        return node.revoke(body.username)

    @app.post("/v1/jobs", response_model=JobView, status_code=202, tags=["jobs"])
    def submit(
        body: JobRequest,
        claims: Annotated[Claims, Depends(session)],
        token: Annotated[str, Depends(bearer)],
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> JobView:
        """Submit a job here or to another centre (`centre`), or let placement choose (`auto`)."""
        return node.submit(claims, token, body, idempotency_key)

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"])
    def job(job_id: str, claims: Annotated[Claims, Depends(session)], token: Annotated[str, Depends(bearer)]) -> JobView:
        return node.job(claims, token, job_id)

    @app.post("/v1/epochs/close", response_model=EpochClosure, tags=["epochs"], dependencies=[Depends(operator)])
    def close_epoch(body: CloseEpochRequest | None = None) -> EpochClosure:
        """Close the open epoch: anchor its Merkle root and claims, settle when every centre has."""
        return node.close_epoch(body.epoch if body else None)

    @app.get("/v1/audit/epochs/{epoch}", tags=["audit"])
    def audit_epoch(epoch: int) -> dict:
        """Roots, counts, claims and net positions of an epoch, as anchored on chain."""
        return node.epoch_audit(epoch)

    @app.get("/v1/audit/epochs/{epoch}/records", tags=["audit"])
    def audit_records(epoch: int) -> list[dict]:
        """This centre's signed usage records of an epoch, for auditors to recompute."""
        return node.epoch_records(epoch)

    @app.get("/v1/audit/usage/{record_id}", tags=["audit"])
    def audit_usage(record_id: str) -> dict:
        """One signed usage record and its Merkle proof against the anchored root."""
        return node.usage_proof(record_id)

    return app


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))
