"""The framework alone: what serving a job submission costs before any of the gateway's work.

The gateway's server stack (`gateway.api.server.serve`: uvicorn on uvloop and httptools, the access log on, to a
file) with one endpoint shaped as the gateway's POST /v1/jobs: an async route that parses the body as the
gateway's `JobSubmission` model, reads the bearer token and the Idempotency-Key, hands the call to the thread
pool, and answers 202 with a small JSON object. No session, policy, payment check or store: the floor under
any gateway built on this stack, measured beside it by bench_submit.py at the same levels of clients.

    .venv/bin/python scripts/bench/submit_floor.py PORT ACCESS_LOG
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI, Header  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from gateway.api.schemas import JobSubmission  # noqa: E402
from gateway.api.server import serve  # noqa: E402

ANSWER = {"id": "job-0", "state": "queued", "centre": "hpc-a"}


def accept(submission: JobSubmission, token: str | None, key: str | None) -> dict:
    """Nothing to check and nothing to store: the answer only."""
    return ANSWER


def create_floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def submit(
        body: JobSubmission,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> dict:
        return await run_in_threadpool(accept, body, authorization, idempotency_key)

    @app.get("/_bench/cpu", include_in_schema=False)
    async def cpu() -> dict:
        t = os.times()
        return {"user": t.user, "system": t.system}

    @app.get("/v1/members", include_in_schema=False)
    async def members() -> list:
        return []  # what gateway_server() polls until the server answers

    return app


def main() -> None:
    port, access_log = int(sys.argv[1]), sys.argv[2]
    log = os.open(access_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)  # the access log to a file, as submit_server.py sends the gateway's
    os.dup2(log, 2)
    serve(create_floor_app(), "127.0.0.1", port)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until serve() installs its own
    main()
