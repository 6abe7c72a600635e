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
from rich.text import Text

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
from gateway.demo.show import CLOSING, LEGEND, NET_LEGEND, amount, column, net, say, table, xcc
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
            ok = _story(console, consortium)
            console.rule("What next")
            say(console, CLOSING)
            return ok
        finally:
            consortium.stop()
            for ldap in ldaps.values():
                ldap.stop()


def _story(console: Console, consortium: LocalConsortium) -> bool:
    console.rule("[bold]xcentre demo: one consortium, one identity, one set of books")
    say(console, LEGEND)
    console.print(_members_table(consortium))
    console.print(_policy_table(consortium))
    collateral_before = _collateral(consortium)

    wallets = {user: _enrol(console, consortium, user, home, password) for user, (home, password) in PEOPLE.items()}
    homes = {user: _home_session(consortium, user, home, password) for user, (home, password) in PEOPLE.items()}
    projects_before = _projects(homes)
    console.print(_project_table("Projects before (each home's allocations)", projects_before))

    keys = PaymentKeys()
    vanished: list[tuple[Submission, dict]] = []
    rows: list[_JobRow] = []
    for step in SCENARIO:
        sign_on = with_wallet(wallets[step.user], homes[step.user])
        who = f"{step.user}@{PEOPLE[step.user][0]}"
        try:
            submission = submit_anywhere(consortium.url(step.gateway), step.job, sign_on, centre=step.centre, keys=keys)
        except GatewayRefused as refusal:
            rows.append(_JobRow(who, "—", None, f"[red]refused ({refusal.status})[/]", ""))
            for reason in refusal.reasons:
                say(console, f"{step.user}'s job refused — {reason}", "[red]✗[/]")
            continue
        if step.pays == "vanishes":
            view = submission.client.wait(submission.view["id"])
            vanished.append((submission, view))
            price = (view.get("usage") or {}).get("price")
            paid_by = _paid_by(view["status"], "[yellow]no receipt[/]")
            rows.append(_JobRow(who, submission.centre, price, paid_by, "sealed"))
            continue
        with submission.client:
            result = finish(submission, keys)
        paid_by = _paid_by(result.view["status"], "receipt" if result.record else "unbilled")
        output = result.stdout.strip().splitlines()[-1:] or [""]
        rows.append(_JobRow(who, submission.centre, result.price, paid_by, output[0]))
    console.print(_jobs_table(rows))

    console.rule("An anonymous job, under a group signature")
    anonymous = anonymous_job(console, consortium, wallets["alice"], homes["alice"], keys, _job(800_000))

    unused = _abandoned_order(consortium, wallets["alice"], homes["alice"], "cloud-b", _job(1_000) | {"walltime": 5})
    say(
        console,
        f"alice's home granted an order for cloud-b, holding {xcc(unused)} of her project; then her client "
        "went away: the job is never submitted",
        "[yellow]![/]",
    )

    console.rule("Epoch 1: anchors, the dispute window, settlement")
    for c in consortium.spec.centres:
        with GatewayClient(consortium.url(c.name)) as client:
            closure = client.close_epoch(consortium.operator_key(c.name))
        claims = ", ".join(f"{xcc(total)} on {home}" for home, total in closure["claims"].items()) or "none"
        records = _count(closure["record_count"], "record")
        say(console, f"{c.name} closed epoch 1: {records}; claims {claims}", "[green]✓[/]")
    console.print(_decision_logs(consortium, epoch=1))

    console.rule("Epoch 2: ai-c cheats")
    cheat = anchor_made_up_claim(consortium, "ai-c", epoch=2, debtor="hpc-a", records=5, total=250_000_000)
    say(
        console,
        f"ai-c anchors epoch 2 with {cheat.records} made-up records billed to hpc-a, claiming {xcc(cheat.total)} "
        "(no grant of hpc-a's stands behind them)",
        "[yellow]![/]",
    )
    for name in ("hpc-a", "cloud-b"):
        with GatewayClient(consortium.url(name)) as client:
            client.close_epoch(consortium.operator_key(name))

    ok = True
    for epoch in (1, 2):
        settled = _settled(consortium, epoch)
        if settled is None:
            say(console, f"[red]epoch {epoch} did not settle[/]", "[red]✗[/]")
            return False
        _show_epoch(console, settled, legend=epoch == 1)
    ok &= _vanished_payers(console, {PEOPLE[u][0]: c for u, c in homes.items()}, vanished)

    console.print(_collateral_table(collateral_before, _collateral(consortium)))
    say(
        console,
        f"Most of hpc-a's gain and ai-c's loss is ai-c's anchor bond ({xcc(_anchor_bond(consortium))}), "
        "forfeited to hpc-a for the void claim; the rest is epoch 1's settlement.",
    )

    projects_after = _wait_for_refunds(homes)
    console.print(_project_table("Projects after (paid by receipts and reveals)", projects_after))
    for user, (home, _) in PEOPLE.items():
        for hold in homes[user].balance()["holds"]:
            if hold["status"] == "refunded":
                say(
                    console,
                    f"{user}@{home}'s unused order for {hold['centre']} was refunded after its deadline: "
                    f"{xcc(hold['amount'])}",
                    "[green]✓[/]",
                )

    for epoch in (1, 2):
        report = audit_epoch(consortium.chain, consortium.deployment, epoch)
        for finding in report.findings:
            say(console, f"[red]{finding}[/]", "[red]✗[/]")
        verdict = "[green]verified against the chain[/]" if report.ok else "[red]NOT verified[/]"
        say(console, f"Audit of epoch {epoch}: every record, order, grant, price, claim and net position {verdict}")
        ok &= report.ok
    ok &= _decision_audit(console, consortium, "hpc-a", epoch=1)
    console.rule("A supervised opening, on the record")
    ok &= supervised_opening(console, consortium, anonymous)
    for client in homes.values():
        client.close()
    return ok and _revocation(console, consortium, wallets)


def _policy_table(consortium: LocalConsortium) -> Table:
    """Each centre's policy version and hash from the chain, and whether its gateway serves that very text."""
    grid = table("centre", "version", "sha256 (on chain)", "text at its gateway", title="Cedar access policies")
    for name in consortium.centres:
        versions = policies.history(consortium.chain, consortium.deployment, name)
        with GatewayClient(consortium.url(name)) as client:
            served = client.policy()
        try:
            latest = policies.check_latest(versions, served["policy"], served["schema"])
            verdict = "[green]✓ the published one[/]"
        except policies.PolicyTextMismatch:
            latest, verdict = versions[-1], "[red]✗ not the published one[/]"
        grid.add_row(name, f"v{latest.version}", _short(latest.policy_hash), verdict)
    return grid


def _decision_logs(consortium: LocalConsortium, epoch: int, timeout: float = 30.0) -> Table:
    """Each centre's decision log of `epoch` as anchored on chain: how many decisions, and their Merkle root."""
    ledger = bind(consortium.chain, consortium.deployment, named=True).usage_ledger.functions
    grid = table("centre", "decisions", "Merkle root", title=f"Decision logs, epoch {epoch}, on chain")
    ends = time.monotonic() + timeout
    for name in consortium.centres:
        while not ledger.anchorOf(centre_id(name), epoch).call().anchored and time.monotonic() < ends:
            time.sleep(0.1)
        root, count = ledger.decisionsOf(centre_id(name), epoch).call()
        grid.add_row(name, str(count), _short(bytes(root)))
    return grid


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
    say(
        console,
        f"Audit of {centre}'s decisions in epoch {epoch}, by the consortium's auditor (its log, from {centre}):",
    )
    say(console, f"{audit.entries} entries, root {_short(log.anchored_root)} as anchored on chain", indent=2)
    say(
        console,
        f"re-evaluated {audit.reevaluated} with policy {versions} in {audit.seconds:.3f} s: "
        + (f"each as logged ({audit.allows} allow, {audit.denies} deny)" if audit.ok else "[red]not all as logged[/]"),
        indent=2,
    )
    for finding in audit.findings:
        say(console, f"[red]✗ {finding.message}[/]", indent=2)
    refused = _refusal_again(console, log)
    verdict = "[green]verified against the chain[/]" if audit.ok and refused else "[red]NOT verified[/]"
    say(console, f"Audit of {centre}'s decisions in epoch {epoch}: {verdict}")
    return audit.ok and refused


def _refusal_again(console: Console, log: DecisionLog) -> bool:
    """The refusal of bob's two-hour job, decided again with the published text, for all to see."""
    denies = [e for e in log.entries if e["decision"] == "deny" and e["context"].get("walltime") == 7200]
    if len(denies) != 1 or log.texts.get(denies[0]["policy_version"]) is None:
        say(
            console, f"[red]✗ the log holds {len(denies)} refusals of a 2-hour job; bob's was refused once[/]", indent=2
        )
        return False
    entry = denies[0]
    version = entry["policy_version"]
    again = PolicyEngine(*log.texts[version]).decide_request(cedar_request(entry))
    principal = entry["principal"]
    say(
        console,
        f"bob's 2-hour job ({entry['context']['walltime']} s), refused to {principal['id']}, a "
        f"{principal['attrs'].get('employee_type', '?')}:",
        indent=2,
    )
    logged, given = ", ".join(entry["policies"]), ", ".join(again.policies)
    outcome = "allow" if again.allowed else "deny"
    say(console, f"logged deny by {logged}; policy v{version} again: {outcome} by {given}", indent=2)
    return not again.allowed and again.policies == entry["policies"]


def _enrol(console: Console, consortium: LocalConsortium, user: str, home: str, password: str) -> Wallet:
    with GatewayClient(consortium.url(home)) as client:
        wallet = Wallet.from_issuance(consortium.url(home), client.credential(user, password))
    say(
        console,
        f"{user} fetched a BBS credential at home centre [bold]{home}[/] (the password goes nowhere else)",
        "[green]✓[/]",
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
    figures = ("allocation", "held", "spent", "available")
    grid = table("project", *figures, title=f"{title}, in XCC", right=figures)
    columns = [column([p[f] for p in projects.values()]) for f in figures]
    for i, name in enumerate(projects):
        grid.add_row(name, *(c[i] for c in columns))
    return grid


def _members_table(consortium: LocalConsortium) -> Table:
    """The member centres and their prices (in XCC per CPU-second, GPU-second and GiB-hour)."""
    figures = ("per CPU-s", "per GPU-s", "per GiB-h")
    grid = table("centre", "kind", *figures, title="Member centres and their prices in XCC", right=figures)
    centres = consortium.spec.centres
    prices = [
        column([c.prices.per_cpu_second for c in centres]),
        column([c.prices.per_gpu_second for c in centres]),
        column([c.prices.per_gib_hour for c in centres]),
    ]
    for i, c in enumerate(centres):
        grid.add_row(c.name, c.title, *(p[i] for p in prices))
    return grid


@dataclass(frozen=True)
class _JobRow:
    """One job of the story's table: who, where it ran, its price (micro-credits), how it was paid, its output."""

    who: str
    centre: str
    price: int | None
    paid_by: str
    output: str


def _paid_by(status: str, paid_by: str) -> str:
    """How a job was paid, with its status when it did not simply succeed."""
    return paid_by if status == "succeeded" else f"{status}; {paid_by}"


def _jobs_table(rows: list[_JobRow]) -> Table:
    grid = table("user", "ran at", "price", "paid by", "output", title="Jobs (prices in XCC; outputs opened with k)")
    grid.columns[2].justify = "right"
    prices = iter(column([r.price for r in rows if r.price is not None]))
    for r in rows:
        grid.add_row(r.who, r.centre, "" if r.price is None else next(prices), r.paid_by, r.output)
    return grid


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _collateral_table(before: dict[str, int], after: dict[str, int]) -> Table:
    figures = ("before", "after", "change")
    grid = table("centre", *figures, title="Collateral in Settlement, in XCC", right=figures)
    names = list(before)
    columns = [
        column([before[n] for n in names]),
        column([after[n] for n in names]),
        column([after[n] - before[n] for n in names], signed=True),
    ]
    for i, name in enumerate(names):
        grid.add_row(name, *(c[i] for c in columns))
    return grid


def _collateral(consortium: LocalConsortium) -> dict[str, int]:
    """Each member's collateral, read from the chain as an auditor would."""
    settlement = bind(consortium.chain, consortium.deployment).settlement.functions
    return {
        name: int(settlement.collateralOf(running.account.address).call()[0])
        for name, running in consortium.centres.items()
    }


def _anchor_bond(consortium: LocalConsortium) -> int:
    """The collateral each anchor locks, and a void claim forfeits to the disputing home."""
    return int(bind(consortium.chain, consortium.deployment).settlement.functions.anchorBond().call())


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


def _show_epoch(console: Console, view: dict, legend: bool) -> None:
    epoch = view["epoch"]
    books = table("centre", "records", "claims on homes", "net", title=f"Epoch {epoch} on chain, in XCC")
    books.columns[3].justify = "right"
    names = list(view["anchors"])
    nets = column([view["net_positions"][n] for n in names], signed=True)
    for name, shown in zip(names, nets, strict=True):
        claims = [
            f"[strike]{home}: {amount(c['total'])}[/strike] void" if c["voided"] else f"{home}: {amount(c['total'])}"
            for home, c in view["anchors"][name]["homes"].items()
            if home != name
        ]
        record_count = str(view["anchors"][name]["record_count"])
        books.add_row(name, record_count, "\n".join(claims) or "—", net(view["net_positions"][name], shown))
    console.print(books)
    if legend:
        say(console, Text(NET_LEGEND, style="dim"))
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
        say(console, f"{home} disputed {which} of {centre}'s claim ({kind}) → {outcome}", indent=2)
    for t in view["transfers"]:
        say(console, f"settlement: {t['from']} pays {t['to']} {xcc(t['amount'])} from its collateral", indent=2)


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
            say(
                console, f"[red]no key on chain for {submission.centre}'s job {view['id']}: {exc.error}[/]", "[red]✗[/]"
            )
            ok = False
            continue
        finally:
            submission.client.close()
        say(
            console,
            f"the payer of {submission.centre}'s job gave no receipt: {submission.centre} was paid by "
            f"revealing k on chain, and the payer reads k at home and opens the result: {stdout.strip()}",
            "[green]✓[/]",
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
        say(console, f"[red]hpc-a's revocation of bob is not on chain ({answer['status']})[/]", "[red]✗[/]")
        return False
    say(console, "hpc-a's operator revoked bob's enrolment on chain", "[yellow]![/]")
    started = time.monotonic()
    refusal = _first_refusal(lambda: _sign_on(consortium, "cloud-b", wallets["bob"]), timeout=10)
    if refusal is None:
        say(console, "[red]cloud-b still accepts bob's credential[/]", "[red]✗[/]")
        return False
    say(console, f"{time.monotonic() - started:.1f} s later cloud-b refuses bob: {refusal.error}", "[green]✓[/]")
    try:
        _enrol(console, consortium, "bob", "hpc-a", "bob-pw")
        say(console, "[red]hpc-a issued bob a new credential[/]", "[red]✗[/]")
        return False
    except GatewayRefused as exc:
        say(console, f"bob cannot refresh at home either: {exc.error}", "[green]✓[/]")
    wallets["alice"] = _enrol(console, consortium, "alice", "hpc-a", "alice-pw")
    session = _sign_on(consortium, "cloud-b", wallets["alice"])
    say(
        console,
        f"alice's refreshed credential signs on at cloud-b again as {session['principal']}; "
        "her sign-ons stay unlinkable",
        "[green]✓[/]",
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
