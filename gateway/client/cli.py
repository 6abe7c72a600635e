"""The `xcentre` command line: demo, gateway, login, submit, epochs and audit."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.client import audit_report, governance
from gateway.client.dispatch import anonymously, finish, join_group, submit_anywhere, with_wallet
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable, job_signer
from gateway.client.idempotency import choose_key, submission_label
from gateway.client.paying import Paid, PaymentError, signing_domain
from gateway.client.wallet import PaymentKeys, Wallet
from gateway.consortium import cli as consortium_cli
from ledger.chain import ChainError
from ledger.payment import Order, order_digest
from ledger.primitives.hex import bytes32, from_hex, to_hex
from ledger.records import UsageRecord, record_digest

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from gateway.node.config import GatewayConfig

DEFAULT_WALLET = Path(os.environ.get("XCENTRE_HOME", Path.home() / ".xcentre")) / "wallet.json"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except GatewayRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except PaymentError as exc:
        print(f"not paid: {exc}", file=sys.stderr)
        return 5
    except (OSError, ValueError, TimeoutError, ChainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xcentre", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a three-centre consortium end to end on embedded defaults")
    demo.set_defaults(run=_demo)

    keygen = sub.add_parser("keygen", help="create a centre's chain, token and issuer keys")
    keygen.add_argument("--centre", required=True, help="the centre's name")
    keygen.add_argument("--dir", type=Path, required=True, help="where the secret keys go (mode 0600)")
    keygen.set_defaults(run=_keygen)

    deploy = sub.add_parser("deploy", help="deploy the consortium's contracts with its genesis members")
    deploy.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    deploy.add_argument("--key-file", type=Path, required=True, help="the deployer's hex chain key (pays gas only)")
    deploy.add_argument("--members", type=Path, required=True, help="the members file (TOML)")
    deploy.add_argument("--out", type=Path, required=True, help="where to write the deployment file")
    deploy.add_argument(
        "--fund-members",
        type=int,
        default=0,
        metavar="WEI",
        help="send each member account this much gas money (development chains)",
    )
    deploy.set_defaults(run=_deploy)

    gw = sub.add_parser("gateway", help="run a centre's gateway node")
    gw.add_argument("--config", type=Path, required=True, help="the centre's TOML configuration")
    gw.add_argument(
        "--log-format", choices=("text", "json"), help="log lines as text or one JSON object each (default: config)"
    )
    gw.set_defaults(run=_gateway)

    login = sub.add_parser("login", help="fetch or refresh your credential at your home centre")
    login.add_argument("--gateway", required=True, help="your home centre's gateway URL")
    login.add_argument("--user", required=True)
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    login.set_defaults(run=_login)

    submit = sub.add_parser(
        "submit",
        help="submit a job to a member centre: signs on there with your wallet, pays with an order your home grants",
    )
    submit.add_argument("--gateway", required=True, help="any member gateway: it ranks the centres for the job")
    submit.add_argument(
        "--user", help="your uid at home: home grants the job's order to a password sign-on (not with --anonymous)"
    )
    submit.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    submit.add_argument("--project", help="the project (a group with an allocation at home) to pay from")
    submit.add_argument(
        "--anonymous",
        action="store_true",
        help="sign nowhere in your name: quote, order and job under a group signature of your membership of the "
        "project (see `xcentre group join`); centres learn the project and your home only",
    )
    submit.add_argument(
        "--centre",
        default="auto",
        help="the centre to run the job, or 'auto' (default): the best-ranked centre that accepts it",
    )
    submit.add_argument("--walltime", type=int, default=600, help="walltime limit in seconds")
    submit.add_argument("--cores", type=int, default=1)
    submit.add_argument("--memory-mib", type=int, default=1024)
    submit.add_argument("--gpus", type=int, default=0)
    submit.add_argument("--queue", default="cpu")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job, check its record, give the receipt and show the outputs it releases",
    )
    submit.add_argument(
        "--idempotency-key",
        help="the submission's idempotency key (default: the key of this same submission's last run if it got no "
        "answer, kept in the wallet; else a fresh one)",
    )
    submit.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    submit.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    submit.set_defaults(run=_submit)

    group = sub.add_parser("group", help="your memberships of your home's projects, for anonymous jobs")
    gsub = group.add_subparsers(required=True, metavar="ACTION")
    join = gsub.add_parser(
        "join",
        help="join a project at home (password): the home signs a credential over a secret that stays in your "
        "wallet, so it can never sign in your name",
    )
    join.add_argument("--project", required=True, help="one of your groups at home with an allocation")
    join.add_argument("--user", required=True, help="your uid at home")
    join.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    join.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    join.add_argument(
        "--check-gateway",
        metavar="URL",
        help="the gateway of a member other than your home, which you trust to read the chain: what your home "
        "answers (the supervisors' key, its issuer key and revocation epoch, the expiry) is compared with what it "
        "says before anything is kept (default: another member's gateway as your home lists them, which trusts "
        "your home's list)",
    )
    join.set_defaults(run=_group_join)

    result = sub.add_parser(
        "result", help="finish a job submitted without --wait: check its record, give the receipt, open the outputs"
    )
    result.add_argument("job", metavar="JOB_ID")
    result.add_argument("--centre", required=True, help="the centre that ran the job")
    result.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job to end")
    result.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    result.set_defaults(run=_result)

    balance = sub.add_parser("balance", help="your project's allocation, holds and spending, and your own, at home")
    balance.add_argument("--user", required=True, help="your uid at home")
    balance.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    balance.add_argument("--project", help="the project (default: your only one)")
    balance.add_argument("--json", action="store_true", help="print the home's answer as JSON")
    balance.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    balance.set_defaults(run=_balance)

    complain = sub.add_parser(
        "complain", help="tell your home you got no key for a record: it disputes the record until k is revealed"
    )
    complain.add_argument(
        "--record", required=True, metavar="0xDIGEST", help="the record's digest (what receipts name)"
    )
    complain.add_argument(
        "--user",
        help="your uid at home, for a job you submitted signed on (its password signs the complaint); an anonymous "
        "job's complaint is signed by its order's payment account instead, naming nobody",
    )
    complain.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    complain.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    complain.set_defaults(run=_complain)

    epoch = sub.add_parser("epoch", help="epoch operations (operators)")
    esub = epoch.add_subparsers(required=True, metavar="ACTION")
    close = esub.add_parser("close", help="close the open epoch: anchor it, settle when all have")
    close.add_argument("--gateway", required=True)
    close.add_argument("--operator-key-file", type=Path, required=True)
    close.add_argument("--epoch", type=int, help="the epoch to close (safe to retry; default: the open one)")
    close.add_argument(
        "--no-wait", action="store_true", help="return once the closure is committed, before its anchor is on chain"
    )
    close.set_defaults(run=_close_epoch)

    credit = sub.add_parser(
        "credit", help="each member's credit line at a centre and what it owes there now (the centre's operators)"
    )
    credit.add_argument("--gateway", required=True, help="the serving centre's gateway URL")
    credit.add_argument("--operator-key-file", type=Path, required=True)
    credit.set_defaults(run=_credit)

    enrolment = sub.add_parser("enrolment", help="enrolment operations (operators of the home centre)")
    nsub = enrolment.add_subparsers(required=True, metavar="ACTION")
    revoke = nsub.add_parser("revoke", help="revoke a user: every member refuses their credentials within seconds")
    revoke.add_argument("--gateway", required=True, help="the user's home centre's gateway URL")
    revoke.add_argument("--user", required=True)
    revoke.add_argument("--operator-key-file", type=Path, required=True)
    revoke.set_defaults(run=_revoke)

    rates = sub.add_parser(
        "rates", help="a centre's published rates (each job is priced at the version it was accepted under)"
    )
    rsub = rates.add_subparsers(required=True, metavar="ACTION")
    publish = rsub.add_parser("publish", help="publish new rates; they apply after the consortium's notice")
    publish.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    publish.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    publish.add_argument("--key-file", type=Path, required=True, help="the centre's hex chain key")
    publish.add_argument("--per-cpu-second", type=int, required=True)
    publish.add_argument("--per-gpu-second", type=int, required=True)
    publish.add_argument("--per-gib-hour", type=int, required=True)
    publish.add_argument(
        "--effective-from",
        type=int,
        metavar="UTC_SECONDS",
        help="when they apply (default: as soon as the notice allows, plus a minute)",
    )
    publish.set_defaults(run=_rates_publish)
    history = rsub.add_parser("show", help="every rates version a centre published, from the chain")
    history.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    history.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    history.add_argument("--centre", required=True)
    history.set_defaults(run=_rates_show)

    policy = sub.add_parser(
        "policy", help="a centre's Cedar access policy (its hash is on chain; its gateway serves the text)"
    )
    psub = policy.add_subparsers(required=True, metavar="ACTION")
    publish_policy = psub.add_parser(
        "publish", help="publish a new policy version (checked with Cedar first); in force from its block"
    )
    publish_policy.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    publish_policy.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    publish_policy.add_argument("--key-file", type=Path, required=True, help="the centre's hex chain key")
    publish_policy.add_argument("--policy", type=Path, required=True, help="the Cedar policy file the gateway serves")
    publish_policy.add_argument("--schema", type=Path, help="the Cedar schema file the gateway serves, if any")
    publish_policy.set_defaults(run=_policy_publish)
    show_policy = psub.add_parser(
        "show", help="every policy version a centre published, from the chain; with --gateway, its text, checked"
    )
    show_policy.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    show_policy.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    show_policy.add_argument("--centre", required=True)
    show_policy.add_argument(
        "--gateway", help="fetch the text the centre's gateway serves and check it against its latest version"
    )
    show_policy.set_defaults(run=_policy_show)

    audit = sub.add_parser("audit", help="check the books against the chain")
    asub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = asub.add_parser("verify", help="recompute an epoch from the records and check it against the chain")
    verify.add_argument("--epoch", type=int, required=True)
    verify.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    verify.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    verify.add_argument(
        "--signatures",
        choices=("all", "unbound"),
        default="all",
        help="whose record signatures to recover: every record's (all), or only those of records no anchored "
        "root binds (unbound: the anchor, sent by the centre's own account, signs every leaf under its root)",
    )
    verify.set_defaults(run=_audit_verify)
    decisions = asub.add_parser(
        "decisions",
        help="check a centre's decision log of an epoch against its anchored root and take every decision again "
        "with its published policy (exit 3 on a finding, 2 when it cannot be checked)",
    )
    decisions.add_argument("--epoch", type=int, required=True)
    decisions.add_argument("--centre", required=True, help="the centre whose decisions are audited")
    decisions.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    decisions.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    decisions.add_argument(
        "--key-file", type=Path, required=True, help="the hex chain key of one of the centre's auditors"
    )
    decisions.add_argument("--gateway", help="the centre's gateway URL (default: its URL on chain)")
    decisions.add_argument(
        "--grace",
        type=int,
        default=60,
        metavar="S",
        help="seconds of clock difference allowed between a decision and its policy version's block (default 60)",
    )
    decisions.set_defaults(run=_audit_decisions)
    decision = asub.add_parser(
        "decision",
        help="check one decision (a refusal or an admission) against the chain: the entry by its id, its proof "
        "against the anchored root, and a refusal's signature (exit 3 when something contradicts it)",
    )
    decision.add_argument("--centre", required=True, help="the centre that decided")
    decision.add_argument("--id", required=True, dest="entry_id", help="the entry's id (0x + 32 hex digits)")
    decision.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    decision.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    decision.add_argument("--gateway", help="the centre's gateway URL (default: its URL on chain)")
    decision.add_argument(
        "--refusal", type=Path, help="the refusal's JSON body as the centre answered it (its `entry` and `signature`)"
    )
    decision.set_defaults(run=_audit_decision)
    show = asub.add_parser("epoch", help="what the chain says of an epoch, via a gateway's index")
    show.add_argument("--gateway", required=True)
    show.add_argument("--epoch", type=int, required=True)
    show.set_defaults(run=_audit_show)
    audit_report.register(asub)
    _supervise_parser(sub)
    governance.register(sub)
    consortium_cli.register(sub)
    return parser


def _supervise_parser(sub: argparse._SubParsersAction) -> None:
    """`xcentre supervise …`: exit 2, nothing sent, when the input cannot be used (no such opening, a key or state
    file that is not the supervisor's …)."""
    supervise = sub.add_parser(
        "supervise", help="supervisors: generate the joint key, ask for and share in openings, read the record"
    )
    vsub = supervise.add_subparsers(required=True, metavar="ACTION")

    def on_chain(p: argparse.ArgumentParser, *, key: bool = True, state: bool = False) -> None:
        p.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
        p.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
        if key:
            p.add_argument(
                "--key-file", "--key", dest="key_file", type=Path, required=True, help="your centre's hex chain key"
            )
        if state:
            p.add_argument(
                "--state", type=Path, required=True, help="your supervisor state file (0600: your secrets of the key)"
            )

    dkg = vsub.add_parser(
        "dkg",
        help="your part of the joint key's generation: register, deal, check your shares (complain or answer), "
        "acknowledge, finalize; safe to run again (exit 0 once the key is made, 4 while it waits for others)",
    )
    on_chain(dkg, state=True)
    dkg.add_argument("--wait", action="store_true", help="keep going until the key is made")
    dkg.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the chain with --wait")
    dkg.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    dkg.set_defaults(run=_supervise_dkg)

    request = vsub.add_parser(
        "request",
        help="ask the committee to open an anonymous job's or grant's group signature, for the order it signs (any "
        "member; on the record); nothing is sent unless it verifies over that order",
    )
    on_chain(request)
    request.add_argument("--signature-hash", required=True, metavar="0xHASH", help="what the job's record names")
    request.add_argument(
        "--centre",
        help="a centre that keeps the signature: the one that ran the job, or the home that granted its order "
        "(default: whichever member serves it)",
    )
    request.add_argument("--gateway", help="that centre's gateway URL (default: its URL on chain)")
    request.add_argument("--reason", required=True, help="why (at most 512 bytes, on the record)")
    request.set_defaults(run=_supervise_request)

    share = vsub.add_parser(
        "share",
        help="your proven decryption share for an opening, once the signature it opens is fetched and checked: a "
        "valid group signature over the opening's transaction, by a member of its home",
    )
    on_chain(share, state=True)
    share.add_argument("--opening", type=int, required=True)
    share.add_argument("--centre", help="a centre that keeps the signature (default: whichever member serves it)")
    share.add_argument("--gateway", help="that centre's gateway URL (default: its URL on chain)")
    share.set_defaults(run=_supervise_share)

    status = vsub.add_parser("status", help="the committee, its key and every opening with its shares, from the chain")
    on_chain(status, key=False)
    status.add_argument("--opening", type=int, help="only this opening")
    status.set_defaults(run=_supervise_status)

    identify = vsub.add_parser(
        "identify", help="at the opening's home (operator): map the opened tracing key to its member, on the record"
    )
    identify.add_argument("--gateway", required=True, help="your (the home's) gateway URL")
    identify.add_argument("--operator-key-file", type=Path, required=True)
    identify.add_argument("--opening", type=int, required=True)
    identify.set_defaults(run=_supervise_identify)


def _print_json(payload: object) -> int:
    print(json.dumps(payload, indent=2, sort_keys=True))
    return 0


def _demo(_: argparse.Namespace) -> int:
    from gateway.demo.story import run_demo

    return 0 if run_demo() else 1


def _keygen(args: argparse.Namespace) -> int:
    from gateway.client.provision import new_centre_keys

    return _print_json(new_centre_keys(args.dir, args.centre))


def _deploy(args: argparse.Namespace) -> int:
    from eth_account import Account

    from gateway.client.provision import load_members
    from ledger.chain import connect

    plan = load_members(args.members)
    chain = connect(args.chain)
    deployer = Account.from_key(args.key_file.read_text().strip())
    for member in plan.members if args.fund_members else ():
        chain.send_value(deployer, member.account, args.fund_members)
    deployment = plan.deploy(chain, deployer)
    deployment.to_json(args.out)
    print(
        f"deployed {len(plan.members)} members (quorum {plan.quorum}, rates notice {plan.rate_notice} s, "
        f"dispute window {plan.dispute_window} s); deployment written to {args.out}"
    )
    _report_gas(chain, {m.name: m.account for m in plan.members}, args)
    return 0


def _report_gas(chain: Any, accounts: dict[str, str], args: argparse.Namespace) -> None:
    """Each member account's gas money after deploy; a warning, with the command that funds them, for those
    that cannot pay their gateway's first transaction."""
    from ledger.gas import accounts_gas, gas_price, shortfall_message

    price, report = gas_price(chain), accounts_gas(chain, accounts)
    for g in report:
        print(f"  {g.centre} {g.account}: {g.balance} wei of gas money")
    short = [g for g in report if g.short]
    if short:
        hint = (
            f"xcentre consortium fund --chain {args.chain} --key-file FUNDED.key --members {args.members}, "
            "or --fund-members WEI at deploy"
        )
        print("warning: " + shortfall_message(short, price, hint), file=sys.stderr)
    elif price == 0:
        print("  the chain's gas price is 0: the members' accounts need no gas money")


def _gateway(args: argparse.Namespace) -> int:
    from gateway.api.fronts import back_socket
    from gateway.node.config import load_config
    from gateway.node.data_lock import DataFolderBusy, holding
    from gateway.node.logs import configure as configure_logs

    config = load_config(args.config)
    log_format = args.log_format or config.log_format
    configure_logs(log_format, centre=config.centre)
    try:  # refused before anything starts
        socket_path = back_socket(config.data_dir) if config.server_fronts else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        with holding(config.data_dir):
            return _serve_gateway(config, args, log_format, socket_path)
    except DataFolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _serve_gateway(config: GatewayConfig, args: argparse.Namespace, log_format: str, socket_path: Path | None) -> int:
    from gateway.api.app import create_app
    from gateway.api.fronts import TAKE_QUEUED_EVERY, Fronts, fresh_timings, listening_socket, serve_back
    from gateway.api.server import STARTUP_FAILURE, serve
    from gateway.node.assemble import node_from_config
    from gateway.node.policies import PolicyStartError

    fronts = config.server_fronts
    try:  # the fronts' port, bound before anything starts (one process binds its own in `serve`)
        listening = listening_socket(config.host, config.port) if fronts else None
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    node = node_from_config(config, process="back" if fronts else "alone")
    try:
        node.start(take_queued=TAKE_QUEUED_EVERY if fronts else None)
    except PolicyStartError as exc:  # its policy files are not what the centre published on chain
        node.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if socket_path is None or listening is None:
            app = create_app(node, threads=config.server_threads)
            serve(
                app,
                config.host,
                config.port,
                log_format=log_format,
                access_log=config.access_log,
                trusted_proxies=config.trusted_proxies,
            )
        else:
            app = create_app(node, threads=config.server_threads, front_timings=fresh_timings(config.data_dir))
            with listening, Fronts(args.config, fronts, listening, log_format=args.log_format):
                serve_back(app, socket_path, access_log=config.access_log)
    finally:
        node.stop()
    return 0


def _login(args: argparse.Namespace) -> int:
    password = _password(args)
    with GatewayClient(args.gateway) as client:
        wallet = Wallet.from_issuance(args.gateway, client.credential(args.user, password))
    try:  # a new credential from the same home keeps the wallet's group memberships
        earlier = Wallet.load(args.wallet)
    except ValueError:
        earlier = None
    if earlier is not None and earlier.home == wallet.home:
        wallet = dataclasses.replace(wallet, groups=earlier.groups)
    wallet.save(args.wallet)
    print(f"credential from {wallet.home} saved in {args.wallet}; sign on at any member with 'xcentre submit'")
    return 0


def _submit(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ValueError("no command given: xcentre submit --gateway URL -- COMMAND [ARGS…]")
    job = {
        "command": command,
        "walltime": args.walltime,
        "resources": {"cores": args.cores, "memory_mib": args.memory_mib, "gpus": args.gpus, "queue": args.queue},
    }
    if not (args.anonymous or args.user):
        raise ValueError("name your uid at home with --user (its password signs the order), or submit --anonymous")
    wallet = Wallet.load(args.wallet)
    keys = PaymentKeys.beside(args.wallet)
    label = submission_label(job, centre=args.centre, anonymous=args.anonymous, project=args.project, user=args.user)
    chosen = choose_key(keys, label, args.idempotency_key)
    if chosen.note:
        print(chosen.note, file=sys.stderr)
    if args.anonymous:
        membership = wallet.membership(args.project)
        with GatewayClient(wallet.home_url) as home:
            domain = signing_domain(home.consortium())
        submission = submit_anywhere(
            args.gateway,
            job,
            anonymously(membership, wallet.home_url, domain),
            centre=args.centre,
            idempotency_key=chosen.key,
            keys=keys,
            label=label,
        )
    else:
        with GatewayClient(wallet.home_url) as home:
            home.login(args.user, _password(args))
            submission = submit_anywhere(
                args.gateway,
                job,
                with_wallet(wallet, home, args.project),
                centre=args.centre,
                idempotency_key=chosen.key,
                keys=keys,
                label=label,
            )
    # what `xcentre result` needs to check the record and give the receipt later: the order and its grant
    # and the session there: a new presentation is a new pseudonym, which the job is not shown to
    keys.note(submission.paid.account, session=submission.client.token or "")
    with submission.client:
        if not args.wait:
            print(
                f"the job's result is sealed: run `xcentre result {submission.view['id']} --centre "
                f"{submission.centre}` to give the receipt for its record and open it (its payment key stays in "
                "the wallet meanwhile)",
                file=sys.stderr,
            )
            return _print_json(submission.view)
        result = finish(submission, keys)
    return _print_json(
        result.view | {"stdout": result.stdout, "stderr": result.stderr, "paid": result.price, "receipt": result.record}
    )


def _group_join(args: argparse.Namespace) -> int:
    """Keep the membership in the wallet (0600) only once the home's credential verifies over our secret and another
    member's gateway confirms it singles nobody out."""
    wallet = Wallet.load(args.wallet)
    with _home_session(args) as home:
        member = str(home.principal).rsplit("@", 1)[0]
        check_url = args.check_gateway or _another_member(home, wallet.home)
        with GatewayClient(check_url) as check:
            membership = join_group(home, member, wallet, args.project, check=check)
    wallet.with_membership(membership).save(args.wallet)
    print(
        f"member of {args.project}@{wallet.home} until {membership.credential.expires_at} (UTC seconds), checked at "
        f"{check_url}, saved in {args.wallet}; submit anonymously with 'xcentre submit --anonymous --project "
        f"{args.project}'"
    )
    return 0


def _another_member(home: GatewayClient, name: str) -> str:
    """The gateway of the first member other than the home, as the home lists them (GET /v1/members)."""
    others = [url for centre, url in home.members().items() if centre != name and url != home.url]
    if not others:
        raise ValueError(
            f"{name} lists no other member whose gateway could confirm its answer: name one with --check-gateway URL"
        )
    return others[0]


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    try:
        return getpass.getpass(f"{args.user}'s password: ")
    except EOFError:  # no terminal and nothing on standard input
        raise ValueError(
            f"no password for {args.user}: type it at a terminal, or give it on standard input with --password-stdin"
        ) from None


def _home_session(args: argparse.Namespace) -> GatewayClient:
    """A client signed on with a password at the home of the wallet's credential."""
    wallet = Wallet.load(args.wallet)
    home = GatewayClient(wallet.home_url)
    try:
        home.login(args.user, _password(args))
    except BaseException:
        home.close()
        raise
    return home


def _balance(args: argparse.Namespace) -> int:
    with _home_session(args) as home:
        answer = home.balance(args.project)
    if args.json:
        return _print_json(answer)
    from rich.console import Console

    from gateway.client.balances import balance_tables

    console = Console()
    for table in balance_tables(answer):
        console.print(table)
    return 0


def _complain(args: argparse.Namespace) -> int:
    """A signed-on job's complaint goes with a password session; an anonymous one's (its record names a group
    signature) is signed by the order's account, so that nothing sent names the member."""
    digest = to_hex(bytes32(args.record, what="--record"))
    wallet = Wallet.load(args.wallet)
    keys = PaymentKeys.beside(args.wallet)
    account, found = _find_record(wallet.home_url, keys, digest)
    if UsageRecord.from_dict(found["data"]).group_signature != bytes(32):
        if args.user:
            raise ValueError(
                f"record {digest} is of an anonymous job: complain without --user (a session would name you)"
            )
        with GatewayClient(wallet.home_url) as home:
            return _print_json(home.anonymous_complain(found["data"], digest, keys.account(account), wallet.home))
    if not args.user:
        raise ValueError(f"record {digest} is of a job you submitted signed on: name your uid at home with --user")
    with _home_session(args) as home:
        return _print_json(home.complain(found["data"]))


def _find_record(home_url: str, keys: PaymentKeys, digest: str) -> tuple[str, dict]:
    """The payment account and signed record with this digest, from the centre that ran one of the wallet's
    unfinished jobs (asked as the job's payment account: the session that submitted it may have ended)."""
    pending = [(account, facts) for account, facts in keys.open().items() if facts.get("centre") and facts.get("job")]
    with GatewayClient(home_url) as home:
        where = home.members()
    for account, facts in pending:
        with GatewayClient(where.get(facts["centre"], "http://unknown.invalid")) as client:
            client.job_signer = job_signer(facts["centre"], keys.account(account))
            try:
                signed = client.job(facts["job"]).get("record") or {}
            except (GatewayRefused, GatewayUnreachable):
                continue
        if str(signed.get("digest", "")).lower() == digest.lower():
            return account, signed
    raise ValueError(
        f"no job of yours this wallet still pays for has record {digest} (the wallet keeps the jobs whose "
        "receipt is not done): check the digest"
    )


def _result(args: argparse.Namespace) -> int:
    from gateway.client.paying import WrongResultKey, check_record, open_result, receipt_signature

    wallet = Wallet.load(args.wallet)
    keys = PaymentKeys.beside(args.wallet)
    account, facts = _payment_of(keys, args.job, args.centre)
    paid = _paid(facts)
    with GatewayClient(wallet.home_url) as home:
        known = home.consortium()
        member = next((m for m in known["members"] if m["centre"] == args.centre), None)
        if member is None:
            raise ValueError(f"unknown centre {args.centre!r}")
        domain = signing_domain(known)
        paid = dataclasses.replace(paid, account=account, digest=order_digest(paid.order, domain))
        with GatewayClient(member["gateway_url"]) as client:
            # the order's account, not the session that submitted (it ends), is the job's authority here
            client.job_signer = job_signer(args.centre, keys.account(account))
            try:
                view = client.wait(args.job, timeout=args.timeout)
            except GatewayRefused as exc:
                if exc.status != 401:
                    raise
                raise GatewayRefused(
                    401, f"{args.centre} refused job {args.job}'s payment account {account}: {exc.error}", []
                ) from None
            if not view.get("record"):  # not billed: nothing to pay, nothing sealed
                keys.forget(account)
                return _print_json(view | {"stdout": view.get("stdout_tail"), "stderr": view.get("stderr_tail")})
            record = check_record(view, paid, args.centre, member["account"], domain)
            try:
                key = client.receipt(args.job, receipt_signature(record, keys.account(account), domain))["key"]
                stdout, stderr = open_result(view, record, key, domain)
            except (GatewayRefused, GatewayUnreachable, WrongResultKey) as withheld:
                # the centre withheld k or released a wrong one: it may have revealed k on chain since
                try:
                    key = home.revealed_key(to_hex(record.lock_hash))["key"]
                except GatewayRefused:
                    raise withheld from None
                stdout, stderr = open_result(view, record, key, domain)
    keys.forget(account)
    digest = to_hex(record_digest(record, domain))
    return _print_json(view | {"stdout": stdout, "stderr": stderr, "paid": record.price, "receipt": digest})


def _payment_of(keys: PaymentKeys, job: str, centre: str) -> tuple[str, dict[str, str]]:
    """The wallet's payment account of `job` at `centre` and what it kept of its order."""
    for account, facts in keys.open().items():
        if facts.get("job") == job and facts.get("centre") == centre:
            if "paid" not in facts:
                raise ValueError(f"the wallet kept no order for job {job}: it was submitted by another client")
            return account, facts
    raise ValueError(
        f"this wallet pays for no unfinished job {job} at {centre} (finished already, or submitted elsewhere)"
    )


def _paid(facts: dict[str, str]) -> Paid:
    fields = json.loads(facts["paid"])
    order = Order.from_dict(fields["order"])
    return Paid(
        order=order,
        order_signature=from_hex(fields["order_signature"], what="order_signature"),
        grant=fields["grant"],
        grant_signature=fields["grant_signature"],
        account="",
        digest=b"",
    )


def _close_epoch(args: argparse.Namespace) -> int:
    key = args.operator_key_file.read_text().strip()
    with GatewayClient(args.gateway) as client:
        return _print_json(client.close_epoch(key, args.epoch, wait=not args.no_wait))


def _credit(args: argparse.Namespace) -> int:
    key = args.operator_key_file.read_text().strip()
    with GatewayClient(args.gateway) as client:
        return _print_json(client.credit(key))


def _revoke(args: argparse.Namespace) -> int:
    """Exit 0 only once the revocation is on chain; 4 while it is queued (the home resends it)."""
    key = args.operator_key_file.read_text().strip()
    with GatewayClient(args.gateway) as client:
        answer = client.revoke(args.user, key)
    _print_json(answer)
    if not answer["revoked"]:
        print(
            "not on chain yet: other members accept the user until it lands; the home resends it "
            "(run the command again to see)",
            file=sys.stderr,
        )
        return 4
    return 0


def _rates_publish(args: argparse.Namespace) -> int:
    from eth_account import Account

    from ledger import rates
    from ledger.chain import connect
    from ledger.deploy import Deployment, Prices

    prices = Prices(args.per_cpu_second, args.per_gpu_second, args.per_gib_hour)
    account = Account.from_key(args.key_file.read_text().strip())
    chain = connect(args.chain)
    published = rates.publish(
        chain, Deployment.from_json(args.deployment.read_text()), account, prices, args.effective_from
    )
    return _print_json(published.to_dict())


def _rates_show(args: argparse.Namespace) -> int:
    from ledger import rates
    from ledger.chain import connect
    from ledger.deploy import Deployment

    chain = connect(args.chain)
    versions = rates.history(chain, Deployment.from_json(args.deployment.read_text()), args.centre)
    return _print_json([v.to_dict() for v in versions])


def _policy_publish(args: argparse.Namespace) -> int:
    from eth_account import Account

    from auth.policy import PolicyError
    from ledger import policies
    from ledger.chain import connect
    from ledger.deploy import Deployment

    text = policies.read_text(args.policy)
    schema = None if args.schema is None else policies.read_text(args.schema, "schema")
    try:
        policies.validate(text, schema)
    except PolicyError as exc:
        raise PolicyError(f"{args.policy} was not published: {exc}") from None
    account = Account.from_key(args.key_file.read_text().strip())
    chain = connect(args.chain)
    published = policies.publish(chain, Deployment.from_json(args.deployment.read_text()), account, text, schema)
    return _print_json(published.to_dict())


def _policy_show(args: argparse.Namespace) -> int:
    """With --gateway, exit 0 only when the text it serves is the centre's latest version on chain."""
    from ledger import policies
    from ledger.chain import connect
    from ledger.deploy import Deployment

    chain = connect(args.chain)
    versions = policies.history(chain, Deployment.from_json(args.deployment.read_text()), args.centre)
    if args.gateway is None:
        return _print_json([v.to_dict() for v in versions])
    with GatewayClient(args.gateway) as client:
        served = client.policy()
    where = f"the gateway at {args.gateway}"
    if not isinstance(served, dict) or served.get("centre") != args.centre:
        centre = served.get("centre") if isinstance(served, dict) else None
        raise ValueError(f"{where} serves the policy of {centre!r}, not of {args.centre!r}")
    text, schema = served.get("policy"), served.get("schema")
    if not isinstance(text, str) or not (schema is None or isinstance(schema, str)):
        raise ValueError(f"{where} answered no policy text (and schema) for {args.centre}: nothing to check")
    try:
        latest = policies.check_latest(versions, text, schema)
    except policies.PolicyTextMismatch as exc:
        raise policies.PolicyTextMismatch(f"{where} serves a policy the chain does not have in force: {exc}") from None
    return _print_json(
        {"versions": [v.to_dict() for v in versions], "served": latest.to_dict() | {"policy": text, "schema": schema}}
    )


def _audit_show(args: argparse.Namespace) -> int:
    with GatewayClient(args.gateway) as client:
        return _print_json(client.audit_epoch(args.epoch))


def _audit_verify(args: argparse.Namespace) -> int:
    from gateway.books.auditor import audit_epoch
    from ledger.chain import connect
    from ledger.deploy import Deployment

    chain = connect(args.chain)
    deployment = Deployment.from_json(args.deployment.read_text())
    report = audit_epoch(chain, deployment, args.epoch, signatures=args.signatures)
    for finding in report.findings:
        print(f"MISMATCH {finding}")
    print(f"epoch {args.epoch}: {'verified' if report.ok else 'NOT verified'} against the chain")
    return 0 if report.ok else 3


def _audit_decisions(args: argparse.Namespace) -> int:
    """Exit 0 when every decision checks, 3 on any finding (as `audit verify`), 2 when the audit cannot be made."""
    from eth_account import Account

    from gateway.client.auditing import AuditUnusable, audit_log, fetch_decision_log, report_lines
    from ledger.chain import connect
    from ledger.deploy import Deployment

    if args.grace < 0:
        print(f"error: --grace is a number of seconds, 0 or more, not {args.grace}", file=sys.stderr)
        return 2
    try:
        auditor = Account.from_key(args.key_file.read_text().strip())
    except (OSError, ValueError) as exc:  # never the key's value in a message
        why = exc if isinstance(exc, OSError) else "it holds no hex chain key"
        print(f"error: the key file {args.key_file}: {why}", file=sys.stderr)
        return 2
    try:
        deployment = Deployment.from_json(args.deployment.read_text())
        log = fetch_decision_log(connect(args.chain), deployment, args.centre, args.epoch, auditor, args.gateway)
    except (AuditUnusable, ChainError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = audit_log(log, grace=args.grace)
    for line in report_lines(log, report):
        print(line)
    return 0 if report.ok else 3


def _audit_decision(args: argparse.Namespace) -> int:
    """Exit 0 when the chain confirms the entry (or nothing contradicts it yet), 3 when something does."""
    from gateway.client.decision_check import check_decision
    from ledger.chain import connect
    from ledger.deploy import Deployment

    held = signature = None
    if args.refusal is not None:
        refusal = json.loads(args.refusal.read_text())
        if not isinstance(refusal, dict) or "entry" not in refusal or "signature" not in refusal:
            raise ValueError(f"{args.refusal} is not a refusal's body: it has no `entry` and `signature`")
        held, signature = refusal["entry"], refusal["signature"]
    deployment = Deployment.from_json(args.deployment.read_text())
    checked = check_decision(
        connect(args.chain),
        deployment,
        args.centre,
        args.entry_id,
        gateway=args.gateway,
        held=held,
        signature=signature,
    )
    entry = checked.entry
    print(f"entry: {entry['id']} at {entry['centre']}, time {entry['time']} ({entry['kind']})")
    print(f"decision: {entry['decision']} by {', '.join(entry['policies']) or 'no policy'}")
    print(f"policy: version {entry['policy_version']} ({entry['policy_hash']})")
    if checked.signed is not None:
        print(f"signed by {args.centre}: {'yes' if checked.signed else 'NO'}")
    for problem in checked.problems:
        print(f"PROBLEM {problem}")
    if checked.anchored:
        print(f"epoch {checked.epoch}: in the decision log {args.centre} anchored: verified against the chain")
    elif checked.ok:
        print(f"epoch {checked.epoch}: not anchored yet: check again after the epoch's close")
    return 0 if checked.ok else 3


# -- xcentre supervise ------------------------------------------------------------------------------


def _supervising(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Exit 2 with the reason, nothing sent, for input a supervise command cannot use."""

    @functools.wraps(run)
    def checked(args: argparse.Namespace) -> int:
        from gateway.client.supervising import SupervisionUnusable

        try:
            return run(args)
        except SupervisionUnusable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return checked


def _supervision(args: argparse.Namespace) -> tuple[Any, Any]:
    """(the deployment, its Supervision contract) named by --chain and --deployment."""
    from gateway.client.supervising import SupervisionUnusable
    from ledger.chain import connect
    from ledger.deploy import Deployment
    from ledger.supervision import Supervision

    try:
        deployment = Deployment.from_json(args.deployment.read_text())
    except (OSError, ValueError) as exc:
        raise SupervisionUnusable(f"the deployment file {args.deployment}: {exc}") from None
    try:
        return deployment, Supervision.of(connect(args.chain), deployment)
    except ValueError as exc:  # another chain's deployment, or one without a Supervision contract
        raise SupervisionUnusable(f"{args.deployment}: {exc}") from None


def _chain_key(path: Path) -> LocalAccount:
    from eth_account import Account

    from gateway.client.supervising import SupervisionUnusable

    try:
        return Account.from_key(path.read_text().strip())
    except OSError as exc:
        raise SupervisionUnusable(f"the key file {path}: {exc}") from None
    except ValueError:  # never the key's value in a message
        raise SupervisionUnusable(f"the key file {path} holds no hex chain key") from None


@_supervising
def _supervise_dkg(args: argparse.Namespace) -> int:
    """Exit 0 once the key is made and this supervisor's share of it checked, 4 while it waits for others."""
    from gateway.client.supervising import member_of, run_dkg

    deployment, supervision = _supervision(args)
    account = _chain_key(args.key_file)
    centre = member_of(supervision.chain, deployment, account)

    def report(progress: Any) -> None:
        for done in progress.did:
            print(f"{progress.supervisor} ({progress.index}): {done}")
        if progress.finished:
            print(
                f"{progress.supervisor} ({progress.index}): the key is generated, your share of it is in {args.state}"
            )
            print(f"public key: {to_hex(progress.public_key)}")
        else:
            print(f"{progress.supervisor} ({progress.index}): {progress.phase}: waiting for {progress.waiting}")

    progress = run_dkg(
        supervision,
        account,
        centre,
        args.state,
        wait=args.wait,
        interval=args.interval,
        timeout=args.timeout,
        report=report,
    )
    return 0 if progress.finished else 4


@_supervising
def _supervise_request(args: argparse.Namespace) -> int:
    from gateway.client.supervising import SupervisionUnusable, member_of, request_opening

    try:
        wanted = bytes32(args.signature_hash, what="--signature-hash")
    except ValueError as exc:
        raise SupervisionUnusable(str(exc)) from None
    deployment, supervision = _supervision(args)
    account = _chain_key(args.key_file)
    requester = member_of(supervision.chain, deployment, account)
    opening_id = request_opening(
        supervision, deployment, account, wanted, args.reason, centre=args.centre, gateway=args.gateway
    )
    opening = supervision.opening(opening_id)
    return _print_json(
        {
            "opening": opening_id,
            "requester": requester,
            "home": opening.home,
            "transaction": to_hex(opening.transaction),
            "signature_hash": to_hex(opening.signature_hash),
            "reason": opening.reason,
        }
    )


@_supervising
def _supervise_share(args: argparse.Namespace) -> int:
    """Exit 0 when the share was accepted, 3 when the contract rejected it (it is on the record so)."""
    from gateway.client.supervising import member_of, share

    deployment, supervision = _supervision(args)
    account = _chain_key(args.key_file)
    centre = member_of(supervision.chain, deployment, account)
    shared = share(
        supervision, deployment, account, centre, args.state, args.opening, serving=args.centre, gateway=args.gateway
    )
    _print_json(
        {
            "opening": shared.opening,
            "supervisor": centre,
            "index": shared.index,
            "accepted": shared.accepted,
            "opened": shared.tracing_key is not None,
            "tracing_key": None if shared.tracing_key is None else to_hex(shared.tracing_key),
        }
    )
    return 0 if shared.accepted else 3


@_supervising
def _supervise_status(args: argparse.Namespace) -> int:
    from gateway.client.supervising import overview, status_lines

    _, supervision = _supervision(args)
    for line in status_lines(overview(supervision, args.opening)):
        print(line)
    return 0


@_supervising
def _supervise_identify(args: argparse.Namespace) -> int:
    from gateway.client.supervising import SupervisionUnusable

    try:
        key = args.operator_key_file.read_text().strip()
    except OSError as exc:
        raise SupervisionUnusable(f"the operator key file {args.operator_key_file}: {exc}") from None
    with GatewayClient(args.gateway) as client:
        return _print_json(client.identify(args.opening, key))


if __name__ == "__main__":
    sys.exit(main())
