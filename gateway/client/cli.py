"""The `xcentre` command line: demo, gateway, login, submit, epochs and audit."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from pathlib import Path

from gateway.client.dispatch import submit_anywhere, with_wallet
from gateway.client.http import GatewayClient, GatewayRefused
from gateway.client.wallet import Wallet
from ledger.chain import ChainError

DEFAULT_WALLET = Path(os.environ.get("XCENTRE_HOME", Path.home() / ".xcentre")) / "wallet.json"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except GatewayRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
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
    gw.set_defaults(run=_gateway)

    login = sub.add_parser("login", help="fetch or refresh your credential at your home centre")
    login.add_argument("--gateway", required=True, help="your home centre's gateway URL")
    login.add_argument("--user", required=True)
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    login.set_defaults(run=_login)

    submit = sub.add_parser("submit", help="submit a job to a member centre: signs on there with your wallet")
    submit.add_argument("--gateway", required=True, help="any member gateway: it ranks the centres for the job")
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
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish")
    submit.add_argument("--wallet", type=Path, default=DEFAULT_WALLET)
    submit.add_argument("command", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    submit.set_defaults(run=_submit)

    epoch = sub.add_parser("epoch", help="epoch operations (operators)")
    esub = epoch.add_subparsers(required=True, metavar="ACTION")
    close = esub.add_parser("close", help="close the open epoch: anchor it, settle when all have")
    close.add_argument("--gateway", required=True)
    close.add_argument("--operator-key-file", type=Path, required=True)
    close.add_argument("--epoch", type=int, help="the epoch to close (safe to retry; default: the open one)")
    close.set_defaults(run=_close_epoch)

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

    audit = sub.add_parser("audit", help="check the books against the chain")
    asub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = asub.add_parser("verify", help="recompute an epoch from the records and check it against the chain")
    verify.add_argument("--epoch", type=int, required=True)
    verify.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    verify.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    verify.set_defaults(run=_audit_verify)
    show = asub.add_parser("epoch", help="what the chain says of an epoch, via a gateway's index")
    show.add_argument("--gateway", required=True)
    show.add_argument("--epoch", type=int, required=True)
    show.set_defaults(run=_audit_show)
    return parser


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
    from ledger.deploy import deploy_consortium

    plan = load_members(args.members)
    chain = connect(args.chain)
    deployer = Account.from_key(args.key_file.read_text().strip())
    for member in plan.members if args.fund_members else ():
        chain.send_value(deployer, member.account, args.fund_members)
    deployment = deploy_consortium(
        chain, deployer, plan.members, plan.quorum, plan.initial_credit, rate_notice=plan.rate_notice
    )
    deployment.to_json(args.out)
    print(
        f"deployed {len(plan.members)} members (quorum {plan.quorum}, rates notice {plan.rate_notice} s); "
        f"deployment written to {args.out}"
    )
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from gateway.api.app import create_app
    from gateway.api.server import serve
    from gateway.node.assemble import node_from_config
    from gateway.node.config import load_config

    config = load_config(args.config)
    node = node_from_config(config)
    node.start()
    try:
        serve(create_app(node), config.host, config.port)
    finally:
        node.stop()
    return 0


def _login(args: argparse.Namespace) -> int:
    password = (
        sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"{args.user}'s password: ")
    )
    with GatewayClient(args.gateway) as client:
        wallet = Wallet.from_issuance(args.gateway, client.credential(args.user, password))
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
    wallet = Wallet.load(args.wallet)
    submission = submit_anywhere(
        args.gateway, job, with_wallet(wallet), centre=args.centre, idempotency_key=str(uuid.uuid4())
    )
    with submission.client as client:
        view = client.wait(submission.view["id"]) if args.wait else submission.view
    return _print_json(view)


def _close_epoch(args: argparse.Namespace) -> int:
    key = args.operator_key_file.read_text().strip()
    with GatewayClient(args.gateway) as client:
        return _print_json(client.close_epoch(key, args.epoch))


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


def _audit_show(args: argparse.Namespace) -> int:
    with GatewayClient(args.gateway) as client:
        return _print_json(client.audit_epoch(args.epoch))


def _audit_verify(args: argparse.Namespace) -> int:
    from gateway.books.auditor import audit_epoch
    from ledger.chain import connect
    from ledger.deploy import Deployment

    chain = connect(args.chain)
    deployment = Deployment.from_json(args.deployment.read_text())
    report = audit_epoch(chain, deployment, args.epoch)
    for finding in report.findings:
        print(f"MISMATCH {finding}")
    print(f"epoch {args.epoch}: {'verified' if report.ok else 'NOT verified'} against the chain")
    return 0 if report.ok else 3


if __name__ == "__main__":
    sys.exit(main())
