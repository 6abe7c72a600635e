"""`xcentre governance …`: the members' votes on membership, quorum and funding, and a member's own record.

`propose admit|remove|quorum|fund` opens a proposal (the proposer's vote counts),
`vote ID` adds a member's vote (the vote that reaches the quorum carries it out;
a proposal not carried within 30 days expires and takes no more votes), `carry ID`
carries out one whose votes reach the quorum without a new vote (it was lowered since),
`list` shows every proposal from the chain (open, carried or expired, and when an
open one expires), `update` changes the sender's own
gateway URL or token key (no vote). Each command reads the centre's chain key
and the chain as `xcentre rates publish` does (--chain, --deployment,
--key-file). Input the contract would refuse is refused before anything is
sent: exit 2 with the reason ({"error", "reasons"} with --json).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.chain import ChainError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ledger.chain import Chain
    from ledger.deploy import Deployment
    from ledger.governance import Proposal, Step

WIDTH = 80


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `governance` and its actions to the `xcentre` parser."""
    governance = sub.add_parser(
        "governance", help="members' votes: admit, remove, quorum, fund; list them; update your own record"
    )
    gsub = governance.add_subparsers(required=True, metavar="ACTION")

    propose = gsub.add_parser("propose", help="open a proposal (your vote counts); carried at the quorum")
    psub = propose.add_subparsers(required=True, metavar="KIND")
    admit = psub.add_parser("admit", help="admit a new member centre (its prices become its rates version 1)")
    _on_chain(admit)
    admit.add_argument("--name", required=True, help="the new centre's name ([a-z0-9-]{1,32})")
    admit.add_argument("--account", required=True, help="its chain account (from its `xcentre keygen`)")
    admit.add_argument("--gateway-url", required=True, help="its gateway's base URL")
    admit.add_argument("--token-key", required=True, metavar="0xHEX", help="its token key (from its keygen)")
    admit.add_argument("--per-cpu-second", type=int, required=True, help="smallest credit units")
    admit.add_argument("--per-gpu-second", type=int, required=True, help="smallest credit units")
    admit.add_argument("--per-gib-hour", type=int, required=True, help="smallest credit units")
    admit.set_defaults(run=_run(_propose_admit))
    remove = psub.add_parser("remove", help="remove a member (the others must still reach the quorum)")
    _on_chain(remove)
    remove.add_argument("centre")
    remove.set_defaults(run=_run(_propose_remove))
    quorum = psub.add_parser("quorum", help="change the votes that carry a proposal (1 to the members)")
    _on_chain(quorum)
    quorum.add_argument("quorum", type=int)
    quorum.set_defaults(run=_run(_propose_quorum))
    fund = psub.add_parser("fund", help="mint new credit to a member's account (e.g. one admitted later)")
    _on_chain(fund)
    fund.add_argument("centre")
    fund.add_argument("amount", type=int, help="smallest credit units, at least 1")
    fund.set_defaults(run=_run(_propose_fund))

    vote = gsub.add_parser("vote", help="vote for a proposal; the vote that reaches the quorum carries it out")
    _on_chain(vote)
    vote.add_argument("proposal", type=int, metavar="ID")
    vote.set_defaults(run=_run(_vote))

    carry = gsub.add_parser(
        "carry", help="carry out a proposal whose votes reach the quorum now (it was lowered since the last vote)"
    )
    _on_chain(carry)
    carry.add_argument("proposal", type=int, metavar="ID")
    carry.set_defaults(run=_run(_carry))

    listing = gsub.add_parser(
        "list", help="every proposal from the chain: action, subject, votes, open/carried/expired, expiry"
    )
    _on_chain(listing, key=False)
    listing.add_argument(
        "--open", action="store_true", help="only proposals still taking votes (not carried, not expired)"
    )
    listing.set_defaults(run=_run(_list))

    update = gsub.add_parser("update", help="change your own gateway URL or token key (no vote; rotates keys)")
    _on_chain(update)
    update.add_argument("--gateway-url", help="your gateway's new base URL")
    token = update.add_mutually_exclusive_group()
    token.add_argument("--token-key", metavar="0xHEX", help="your new token key (the public half, 32 bytes)")
    token.add_argument("--token-key-file", type=Path, metavar="PEM", help="publish the public half of this key")
    token.add_argument(
        "--new-token-key-file",
        type=Path,
        metavar="PEM",
        help="make a fresh token key in this new file (0600) and publish its public half",
    )
    update.set_defaults(run=_run(_update))


def _on_chain(p: argparse.ArgumentParser, *, key: bool = True) -> None:
    p.add_argument("--chain", required=True, help="a JSON-RPC URL of a consortium chain node")
    p.add_argument("--deployment", type=Path, required=True, help="the consortium's deployment file")
    if key:
        p.add_argument("--key-file", type=Path, required=True, help="your centre's hex chain key")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _run(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Prints what `command` returns (text or JSON); exit 2 for refused input, 1 when the chain fails."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from ledger.governance import GovernanceError

        try:
            result = command(args)
        except GovernanceError as exc:
            return _fail(args, exc.to_dict(), 2)
        except ChainError as exc:
            return _fail(args, {"error": f"the chain at {args.chain}: {exc}", "reasons": ["chain"]}, 1)
        payload, lines = result
        if args.json:
            print(json.dumps(payload, indent=2, sort_keys=True))
        else:
            for line in lines:
                print(_wrap(line))
        return 0

    return run


def _fail(args: argparse.Namespace, error: dict[str, Any], code: int) -> int:
    if args.json:
        print(json.dumps(error, indent=2, sort_keys=True), file=sys.stderr)
    else:
        print(_wrap(f"error: {error['error']}"), file=sys.stderr)
    return code


def _wrap(line: str) -> str:
    """One logical line in 80 columns, indented continuation; never cuts a word (URLs, names, hashes)."""
    indent = " " * min(len(line) - len(line.lstrip()) + 2, 8)
    return textwrap.fill(
        line,
        WIDTH,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
        drop_whitespace=True,
    )


# -- inputs ------------------------------------------------------------------------------


def _unusable(message: str) -> Exception:
    from ledger.governance import GovernanceError

    return GovernanceError(message, "unusable-input")


def _chain(args: argparse.Namespace) -> tuple[Chain, Deployment]:
    from ledger.chain import connect
    from ledger.deploy import Deployment

    try:
        deployment = Deployment.from_json(args.deployment.read_text())
    except (OSError, ValueError) as exc:
        raise _unusable(f"the deployment file {args.deployment}: {exc}") from None
    try:
        chain = connect(args.chain)
    except ValueError as exc:  # not a chain URL (an unreachable node is a ChainError)
        raise _unusable(str(exc)) from None
    if deployment.chain_id != chain.chain_id:
        raise _unusable(f"{args.deployment} is for chain {deployment.chain_id}, {args.chain} is {chain.chain_id}")
    return chain, deployment


def _key(args: argparse.Namespace) -> LocalAccount:
    from eth_account import Account

    try:
        return Account.from_key(args.key_file.read_text().strip())
    except OSError as exc:
        raise _unusable(f"the key file {args.key_file}: {exc}") from None
    except ValueError:  # never the key's value in a message
        raise _unusable(f"the key file {args.key_file} holds no hex chain key") from None


def _new_token_key(args: argparse.Namespace) -> bytes | None:
    """The public half of the token key `update` publishes, if any (made first with --new-token-key-file)."""
    from auth.tokens import generate_key, load_private_key, public_key_bytes, save_private_key

    if args.token_key is not None:
        return _token_key(args.token_key)
    path = args.new_token_key_file or args.token_key_file
    if path is None:
        return None
    if args.new_token_key_file is not None:
        if path.exists():
            raise _unusable(f"{path} exists; keys are never overwritten")
        save_private_key(generate_key(), path)
    try:
        return public_key_bytes(load_private_key(path))
    except (OSError, ValueError) as exc:
        raise _unusable(str(exc)) from None


def _token_key(text: str) -> bytes:
    from ledger.primitives.hex import from_hex

    try:
        return from_hex(text, size=32, what="--token-key")
    except ValueError as exc:
        from ledger.governance import GovernanceError

        raise GovernanceError(str(exc), "invalid-token-key") from None


# -- commands ----------------------------------------------------------------------------


def _propose_admit(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov
    from ledger.deploy import MemberSpec, Prices

    try:
        member = MemberSpec(
            args.name,
            args.account,
            args.gateway_url,
            _token_key(args.token_key),
            Prices(args.per_cpu_second, args.per_gpu_second, args.per_gib_hour),
        )
    except ValueError as exc:
        if isinstance(exc, gov.GovernanceError):
            raise
        raise gov.GovernanceError(str(exc), "invalid-member") from None
    chain, deployment = _chain(args)
    payload, lines = _stepped(gov.propose_admit(chain, deployment, _key(args), member))
    return payload, lines + _gas_warning(chain, member.name, member.account)


def _gas_warning(chain: Chain, name: str, account: str) -> list[str]:
    """A line for a newcomer whose account cannot pay its gateway's first transactions (nothing if it can)."""
    from ledger.gas import accounts_gas

    short = [g for g in accounts_gas(chain, {name: account}) if g.short]
    return [
        f"note: {g.centre}'s account holds {g.balance} wei of gas money, about {g.needed} wei is needed: "
        "fund it before its gateway starts (or run the chain with a zero gas price)"
        for g in short
    ]


def _propose_remove(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    chain, deployment = _chain(args)
    return _stepped(gov.propose_remove(chain, deployment, _key(args), args.centre))


def _propose_quorum(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    chain, deployment = _chain(args)
    return _stepped(gov.propose_quorum(chain, deployment, _key(args), args.quorum))


def _propose_fund(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    chain, deployment = _chain(args)
    return _stepped(gov.propose_funding(chain, deployment, _key(args), args.centre, args.amount))


def _vote(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    chain, deployment = _chain(args)
    return _stepped(gov.vote(chain, deployment, _key(args), args.proposal), "voted for")


def _carry(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    chain, deployment = _chain(args)
    return _stepped(gov.carry(chain, deployment, _key(args), args.proposal), "carried")


def _list(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    chain, deployment = _chain(args)
    members = gov.member_names(chain, deployment)
    quorum = gov.quorum(chain, deployment)
    listed = gov.proposals(chain, deployment, open_only=args.open)
    payload = {"quorum": quorum, "members": members, "proposals": [p.to_dict() for p in listed]}
    lines = [f"quorum {quorum} of {len(members)} active members: {', '.join(members)}"]
    if not listed:
        lines.append("no open proposals" if args.open else "no proposals yet")
    for p in listed:
        lines.extend(_proposal_lines(p))
    return payload, lines


def _update(args: argparse.Namespace) -> tuple[dict, list[str]]:
    from ledger import governance as gov

    token_key = _new_token_key(args)
    chain, deployment = _chain(args)
    record = gov.update_member(chain, deployment, _key(args), gateway_url=args.gateway_url, token_key=token_key)
    lines = [
        f"{record.name} updated on chain (no vote needed)",
        f"  gateway URL: {record.gateway_url}",
        f"  token key: {record.token_key}",
    ]
    if token_key is not None:
        lines.append(
            "  point the gateway's token_key_file at the new key and restart it: sessions signed with the old key "
            "are refused from now on (users sign on again)"
        )
    return record.to_dict(), lines


# -- text --------------------------------------------------------------------------------


def _what(p: Proposal) -> str:
    if p.action == "admit":
        return f"admit {p.subject}"
    if p.action == "remove":
        return f"remove {p.subject}"
    if p.action == "quorum":
        return f"set the quorum to {p.amount}"
    if p.action == "fund":
        return f"fund {p.subject} with {p.amount:,} credit units"
    return f"action {p.action} on {p.subject}"


def _state(p: Proposal) -> str:
    from ledger.governance import utc

    if p.executed:
        return f"carried, {p.votes} vote{'s' if p.votes != 1 else ''} of current members"
    if p.expired:
        return f"expired {utc(p.expires_at)} with {p.votes} of {p.quorum} votes (propose it again)"
    if p.votes >= p.quorum:  # the quorum was lowered since its last vote
        carry = f"`xcentre governance carry {p.id}`"
        return f"open, {p.votes} of {p.quorum} votes: carry it ({carry}), expires {utc(p.expires_at)}"
    missing = p.quorum - p.votes
    return f"open, {p.votes} of {p.quorum} votes ({missing} more to carry it), expires {utc(p.expires_at)}"


def _proposal_lines(p: Proposal) -> list[str]:
    lines = [f"#{p.id} {_what(p)}: {_state(p)}", f"    voted: {', '.join(p.voters) or 'nobody'}"]
    if p.member is not None:
        m = p.member
        prices = m["prices"]
        lines.append(f"    account {m['account']}")
        lines.append(f"    gateway {m['gateway_url']}")
        lines.append(f"    token key {m['token_key']}")
        lines.append(
            f"    rates per CPU-second {prices['per_cpu_second']:,}, per GPU-second {prices['per_gpu_second']:,}, "
            f"per GiB-hour {prices['per_gib_hour']:,} credit units"
        )
    return lines


def _stepped(step: Step, verb: str = "proposed") -> tuple[dict, list[str]]:
    from ledger.governance import utc

    p = step.proposal
    lines = [f"{step.by} {verb} #{p.id}: {_what(p)}"]
    if step.carried:
        lines.append(f"carried out in this transaction, with {p.votes} vote{'s' if p.votes != 1 else ''}")
        if p.action == "fund":
            lines.append(f"{p.subject} may now deposit it as collateral in Settlement (approve, then deposit)")
    else:
        missing = max(p.quorum - p.votes, 0)
        lines.append(
            f"open: {p.votes} of {p.quorum} votes, {missing} more to carry it (`xcentre governance vote {p.id}`)"
        )
        lines.append(f"it expires {utc(p.expires_at)} unless carried before")
    lines.append(f"tx {step.tx_hash}")
    return step.to_dict(), lines
