"""The HTTP API's request and response bodies.

Validation lives here so that every handler receives well-formed input and a
malformed request is refused before anything is stored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

USERNAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CENTRE = r"^(auto|[a-z0-9-]{1,32})$"
MAX_WALLTIME = 7 * 24 * 3600
MAX_COMMAND_CHARS = 65_536
"""The most characters a job's argv may have in all: what is stored, forwarded and exec'd."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    username: str = Field(pattern=USERNAME, description="The user's uid at their home centre.")
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    token: str
    principal: str
    home: str
    expires_at: int


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


class Resources(Strict):
    cores: int = Field(default=1, ge=1, le=1024)
    memory_mib: int = Field(default=1024, ge=1, le=4 * 1024 * 1024)
    gpus: int = Field(default=0, ge=0, le=64)
    queue: str = Field(default="cpu", pattern=r"^[a-z0-9-]{1,32}$")
    gpu_type: str = Field(default="none", pattern=r"^[a-z0-9-]{1,32}$")
    data_class: str = Field(default="public", pattern=r"^[a-z0-9-]{1,32}$")


class JobRequest(Strict):
    command: list[str] = Field(min_length=1, max_length=256, description="argv, run without a shell")
    walltime: int = Field(ge=1, le=MAX_WALLTIME, description="walltime limit in seconds")
    resources: Resources = Field(default_factory=Resources)
    centre: str = Field(default="auto", pattern=CENTRE, description="target centre or 'auto'")

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



class JobView(BaseModel):
    id: str
    status: str
    principal: str
    serving_centre: str
    submitted_at: str
    exit_code: int | None = None
    record_id: str | None = None
    stdout_tail: str | None = None
    stderr_tail: str | None = None
    forwarded_url: str | None = None
    usage: dict | None = Field(default=None, description="metered usage and price, once the job has run")
    remote: dict | None = Field(default=None, description="the serving centre's view of a forwarded job")


class CloseEpochRequest(Strict):
    epoch: int | None = Field(
        default=None, ge=1, description="the epoch to close; a retry naming an epoch already closed gets its closure"
    )


class EpochClosure(BaseModel):
    centre: str
    epoch: int
    root: str
    record_count: int
    claims: dict[str, int]
    anchored: bool
    settled: bool
