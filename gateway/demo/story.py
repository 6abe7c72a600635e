"""`xcentre demo`: three centres on embedded defaults, two epochs from sign-on to audit.

Everything runs for real on this machine: an in-process chain (py-evm), one
embedded LDAP directory and one HTTP gateway per centre, jobs as sandboxed
processes. One job runs anonymously, under a group signature that the
supervisors later open together, on the record. Every job is paid for: a user's order, the home's grant, a receipt
for the key that opens the result. One payer vanishes (the centre is paid by
revealing the key on chain), one order is never used (its hold is refunded),
and one member cheats (its claim is voided by a dispute).
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from auth.directory import Directory
from auth.ldap_embedded import EmbeddedLdap
from auth.ldif import centre_ldif, service_dn
from auth.policy import PolicyEngine
from gateway.books.auditor import audit_epoch
from gateway.client.auditing import DecisionLog, audit_log, fetch_decision_log
from gateway.client.dispatch import Submission, finish, submit_anywhere, with_wallet
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.paying import Quote, check_record, open_result, pay, signing_domain
from gateway.client.wallet import PaymentKeys, Wallet
from gateway.demo.anonymous import anonymous_job, supervised_opening
from gateway.demo.cheat import anchor_made_up_claim
from gateway.demo.local import LocalConsortium, demo_spec
from gateway.node.orders import DEADLINE_MARGIN
from ledger import policies
from ledger.chain import connect
from ledger.decisions import cedar_request
from ledger.deploy import bind
from ledger.ids import centre_id, centre_name
from ledger.primitives.hex import to_hex

BURN = "import sys; n = int(sys.argv[1]); print(sum(i * i for i in range(n)))"


def _job(n: int, **resources: object) -> dict:
    return {"command": ["python3", "-c", BURN, str(n)], "walltime": 60, "resources": resources}


@dataclass(frozen=True)
class Step:
    """One job of the story: who, where it is submitted, and how it is paid."""

    user: str
    gateway: str
    centre: str
    job: dict
    pays: str = "receipt"  # or "vanishes": no receipt, the centre is paid by revealing k


PEOPLE = {
    "alice": ("hpc-a", "alice-pw"),
    "bob": ("hpc-a", "bob-pw"),
    "carol": ("cloud-b", "carol-pw"),
    "dave": ("ai-c", "dave-pw"),
}

SCENARIO = [
    Step("alice", "hpc-a", "cloud-b", _job(2_000_000)),  # submitted at home, runs at cloud-b
    Step("alice", "hpc-a", "auto", _job(500_000, queue="gpu", gpus=1)),  # a GPU job: placement finds ai-c
    Step("alice", "cloud-b", "auto", _job(1_000_000)),  # placement asked at another gateway
    Step("carol", "cloud-b", "hpc-a", _job(3_000_000), "vanishes"),  # on the supercomputer, then gone
    Step("dave", "ai-c", "auto", _job(1_500_000)),  # the cheapest CPU centre wins
    Step("bob", "hpc-a", "hpc-a", _job(1_000) | {"walltime": 7200}),  # a student's 2-hour job: refused
]


def run_demo(console: Console | None = None) -> bool:
    """Run the demo; True when every figure of both epochs verified against the chain."""
    console = console or Console()
    logging.getLogger("gateway.books").setLevel(logging.ERROR)  # the story tells of disputes; no need twice
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
    members = Table("centre", "kind", "per cpu-s", "per gpu-s", "per GiB-h", title="Member centres (from the chain)")
    for c in consortium.spec.centres:
        prices = c.prices
        members.add_row(
            c.name, c.title, str(prices.per_cpu_second), str(prices.per_gpu_second), str(prices.per_gib_hour)
        )
    console.print(members)
    console.print(_policy_table(consortium))
    collateral_before = _collateral(consortium)

    wallets = {user: _enrol(console, consortium, user, home, password) for user, (home, password) in PEOPLE.items()}
    homes = {user: _home_session(consortium, user, home, password) for user, (home, password) in PEOPLE.items()}
    projects_before = _projects(homes)
    console.print(_project_table("Projects before (each home's allocations)", projects_before))

    keys = PaymentKeys()
    vanished: list[tuple[Submission, dict]] = []
    rows: list[tuple[str, ...]] = []
    for step in SCENARIO:
        sign_on = with_wallet(wallets[step.user], homes[step.user])
        who = f"{step.user}@{PEOPLE[step.user][0]}"
        try:
            submission = submit_anywhere(consortium.url(step.gateway), step.job, sign_on, centre=step.centre, keys=keys)
        except GatewayRefused as refusal:
            rows.append((who, "—", f"[red]refused ({refusal.status})[/]", "", "", ""))
            for reason in refusal.reasons:
                console.print(f"[red]✗[/] {step.user}'s job refused — {reason}")
            continue
        if step.pays == "vanishes":
            view = submission.client.wait(submission.view["id"])
            vanished.append((submission, view))
            price = (view.get("usage") or {}).get("price", "")
            rows.append((who, submission.centre, view["status"], str(price), "[yellow]no receipt[/]", "sealed"))
            continue
        with submission.client:
            result = finish(submission, keys)
        paid_by = "receipt" if result.record else "unbilled"
        output = result.stdout.strip().splitlines()[-1:] or [""]
        rows.append((who, submission.centre, result.view["status"], str(result.price), paid_by, output[0][:14]))
    jobs = Table("user", "ran at", "status", "price", "paid by", "output", title="Jobs (outputs opened with k)")
    for row in rows:
        jobs.add_row(*row)
    console.print(jobs)

    console.rule("An anonymous job, under a group signature")
    anonymous = anonymous_job(console, consortium, wallets["alice"], homes["alice"], keys, _job(800_000))

    unused = _abandoned_order(consortium, wallets["alice"], homes["alice"], "cloud-b", _job(1_000) | {"walltime": 5})
    console.print(
        f"[yellow]![/] alice's home granted an order for cloud-b (holding {unused}), then her client went away: "
        "the job is never submitted"
    )

    console.rule("Epoch 1: anchors, the dispute window, settlement")
    for c in consortium.spec.centres:
        with GatewayClient(consortium.url(c.name)) as client:
            closure = client.close_epoch(consortium.operator_key(c.name))
        claims = ", ".join(f"{home}: {total}" for home, total in closure["claims"].items()) or "none"
        console.print(f"[green]✓[/] {c.name} closed epoch 1: {closure['record_count']} records; claims {claims}")
    console.print(_decision_logs(consortium, epoch=1))

    console.rule("Epoch 2: ai-c cheats")
    cheat = anchor_made_up_claim(consortium, "ai-c", epoch=2, debtor="hpc-a", records=5, total=250_000_000)
    console.print(
        f"[yellow]![/] ai-c anchors epoch 2 with {cheat.records} made-up records billed to hpc-a, "
        f"claiming {cheat.total} (no grant of hpc-a's stands behind them)"
    )
    for name in ("hpc-a", "cloud-b"):
        with GatewayClient(consortium.url(name)) as client:
            client.close_epoch(consortium.operator_key(name))

    ok = True
    for epoch in (1, 2):
        settled = _settled(consortium, epoch)
        if settled is None:
            console.print(f"[red]✗ epoch {epoch} did not settle[/]")
            return False
        _show_epoch(console, settled)
    ok &= _vanished_payers(console, {PEOPLE[u][0]: c for u, c in homes.items()}, vanished)

    collateral_after = _collateral(consortium)
    table = Table("centre", "before", "after", "change", title="Collateral held by the Settlement contract")
    for name, before in collateral_before.items():
        after = collateral_after[name]
        table.add_row(name, str(before), str(after), f"{after - before:+d}")
    console.print(table)

    projects_after = _wait_for_refunds(homes)
    console.print(_project_table("Projects after (paid by receipts and reveals)", projects_after))
    for user, (home, _) in PEOPLE.items():
        for hold in homes[user].balance()["holds"]:
            if hold["status"] == "refunded":
                console.print(
                    f"[green]✓[/] {user}@{home}'s unused order for {hold['centre']} was refunded after its deadline: "
                    f"{hold['amount']}"
                )

    for epoch in (1, 2):
        report = audit_epoch(consortium.chain, consortium.deployment, epoch)
        for finding in report.findings:
            console.print(f"[red]✗ {finding}[/]")
        verdict = "[green]verified against the chain[/]" if report.ok else "[red]NOT verified[/]"
        console.print(f"Audit of epoch {epoch}: every record, order, grant, price, claim and net position {verdict}")
        ok &= report.ok
    ok &= _decision_audit(console, consortium, "hpc-a", epoch=1)
    console.rule("A supervised opening, on the record")
    ok &= supervised_opening(console, consortium, anonymous)
    for client in homes.values():
        client.close()
    return ok and _revocation(console, consortium, wallets)


def _policy_table(consortium: LocalConsortium) -> Table:
    """Each centre's policy version and hash from the chain, and whether its gateway serves that very text."""
    table = Table("centre", "version", "sha256 (on chain)", "text at its gateway", title="Cedar access policies")
    for name in consortium.centres:
        versions = policies.history(consortium.chain, consortium.deployment, name)
        with GatewayClient(consortium.url(name)) as client:
            served = client.policy()
        try:
            latest = policies.check_latest(versions, served["policy"], served["schema"])
            verdict = "[green]✓ the published one[/]"
        except policies.PolicyTextMismatch:
            latest, verdict = versions[-1], "[red]✗ not the published one[/]"
        table.add_row(name, f"v{latest.version}", _short(latest.policy_hash), verdict)
    return table


def _decision_logs(consortium: LocalConsortium, epoch: int, timeout: float = 30.0) -> Table:
    """Each centre's decision log of `epoch` as anchored on chain: how many decisions, and their Merkle root."""
    ledger = bind(consortium.chain, consortium.deployment, named=True).usage_ledger.functions
    table = Table("centre", "decisions", "Merkle root", title=f"Decision logs, epoch {epoch}, on chain")
    ends = time.monotonic() + timeout
    for name in consortium.centres:
        while not ledger.anchorOf(centre_id(name), epoch).call().anchored and time.monotonic() < ends:
            time.sleep(0.1)
        root, count = ledger.decisionsOf(centre_id(name), epoch).call()
        table.add_row(name, str(count), _short(bytes(root)))
    return table


def _short(digest: bytes) -> str:
    hexed = to_hex(digest)
    return f"{hexed[:10]}…{hexed[-4:]}"


def _decision_audit(console: Console, consortium: LocalConsortium, centre: str, epoch: int) -> bool:
    """The consortium's auditor (in every gateway's `auditors`: the whole log names users, so members do not
    read it) audits `centre`'s decisions of `epoch`: the log against its anchored root, and every decision
    taken again with the policy version published on chain; then bob's refusal again."""
    log = fetch_decision_log(consortium.chain, consortium.deployment, centre, epoch, consortium.auditor)
    audit = audit_log(log)
    versions = ", ".join(f"v{v}" for v in sorted({e["policy_version"] for e in log.entries}))
    console.print(
        f"Audit of {centre}'s decisions in epoch {epoch}, by the consortium's auditor (its log, from {centre}):"
    )
    console.print(f"  {audit.entries} entries, root {_short(log.anchored_root)} as anchored on chain")
    console.print(
        f"  re-evaluated {audit.reevaluated} with policy {versions} in {audit.seconds:.3f} s: "
        + (f"each as logged ({audit.allows} allow, {audit.denies} deny)" if audit.ok else "[red]not all as logged[/]")
    )
    for finding in audit.findings:
        console.print(f"[red]  ✗ {finding.message}[/]")
    refused = _refusal_again(console, log)
    verdict = "[green]verified against the chain[/]" if audit.ok and refused else "[red]NOT verified[/]"
    console.print(f"Audit of {centre}'s decisions in epoch {epoch}: {verdict}")
    return audit.ok and refused


def _refusal_again(console: Console, log: DecisionLog) -> bool:
    """The refusal of bob's two-hour job, decided again with the published text, for all to see."""
    denies = [e for e in log.entries if e["decision"] == "deny" and e["context"].get("walltime") == 7200]
    if len(denies) != 1 or log.texts.get(denies[0]["policy_version"]) is None:
        console.print(f"[red]  ✗ the log holds {len(denies)} refusals of a 2-hour job; bob's was refused once[/]")
        return False
    entry = denies[0]
    version = entry["policy_version"]
    again = PolicyEngine(*log.texts[version]).decide_request(cedar_request(entry))
    principal = entry["principal"]
    console.print(
        f"  bob's 2-hour job ({entry['context']['walltime']} s), refused to {principal['id']}, a "
        f"{principal['attrs'].get('employee_type', '?')}:"
    )
    logged, given = ", ".join(entry["policies"]), ", ".join(again.policies)
    outcome = "allow" if again.allowed else "deny"
    console.print(f"  logged deny by {logged}; policy v{version} again: {outcome} by {given}")
    return not again.allowed and again.policies == entry["policies"]


def _enrol(console: Console, consortium: LocalConsortium, user: str, home: str, password: str) -> Wallet:
    with GatewayClient(consortium.url(home)) as client:
        wallet = Wallet.from_issuance(consortium.url(home), client.credential(user, password))
    console.print(
        f"[green]✓[/] {user} fetched a BBS credential at home centre [bold]{home}[/] (the password goes nowhere else)"
    )
    return wallet


def _home_session(consortium: LocalConsortium, user: str, home: str, password: str) -> GatewayClient:
    """A password session at home: what grants the user's orders and shows their balance."""
    client = GatewayClient(consortium.url(home))
    client.login(user, password)
    return client


def _projects(homes: dict[str, GatewayClient]) -> dict[str, dict]:
    """Each user's project at their home, once per project."""
    projects: dict[str, dict] = {}
    for user, (home, _) in PEOPLE.items():
        project = homes[user].balance()["project"]
        projects[f"{project['name']}@{home}"] = project
    return projects


def _abandoned_order(consortium: LocalConsortium, wallet: Wallet, home: GatewayClient, centre: str, job: dict) -> int:
    """Sign an order for `job` at `centre` and get its grant, then never submit it: what the home holds."""
    with GatewayClient(consortium.url(centre)) as client:
        client.sign_on(wallet, centre)
        answer = client.quote(job | {"centre": centre})
    quote = Quote(centre, answer["rates_version"], answer["max_price"])
    paid = pay(job, quote, PaymentKeys().new(), home.grant, signing_domain(home.consortium()), slack=DEADLINE_MARGIN)
    return int(paid.grant["amount"])


def _project_table(title: str, projects: dict[str, dict]) -> Table:
    table = Table("project", "allocation", "held", "spent", "available", title=title)
    for name, p in projects.items():
        table.add_row(name, str(p["allocation"]), str(p["held"]), str(p["spent"]), str(p["available"]))
    return table


def _collateral(consortium: LocalConsortium) -> dict[str, int]:
    """Each member's collateral, read from the chain as an auditor would."""
    settlement = bind(consortium.chain, consortium.deployment).settlement.functions
    return {
        name: int(settlement.collateralOf(running.account.address).call()[0])
        for name, running in consortium.centres.items()
    }


def _settled(consortium: LocalConsortium, epoch: int, timeout: float = 60.0) -> dict | None:
    """The chain's view of `epoch` once it settled (after both windows), or None."""
    ends = time.monotonic() + timeout
    with GatewayClient(consortium.url("cloud-b")) as client:
        while time.monotonic() < ends:
            view = client.audit_epoch(epoch)
            if view["settled"]:
                return view
            time.sleep(0.25)
    return None


def _show_epoch(console: Console, view: dict) -> None:
    epoch = view["epoch"]
    books = Table("centre", "records", "claims (voided struck out)", "net", title=f"Epoch {epoch} on chain")
    for name, anchor in view["anchors"].items():
        claims = [
            f"[strike]{home}: {c['total']}[/strike]" if c["voided"] else f"{home}: {c['total']}"
            for home, c in anchor["homes"].items()
            if home != name
        ]
        books.add_row(name, str(anchor["record_count"]), ", ".join(claims) or "—", f"{view['net_positions'][name]:+d}")
    console.print(books)
    grouped: dict[tuple[str, str, bool, str], list[int]] = defaultdict(list)
    for d in view["disputes"]:
        grouped[(d["home"], d["centre"], d["need_key"], d["status"])].append(d["index"])
    for (home, centre, need_key, status), indices in grouped.items():
        which = ("record " if len(indices) == 1 else "records ") + ", ".join(f"#{i}" for i in indices)
        kind = "its user got no key" if need_key else "no evidence shown"
        outcome = {
            "answered": f"{centre} answered on chain with the order, the grant and "
            + ("the key, revealed" if need_key else "the receipt"),
            "voided": "[red]nobody could answer: the claim is void, the bond goes to " + home + "[/]",
        }.get(status, status)
        console.print(f"  {home} disputed {which} of {centre}'s claim ({kind}) → {outcome}")
    for t in view["transfers"]:
        console.print(f"  settlement: {t['from']} → {t['to']}: {t['amount']} credit, from collateral")


def _vanished_payers(
    console: Console, homes: dict[str, GatewayClient], vanished: list[tuple[Submission, dict]]
) -> bool:
    """A payer who never gave a receipt reads, at home, the key the centre revealed on chain to be paid."""
    ok = True
    for submission, view in vanished:
        record = check_record(view, submission.paid, submission.centre, submission.centre_account, submission.domain)
        home = homes[centre_name(record.home_centre)]
        try:
            key = home.revealed_key(view["lock_hash"])["key"]
            stdout, _ = open_result(view, record, key, submission.domain)
        except GatewayRefused as exc:
            console.print(f"[red]✗ no key on chain for {submission.centre}'s job {view['id']}: {exc.error}[/]")
            ok = False
            continue
        finally:
            submission.client.close()
        console.print(
            f"[green]✓[/] the payer of {submission.centre}'s job gave no receipt: {submission.centre} was paid by "
            f"revealing k on chain, and the payer reads k at home and opens the result: {stdout.strip()[:40]}"
        )
    return ok


def _wait_for_refunds(homes: dict[str, GatewayClient], timeout: float = 45.0) -> dict[str, dict]:
    """The projects once no hold of a job that never ran is outstanding (refunded after deadline + booking delay)."""
    ends = time.monotonic() + timeout
    while True:
        waiting = [
            h
            for user in PEOPLE
            for h in homes[user].balance()["holds"]
            if h["status"] == "held" and h["deadline"] < time.time() + DEADLINE_MARGIN
        ]
        if not waiting or time.monotonic() > ends:
            return _projects(homes)
        time.sleep(0.5)


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
    refusal = _first_refusal(lambda: _sign_on(consortium, "cloud-b", wallets["bob"]), timeout=10)
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
    session = _sign_on(consortium, "cloud-b", wallets["alice"])
    console.print(
        f"[green]✓[/] alice's refreshed credential signs on at cloud-b again as {session['principal']}; "
        "her sign-ons stay unlinkable"
    )
    return True


def _sign_on(consortium: LocalConsortium, centre: str, wallet: Wallet) -> dict:
    with GatewayClient(consortium.url(centre)) as client:
        return client.sign_on(wallet)


def _first_refusal(attempt: Callable[[], object], timeout: float) -> GatewayRefused | None:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        try:
            attempt()
        except GatewayRefused as exc:
            return exc
        time.sleep(0.1)
    return None
