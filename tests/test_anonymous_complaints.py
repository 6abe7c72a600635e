"""An anonymous member complains about a withheld result key, as the order's payment account, on real parts.

A court of its own (slapd per centre, anvil, three HTTP gateways, the Supervision contract with the key its
centres generated at start; a dispute window of a few seconds). alice joins physics at hpc-a and submits
anonymously (`xcentre submit --anonymous`); cloud-b runs the job, takes her receipt and releases a wrong key
(it cheats). She has no session to complain with (her home granted the order to `anonymous:physics`): she
complains as the order's account (`xcentre complain`, no --user: `POST /v1/anonymous/complaints`), her home
disputes the record with needKey, cloud-b reveals k on chain to keep its claim, and `xcentre result` opens
her outputs with the k her home read from the chain, with no session anywhere.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient, job_signer
from gateway.client.wallet import PaymentKeys
from ledger import lock
from ledger.ids import centre_id
from ledger.primitives.hex import to_hex
from tests.fixtures.consortium import PASSWORDS
from tests.fixtures.consortium import court as consortium_court
from tests.test_cli import run_cli
from tests.test_disputes import WINDOW, close_and_settle

HOME, SERVING = "hpc-a", "cloud-b"


@pytest.fixture(scope="module")
def court(slapd_factory, anvil_url, tmp_path_factory):
    with consortium_court(slapd_factory, anvil_url, tmp_path_factory.mktemp("anonymous-complaints"), WINDOW) as c:
        yield c


@pytest.fixture(scope="module")
def wallet(court, tmp_path_factory) -> Path:
    """alice's wallet with her membership of physics at hpc-a."""
    path = tmp_path_factory.mktemp("anonymous-complaints") / "xcentre" / "wallet.json"
    password = PASSWORDS["alice"] + "\n"
    login = ["login", "--gateway", court.url(HOME), "--user", "alice", "--password-stdin", "--wallet", path]
    code, _, err = run_cli(login, stdin=password)
    assert code == 0, err
    join = ["group", "join", "--project", "physics", "--user", "alice", "--password-stdin", "--wallet", path]
    code, _, err = run_cli(join, stdin=password)
    assert code == 0, err
    return path


@pytest.fixture(scope="module")
def withheld(court, wallet) -> dict:
    """alice's anonymous job at cloud-b, which takes her receipt and releases a wrong key; `xcentre result` fails
    and says what to run. Answers the job as the centre shows it to its account, and the result's advice."""
    submit = ["submit", "--anonymous", "--project", "physics", "--gateway", court.url(HOME), "--centre", SERVING]
    code, out, err = run_cli([*submit, "--walltime", "60", "--wallet", wallet, "--", "python3", "-c", "print(6 * 7)"])
    assert code == 0, err
    job = json.loads(out)["id"]
    with cheating(court):
        code, out, err = run_cli(["result", job, "--centre", SERVING, "--wallet", wallet, "--timeout", "60"])
    assert code != 0 and not out
    stored = court.store(SERVING).get_job(job)
    assert stored.receipt_signature is not None and stored.group_signature is not None
    with GatewayClient(court.url(SERVING)) as client:
        client.job_signer = job_signer(SERVING, order_account(wallet, job))
        view = client.job(job)
    return {"job": job, "view": view, "advice": err}


@contextlib.contextmanager
def cheating(court) -> Iterator[None]:
    """cloud-b stores the receipt as an honest centre does, and releases a wrong key for it."""
    node = court.centres[SERVING].node
    honest = node.receipt

    def cheat(caller, job_id, signature):
        return honest(caller, job_id, signature).model_copy(update={"key": to_hex(lock.new_key())})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(node, "receipt", cheat)
        yield


def order_account(wallet: Path, job: str):
    keys = PaymentKeys.beside(wallet)
    (address,) = [a for a, facts in keys.open().items() if facts.get("job") == job]
    return keys.account(address)


def complaints(court) -> list:
    return court.centres[HOME].node.parts.payer.book.complaints()


def post_complaint(court, signed: dict, account, *, at: int | None = None, digest: str | None = None, **body):
    """POST /v1/anonymous/complaints at hpc-a about the `signed` record (as a job's view has it), signed by `account`
    over its digest (or `digest`); `body` replaces fields of what is sent."""
    at = int(time.time()) if at is None else at
    message = f"xcentre complain {HOME} {digest or signed['digest']} {at}"  # the spec's text, written out here
    signature = account.sign_message(encode_defunct(text=message)).signature
    fields = {"record": signed["data"], "at": at, "signature": "0x" + bytes(signature).hex()} | body
    return httpx.post(f"{court.url(HOME)}/v1/anonymous/complaints", json=fields, timeout=30)


def test_the_wrong_key_advice_is_a_complaint_without_a_password(withheld):
    digest = withheld["view"]["record"]["digest"]
    assert f"xcentre complain --record {digest}" in withheld["advice"]
    assert "--user" not in withheld["advice"]  # an anonymous member has no uid to give: that would name them


def test_a_complaint_by_another_account_is_refused_and_stores_nothing(court, withheld):
    answer = post_complaint(court, withheld["view"]["record"], Account.create())
    assert answer.status_code == 403, answer.text
    assert "not by the account that signed" in answer.json()["error"]
    assert complaints(court) == []


def test_a_complaint_signed_long_ago_is_refused(court, wallet, withheld):
    account = order_account(wallet, withheld["job"])
    answer = post_complaint(court, withheld["view"]["record"], account, at=int(time.time()) - 600)
    assert answer.status_code == 401, answer.text
    assert "sign again" in answer.json()["error"]
    assert complaints(court) == []


def test_a_complaint_signed_over_another_record_is_refused(court, wallet, withheld):
    account = order_account(wallet, withheld["job"])
    answer = post_complaint(court, withheld["view"]["record"], account, digest="0x" + "ab" * 32)
    assert answer.status_code == 403, answer.text
    assert complaints(court) == []


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"record": {"price": 1}}, 400),
        ({"signature": "0x1234"}, 422),
        ({"at": "yesterday"}, 422),
        ({"session": "alice"}, 422),
    ],
)
def test_a_malformed_complaint_is_refused_and_stores_nothing(court, wallet, withheld, change, status):
    account = order_account(wallet, withheld["job"])
    answer = post_complaint(court, withheld["view"]["record"], account, **change)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]
    assert complaints(court) == []


def test_complain_with_a_uid_about_an_anonymous_job_sends_nothing(court, wallet, withheld):
    digest = withheld["view"]["record"]["digest"]
    code, out, err = run_cli(
        ["complain", "--record", digest, "--user", "alice", "--password-stdin", "--wallet", wallet]
    )
    assert code == 1 and "anonymous job: complain without --user" in err and not out
    assert complaints(court) == []


def test_the_complaint_is_disputed_and_k_revealed_on_chain(court, wallet, withheld):
    """The complaint needs no session; the home disputes with needKey; cloud-b reveals k or loses the claim; alice's
    `xcentre result` then opens the outputs with the k her home read from the chain."""
    digest = withheld["view"]["record"]["digest"]
    code, out, err = run_cli(["complain", "--record", digest, "--wallet", wallet])
    assert code == 0, err
    taken = json.loads(out)
    assert (taken["record"], taken["status"]) == (digest, "open")
    (complaint,) = complaints(court)
    assert complaint.principal == "anonymous:physics"
    again = run_cli(["complain", "--record", digest, "--wallet", wallet])  # the same complaint again: as before
    assert again[0] == 0 and json.loads(again[1]) == taken

    epoch = close_and_settle(court)

    index = court.centres[HOME].node.parts.index
    (claim,) = index.claims_on(HOME, epoch)
    assert claim.centre == centre_id(SERVING) and not claim.voided
    assert [(d.need_key, d.status) for d in index.disputes(epoch=epoch)] == [(True, "answered")]
    assert [c.status for c in complaints(court)] == ["disputed"]
    with cheating(court):  # cloud-b still releases a wrong key to the receipt: the one on chain opens the outputs
        code, out, err = run_cli(["result", withheld["job"], "--centre", SERVING, "--wallet", wallet])
    assert code == 0, err
    done = json.loads(out)
    assert done["stdout"].strip() == "42" and done["receipt"] == digest


def test_a_complaint_about_a_signed_on_job_needs_the_users_session(court, tmp_path):
    """A signed-on user's grant is not an anonymous hold: its account cannot complain for it without the user."""
    keys = PaymentKeys()
    job = {"command": ["python3", "-c", "print(1)"], "walltime": 30}
    with GatewayClient(court.url(HOME)) as home:
        home.login("alice", PASSWORDS["alice"])
        submission = submit_anywhere(court.url(HOME), job, with_home_session(home), centre=SERVING, keys=keys)
        account = keys.account(submission.paid.account)
        result = finish(submission, keys)
    before = complaints(court)
    answer = post_complaint(court, result.view["record"], account)
    assert answer.status_code == 403, answer.text
    assert "--user" in answer.json()["error"]
    assert complaints(court) == before


def test_complain_about_a_signed_on_job_asks_for_the_uid(court, wallet):
    """The CLI tells a signed-on job's complaint from an anonymous one's by its record: without --user it says so."""
    submit = ["submit", "--user", "alice", "--password-stdin", "--gateway", court.url(HOME), "--centre", SERVING]
    argv = [*submit, "--walltime", "60", "--wallet", wallet, "--", "python3", "-c", "print(2)"]
    code, out, err = run_cli(argv, stdin=PASSWORDS["alice"] + "\n")
    assert code == 0, err
    job = json.loads(out)["id"]
    with GatewayClient(court.url(SERVING)) as client:
        client.job_signer = job_signer(SERVING, order_account(wallet, job))
        digest = client.wait(job, timeout=60)["record"]["digest"]
    code, out, err = run_cli(["complain", "--record", digest, "--wallet", wallet])
    assert code == 1 and "signed on: name your uid at home with --user" in err and not out
    code, _, err = run_cli(["result", job, "--centre", SERVING, "--wallet", wallet])  # the books stay whole
    assert code == 0, err
