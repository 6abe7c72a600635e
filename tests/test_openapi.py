"""The API says what it does: schemathesis finds no undeclared status and no server error.

Schemathesis (every check it has, as `--checks all` runs them) sends examples,
boundary cases and fuzzed requests, valid and invalid, to every operation of the
OpenAPI of a real node's app (in-process, over ASGI): each answer must be a status
the operation declares, with the body it declares, never a 5xx. Each operation is run
twice: as anyone (no credentials: refusals) and as a signed-on user who also holds
the operator key (real sessions, real jobs, real epoch closes).

The node belongs to a consortium of its own (a fresh deployment on the session's
anvil, a slapd per centre), because closing epochs and revoking users here must not
change what other modules see. Operations are taken from the app's OpenAPI, so a new
route is tested without touching this file.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from fastapi.routing import APIRoute
from pydantic import ValidationError
from schemathesis.engine import Status, events, from_schema

from gateway.api.app import create_app
from gateway.api.errors import ALWAYS
from gateway.api.schemas import JobRequest, JobSubmission
from tests.fixtures.consortium import start_consortium
from tests.fixtures.payment import paid

CENTRE = "hpc-a"
USER = "alice"
EXAMPLES = 4
"""Fuzzed cases per operation and mode (positive, negative), beside schemathesis's examples and boundary cases."""

ACCEPTABLE = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "400", "421"]
"""What a request the schema allows may be answered: schemathesis's defaults plus the refusals that depend on
state, not shape (400: a user with no enrolment; 421: a job for another centre). Shape is the schema's: 422."""

HARMLESS = ["true"]
"""What a job of a valid request runs: the schema allows any argv, and this node would run it."""


@pytest.fixture(scope="module")
def node_of_its_own(slapd_factory, anvil_url, tmp_path_factory):
    running = start_consortium(slapd_factory, anvil_url, tmp_path_factory.mktemp("openapi"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def app(node_of_its_own):
    return create_app(node_of_its_own.centres[CENTRE].node)


def schemathesis_run(
    app, headers: dict[str, str] | None = None, pay: Callable[[dict], dict] | None = None
) -> tuple[list[str], set[str]]:
    """Every failure schemathesis finds in `app` (all checks, all phases), and the operations it called.

    With `pay`, a job submission the schema allows, for this centre, gets a real order and grant
    (`pay(request)`: the payment fields) in place of the generated ones, which no signature check
    passes: so some jobs are accepted and run, not all refused for their payment.
    """
    config = schemathesis.Config.from_dict(
        {
            "headers": headers or {},
            "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTABLE}},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)

    @schema.hook("map_case")
    def harmless_jobs(context, case):
        body = case.body
        # a quote checks the same request; an anonymous quote's is in its `request`
        job = body.get("request") if case.path == "/v1/anonymous/quote" and isinstance(body, dict) else body
        if (
            case.path in ("/v1/jobs", "/v1/jobs/quote", "/v1/anonymous/jobs", "/v1/anonymous/quote")
            and isinstance(job, dict)
            and isinstance(job.get("command"), list)
            and 1 <= len(job["command"]) <= 256
            and all(isinstance(arg, str) for arg in job["command"])
        ):
            job["command"] = HARMLESS  # still a valid argv: the case stays as valid or invalid as it was
        if pay is not None and case.path == "/v1/jobs" and case.method.upper() == "POST" and _for_us(body):
            request = {k: v for k, v in body.items() if k in JobRequest.model_fields}
            try:
                body.update(pay(request))  # a valid order and grant for a valid one: the case stays valid
            except ValueError:  # limits no order can name (a price or deadline out of range): left as it was
                pass
        return case

    failures: list[str] = []
    called: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if recorder.interactions:
                called.add(recorder.label)
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failures.append(_describe(recorder, case_id, check))
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return sorted(set(failures)), called


def _for_us(body: object) -> bool:
    """A submission the API takes as valid in shape, for this centre."""
    try:
        return JobSubmission.model_validate(body).centre in (None, CENTRE)
    except ValidationError:
        return False


def _describe(recorder, case_id: str, check) -> str:
    """One line per failure: the operation, the check, what was sent and what came back."""
    failure = check.failure_info.failure
    case = recorder.cases[case_id].value
    interaction = recorder.interactions.get(case_id)
    answer = interaction.response if interaction else None
    sent = f"{case.method} {case.formatted_path} body={case.body!r:.120} headers={case.headers!r:.120}"
    got = f"{answer.status_code} {answer.content[:160]!r}" if answer else "no answer"
    return f"{check.name}: {failure.title}: {(failure.message.splitlines() or [''])[0]}\n    sent {sent}\n    got {got}"


def operations(app) -> set[str]:
    return {
        f"{method} {route.path_format}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_every_answer_to_anyone_is_declared(app):
    failures, called = schemathesis_run(app)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    assert operations(app) <= called  # every route, whatever routes the app has


def test_every_answer_to_a_user_and_the_operator_is_declared(app, node_of_its_own):
    credentials = {
        "Authorization": f"Bearer {node_of_its_own.login(USER, CENTRE)}",
        "X-Operator-Key": node_of_its_own.operator_key(CENTRE),
    }
    failures, called = schemathesis_run(app, credentials, pay=lambda job: paid(node_of_its_own, job, CENTRE).fields())
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    assert operations(app) <= called  # every route, whatever routes the app has
    jobs = node_of_its_own.store(CENTRE).list_jobs(limit=10_000)
    assert jobs and {tuple(job.request["command"]) for job in jobs} == {tuple(HARMLESS)}  # real jobs, all harmless


def test_every_route_is_in_the_openapi_with_its_refusals(app):
    """What the schemathesis run covers is what the app serves; every route declares its refusals' body."""
    document = app.openapi()
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue  # the OpenAPI document and docs pages themselves
        for method in route.methods:
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            assert operation is not None, f"{method} {route.path_format} is not in the OpenAPI"
            declared = {int(status) for status in operation["responses"] if status != "default"}
            assert declared >= set(ALWAYS), f"{method} {route.path_format} declares only {sorted(declared)}"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    body = response["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, route.path_format, status)
