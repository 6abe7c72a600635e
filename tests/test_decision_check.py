"""`xcentre audit decision`: a refused user's check of their refusal against the chain, on the real consortium.

bob's two-hour job is refused at hpc-a; the 403 carries the entry and hpc-a's signature of it.
Before the epoch's close the check says the refusal is signed by hpc-a and not anchored yet; after
it, that the entry is in the log hpc-a anchored. A refusal hpc-a drops from its log before the
close is still shown signed by hpc-a, and the check reports that hpc-a no longer gives it.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from tests.fixtures.consortium import eventually
from tests.test_audit_decisions_cli import anchored
from tests.test_cli import run_cli

LONG = {"command": ["true"], "walltime": 7200, "centre": "hpc-a"}  # students: at most 1 hour at hpc-a


def refuse_bob(consortium, tmp_path, name: str) -> tuple[str, object]:
    token = consortium.login("bob", "hpc-a")
    answer = httpx.post(
        consortium.url("hpc-a") + "/v1/jobs/quote", json=LONG, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403, answer.text
    body = answer.json()
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body))
    return body["decision"], path


def check(consortium, entry_id: str, *extra: object) -> tuple[int, str, str]:
    argv = ["audit", "decision", "--centre", "hpc-a", "--id", entry_id, "--chain", consortium.anvil_url]
    return run_cli([*argv, "--deployment", consortium.deployment_file, *extra])


@pytest.fixture(scope="module")
def refusals(consortium, tmp_path_factory):
    """Two refusals of bob's in one epoch; the second one hpc-a deletes from its log before the close."""
    tmp = tmp_path_factory.mktemp("refusals")
    kept, dropped = refuse_bob(consortium, tmp, "kept"), refuse_bob(consortium, tmp, "dropped")
    before = check(consortium, kept[0], "--refusal", kept[1])
    store = consortium.store("hpc-a")
    with sqlite3.connect(store.path) as db:  # the operator, in its own database, before the close
        db.execute("DELETE FROM decisions WHERE id = ?", (dropped[0].removeprefix("0x"),))
    (epoch,) = {c["epoch"] for c in consortium.close_epoch_everywhere()}
    eventually(lambda: anchored(consortium, "hpc-a", epoch))
    return kept, dropped, before


def test_a_refusal_is_signed_and_then_anchored(consortium, refusals):
    (kept, path), _, (code, out, err) = refusals
    assert code == 0, out + err
    assert "decision: deny by student-walltime" in out and "signed by hpc-a: yes" in out
    assert "not anchored yet" in out
    code, out, err = check(consortium, kept, "--refusal", path)
    assert code == 0, out + err
    assert "in the decision log hpc-a anchored: verified against the chain" in out


def test_a_refusal_dropped_from_the_log_is_still_the_centres_and_its_absence_is_reported(consortium, refusals):
    _, (dropped, path), _ = refusals
    code, out, err = check(consortium, dropped, "--refusal", path)
    assert code == 3, out + err
    assert "signed by hpc-a: yes" in out and f"hpc-a no longer gives entry {dropped}" in out


def test_a_forged_refusal_is_not_the_centres(consortium, refusals, tmp_path):
    (kept, path), _, _ = refusals
    body = json.loads(path.read_text())
    body["entry"]["policies"] = ["cpu-for-members"]  # bob's own edit of what hpc-a said
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(body))
    code, out, err = check(consortium, kept, "--refusal", forged)
    assert code == 3, out + err
    assert "signed by hpc-a: NO" in out and "now gives another entry" in out


def test_bad_input_is_a_clear_error(consortium, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    code, _, err = check(consortium, "0x" + "00" * 16, "--refusal", empty)
    assert code == 1 and "is not a refusal's body" in err
    code, _, err = check(consortium, "0x" + "00" * 16)
    assert code == 2 and "no decision" in err  # the centre has none: a 404
