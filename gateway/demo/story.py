"""`xcentre demo`: three centres on embedded defaults, one epoch from sign-on to audit.

Everything runs for real on this machine: an in-process chain (py-evm), one
embedded LDAP directory and one HTTP gateway per centre, jobs as processes.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from auth.directory import Directory
from auth.ldap_embedded import EmbeddedLdap
from auth.ldif import centre_ldif, service_dn
from gateway.books.auditor import audit_epoch
from gateway.client.dispatch import SignOn, submit_anywhere
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.wallet import Wallet
from gateway.demo.local import LocalConsortium, demo_spec
from ledger.chain import connect

#: Disclosed with every presentation; not worth showing.
HOUSEKEEPING = {"home", "revocation_epoch", "expires_at"}

BURN = "import sys; n = int(sys.argv[1]); print(sum(i * i for i in range(n)))"


def _job(n: int, centre: str, **resources: object) -> dict:
    return {"command": ["python3", "-c", BURN, str(n)], "walltime": 60, "centre": centre, "resources": resources}


#: (user, home centre, password, gateway used, job, what the reader should see)
SCENARIO = [
    ("alice", "hpc-a", "alice-pw", "hpc-a", _job(2_000_000, "cloud-b"), "submitted at home, runs at cloud-b"),
    (
        "alice",
        "hpc-a",
        "alice-pw",
        "hpc-a",
        _job(500_000, "auto", queue="gpu", gpus=1),
        "GPU job: placement finds ai-c",
    ),
    ("alice", "hpc-a", "alice-pw", "cloud-b", _job(1_000_000, "auto"), "placement asked at another gateway"),
    ("carol", "cloud-b", "carol-pw", "cloud-b", _job(3_000_000, "hpc-a"), "cloud user on the supercomputer"),
    ("dave", "ai-c", "dave-pw", "ai-c", _job(1_500_000, "auto"), "cheapest CPU centre wins"),
    ("bob", "hpc-a", "bob-pw", "hpc-a", _job(1_000, "hpc-a") | {"walltime": 7200}, "a student's 2-hour job"),
]


def run_demo(console: Console | None = None) -> bool:
    """Run the demo; True when every figure of the epoch verified against the chain."""
    console = console or Console()
    spec = demo_spec()
    chain = connect("embedded")
    service_password = secrets.token_urlsafe(16)
    ldaps = {
        c.name: EmbeddedLdap(centre_ldif(c.base_dn, c.users, c.groups, service_password=service_password))
        for c in spec.centres
    }
    with tempfile.TemporaryDirectory(prefix="xcentre-demo-") as tmp:
        directories = {
            c.name: Directory(ldaps[c.name].start(), c.base_dn, service_dn(c.base_dn), service_password, centre=c.name)
            for c in spec.centres
        }
        consortium = LocalConsortium(chain, spec, directories, Path(tmp))
        try:
            consortium.start()
            return _story(console, consortium)
        finally:
            consortium.stop()
            for ldap in ldaps.values():
                ldap.stop()


def _story(console: Console, consortium: LocalConsortium) -> bool:
    console.rule("[bold]xcentre demo: one consortium, one identity, one set of books")
    members = Table(
        "centre", "kind", "gateway", "per cpu-s", "per gpu-s", "per GiB-h", title="Member centres (from the chain)"
    )
    for c in consortium.spec.centres:
        members.add_row(
            c.name,
            c.title,
            consortium.url(c.name),
            str(c.prices.per_cpu_second),
            str(c.prices.per_gpu_second),
            str(c.prices.per_gib_hour),
        )
    console.print(members)

    people = {user: (home, password) for user, home, password, *_ in SCENARIO}
    wallets = {user: _enrol(console, consortium, user, home, password) for user, (home, password) in people.items()}

    outcomes: list[tuple[str, str, str, dict | GatewayRefused, str]] = []  # ..., the finished job or the refusal
    for user, home, _, gateway, scenario_job, note in SCENARIO:
        job = dict(scenario_job)
        centre = job.pop("centre")

        def sign_on(client: GatewayClient, name: str, wallet: Wallet = wallets[user], user: str = user) -> None:
            session = client.sign_on(wallet, name)
            shown = ", ".join(f"{k}={v}" for k, v in session["disclosed"].items() if k not in HOUSEKEEPING)
            console.print(
                f"[green]✓[/] {user} signed on at [bold]{name}[/] as {session['principal']} "
                f"with a BBS proof, disclosing {shown or 'nothing else'}"
            )

        try:
            submission = submit_anywhere(
                consortium.url(gateway), job, SignOn(wallets[user].home_url, sign_on), centre=centre
            )
        except GatewayRefused as refusal:
            outcomes.append((user, home, gateway, refusal, note))
            continue
        with submission.client as client:
            outcomes.append((user, home, gateway, client.wait(submission.view["id"]), note))

    jobs = Table("user", "placed via", "ran at", "status", "cpu ms", "price", "note", title="Jobs")
    for user, home, gateway, run, note in outcomes:
        if isinstance(run, GatewayRefused):
            jobs.add_row(f"{user}@{home}", gateway, "—", f"[red]refused ({run.status})[/]", "", "", note)
            continue
        usage = run["usage"]
        jobs.add_row(
            f"{user}@{home}",
            gateway,
            run["serving_centre"],
            run["status"],
            str(usage["cpu_millis"]),
            str(usage["price"]),
            note,
        )
    console.print(jobs)
    for user, _, _, run, _ in outcomes:
        for reason in run.reasons if isinstance(run, GatewayRefused) else ():
            console.print(f"[red]✗[/] {user}'s job refused — {reason}")

    for c in consortium.spec.centres:
        with GatewayClient(consortium.url(c.name)) as client:
            closure = client.close_epoch(consortium.operator_key(c.name))
        console.print(
            f"[green]✓[/] {c.name} closed epoch {closure['epoch']}: {closure['record_count']} records, "
            f"root {closure['root'][:18]}…, claims {closure['claims'] or '{}'}"
            + (" — [bold]epoch settled[/]" if closure["settled"] else "")
        )

    epoch = 1
    with GatewayClient(consortium.url(consortium.spec.centres[0].name)) as client:
        view = client.audit_epoch(epoch)
    books = Table("centre", "records", "claims on others", "net position", title=f"Epoch {epoch} on chain")
    for name, anchor in view["anchors"].items():
        claims = ", ".join(f"{d}: {a}" for d, a in anchor["claims"].items()) or "—"
        books.add_row(name, str(anchor["record_count"]), claims, f"{view['net_positions'].get(name, 0):+d}")
    console.print(books)
    for t in view["transfers"]:
        console.print(f"  settlement transfer: {t['from']} → {t['to']}: {t['amount']} credit")

    report = audit_epoch(consortium.chain, consortium.deployment, epoch)
    for finding in report.findings:
        console.print(f"[red]✗ {finding}[/]")
    verdict = "[green]verified against the chain[/]" if report.ok else "[red]NOT verified[/]"
    console.print(f"Audit of epoch {epoch}: every record, root, claim and net position {verdict}")
    return report.ok and _revocation(console, consortium, wallets)


def _enrol(console: Console, consortium: LocalConsortium, user: str, home: str, password: str) -> Wallet:
    with GatewayClient(consortium.url(home)) as client:
        wallet = Wallet.from_issuance(consortium.url(home), client.credential(user, password))
    console.print(
        f"[green]✓[/] {user} fetched a BBS credential at home centre [bold]{home}[/] (the password goes nowhere else)"
    )
    return wallet


def _revocation(console: Console, consortium: LocalConsortium, wallets: dict[str, Wallet]) -> bool:
    """Revoke bob at home; every centre refuses him within seconds, and alice refreshes."""
    console.rule("Revocation")
    with GatewayClient(consortium.url("hpc-a")) as home:
        answer = home.revoke("bob", consortium.operator_key("hpc-a"))
    if not answer["revoked"]:
        console.print(f"[red]✗ hpc-a's revocation of bob is not on chain ({answer['status']})[/]")
        return False
    console.print("[yellow]![/] hpc-a's operator revoked bob's enrolment on chain")
    started = time.monotonic()
    refusal = None
    while refusal is None and time.monotonic() - started < 10:
        with GatewayClient(consortium.url("cloud-b")) as client:
            try:
                client.sign_on(wallets["bob"])
                time.sleep(0.1)
            except GatewayRefused as exc:
                refusal = exc
    if refusal is None:
        console.print("[red]✗ cloud-b still accepts bob's credential[/]")
        return False
    console.print(f"[green]✓[/] {time.monotonic() - started:.1f} s later cloud-b refuses bob: {refusal.error}")
    try:
        _enrol(console, consortium, "bob", "hpc-a", "bob-pw")
        console.print("[red]✗ hpc-a issued bob a new credential[/]")
        return False
    except GatewayRefused as exc:
        console.print(f"[green]✓[/] bob cannot refresh at home either: {exc.error}")
    wallets["alice"] = _enrol(console, consortium, "alice", "hpc-a", "alice-pw")
    with GatewayClient(consortium.url("cloud-b")) as client:
        session = client.sign_on(wallets["alice"])
    console.print(
        f"[green]✓[/] alice's refreshed credential signs on at cloud-b again as {session['principal']}; "
        "her sign-ons stay unlinkable"
    )
    return True
