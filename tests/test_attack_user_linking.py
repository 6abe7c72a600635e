"""Attack (outsider): link a user's jobs, and name the user, from what a centre publishes.

The "who learns what" table says other members, the chain and auditors learn per-epoch totals
and, in a dispute, one record, and "cannot link users: accounts are fresh and records name no
uid". A user who signs on at the serving centre with a token exchanged at home (POST /v1/tokens,
`with_home_session`, an offered API) gets records whose `user` field is keccak256("uid@home"):
the same for every job, and found by hashing a guessed uid. The audit records and the epoch
evidence are public (no session), so anyone can count and time alice's jobs and their prices.
"""

from __future__ import annotations

import httpx
from eth_utils import keccak

from gateway.client.dispatch import finish, submit_anywhere, with_home_session
from gateway.client.http import GatewayClient
from gateway.client.wallet import PaymentKeys
from tests.fixtures.consortium import PASSWORDS

JOB = {"command": ["python3", "-c", "print(1)"], "walltime": 10, "resources": {"cores": 1}}


def test_public_records_do_not_name_or_link_the_user(consortium):
    home = GatewayClient(consortium.url("hpc-a"))
    home.login("alice", PASSWORDS["alice"])
    keys = PaymentKeys()
    records = []
    try:
        for _ in range(2):
            submission = submit_anywhere(
                consortium.url("hpc-a"), JOB, with_home_session(home), centre="cloud-b", keys=keys
            )
            result = finish(submission, keys)
            submission.client.close()
            records.append(result.view["record"]["data"])
    finally:
        home.close()
    epoch = records[0]["epoch"]
    # an outsider, no session: the audit listing of the epoch's records
    public = httpx.get(f"{consortium.url('cloud-b')}/v1/audit/epochs/{epoch}/records", timeout=10)
    assert public.status_code == 200
    ours = [
        r["record"] for r in public.json()["records"] if r["record"]["record_id"] in {x["record_id"] for x in records}
    ]
    assert len(ours) == 2
    guessed = "0x" + keccak(text="alice@hpc-a").hex()
    users = {r["user"] for r in ours}
    # honest outcome: the public record neither names alice (a hash of a guessable uid) nor links her two jobs
    assert guessed not in users, "a public record's user field is keccak256('alice@hpc-a'): names the uid"
    assert len(users) == 2, "both of alice's jobs carry the same user field: an outsider links them"
