"""A hostile member centre against the decision log (issue 9): what its operator can get past the audit.

The operator holds the centre's chain key, its gateway's files and database. Each test plays one
attack and asserts the safe outcome, so it fails while the attack works:

- re-evaluation is faithful only to what the entry says; parts the honest gateway fixes itself
  (the action, the centre's own name, the principal's own id, the hour of the entry's time) are
  not checked, so a forged request re-evaluates to the logged decision;
- a usage record is checked only for naming *some* submission allow: one allow admits any number
  of jobs, of any home, started before it;
- the usage records the auditor checks are the ones the centre serves, never matched against the
  anchored claims;
- an entry's time is the centre's word, unbounded by the anchor that committed it;
- a refusal's answer carries nothing the refused user can hold against the centre;
- the auditor's CLI parses whatever the centre's gateway sends: nested deep enough it crashes
  (SIGSEGV: py_ecc raises the recursion limit to 100,000), large enough it is read whole, dripped
  it never ends, and a record naming an unknown entry makes it walk every earlier epoch.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from eth_utils import keccak

from auth.policy import PolicyEngine
from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from ledger.decision_audit import audit_decisions
from ledger.decisions import entry_digest, log_root, new_entry
from ledger.deploy import bind
from ledger.ids import centre_id
from ledger.policies import PolicyVersion
from ledger.primitives.hex import to_hex
from ledger.records import Domain
from ledger.signed_decisions import entry_signer
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.test_decision_audit import CPU, ENGINES, GPU, STAFF, STUDENT, V1, audit, clean_log
from tests.test_decision_audit import context as job_context
from tests.test_decision_audit import record as usage_record

ROOT = Path(__file__).resolve().parents[1]


def kinds(result) -> list[str]:
    return [f.kind for f in result.findings]


# ---------------------------------------------------------------- faithful re-evaluation (pure)

NIGHT = V1 + (
    '\n@id("gpu-at-night")\n@reason("GPUs only between 00:00 and 06:00 UTC")\n'
    'permit (principal, action == XCentre::Action::"submit", resource)\n'
    'when { resource == XCentre::Queue::"gpu" && context.hour < 6 };\n'
)


def test_a_forged_hour_that_makes_the_policy_allow_is_reported():
    """The centre allows a GPU job at 13:00 UTC under a night-only policy and logs hour 3: Cedar reads
    only `context.hour`, never the entry's `time` the gateway derived it from, so the forged request
    re-evaluates to the logged allow."""
    engine = PolicyEngine(NIGHT)
    published = 1_000_000
    version = PolicyVersion("cloud-b", 1, engine.policy_hash, bytes(32), published)
    noon = published + 86_400 - published % 86_400 + 13 * 3600  # 13:00 UTC the next day
    cedar = engine.request(STAFF, "submit", GPU, job_context(600) | {"hour": 3})
    decision = engine.decide_request(cedar)
    assert decision.allowed  # what the forged hour buys; at hour 13 the policy denies
    assert not engine.decide_request(engine.request(STAFF, "submit", GPU, job_context(600) | {"hour": 13})).allowed
    forged = new_entry(
        centre="cloud-b",
        time=noon,
        kind="submit",
        request=keccak(b"gpu job"),
        cedar=cedar,
        decision=decision,
        policy_version=1,
        policy_hash=engine.policy_hash,
    )
    assert time.gmtime(noon).tm_hour == 13
    result = audit_decisions([forged], log_root([entry_digest(forged)]), 1, [version], {1: (NIGHT, None)})
    assert "decision" in kinds(result), "an entry whose context.hour is not the hour of its time passed the audit"


def _forged_deny_of(field: str) -> dict:
    """A staff CPU job the policy allows, denied by the centre and logged with one part of the Cedar request
    the honest gateway fixes itself changed so that the published policy denies it too."""
    engine = ENGINES[1]
    action = "Submit" if field == "action" else "submit"
    cedar = engine.request(STAFF, action, CPU, job_context(600))
    entry = new_entry(
        centre="cloud-b",
        time=1_000_100,
        kind="submit",
        request=keccak(b"staff job"),
        cedar=cedar,
        decision=engine.decide_request(cedar),
        policy_version=1,
        policy_hash=engine.policy_hash,
    )
    if field == "centre":
        entry["resource"]["attrs"]["centre"] = "hpc-a"
    if field == "principal":
        entry["principal"]["attrs"]["principal"] = "someone-else@ai-c"
    return entry


@pytest.mark.parametrize("field", ["action", "centre", "principal"])
def test_a_request_the_gateway_never_evaluates_is_reported(field):
    """The gateway evaluates only action "submit", on a queue of its own centre, for the principal it names:
    an entry saying otherwise is not a request it decided. With action "Submit", no permit applies, so a
    refusal of an allowed job re-evaluates to the logged deny."""
    entry = _forged_deny_of(field)
    if field == "action":
        assert entry["decision"] == "deny"
        assert ENGINES[1].decide(STAFF, "submit", CPU, job_context(600)).allowed  # the real request is allowed
    result = audit([entry])
    assert kinds(result), f"an entry with a forged {field} passed the audit"


DEEP_AUDIT = """
import sys, json
import web3  # noqa: F401 - as the CLI and the gateway do: py_ecc raises the recursion limit to 100,000
from tests.test_decision_audit import audit, clean_log
entry = clean_log()[1]
value = "x"
for _ in range(int(sys.argv[1])):
    value = {"a": value}
entry["principal"]["attrs"]["deep"] = value
result = audit([entry])
print(json.dumps([f.kind for f in result.findings]))
"""


@pytest.mark.parametrize("depth", [45_000, 60_000])
def test_a_deeply_nested_entry_is_a_finding_not_a_crash(depth):
    """A log entry whose attribute nests 45,000 records deep (270 kB) kills audit_decisions with SIGSEGV;
    60,000 deep, it raises RecursionError. Either way the audit of the whole log is lost; the module
    promises "a malformed entry is a finding, never an exception"."""
    done = subprocess.run(
        [sys.executable, "-c", DEEP_AUDIT, str(depth)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"audit_decisions died (exit {done.returncode}): {done.stderr[-300:]}"
    assert "decision" in json.loads(done.stdout)


# ---------------------------------------------------------------- records bound to their allow (pure)


def test_one_allow_admits_one_job():
    log = clean_log()
    allow = entry_digest(log[1])
    result = audit(log, records=[usage_record(allow, 1), usage_record(allow, 2)])
    assert "record" in kinds(result), "two usage records naming the same allow passed the audit"


def test_a_record_names_an_allow_of_its_own_home():
    log = clean_log()
    allow = log[1]
    assert allow["principal"]["attrs"]["home"] == "ai-c"
    other_home = replace(usage_record(entry_digest(allow)), home_centre=centre_id("hpc-a"))
    result = audit(log, records=[other_home])
    assert "record" in kinds(result), "a record of an hpc-a user naming an ai-c user's allow passed the audit"


def test_a_job_does_not_start_before_its_admission():
    log = clean_log()
    allow = log[1]
    # an hour early: past the audit's grace (60 s) for the nodes' clocks, which are not the gateway's
    early = replace(usage_record(entry_digest(allow)), started_at=allow["time"] - 3600)
    result = audit(log, records=[early])
    assert "record" in kinds(result), "a record of a job started before its allow was logged passed the audit"


# ---------------------------------------------------------------- against the running consortium


def _anchored(consortium, centre: str, epoch: int) -> tuple[bytes, int] | None:
    ledger = bind(consortium.chain, consortium.deployment, named=True).usage_ledger.functions
    if not ledger.anchorOf(centre_id(centre), epoch).call().anchored:
        return None
    root, count = ledger.decisionsOf(centre_id(centre), epoch).call()
    return bytes(root), int(count)


def _close_and_anchor(consortium, epoch: int) -> None:
    consortium.close_epoch_everywhere()
    eventually(lambda: all(_anchored(consortium, c, epoch) for c in consortium.centres))


def _job(walltime: int) -> dict:
    return {"command": ["python3", "-c", "print(1)"], "walltime": walltime, "resources": {}}


def _run_alices_job(consortium) -> dict:
    keys = PaymentKeys()
    with GatewayClient(consortium.url("hpc-a")) as alice:
        alice.login("alice", PASSWORDS["alice"])
        submission = submit_anywhere(
            consortium.url("hpc-a"), _job(60), with_home_session(alice), centre="hpc-a", keys=keys
        )
        with submission.client:
            view = finish(submission, keys).view
    assert view["status"] == "succeeded" and view["decision"]
    return view


@pytest.fixture(scope="module")
def auditor_argv(consortium, tmp_path_factory) -> list:
    key_file = tmp_path_factory.mktemp("attack-decisions") / "auditor.key"  # the log is for auditors, not members
    key_file.write_text(consortium.auditor.key.hex() + "\n")
    argv = ["audit", "decisions", "--centre", "hpc-a", "--chain", consortium.anvil_url]
    return [*argv, "--deployment", consortium.deployment_file, "--key-file", key_file]


def _frames(stderr: str) -> str:
    """The project's frames of a traceback: where the CLI was."""
    return "\n".join(line for line in stderr.splitlines() if str(ROOT) in line and ".venv" not in line)


def _cli(argv: list, timeout: float) -> subprocess.CompletedProcess:
    """`xcentre argv` in a process of its own (it may crash or hang); returncode None if it ran past `timeout`
    (then interrupted: stderr has where it was)."""
    code = "import sys; from gateway.client.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # its traceback says where it was
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, None, out, err)  # type: ignore[arg-type]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_the_records_audited_are_the_anchored_ones(consortium, auditor_argv):
    """hpc-a anchors a record naming no decision (a job no allow admitted), then serves the auditor the
    record as if it named its allow: the audit believes the served records, checking only their count."""
    (epoch,) = set(consortium.open_epochs().values())
    view = _run_alices_job(consortium)
    database = consortium.data_dir / "hpc-a" / "gateway.db"
    with sqlite3.connect(database) as db:
        (text,) = db.execute("SELECT record FROM usage_records WHERE job_id = ?", (view["id"],)).fetchone()
        anchored = json.loads(text)
        assert anchored["decision"] not in (None, to_hex(bytes(32)))
        db.execute(
            "UPDATE usage_records SET record = ? WHERE job_id = ?",
            (json.dumps(anchored | {"decision": to_hex(bytes(32))}), view["id"]),
        )
    try:
        _close_and_anchor(consortium, epoch)  # the claim commits the record naming no decision
    finally:
        with sqlite3.connect(database) as db:  # and the auditor is shown the one naming alice's allow
            db.execute("UPDATE usage_records SET record = ? WHERE job_id = ?", (text, view["id"]))
    done = _cli([*auditor_argv, "--epoch", epoch], timeout=120)
    assert done.returncode is not None, done.stderr[-2000:]
    assert done.returncode != 0 and "FINDING" in done.stdout, (
        "the records served to the auditor are not the anchored ones, and the audit passed:\n" + done.stdout
    )


def test_an_entry_logged_after_its_epoch_was_anchored_is_reported(consortium, auditor_argv):
    """An entry's time is the gateway's word: hpc-a logs one dated a day after the epoch's anchor, and
    the version check (the only use of the time) passes. So a centre can log decisions today under a
    policy version it publishes tomorrow (dating them after it), or backdate them into a superseded one."""
    store = consortium.store("hpc-a")
    (epoch,) = set(consortium.open_epochs().values())
    with GatewayClient(consortium.url("hpc-a")) as alice:
        alice.login("alice", PASSWORDS["alice"])
        quote = alice.quote(_job(60) | {"centre": "hpc-a"})
    honest = store.decision(quote["decision"]).entry
    from gateway.store import NewDecision

    forged = honest | {"id": "0x" + secrets.token_hex(16), "time": int(time.time()) + 86_400}
    store.log_decision(NewDecision.of(forged))
    _close_and_anchor(consortium, epoch)
    done = _cli([*auditor_argv, "--epoch", epoch], timeout=120)
    assert done.returncode is not None, done.stderr[-2000:]
    assert done.returncode != 0 and forged["id"] in done.stdout, (
        "an entry dated after the anchor that committed it passed the audit:\n" + done.stdout
    )


def test_a_refusal_gives_the_refused_user_something_to_hold(consortium):
    """bob was refused with an entry id alone, unsigned. hpc-a's operator could delete the deny before the close:
    the anchored log never had it, GET /v1/decisions/{id} says 404, and bob held nothing that shows the
    centre refused him. The answer carries the entry and the centre's signature of its digest."""
    with GatewayClient(consortium.url("hpc-a")) as bob:
        bob.login("bob", PASSWORDS["bob"])
        response = httpx.post(
            consortium.url("hpc-a") + "/v1/jobs/quote",
            json=_job(7200) | {"centre": "hpc-a"},
            headers={"Authorization": f"Bearer {bob.token}"},
        )
    assert response.status_code == 403
    body = response.json()
    assert body.get("decision")
    account = consortium.centres["hpc-a"].account.address
    entry, signature = body.get("entry"), body.get("signature")
    assert isinstance(entry, dict) and isinstance(signature, str), (
        f"a refusal carries {sorted(body)}: nothing signed by hpc-a that bob could show an auditor"
    )
    assert entry["id"] == body["decision"] and entry["decision"] == "deny"
    domain = Domain.for_deployment(consortium.deployment)  # EIP-712 Decision(entry digest), as its records are signed
    assert entry_signer(entry, bytes.fromhex(signature.removeprefix("0x")), domain) == account


# ---------------------------------------------------------------- a hostile gateway against the auditor's CLI


class _Hostile(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}
    sent: ClassVar[list] = [0]

    def do_GET(self):
        for prefix, answer in self.routes.items():
            if self.path.split("?")[0].startswith(prefix):
                answer(self)
                return
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "not here"}')

    def log_message(self, *args):
        pass


def _json(body: bytes):
    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@pytest.fixture
def hostile():
    """A gateway the hostile centre runs: answers as `routes` say (path prefix → handler)."""
    routes: dict = {}
    handler = type("Handler", (_Hostile,), {"routes": routes, "sent": [0]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes, handler.sent
    server.shutdown()
    server.server_close()


FAR_EPOCH = 10**9


@pytest.fixture(scope="module")
def far_epoch(consortium) -> tuple[int, dict]:
    """hpc-a anchors epoch 10**9 straight on chain (any epoch may be anchored) with a one-entry decision log."""
    engine = ENGINES[1]
    cedar = engine.request(STUDENT, "submit", CPU, job_context(600))
    entry = new_entry(
        centre="hpc-a",
        time=int(time.time()),
        kind="submit",
        request=keccak(b"far"),
        cedar=cedar,
        decision=engine.decide_request(cedar),
        policy_version=1,
        policy_hash=engine.policy_hash,  # not hpc-a's: only the root matters here
    )
    ledger = bind(consortium.chain, consortium.deployment).usage_ledger
    call = ledger.functions.anchor(FAR_EPOCH, [], [], [], [], log_root([entry_digest(entry)]), 1)
    consortium.chain.transact(call, consortium.centres["hpc-a"].account)
    assert _anchored(consortium, "hpc-a", FAR_EPOCH) is not None
    return FAR_EPOCH, entry


def _deep(depth: int = 100_000) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("command", ["policy show", "audit decisions"])
def test_deeply_nested_json_from_a_gateway_does_not_crash_the_cli(
    consortium, auditor_argv, far_epoch, hostile, command
):
    """600 kB of nested JSON: json.loads recurses in C up to the recursion limit, which py_ecc (imported with
    the chain code) raises to 100,000, past the C stack: the CLI dies of SIGSEGV instead of saying why."""
    url, routes, _ = hostile
    routes["/v1/"] = _json(_deep())
    if command == "policy show":
        argv = ["policy", "show", "--chain", consortium.anvil_url, "--deployment", consortium.deployment_file]
        argv += ["--centre", "hpc-a", "--gateway", url]
    else:
        argv = [*auditor_argv, "--epoch", far_epoch[0], "--gateway", url]
    done = _cli(argv, timeout=60)
    assert done.returncode is not None, done.stderr[-2000:]
    assert done.returncode >= 0, f"`xcentre {command}` was killed by signal {-done.returncode}: {done.stderr[-400:]}"
    assert "error" in done.stderr


def test_a_huge_policy_answer_is_not_read_whole(consortium, hostile):
    """GET /v1/policy answering 96 MiB: the CLI reads (and holds, three times over) all of it; a policy
    text is kilobytes, so it should stop early, as the watcher does for evidence."""
    url, routes, sent = hostile
    size, chunk = 96 * 2**20, b"a" * 2**20

    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(size + len(b'{"centre":"hpc-a","policy":"') + 2))
        handler.end_headers()
        try:
            handler.wfile.write(b'{"centre":"hpc-a","policy":"')
            for _ in range(size // len(chunk)):
                handler.wfile.write(chunk)
                sent[0] += len(chunk)
            handler.wfile.write(b'"}')
        except OSError:
            pass

    routes["/v1/policy"] = huge
    argv = ["policy", "show", "--chain", consortium.anvil_url, "--deployment", consortium.deployment_file]
    done = _cli([*argv, "--centre", "hpc-a", "--gateway", url], timeout=120)
    assert done.returncode is not None and done.returncode != 0
    assert sent[0] <= 16 * 2**20, f"the CLI read {sent[0] // 2**20} MiB of a policy answer"


def test_a_dripping_gateway_does_not_hold_the_audit_forever(consortium, auditor_argv, far_epoch, hostile):
    """A byte every two seconds never trips httpx's per-read timeout (60 s): the audit waits forever. It must
    give up within a deadline of its own (the watcher's is 30 s for evidence)."""
    url, routes, _ = hostile

    def drip(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        try:
            handler.wfile.write(b'{"entries": [')
            while True:
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(2)
        except OSError:
            pass

    routes["/v1/audit/decisions/"] = drip
    done = _cli([*auditor_argv, "--epoch", far_epoch[0], "--gateway", url], timeout=90)
    assert done.returncode is not None, "the audit was still waiting on a dripping gateway after 90 s:\n" + _frames(
        done.stderr
    )


def test_a_record_naming_an_unknown_entry_does_not_walk_every_earlier_epoch(
    consortium, auditor_argv, far_epoch, hostile
):
    """hpc-a anchored epoch 10**9 and serves one record naming an entry that exists nowhere: the CLI looks for it
    in every earlier epoch, one chain call each, from 10**9 - 1 down to 1 (and fetches every earlier log it
    finds). The record should simply be reported (say by asking the gateway for the entry by digest, with its
    proof against the anchored root of its epoch)."""
    url, routes, _ = hostile
    epoch, entry = far_epoch
    log = {"centre": "hpc-a", "epoch": epoch, "root": to_hex(log_root([entry_digest(entry)])), "count": 1}
    routes[f"/v1/audit/decisions/{epoch}"] = _json(json.dumps(log | {"entries": [entry]}).encode())
    record = replace(
        usage_record(keccak(b"admitted by nothing"), 1),
        serving_centre=centre_id("hpc-a"),
        home_centre=centre_id("hpc-a"),
        epoch=epoch,
    )
    routes[f"/v1/audit/epochs/{epoch}/records"] = _json(
        json.dumps({"records": [{"record": record.to_dict(), "signature": "0x" + "00" * 65}], "next": None}).encode()
    )
    started = time.monotonic()
    done = _cli([*auditor_argv, "--epoch", epoch, "--gateway", url], timeout=60)
    assert done.returncode is not None, (
        f"the audit was still walking earlier epochs after {time.monotonic() - started:.0f} s:\n" + _frames(done.stderr)
    )
    assert "FINDING" in done.stdout
