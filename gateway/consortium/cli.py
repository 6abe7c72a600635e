"""`xcentre consortium up|status|down|fund`: the command line of a consortium on one machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DIR = Path("consortium-run")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `xcentre consortium …` to the command line."""
    consortium = sub.add_parser(
        "consortium", help="a whole consortium on this machine: anvil, a slapd and a gateway per centre"
    )
    csub = consortium.add_subparsers(required=True, metavar="ACTION")

    def folder(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help=f"the run folder: keys, data, logs, state (default {DEFAULT_DIR})",
        )

    up = csub.add_parser("up", help="start the consortium of a file (or what of it is not running)")
    up.add_argument("--file", type=Path, required=True, help="the consortium file, e.g. examples/consortium.toml")
    folder(up)
    up.set_defaults(run=_up)
    status = csub.add_parser("status", help="each process: pid alive, its answer, the chain's block height")
    folder(status)
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(run=_status)
    down = csub.add_parser("down", help="stop every process (SIGTERM, then SIGKILL); keys and data stay")
    folder(down)
    down.set_defaults(run=_down)
    fund = csub.add_parser(
        "fund", help="top the members' chain accounts up with gas money from a funded account (chains with a gas price)"
    )
    fund.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    fund.add_argument("--key-file", type=Path, required=True, help="the hex chain key of the account that pays")
    fund.add_argument("--members", type=Path, required=True, help="the members file (TOML)")
    fund.add_argument("--wei", type=int, help="top each account up to this much (default: what it needs now)")
    fund.set_defaults(run=_fund)


def _up(args: argparse.Namespace) -> int:
    from gateway.consortium.control import ConsortiumError, up
    from gateway.consortium.spec import SpecError

    try:
        up(args.file, args.dir)
    except (ConsortiumError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from gateway.consortium.control import ConsortiumError, status

    try:
        report = status(args.dir)
    except ConsortiumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(h) for h in report], indent=2))
    else:
        for h in report:
            mark = "ok  " if h.healthy else ("BAD " if h.running else "DOWN")  # BAD: runs, but is not well
            pid = f"pid {h.pid}" if h.running else "not running"
            print(f"{mark} {h.name:<18} {pid:<12} {h.detail}")
    return 0 if all(h.healthy for h in report) else 3


def _down(args: argparse.Namespace) -> int:
    from gateway.consortium.control import ConsortiumError, down

    try:
        down(args.dir)
    except ConsortiumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _fund(args: argparse.Namespace) -> int:
    from eth_account import Account

    from gateway.client.provision import load_members
    from ledger.chain import connect
    from ledger.gas import accounts_gas, fund, gas_price, needed

    plan = load_members(args.members)
    chain = connect(args.chain)
    payer = Account.from_key(args.key_file.read_text().strip())
    wei = args.wei if args.wei is not None else needed(gas_price(chain))
    accounts = {m.name: m.account for m in plan.members}
    for name, sent in fund(chain, payer, accounts, wei).items():
        print(f"{name}: sent {sent} wei")
    for g in accounts_gas(chain, accounts):
        print(f"{g.centre} {g.account}: {g.balance} wei{' (still short)' if g.short else ''}")
    return 0
