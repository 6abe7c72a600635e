"""The demo's anonymous job and its supervised opening.

alice joins her project at home under a blind credential, then runs one job at
cloud-b under a group signature: cloud-b sees a project of hpc-a and nothing
else. Later, cloud-b asks the supervisors to open the signature; one sends a
forged share, which the contract rejects and records; two honest shares open
it on chain, and alice's home names her enrolment, on the record too.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from py_arkworks_bls12381 import G1Point, Scalar
from rich.console import Console

from auth.group.points import g1_raw
from gateway.client.dispatch import anonymously, finish, join_group, submit_anywhere
from gateway.client.http import GatewayClient
from gateway.client.paying import signing_domain
from gateway.client.supervising import overview
from gateway.client.wallet import PaymentKeys, Wallet
from gateway.demo.local import LocalConsortium
from gateway.demo.show import say, table, xcc
from ledger.primitives.hex import from_hex, to_hex
from ledger.supervision import ShareState, Supervision

HOME, PROJECT, SERVING = "hpc-a", "physics", "cloud-b"
FORGER, SHARERS = "ai-c", ("hpc-a", "cloud-b")
CHECK = "ai-c"
"""A member other than alice's home, whose gateway she checks her home's answer to her join with."""


@dataclass(frozen=True)
class AnonymousRun:
    """What the story needs later: the signature's hash, the record it is named in, the order it signs."""

    signature_hash: bytes
    record: str
    order: str
    """The order's digest: what the signature signs, the transaction an opening names."""


def _short(data: bytes | str) -> str:
    hexed = data if isinstance(data, str) else to_hex(data)
    return f"{hexed[:10]}…{hexed[-4:]}"


def anonymous_job(
    console: Console, consortium: LocalConsortium, wallet: Wallet, home: GatewayClient, keys: PaymentKeys, job: dict
) -> AnonymousRun:
    """alice joins physics at hpc-a, then runs `job` at cloud-b under a group signature; shows what cloud-b saw."""
    with GatewayClient(consortium.url(CHECK)) as check:  # another member's gateway confirms hpc-a's answer
        membership = join_group(home, "alice", wallet, PROJECT, check=check)
    say(
        console,
        f"alice joined {PROJECT}@{HOME}: her secret stayed in her wallet; {HOME} signed a credential "
        f"over its commitment (blind) and keeps her tracing key T; {CHECK}'s gateway confirmed the supervisors' "
        f"key, {HOME}'s issuer key, epoch and the week's expiry, so nothing in it singles her out",
        "[green]✓[/]",
    )
    domain = signing_domain(home.consortium())
    submission = submit_anywhere(
        consortium.url(HOME), job, anonymously(membership, consortium.url(HOME), domain), centre=SERVING, keys=keys
    )
    with submission.client:
        result = finish(submission, keys)
    with GatewayClient(consortium.url(SERVING)) as serving:
        entry = serving.decision(submission.view["decision"])["entry"]
    signature_hash = from_hex(result.view["record"]["data"]["group_signature"], size=32, what="group_signature")
    principal = entry["principal"]
    seen = table(f"what {SERVING} saw", "value", title=f"An anonymous job at {SERVING}")
    seen.add_row("principal (Cedar)", principal["id"])
    seen.add_row("its attributes", ", ".join(f"{k}={v}" for k, v in sorted(principal["attrs"].items())))
    seen.add_row("its groups", ", ".join(principal["groups"]))
    seen.add_row("payment account", submission.paid.account)
    seen.add_row("decision", f"{entry['decision']} by {', '.join(entry['policies'])}")
    seen.add_row("price (receipt)", xcc(result.price))
    seen.add_row("record's groupSignature", _short(signature_hash))
    console.print(seen)
    say(
        console,
        f"{SERVING} ran and billed a job of a member of {PROJECT}@{HOME}; no uid, name or key of alice",
        "[green]✓[/]",
    )
    return AnonymousRun(signature_hash, result.record or "", result.view["record"]["data"]["order"])


def supervised_opening(console: Console, consortium: LocalConsortium, run: AnonymousRun) -> bool:
    """cloud-b asks; ai-c forges a share (rejected, recorded); hpc-a and cloud-b open; hpc-a identifies."""
    supervision = Supervision.of(consortium.chain, consortium.deployment)
    opening = consortium.supervisor(SERVING).request(
        run.signature_hash, "demo: abuse report on an anonymous job", centre=SERVING
    )
    say(
        console,
        f"{SERVING} asks the supervisors to open the signature of record {_short(run.record)}, for the "
        f"order it signs ({_short(run.order)}): each supervisor checks it signs that order before sharing",
        "[yellow]![/]",
    )
    forged = G1Point() * Scalar(secrets.randbelow(1 << 128) + 1)
    supervision.submit_raw_share(consortium.centres[FORGER].account, opening, g1_raw(forged), 1, 2)
    for name in SHARERS:
        consortium.supervisor(name).share(opening, serving=SERVING)
    with GatewayClient(consortium.url(HOME)) as home:
        identified = home.identify(opening, consortium.operator_key(HOME))
    record = _identified(supervision, opening)
    view = overview(supervision, opening)
    (opened, shares), committee = view.openings[0], view.committee
    grid = table("on chain", "value", title=f"Opening {opening} (Supervision contract)")
    grid.add_row("asked by", opened.requester)
    grid.add_row("transaction (order)", _short(opened.transaction))
    grid.add_row("reason", opened.reason)
    for info in shares:
        name = committee.supervisors[info.index - 1]
        state = {ShareState.ACCEPTED: "accepted", ShareState.REJECTED: "[red]rejected: bad proof[/]"}
        grid.add_row(f"share of {name}", state.get(info.state, "none"))
    tracing_key = opened.tracing_key
    grid.add_row("result", f"T = {_short(g1_raw(tracing_key))}" if tracing_key else "not opened")
    grid.add_row(f"{HOME} names", _short(record) if record else "—")
    console.print(grid)
    ok = opened.opened and identified["uid"] == "alice" and record == from_hex(identified["enrolment"])
    mark = "[green]✓[/]" if ok else "[red]✗[/]"
    say(
        console,
        f"{len(SHARERS)} of {committee.n} supervisors opened it (threshold {committee.threshold}); {HOME} "
        f"mapped T to {identified['uid']} and recorded her enrolment id; the uid stays at {HOME}",
        mark,
    )
    return ok


def _identified(supervision: Supervision, opening: int, timeout: float = 30.0) -> bytes | None:
    """The enrolment the home recorded for `opening`, once its outbox has sent it."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        enrolment = supervision.opening(opening).enrolment
        if enrolment is not None:
            return enrolment
        time.sleep(0.1)
    return None
