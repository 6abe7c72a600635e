"""Building a centre's node from its parts: chain, directory, keys, policy, storage.

`node_from_config` is what `xcentre gateway` runs; `build_node` is shared with
the local consortium that the demo and the tests start.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction
from web3.exceptions import BadFunctionCallOutput

from auth import bbs
from auth.credentials import CredentialSchema
from auth.directory import Directory
from auth.tokens import TokenIssuer, load_private_key
from gateway.books.answerer import Answerer
from gateway.books.background import BackgroundRound
from gateway.books.epochs import EpochCloser, check_schedule
from gateway.books.watcher import Watcher, fetch_evidence
from gateway.jobs.executor import Executor, LocalExecutor
from gateway.jobs.slurm import SlurmExecutor
from gateway.node.anonymous import SupervisionKey
from gateway.node.centre import CentreNode, NodeParts
from gateway.node.config import GatewayConfig
from gateway.node.decisions import DecisionLog
from gateway.node.groups import GroupDesk, chain_openings
from gateway.node.payer import Payer, collateral_source
from gateway.node.peers import Peers
from gateway.node.policies import (
    CLIENT_DECISION_BURST,
    CLIENT_DECISIONS_PER_SECOND,
    DECISION_BURST,
    DECISIONS_PER_SECOND,
    DecisionDesk,
    PolicyFiles,
    PolicyKeeper,
)
from gateway.node.ratelimit import SharedRateLimit
from gateway.node.signon import IssuerKey, SignOn
from gateway.store import Store
from gateway.store.groups import GroupBook
from gateway.store.holds import HoldBook
from ledger.chain import Chain, ChainRevert, ChainUnavailable, connect
from ledger.deploy import Deployment, bind
from ledger.epoch_clock import EpochClock
from ledger.ids import centre_id
from ledger.index import EventIndex
from ledger.netting import former_participants
from ledger.outbox import Outbox
from ledger.payment import Grant, Order
from ledger.primitives.files import write_private
from ledger.primitives.hex import bytes32, from_hex, to_hex
from ledger.records import UsageRecord, domain_for
from ledger.supervision import Supervision

#: Which process of a gateway a node is for (node_from_config).
Process = Literal["alone", "back", "front"]


def build_node(
    *,
    name: str,
    chain: Chain,
    deployment: Deployment,
    account: LocalAccount,
    token_key: Ed25519PrivateKey,
    issuer_key: IssuerKey,
    schema: CredentialSchema,
    signon_attributes: Sequence[str],
    directory: Directory,
    policy_file: Path,
    data_dir: Path,
    operator_key: str,
    schema_file: Path | None = None,
    auditors: Sequence[str] = (),
    token_ttl: int = 900,
    issuer_key_overlap: int = 86_400,
    workers: int = 4,
    executor: Executor | None = None,
    chain_confirmations: int = 0,
    allocations: Mapping[str, int] | None = None,
    epoch_every: int = 0,
    shared_limits: Path | None = None,
    runs_jobs: bool = True,
    credit_share: Fraction | None = None,
) -> CentreNode:
    """A centre's node, not started: `CentreNode.start` checks the policy files against the chain first.

    `schema_file` is the Cedar schema published with the policy, if any; `auditors` are the chain
    accounts that may read the whole decision log of an epoch (the only ones: members are not let in as such).
    `epoch_every` (seconds) closes the open epoch on that schedule in housekeeping; 0 closes it only when asked.
    `shared_limits`: a folder where the policy's rate limits are kept for every process of the gateway (fronts
    and back, gateway.api.fronts) rather than in this one's memory; `runs_jobs` False: a front's node.
    `credit_share`: the part of a home's free collateral it may owe this centre; None: 1 / (active members - 1)
    (gateway.node.credit).
    """
    if deployment.identity_registry is None:
        raise ValueError(
            "the deployment description names no IdentityRegistry, which a gateway needs to sign "
            "users on (a description written before the registry existed)"
        )
    domain, ledger = domain_for(deployment), bind(chain, deployment).usage_ledger.functions
    dispute_window = _or_chain(deployment.dispute_window, ledger.disputeWindow())
    booking_delay = _or_chain(deployment.booking_delay, ledger.bookingDelay())
    epoch_clock = _chains_clock(chain, deployment, ledger)
    if epoch_clock is not None:
        if epoch_every not in (0, epoch_clock.length):
            raise ValueError(
                f"[epochs] every = {epoch_every} s, but this consortium's epochs run on the chain's clock, "
                f"{epoch_clock.length} s each: leave every out (or set it to {epoch_clock.length})"
            )
        epoch_every = epoch_clock.length
    if epoch_every:
        check_schedule(epoch_every, booking_delay)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # keys, secrets and databases: the gateway's alone
    index = EventIndex(data_dir / "index.db", chain, deployment, confirmations=chain_confirmations)
    store = Store(data_dir / "gateway.db")
    outbox = Outbox(data_dir / "outbox.db")
    _register_chain_writes(outbox, chain, deployment, account, index, name=name)
    tokens = TokenIssuer(name, token_key, ttl=token_ttl)
    signon = SignOn(
        name=name,
        schema=schema,
        issuer_key=issuer_key,
        enrolment_secret=_secret(data_dir / "enrolment.secret"),
        directory=directory,
        index=index,
        outbox=outbox,
        tokens=tokens,
        requested=signon_attributes,
        key_overlap=issuer_key_overlap,
    )
    policy = PolicyKeeper(name, index, store, PolicyFiles(policy_file, schema_file))
    payer = Payer(
        name=name,
        account=account,
        domain=domain_for(deployment),
        index=index,
        directory=directory,
        book=HoldBook(store),
        allocations=allocations or {},
        collateral=collateral_source(index, account.address, bind(chain, deployment).settlement),
    )
    parts = NodeParts(
        name=name,
        account=account,
        index=index,
        store=store,
        directory=directory,
        policy=policy,
        decisions=DecisionDesk(
            name, policy, store, account, domain_for(deployment), **_decision_limits(shared_limits, fresh=runs_jobs)
        ),
        decision_log=DecisionLog(name, store, index, auditors),
        issuer=tokens,
        executor=executor or LocalExecutor(data_dir / "jobs", hide=(data_dir,)),
        epochs=EpochCloser(
            name,
            store,
            outbox,
            index,
            domain_for(deployment),
            settleable=lambda epoch: settleable(index, epoch, dispute_window, deployment.anchor_window, epoch_clock),
            booking_delay=booking_delay,
            every=epoch_every,
            dispute_window=dispute_window,
            epoch_clock=epoch_clock,
            clock=index.now if epoch_clock else time.time,  # the chain's epochs end by its clock or ours, sooner
        ),
        signon=signon,
        peers=Peers(lambda centre: getattr(index.member(centre), "gateway_url", None)),
        domain=domain_for(deployment),
        operator_key=operator_key,
        workers=workers,
        payer=payer,
        credit_share=credit_share,
        groups=GroupDesk(
            name=name,
            payer=payer,
            domain=domain,
            issuer_key=issuer_key,
            enrol=signon.enrol,
            index=index,
            book=GroupBook(store),
            outbox=outbox,
            supervision_key=SupervisionKey.from_chain(chain, deployment).get,
            openings=None if deployment.supervision is None else chain_openings(Supervision.of(chain, deployment)),
        ),
    )
    # a policy version published on chain is served as soon as the files hold it, without a restart
    rounds: list[Callable[[], object]] = [policy.refresh, Answerer(name, store, outbox, index, domain).answer_open]
    if parts.payer is not None:
        watcher = Watcher(
            name=name,
            index=index,
            outbox=outbox,
            payer=parts.payer,
            domain=domain,
            dispute_window=dispute_window,
            booking_delay=booking_delay,
            fetch=fetch_evidence,
        )
        rounds.append(BackgroundRound(watcher.round, f"{name}-watcher"))  # a claim's evidence may take minutes
    parts.epochs.rounds = tuple(rounds)
    return CentreNode(parts, runs_jobs=runs_jobs)


def _decision_limits(folder: Path | None, *, fresh: bool = False) -> dict[str, SharedRateLimit]:
    """The policy's rate limits shared by a gateway's processes (files in `folder`); none: the desk's own.

    `fresh` (the back, before it starts its fronts): the files are made again, so a restart starts every
    bucket full, as one process's memory does, and a file of another version or shape never stops a start."""
    if folder is None:
        return {}
    folder.mkdir(mode=0o700, exist_ok=True)
    for old in [*folder.glob("*.slots"), *folder.glob(".*.new")] if fresh else ():
        old.unlink()  # the files and what a creator killed half-way left
    return {
        "limit": SharedRateLimit(folder / "decisions.slots", DECISIONS_PER_SECOND, DECISION_BURST),
        "client_limit": SharedRateLimit(
            folder / "client-decisions.slots", CLIENT_DECISIONS_PER_SECOND, CLIENT_DECISION_BURST
        ),
    }


def node_from_config(config: GatewayConfig, chain: Chain | None = None, *, process: Process = "alone") -> CentreNode:
    """A node for `xcentre gateway`: everything named by the centre's configuration file.

    `process`: "alone" serves everything; with `[server] fronts`, "back" runs the jobs and keeps the books and
    each "front" accepts submissions (gateway.api.fronts); both keep the policy's rate limits in the data folder.
    """
    executor = job_executor(config)  # first: a centre that cannot sandbox its jobs does not start
    # a node that does not answer yet is no reason not to start: the gateway serves from its index
    chain = chain or connect(config.chain_url, require_node=False)
    return build_node(
        name=config.centre,
        chain=chain,
        deployment=Deployment.from_json(config.deployment.read_text()),
        account=Account.from_key(config.chain_key_file.read_text().strip()),
        token_key=load_private_key(config.token_key_file),
        issuer_key=load_issuer_key(config.issuer_key_file),
        schema=CredentialSchema.load(config.credential_schema),
        signon_attributes=config.signon_attributes,
        directory=Directory(
            config.ldap_url,
            config.ldap_base_dn,
            config.ldap_bind_dn,
            config.ldap_bind_password,
            centre=config.centre,
            groups_ttl=config.directory.groups_ttl,
        ),
        policy_file=config.policy_file,
        schema_file=config.policy_schema_file,
        auditors=config.auditors,
        data_dir=config.data_dir,
        operator_key=config.operator_key,
        token_ttl=config.token_ttl,
        issuer_key_overlap=config.issuer_key_overlap,
        workers=config.workers,
        executor=executor,
        chain_confirmations=config.chain_confirmations,
        allocations=config.allocations,
        epoch_every=config.epochs.every,
        shared_limits=None if process == "alone" else config.data_dir / "limits",
        runs_jobs=process != "front",
        credit_share=None if config.credit_share is None else Fraction(str(config.credit_share)),
    )


def settleable(
    index: EventIndex,
    epoch: int,
    dispute_window: int,
    anchor_window: int | None = None,
    epoch_clock: EpochClock | None = None,
) -> bool:
    """Whether `epoch` may settle now, judged from the index and the clock (no chain read per round).

    UsageLedger.settleable's rule: every active member anchored and both windows (disputes, then
    answers) passed since the last anchor, or the anchor deadline passed. Judged by the later of
    this machine's clock and the chain's, as the settle transaction is mined in a block stamped
    now; a chain that disagrees reverts it, and the next round asks again.
    """
    anchors = index.anchors(epoch)
    if epoch_clock is not None and anchor_window is not None:
        # On the chain's clock the deadline is the epoch's end + anchor_window, whoever anchored: an
        # epoch nobody anchored settles after it too.
        deadline: int | None = epoch_clock.end(epoch) + anchor_window
    elif not anchors:
        return False
    else:
        # Without it the chain's deadline counts from its Consortium.anchorQuorum-th anchor (quorum and
        # membership of that time): first anchor + anchor_window is never later, so this guess only asks
        # too early, and the chain says no.
        deadline = None if anchor_window is None else min(a.anchored_at for a in anchors) + anchor_window
    # After the deadline the epoch settles without the silent members, and later anchors are late:
    # paid by settleLate, not waited for here.
    members = {m.id for m in index.members()}
    on_time = [
        a.anchored_at for a in anchors if a.centre in members and (deadline is None or a.anchored_at <= deadline)
    ]
    if index.now() <= max(on_time, default=0) + 2 * dispute_window:
        return False
    everyone = bool(anchors) and members <= {a.centre for a in anchors}
    return everyone or (deadline is not None and index.now() > deadline)


def _chains_clock(chain: Chain, deployment: Deployment, ledger: Any) -> EpochClock | None:
    """The description's epoch clock, refused (ValueError) when the chain answers with another one: a gateway
    numbering its epochs by a wrong clock would anchor each one late, or early and never. A chain node that
    does not answer yet leaves the description trusted, as for its windows."""
    if chain.known_chain_id() is None:
        return deployment.epoch_clock()
    try:
        on_chain = (int(chain.call(ledger.epochLength())), int(chain.call(ledger.epochOrigin())))
    except (ChainRevert, BadFunctionCallOutput):  # a UsageLedger from before the clock has no such view
        on_chain = (0, 0)
    except ChainUnavailable:
        return deployment.epoch_clock()
    if on_chain != (deployment.epoch_length, deployment.epoch_origin):
        raise ValueError(
            f"the deployment description's epoch clock (epoch_length {deployment.epoch_length}, epoch_origin "
            f"{deployment.epoch_origin}) is not the chain's (UsageLedger.epochLength {on_chain[0]}, epochOrigin "
            f"{on_chain[1]}): use the deployment.json `xcentre deploy` wrote"
        )
    return deployment.epoch_clock()


def _or_chain(value: int | None, view: ContractFunction) -> int:
    """A deployment parameter from its description, or read from the contract (descriptions without it)."""
    return int(view.call()) if value is None else value


def job_executor(config: GatewayConfig) -> Executor:
    """The executor the configuration names: this machine (`local`) or the centre's Slurm cluster (`slurm`)."""
    if config.executor != "slurm":
        return local_executor(config)
    return SlurmExecutor(
        config.job_folder,
        slurm_conf=config.slurm_conf,
        partition=config.slurm_partition,
        sandbox=config.sandbox,
        network=config.job_network,
        uids=config.job_uids,
        hide=(config.data_dir, config.chain_key_file, config.token_key_file, config.issuer_key_file),
    )


def local_executor(config: GatewayConfig) -> LocalExecutor:
    """The centre's executor as configured; jobs see neither its data directory nor its key files.

    Raises ExecutorError (with what to install or set) when jobs cannot run as configured.
    """
    return LocalExecutor(
        config.job_folder,
        sandbox=config.sandbox,
        network=config.job_network,
        uids=config.job_uids,
        cpus=config.job_cpus,
        hide=(config.data_dir, config.chain_key_file, config.token_key_file, config.issuer_key_file),
        retention=config.job_folder_retention,
    )


def load_issuer_key(path: Path) -> IssuerKey:
    """A BBS issuer secret key file: 32 bytes as hex."""
    try:
        sk = from_hex(path.read_text().strip(), size=32, what="the issuer key")
        return IssuerKey(sk, bbs.SHA256.sk_to_pk(sk))
    except ValueError as exc:
        raise ValueError(f"{path}: not a BBS issuer secret key (64 hex digits): {exc}") from None


def _secret(path: Path) -> bytes:
    """A 32-byte secret kept in `path`, created on first use (and never replaced)."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            write_private(path, secrets.token_hex(32) + "\n")
    return from_hex(path.read_text().strip(), size=32, what=f"the secret in {path}")


#: Reverts of an anchor that pass with time: the centre deposits what its anchor bond lacks; a home named was
#: removed between the look at its membership and the block (the next send leaves it out).
ANCHOR_LATER = {"InsufficientCollateral", "UnknownHome", "EpochNotOver"}


class AnchorNotYet(RuntimeError):
    """An anchor the chain refuses for now (not a revert the outbox gives up on)."""


def _register_chain_writes(
    outbox: Outbox,
    chain: Chain,
    deployment: Deployment,
    account: LocalAccount,
    index: EventIndex | None = None,
    *,
    name: str | None = None,
) -> None:
    """The chain writes a gateway makes, each safe to repeat after a crash.

    A revert that means "this was already done" (a retry after a crash between
    mining and marking the item done) completes the item instead of failing it.
    """
    contracts = bind(chain, deployment, named=True)

    known = centre_id(name) if name is not None else None

    def me() -> bytes:  # the centre's id is its name's (ledger.ids): no chain read while a gateway is built
        return known if known is not None else bytes(chain.call(contracts.consortium.functions.idOf(account.address)))

    if contracts.identity_registry is None:  # build_node refuses such a deployment first
        raise ValueError("the deployment has no IdentityRegistry")
    registry = contracts.identity_registry.functions

    def send(fn: ContractFunction, done_if: str, already: Callable[[], bool] = lambda: True) -> str | None:
        try:
            receipt = chain.transact(fn, account)
        except ChainRevert as exc:
            if exc.reason == done_if and already():
                return None
            raise
        return to_hex(receipt["transactionHash"])

    ledger = contracts.usage_ledger.functions

    def anchor(p: dict) -> str | None:
        """The epoch's claims, but those on homes that are no members (removed by vote since their users' jobs
        ran here): the chain refuses a claim on a non-member (`UnknownHome`) and would refuse the whole anchor,
        and settlement drops claims on former members anyway (`settleWithout`); their records stay in the store."""
        members = [bool(contracts.consortium.functions.isMember(bytes32(h)).call()) for h in p["homes"]]
        if not all(members):
            p = {**p} | {
                key: [v for v, member in zip(p[key], members, strict=True) if member]
                for key in ("homes", "roots", "counts", "totals")
            }
        homes, roots = [bytes32(h) for h in p["homes"]], [bytes32(r) for r in p["roots"]]
        # An anchor queued before decision logs existed carries none: it anchors an empty log.
        decision_root = bytes32(p.get("decision_root", bytes(32)), what="decision_root")
        fn = ledger.anchor(
            p["epoch"], homes, roots, p["counts"], p["totals"], decision_root, p.get("decision_count", 0)
        )
        try:
            return send(
                fn,
                "AlreadyAnchored",
                lambda: contracts.usage_ledger.functions.anchorOf(me(), p["epoch"]).call().anchored,
            )
        except ChainRevert as exc:
            if exc.reason in ANCHOR_LATER:  # kept pending: the outbox sends it again next round
                raise AnchorNotYet(f"epoch {p['epoch']} cannot be anchored yet: {exc}") from exc
            raise

    def settle(p: dict) -> str | None:
        try:
            return send(contracts.settlement.functions.settle(p["epoch"]), "AlreadySettled")
        except ChainRevert as exc:
            if exc.reason != "FormerParticipants" or index is None:
                raise
        # a centre the epoch's claims name left since: name every such one (the chain checks the list)
        window = int(contracts.settlement.functions.anchorWindow().call())
        deadline = int(contracts.usage_ledger.functions.anchorDeadline(p["epoch"]).call())  # the chain's clock
        anchors = [(a.centre, a.anchored_at, list(a.homes)) for a in index.anchors(p["epoch"])]
        formers = former_participants(anchors, [m.id for m in index.members()], window, deadline=deadline)
        return send(contracts.settlement.functions.settleWithout(p["epoch"], formers), "AlreadySettled")

    # Only this centre's own late anchor: "already late-settled" means paid (by this write landing before a
    # crash, or by anyone else: settleLate is open to all), never paid twice.
    def settle_late(p: dict) -> str | None:
        return send(contracts.settlement.functions.settleLate(p["epoch"], me()), "LateAlreadySettled")

    # A dispute or an answer goes on chain only when something is wrong: never per job.
    def dispute(p: dict) -> str | None:
        fn = ledger.dispute(bytes32(p["centre"]), p["epoch"], bytes32(p["home"]), p["index"], p["need_key"])
        return send(fn, "AlreadyDisputed")

    def answer(p: dict) -> str | None:
        evidence = {
            "record": UsageRecord.from_dict(p["record"]).message(),
            "order": Order.from_dict(p["order"]).message(),
            "orderSig": from_hex(p["order_signature"]),
            "grant": Grant.from_dict(p["grant"]).message(),
            "grantSig": from_hex(p["grant_signature"]),
            "receiptSig": from_hex(p["receipt_signature"]),
            "key": bytes32(p["key"]),
            "hashes": [bytes32(h) for h in p["hashes"]],
            "sums": p["sums"],
        }
        return send(ledger.answer(p["id"], evidence), "AlreadyAnswered")

    def duplicate(p: dict) -> str | None:
        def leaf(x: dict) -> dict:
            record = UsageRecord.from_dict(x["record"]).message()
            return {
                "epoch": x["epoch"],
                "index": x["index"],
                "record": record,
                "hashes": [bytes32(h) for h in x["hashes"]],
                "sums": x["sums"],
            }

        fn = ledger.disputeDuplicate(bytes32(p["centre"]), bytes32(p["home"]), leaf(p["a"]), leaf(p["b"]))
        return send(fn, "AlreadyVoided")

    def issuer_key(p: dict) -> str | None:
        pk = from_hex(p["pk"], what="pk")
        return send(
            registry.setIssuerKey(pk, p["previous_valid_until"]),
            "KeyAlreadyUsed",
            lambda: any(k.pk == pk and k.validUntil == 0 for k in registry.issuerKeys(me()).call()),
        )

    # An enrolment id is scoped to its home on chain, so "already enrolled" and "already
    # revoked" can only mean that this centre did it: no other member can take or block it.
    def enrol(p: dict) -> str | None:
        return send(registry.enrol(bytes32(p["enrolment"])), "AlreadyEnrolled")

    def revoke(p: dict) -> str | None:
        enrolment = bytes32(p["enrolment"])
        # its enrol write may still wait behind a chain outage
        if not registry.enrolment(me(), enrolment).call().enrolled:
            send(registry.enrol(enrolment), "AlreadyEnrolled")
        return send(registry.revoke(enrolment), "AlreadyRevoked")

    # Only an opening's home may identify it, so "already identified" with this enrolment is this home's own
    # write landing before a crash. NotEnrolled is final even while the member's enrol write still waits here:
    # the contract takes only an enrolment made no later than the opening was asked for, which that write,
    # landing later, never is.
    def identify(p: dict) -> str | None:
        if contracts.supervision is None:  # enqueued only where openings are read, from this contract
            raise ValueError("the deployment has no Supervision contract")
        supervision, enrolment = contracts.supervision.functions, bytes32(p["enrolment"])
        return send(
            supervision.identify(p["opening"], enrolment),
            "AlreadyIdentified",
            lambda: bytes(supervision.opening(p["opening"]).call().enrolment) == enrolment,
        )

    for kind, handler in (
        ("anchor", anchor),
        ("settle", settle),
        ("settle_late", settle_late),
        ("dispute", dispute),
        ("answer", answer),
        ("duplicate", duplicate),
        ("issuer-key", issuer_key),
        ("enrol", enrol),
        ("revoke", revoke),
        ("identify", identify),
    ):
        outbox.register(kind, handler)
