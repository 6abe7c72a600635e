"""The consortium's governance on chain: propose, vote, list.

Members admit and remove members, change the quorum and fund members with new
credit by a k-of-n vote of the active members (the Consortium contract's
proposals). A proposal is carried out in the transaction of the vote that
reaches the quorum; one not carried within PROPOSAL_LIFETIME (30 days) of its
making expires and takes no more votes. Every step is checked here first, so
input the contract would refuse is refused with a clear reason and nothing is sent; a revert that
still happens (the chain moved on meanwhile) is translated the same way and
changes nothing. A member's own endpoint and token key are self-service
(`update_member`); rates are too (`ledger.rates`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD

from ledger.chain import Chain, ChainRevert
from ledger.deploy import Deployment, MemberSpec, Prices, bind
from ledger.ids import InvalidName, centre_id, centre_name
from ledger.primitives.hex import to_hex

ADMIT, REMOVE, SET_QUORUM, FUND = 0, 1, 2, 3
ACTIONS = {ADMIT: "admit", REMOVE: "remove", SET_QUORUM: "quorum", FUND: "fund"}
"""Action number on chain -> its name in this module, the CLI and JSON."""
MAX_AMOUNT = 2**128 - 1
"""Largest credit one FUND proposal may mint (the contract keeps it in 128 bits)."""
PROPOSAL_LIFETIME = 30 * 24 * 3600
"""Seconds a proposal takes votes after its making (Governed.PROPOSAL_LIFETIME on chain)."""


class GovernanceError(ValueError):
    """A governance step refused, by these checks or by the contract; nothing changed.

    `reason` is a short stable code ("not-a-member", "already-voted", …) for scripts.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        """The project's JSON error shape."""
        return {"error": str(self), "reasons": [self.reason]}


# Contract error name -> (reason code, what it means for an operator).
_REVERTS: dict[str, tuple[str, str]] = {
    "NotMember": (
        "not-a-member",
        "the sender or the centre named is not an active member (a funding: not with the account it was proposed for)",
    ),
    "AlreadyVoted": ("already-voted", "this member has already voted for the proposal"),
    "ProposalClosed": ("proposal-closed", "the proposal has already been carried out"),
    "NotCarried": ("not-carried", "current members' votes for the proposal do not reach the quorum"),
    "ProposalExpired": (
        "proposal-expired",
        "the proposal was not carried within 30 days of its making and takes no more votes: propose it again",
    ),
    "UnknownProposal": ("unknown-proposal", "no proposal has this id"),
    "QuorumUnreachable": ("quorum-unreachable", "the removal would leave fewer members than the quorum"),
    "InvalidQuorum": ("invalid-quorum", "the quorum must be from 1 to the number of active members"),
    "InvalidAmount": ("invalid-amount", "the amount must be from 1 to 2**128 - 1"),
    "CreditNotSet": ("credit-not-set", "this deployment's Consortium has no credit contract to mint"),
    "AlreadyMember": ("already-member", "the centre is already an active member"),
    "AccountInUse": ("account-in-use", "the account already belongs to a member"),
    "InvalidName": ("invalid-name", "the centre name must be [a-z0-9-]{1,32}"),
    "InvalidAccount": ("invalid-account", "the account must not be the zero address"),
    "InvalidAction": ("invalid-action", "the contract does not know this action"),
}


@dataclass(frozen=True)
class Proposal:
    """One proposal as the chain holds it now."""

    id: int
    action: str  # admit, remove, quorum, fund
    subject: str | None  # the centre admitted, removed or funded; None for a quorum change
    amount: int | None  # fund: credit to mint; quorum: the quorum proposed; None otherwise
    votes: int  # votes of current members
    quorum: int  # the quorum now (what carries it, if not executed yet)
    executed: bool
    expires_at: int  # unix seconds: from this block time on, votes on it revert
    expired: bool  # not carried, and the chain's latest block is at or past expires_at
    voters: list[str] = field(default_factory=list)  # in vote order, the proposer first
    member: dict[str, Any] | None = None  # admit: the record that would be admitted

    @property
    def state(self) -> str:
        """Its state: carried, expired or open (only an open proposal takes votes)."""
        return "carried" if self.executed else "expired" if self.expired else "open"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "subject": self.subject,
            "amount": self.amount,
            "votes": self.votes,
            "quorum": self.quorum,
            "executed": self.executed,
            "expires_at": self.expires_at,
            "expired": self.expired,
            "state": self.state,
            "voters": list(self.voters),
            "member": self.member,
        }


@dataclass(frozen=True)
class Step:
    """What one propose or vote transaction did."""

    proposal: Proposal
    by: str  # the member that sent it
    carried: bool  # carried out in this very transaction
    tx_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"proposal": self.proposal.to_dict(), "by": self.by, "carried": self.carried, "tx": self.tx_hash}


@dataclass(frozen=True)
class MemberRecord:
    """A member's record on chain (its endpoint and token key are what `update_member` changes)."""

    name: str
    account: str
    gateway_url: str
    token_key: str  # 0x-hex
    active: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "account": self.account,
            "gateway_url": self.gateway_url,
            "token_key": self.token_key,
            "active": self.active,
        }


# -- reading ----------------------------------------------------------------------------


def quorum(chain: Chain, deployment: Deployment) -> int:
    """Votes of current members that carry a proposal now."""
    return int(chain.call(_consortium(chain, deployment).functions.quorum()))


def member_names(chain: Chain, deployment: Deployment) -> list[str]:
    """The active members in admission order."""
    ids = chain.call(_consortium(chain, deployment).functions.memberIds())
    return [centre_name(bytes(i)) for i in ids]


def member_record(chain: Chain, deployment: Deployment, centre: str) -> MemberRecord:
    """The chain's record of `centre` (also of a removed one); GovernanceError if never admitted."""
    ident = _centre(centre)
    try:
        m = chain.call(_consortium(chain, deployment).functions.member(ident))
    except ChainRevert as exc:
        raise _refusal(exc, f"{centre} was never a member") from None
    return _record(m)


def proposal(chain: Chain, deployment: Deployment, proposal_id: int) -> Proposal:
    """Proposal `proposal_id` now; GovernanceError for an id never given out."""
    consortium = _consortium(chain, deployment)
    count = int(chain.call(consortium.functions.proposalCount()))
    _check_id(proposal_id, count)
    return _read(chain, consortium, proposal_id, quorum(chain, deployment))


def proposals(chain: Chain, deployment: Deployment, *, open_only: bool = False) -> list[Proposal]:
    """Every proposal in id order (with `open_only`, those still taking votes: neither carried nor expired)."""
    consortium = _consortium(chain, deployment)
    count = int(chain.call(consortium.functions.proposalCount()))
    q = quorum(chain, deployment)
    listed = [_read(chain, consortium, i, q) for i in range(1, count + 1)]
    return [p for p in listed if not open_only or p.state == "open"]


def chain_time(chain: Chain) -> int:
    """The time expiry is judged by here: the earliest the next block may have, a second after the latest's.

    Not this machine's clock: one ahead of the chain's would refuse a vote the chain still takes. A node that mines
    on demand (anvil) may have an idle chain's latest block hours old; a vote on a proposal that expired since is
    sent, and its revert (ProposalExpired) is the refusal."""
    return int(chain.w3.eth.get_block("latest")["timestamp"]) + 1


# -- proposing and voting -----------------------------------------------------------------


def propose_admit(chain: Chain, deployment: Deployment, account: LocalAccount, member: MemberSpec) -> Step:
    """Propose to admit `member` (its record as it will stand on chain; its prices become its first rates)."""
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    if member.name in member_names(chain, deployment):
        raise GovernanceError(f"{member.name} is already an active member", "already-member")
    holder = _id_of(chain, consortium, member.account)
    if holder is not None:
        raise GovernanceError(f"the account {member.account} already belongs to {holder}", "account-in-use")
    return _send(chain, consortium, account, me, consortium.functions.propose(ADMIT, member.as_tuple()), _created)


def propose_remove(chain: Chain, deployment: Deployment, account: LocalAccount, centre: str) -> Step:
    """Propose to remove active member `centre`; refused when the rest could not reach the quorum."""
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    names = _active(chain, deployment, centre)
    q = quorum(chain, deployment)
    if len(names) - 1 < q:
        raise GovernanceError(
            f"removing {centre} would leave {len(names) - 1} member(s), fewer than the quorum of {q}: "
            "lower the quorum first",
            "quorum-unreachable",
        )
    record = chain.call(consortium.functions.member(centre_id(centre)))
    return _send(chain, consortium, account, me, consortium.functions.propose(REMOVE, record), _created)


def propose_quorum(chain: Chain, deployment: Deployment, account: LocalAccount, new_quorum: int) -> Step:
    """Propose that `new_quorum` votes carry proposals from now on (1 to the number of active members)."""
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    n = len(member_names(chain, deployment))
    if not _is_int(new_quorum) or not 1 <= new_quorum <= n:
        raise GovernanceError(
            f"the quorum must be an integer from 1 to {n} (the active members), got {new_quorum!r}", "invalid-quorum"
        )
    current = quorum(chain, deployment)
    if new_quorum == current:
        raise GovernanceError(f"the quorum is already {current}", "quorum-unchanged")
    return _send(chain, consortium, account, me, consortium.functions.proposeQuorum(new_quorum), _created)


def propose_funding(chain: Chain, deployment: Deployment, account: LocalAccount, centre: str, amount: int) -> Step:
    """Propose to mint `amount` of new credit (smallest unit) to active member `centre`'s account.

    The member then deposits it as collateral in Settlement as it sees fit; credit is
    minted in no other way after deployment.
    """
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    if not _is_int(amount) or not 1 <= amount <= MAX_AMOUNT:
        raise GovernanceError(
            f"the amount must be a whole number of credit units from 1 to 2**128 - 1, got {amount!r}",
            "invalid-amount",
        )
    _active(chain, deployment, centre)
    if int(chain.call(consortium.functions.credit()), 16) == 0:
        raise GovernanceError(_REVERTS["CreditNotSet"][1], "credit-not-set")
    fn = consortium.functions.proposeFunding(centre_id(centre), amount)
    return _send(chain, consortium, account, me, fn, _created)


def vote(chain: Chain, deployment: Deployment, account: LocalAccount, proposal_id: int) -> Step:
    """Vote for proposal `proposal_id`; the vote that reaches the quorum carries it out.

    An expired proposal is refused here ("proposal-expired"); one that expires between this
    check and the vote's block is refused by the contract, with the same reason.
    """
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    count = int(chain.call(consortium.functions.proposalCount()))
    _check_id(proposal_id, count)
    terms = chain.call(consortium.functions.proposalTerms(proposal_id))
    if bool(terms[3]):
        raise GovernanceError(f"proposal {proposal_id} has already been carried out", "proposal-closed")
    expires_at = int(chain.call(consortium.functions.proposalExpiresAt(proposal_id)))
    if chain_time(chain) >= expires_at:
        raise GovernanceError(
            f"proposal {proposal_id} expired at {utc(expires_at)} without reaching the quorum "
            "(proposals take votes for 30 days): propose it again",
            "proposal-expired",
        )
    if chain.call(consortium.functions.hasVoted(proposal_id, centre_id(me))):
        raise GovernanceError(f"{me} has already voted for proposal {proposal_id}", "already-voted")
    return _send(chain, consortium, account, me, consortium.functions.vote(proposal_id), lambda _c, _r: proposal_id)


def carry(chain: Chain, deployment: Deployment, account: LocalAccount, proposal_id: int) -> Step:
    """Carry out proposal `proposal_id`, whose current members' votes reach the quorum without a new vote (the
    quorum was lowered since its last vote, and every supporter has voted already)."""
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    count = int(chain.call(consortium.functions.proposalCount()))
    _check_id(proposal_id, count)
    now = proposal(chain, deployment, proposal_id)
    if now.executed:
        raise GovernanceError(f"proposal {proposal_id} has already been carried out", "proposal-closed")
    if now.expired:
        raise GovernanceError(
            f"proposal {proposal_id} expired at {utc(now.expires_at)} without reaching the quorum: propose it again",
            "proposal-expired",
        )
    if now.votes < now.quorum:
        raise GovernanceError(
            f"proposal {proposal_id} has {now.votes} of the {now.quorum} votes that carry it: it needs "
            f"{now.quorum - now.votes} more (`xcentre governance vote {proposal_id}`)",
            "not-carried",
        )
    return _send(chain, consortium, account, me, consortium.functions.carry(proposal_id), lambda _c, _r: proposal_id)


def update_member(
    chain: Chain,
    deployment: Deployment,
    account: LocalAccount,
    *,
    gateway_url: str | None = None,
    token_key: bytes | None = None,
) -> MemberRecord:
    """Change the sender's own gateway URL and/or token key (self-service; no vote).

    What is not given keeps its value on chain. Gateways pick the new key up from the
    chain; tokens signed with the old key stop being accepted once they see it.
    """
    consortium = _consortium(chain, deployment)
    me = _sender(chain, consortium, account)
    if gateway_url is None and token_key is None:
        raise GovernanceError("nothing to update: give a gateway URL, a token key or both", "nothing-to-update")
    if gateway_url is not None and not gateway_url.startswith(("http://", "https://")):
        raise GovernanceError(
            f"the gateway URL must start with http:// or https://, got {gateway_url!r}", "invalid-url"
        )
    if token_key is not None and (not isinstance(token_key, (bytes, bytearray)) or len(token_key) != 32):
        raise GovernanceError("the token key must be 32 bytes (an Ed25519 public key)", "invalid-token-key")
    current = member_record(chain, deployment, me)
    url = current.gateway_url if gateway_url is None else gateway_url
    key = bytes.fromhex(current.token_key[2:]) if token_key is None else bytes(token_key)
    try:
        chain.transact(consortium.functions.updateMember(url, key), account)
    except ChainRevert as exc:
        raise _refusal(exc) from None
    return member_record(chain, deployment, me)


# -- helpers ------------------------------------------------------------------------------


def _consortium(chain: Chain, deployment: Deployment) -> Contract:
    return bind(chain, deployment).consortium


def utc(seconds: int) -> str:
    """A chain time for people: "2026-12-02 19:33 UTC"."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _centre(name: str) -> bytes:
    try:
        return centre_id(name)
    except InvalidName as exc:
        raise GovernanceError(str(exc), "invalid-name") from None


def _active(chain: Chain, deployment: Deployment, centre: str) -> list[str]:
    """The active members' names; GovernanceError unless `centre` is one of them."""
    _centre(centre)
    names = member_names(chain, deployment)
    if centre not in names:
        raise GovernanceError(f"{centre} is not an active member (members: {', '.join(names)})", "not-a-member")
    return names


def _id_of(chain: Chain, consortium: Contract, address: str) -> str | None:
    """The active member whose chain account is `address`, or None."""
    if not is_address(address):
        raise GovernanceError(f"not a chain account address: {address!r}", "invalid-account")
    try:
        return centre_name(bytes(chain.call(consortium.functions.idOf(to_checksum_address(address)))))
    except ChainRevert as exc:
        if exc.reason == "NotMember":
            return None
        raise


def _sender(chain: Chain, consortium: Contract, account: LocalAccount) -> str:
    """The name of the member whose key `account` is; GovernanceError for any other key."""
    me = _id_of(chain, consortium, account.address)
    if me is None:
        raise GovernanceError(
            f"the chain key's account {account.address} is not an active member's: only members propose and vote",
            "not-a-member",
        )
    return me


def _check_id(proposal_id: int, count: int) -> None:
    if not _is_int(proposal_id) or not 1 <= proposal_id <= count:
        known = f"ids are 1 to {count}" if count else "there is none yet"
        raise GovernanceError(f"no proposal {proposal_id!r} ({known})", "unknown-proposal")


def _created(consortium: Contract, receipt: Any) -> int:
    events = consortium.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
    return int(events[0]["args"]["proposalId"])


def _send(
    chain: Chain,
    consortium: Contract,
    account: LocalAccount,
    me: str,
    fn: Any,
    proposal_of: Callable[[Contract, Any], int],
) -> Step:
    """Send `me`'s propose or vote transaction; a revert becomes a GovernanceError (nothing changed)."""
    try:
        receipt = chain.transact(fn, account)
    except ChainRevert as exc:
        raise _refusal(exc) from None
    pid = proposal_of(consortium, receipt)
    carried = any(
        int(e["args"]["proposalId"]) == pid
        for e in consortium.events.ProposalExecuted().process_receipt(receipt, errors=DISCARD)
    )
    q = int(chain.call(consortium.functions.quorum()))
    return Step(_read(chain, consortium, pid, q), me, carried, to_hex(receipt["transactionHash"]))


def _refusal(exc: ChainRevert, message: str | None = None) -> GovernanceError:
    """A contract revert as a GovernanceError with the operator's reading of it."""
    code, meaning = _REVERTS.get(exc.reason, ("reverted", f"the contract refused: {exc}"))
    detail = f" ({', '.join(_arg(a) for a in exc.error_args)})" if exc.error_args else ""
    return GovernanceError(message or f"{meaning}{detail}", code)


def _arg(value: object) -> str:
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        try:
            return centre_name(bytes(value))
        except InvalidName:
            return to_hex(value)
    return str(value)


def _read(chain: Chain, consortium: Contract, proposal_id: int, q: int) -> Proposal:
    fns = consortium.functions
    action, subject, amount, executed, votes = chain.call(fns.proposalTerms(proposal_id))
    expires_at = int(chain.call(fns.proposalExpiresAt(proposal_id)))
    voters = [centre_name(bytes(v)) for v in chain.call(fns.proposalVoters(proposal_id))]
    member = None
    if action == ADMIT:
        m = chain.call(fns.proposal(proposal_id))[3]
        record = _record(m).to_dict()
        del record["active"]
        member = record | {"prices": asdict(Prices.from_tuple(m[5]))}
    return Proposal(
        id=proposal_id,
        action=ACTIONS.get(int(action), str(action)),
        subject=None if int(action) == SET_QUORUM else centre_name(bytes(subject)),
        amount=int(amount) if int(action) in (SET_QUORUM, FUND) else None,
        votes=int(votes),
        quorum=q,
        executed=bool(executed),
        expires_at=expires_at,
        expired=not executed and chain_time(chain) >= expires_at,
        voters=voters,
        member=member,
    )


def _record(m: Any) -> MemberRecord:
    """A Consortium.Member tuple (positional binding) as a MemberRecord."""
    return MemberRecord(
        name=str(m[1]),
        account=to_checksum_address(m[2]),
        gateway_url=str(m[3]),
        token_key=to_hex(bytes(m[4])),
        active=bool(m[6]),
    )
