"""Attack (user): void a serving centre's whole claim on the home with one order whose deadline is tight.

An order's deadline may be as early as now + walltime + DEADLINE_MARGIN (the centre accepts it).
The centre runs the job, records it and anchors it at the next epoch close. The contract takes
an answer for that leaf only if the claim was anchored by the order's deadline + bookingDelay
(rule 6); nothing makes the centre close its epoch in time, or leave such a record out of its
claim. The user's own home's watcher finds the leaf unanswerable, disputes it, and settlement
voids the centre's WHOLE claim on that home for the epoch: every other job of that home's users
there goes unpaid, and the centre's anchor bond goes to the home. One user, one cheap job.
"""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from gateway.node import orders
from gateway.node.orders import DEADLINE_MARGIN
from ledger.ids import centre_id
from tests.fixtures.consortium import PASSWORDS, eventually
from tests.fixtures.consortium import court as consortium_court

WINDOW = 4
JOB = {"command": ["python3", "-c", "print('honest work')"], "walltime": 30}
TIGHT = {"command": ["python3", "-c", "print('tight')"], "walltime": 2}
LATE = {"command": ["python3", "-c", "import time; time.sleep(6); print('late')"], "walltime": 20}


@pytest.fixture(scope="module")
def court(slapd_factory, anvil_url, tmp_path_factory):
    with consortium_court(slapd_factory, anvil_url, tmp_path_factory.mktemp("attack-deadline"), WINDOW) as running:
        yield running


def close_and_settle(court) -> int:
    epoch = court.close_epoch_everywhere()[0]["epoch"]
    for name in court.centres:
        index = court.centres[name].node.parts.index

        def settled(index=index):
            court.chain.mine()
            return index.sync() is not None and index.settlement(epoch)

        eventually(settled, within=90.0)
    return epoch


def test_one_tight_deadline_does_not_void_the_centres_whole_claim(court):
    keys = PaymentKeys()
    with GatewayClient(court.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        sign_on = with_home_session(home)
        honest = submit_anywhere(court.url("hpc-a"), JOB, sign_on, centre="cloud-b", keys=keys)
        honest_result = finish(honest, keys)
        # the hostile order: the tightest deadline the centre accepts
        tight = submit_anywhere(
            court.url("hpc-a"), TIGHT, sign_on, centre="cloud-b", keys=keys, slack=DEADLINE_MARGIN + 3
        )
        tight_result = finish(tight, keys)  # even with a receipt
    assert honest_result.price > 0 and tight_result.price > 0
    deadline = tight.paid.order.deadline
    ledger_delay = court.spec.booking_delay  # 2 s in the demo; a day by default: epochs closed daily hit it too
    # the operator closes the epoch a little after the order's deadline + booking delay
    while time.time() <= deadline + ledger_delay + 2:
        time.sleep(0.5)

    epoch = close_and_settle(court)

    index = court.centres["hpc-a"].node.parts.index
    (claim,) = [c for c in index.claims_on("hpc-a", epoch) if c.centre == centre_id("cloud-b")]
    disputes = [(d.index, d.need_key, d.status) for d in index.disputes(epoch=epoch)]
    # honest outcome: cloud-b is paid at least for alice's honest job, whatever the tight order did
    assert not claim.voided, f"cloud-b's whole claim on hpc-a was voided by one tight order: disputes {disputes}"
    assert index.settlement(epoch).net.get(centre_id("cloud-b"), 0) >= honest_result.price

    # the tight record lapsed at close: kept, marked, and in none of what the claim is checked against
    tight_id = tight_result.view["record_id"]
    cloud_b = court.url("cloud-b")
    evidence = httpx.get(f"{cloud_b}/v1/epochs/{epoch}/evidence", params={"home": "hpc-a"}, timeout=10).json()
    leaves = [e["record"]["record_id"] for e in evidence["records"]]
    assert evidence["next"] is None
    assert leaves == [honest_result.view["record_id"]] and claim.count == 1 and claim.total == honest_result.price
    audited = httpx.get(f"{cloud_b}/v1/audit/epochs/{epoch}/records", timeout=10).json()
    assert audited["next"] is None and tight_id not in {r["record"]["record_id"] for r in audited["records"]}
    proof = httpx.get(f"{cloud_b}/v1/audit/usage/{tight_id}", timeout=10).json()
    assert proof["lapsed"] is True and proof["anchored"] is False
    assert [r.record_id for r in court.store("cloud-b").lapsed_records(epoch)] == [tight_id.removeprefix("0x")]
    detail = court.store("cloud-b").get_job(tight.view["id"]).detail
    assert "lapsed" in detail and "unbilled" in detail


def test_a_job_that_ends_after_its_orders_deadline_gets_no_record(court, monkeypatch):
    """A centre that lets a job run past its order's deadline (here: one that misjudges how long its
    jobs take to end) records nothing for it: such a leaf could never be evidenced."""
    monkeypatch.setattr(orders, "DEADLINE_MARGIN", -LATE["walltime"])
    keys = PaymentKeys()
    with GatewayClient(court.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        records_before = len(court.store("cloud-b").records_for_epoch(court.store("cloud-b").open_epoch()))
        late = submit_anywhere(
            court.url("hpc-a"), LATE, with_home_session(home), centre="cloud-b", keys=keys, slack=3 - LATE["walltime"]
        )
        result = finish(late, keys)
    view = result.view
    assert view["status"] == "succeeded" and view["record_id"] is None and result.price == 0
    detail = court.store("cloud-b").get_job(view["id"]).detail
    assert "ran late, unbilled" in detail and str(late.paid.order.deadline) in detail
    assert result.stdout.strip() == "late"  # nobody pays, so the outputs are not sealed
    store = court.store("cloud-b")
    assert len(store.records_for_epoch(store.open_epoch())) == records_before
