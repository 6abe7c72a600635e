"""The idempotency key of an `xcentre submit`: the same for a submission run again after it got no answer.

A centre that took a job without answering (killed, cut off) may be running it. The wallet keeps
the key, the centre, the order and its grant of such a submission (`PaymentKeys.pending`); running
the same submission again reuses that key, and `dispatch.submit_anywhere` then sends it to that
centre alone, with the same order, so the job runs once. `--idempotency-key` names a key outright.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

from gateway.client.wallet import PaymentKeys


@dataclass(frozen=True)
class ChosenKey:
    key: str
    note: str | None
    """What to tell the user when the key is an unanswered submission's, reused; None for a fresh key."""


def submission_label(job: dict, *, centre: str, anonymous: bool, project: str | None, user: str | None) -> str:
    """A name for one submission, the same whenever the same job is submitted the same way (sha256 of it)."""
    what = {"job": job, "centre": centre, "anonymous": anonymous, "project": project, "user": user}
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def choose_key(keys: PaymentKeys, label: str, given: str | None = None) -> ChosenKey:
    """`given`, else the key of this submission's unanswered earlier run, else a fresh one.

    ValueError when `given` is the key of another pending submission: the centre would refuse it
    (409), or worse, answer with that other job."""
    if given is not None:
        pending = keys.pending(idempotency_key=given)
        if pending is not None and pending[1].get("submission") not in (None, label):
            raise ValueError(
                f"idempotency key {given!r} is that of another submission still unanswered at "
                f"{pending[1]['centre']}; run that submission again, or use another key"
            )
        return ChosenKey(given, None if pending is None else _reused(given, pending[1]["centre"]))
    pending = keys.pending(submission=label)
    if pending is not None:
        key = pending[1]["idempotency_key"]
        return ChosenKey(key, _reused(key, pending[1]["centre"]))
    return ChosenKey(str(uuid.uuid4()), None)


def _reused(key: str, centre: str) -> str:
    return (
        f"this submission got no answer from {centre} last time: sending it there again with the same "
        f"idempotency key ({key}) and order, so it runs once"
    )
