"""A whole consortium on one machine: one chain, one gateway per centre on loopback.

The demo runs it on the embedded chain and embedded directories; the
integration tests run the very same code on anvil and real slapd instances.
Each gateway is a real HTTP server and centres reach each other only over HTTP.
"""

from __future__ import annotations

import functools
import secrets
import shutil
import socket
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from auth.credentials import CredentialSchema, generate_issuer_key
from auth.directory import Directory
from auth.tokens import public_key_bytes
from gateway.api.app import create_app
from gateway.api.server import BackgroundServer, free_port
from gateway.client.supervising import Supervisor, run_local_dkg
from gateway.jobs.executor import LocalExecutor, sandbox_problem
from gateway.node.assemble import build_node
from gateway.node.centre import CentreNode
from gateway.node.signon import IssuerKey
from ledger.chain import Chain
from ledger.deploy import (
    DEFAULT_BOOKING_DELAY,
    DEFAULT_DISPUTE_WINDOW,
    DEFAULT_RATE_NOTICE,
    Deployment,
    MemberSpec,
    Prices,
    deploy_consortium,
)
from ledger.policies import PolicyVersion
from ledger.policies import publish as publish_policy
from ledger.supervision import Supervision

GAS_MONEY = 10**20
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def listening_port() -> int:
    """A free loopback port for a gateway, outside the OS's range for outgoing connections.

    A gateway's URL (with its port) goes on chain seconds before the gateway listens; a port from the
    ephemeral range could meanwhile become the source port of any outgoing connection on this machine
    (EADDRINUSE at start). Falls back to an ephemeral port where the range cannot be read.
    """
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    for _ in range(100):
        port = 10_000 + secrets.randbelow(max(low - 10_000, 1))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


@functools.cache
def job_sandbox() -> str:
    """Sandbox the jobs when this machine can (root and bubblewrap); else say loudly that it does not."""
    problem = sandbox_problem()
    if problem is None:
        return "bwrap"
    warning = (
        f"warning: jobs of this local consortium run UNSANDBOXED (a sandbox {problem}): fine for a demo on "
        "your own machine, never for real users"
    )
    width = min(shutil.get_terminal_size().columns, 80)  # the demo's terminal: wrapped, never cut
    print(textwrap.fill(warning, width=width, subsequent_indent="  "), file=sys.stderr)
    return "none"


@dataclass(frozen=True)
class CentreSpec:
    name: str
    title: str
    base_dn: str
    prices: Prices
    users: list[dict]
    groups: list[dict]
    policy: str
    signon_attributes: tuple[str, ...]
    allocations: dict[str, int] = field(default_factory=dict)
    """What the centre, as its users' home, grants each project (an LDAP group's cn) to spend."""


@dataclass(frozen=True)
class ConsortiumSpec:
    quorum: int
    initial_credit: int
    schema: CredentialSchema
    centres: list[CentreSpec]
    rate_notice: int = DEFAULT_RATE_NOTICE
    dispute_window: int = DEFAULT_DISPUTE_WINDOW
    booking_delay: int = DEFAULT_BOOKING_DELAY
    supervision_threshold: int = 2
    """Of every centre, a supervisor: this many of them open a group signature together."""

    def centre(self, name: str) -> CentreSpec:
        return next(c for c in self.centres if c.name == name)


def demo_spec() -> ConsortiumSpec:
    """The three-centre consortium described in gateway/demo/data/consortium.toml."""
    data = resources.files("gateway.demo") / "data"
    raw = tomllib.loads((data / "consortium.toml").read_text())
    centres = [
        CentreSpec(
            name=c["name"],
            title=c["title"],
            base_dn=c["base_dn"],
            prices=Prices(**c["prices"]),
            users=c["users"],
            groups=c.get("groups", []),
            policy=(data / c["policy"]).read_text(),
            signon_attributes=tuple(c["signon_attributes"]),
            allocations=dict(c.get("allocations", {})),
        )
        for c in raw["centre"]
    ]
    schema = CredentialSchema.parse((data / raw["credential_schema"]).read_text())
    return ConsortiumSpec(
        quorum=raw["quorum"],
        initial_credit=raw["initial_credit"],
        schema=schema,
        centres=centres,
        rate_notice=raw.get("rate_notice", DEFAULT_RATE_NOTICE),
        dispute_window=raw.get("dispute_window", DEFAULT_DISPUTE_WINDOW),
        booking_delay=raw.get("booking_delay", DEFAULT_BOOKING_DELAY),
    )


@dataclass
class RunningCentre:
    spec: CentreSpec
    account: LocalAccount
    token_key: Ed25519PrivateKey
    issuer_key: IssuerKey
    operator_key: str
    node: CentreNode | None = None
    server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError(f"{self.spec.name}'s gateway is not started")
        return self.server.url


@dataclass
class LocalConsortium:
    chain: Chain
    spec: ConsortiumSpec
    directories: dict[str, Directory]
    data_dir: Path
    centres: dict[str, RunningCentre] = field(default_factory=dict)
    auditor: LocalAccount = field(default_factory=Account.create, repr=False)
    """The consortium's auditor: a chain key of its own (no member's), in every gateway's `auditors`,
    the only reader of the centres' whole decision logs."""
    _deployment: Deployment | None = field(default=None, init=False, repr=False)

    @property
    def deployment(self) -> Deployment:
        """Where the consortium's contracts live (once start() deployed them)."""
        if self._deployment is None:
            raise RuntimeError("the local consortium is not started: its contracts are not deployed yet")
        return self._deployment

    def start(self) -> LocalConsortium:
        """Deploy the consortium's contracts and start every centre's gateway."""
        ports = {c.name: listening_port() for c in self.spec.centres}
        for c in self.spec.centres:
            account = Account.create()
            self.chain.fund(account.address, GAS_MONEY)
            self.centres[c.name] = RunningCentre(
                c, account, Ed25519PrivateKey.generate(), IssuerKey(*generate_issuer_key()), secrets.token_urlsafe(24)
            )
        deployer = Account.create()
        self.chain.fund(deployer.address, GAS_MONEY)
        members = [
            MemberSpec(
                name=c.name,
                account=self.centres[c.name].account.address,
                gateway_url=f"http://127.0.0.1:{ports[c.name]}",
                token_key=public_key_bytes(self.centres[c.name].token_key),
                prices=c.prices,
            )
            for c in self.spec.centres
        ]
        self._deployment = deploy_consortium(
            self.chain,
            deployer,
            members,
            self.spec.quorum,
            self.spec.initial_credit,
            rate_notice=self.spec.rate_notice,
            dispute_window=self.spec.dispute_window,
            booking_delay=self.spec.booking_delay,
            supervisors=[c.name for c in self.spec.centres],
            supervision_threshold=self.spec.supervision_threshold,
        )
        for c in self.spec.centres:  # each centre publishes its policy on chain before its gateway serves it
            self.policy_file(c.name).parent.mkdir(parents=True, exist_ok=True)
            self.policy_file(c.name).write_bytes(c.policy.encode("utf-8"))
            publish_policy(self.chain, self._deployment, self.centres[c.name].account, c.policy)
        # the supervisors' key, before any gateway signs a credential under it or checks a signature by it
        parties = [(c.name, self.centres[c.name].account, self.supervisor_state(c.name)) for c in self.spec.centres]
        run_local_dkg(Supervision.of(self.chain, self._deployment), parties)
        nodes = [self.start_centre(c.name, ports[c.name]) for c in self.spec.centres]
        for node in nodes:  # every index sees every issuer key before anyone signs on
            node.parts.epochs.flush()
        return self

    def supervisor_state(self, name: str) -> Path:
        """A centre's supervisor state file (0600: its DKG secrets, then its share of the supervisors' key)."""
        return self.data_dir / name / "supervisor.json"

    def supervisor(self, name: str) -> Supervisor:
        """A centre's supervisor: asks for openings and shares for them, with its chain key and state file."""
        return Supervisor(
            Supervision.of(self.chain, self.deployment),
            self.deployment,
            name,
            self.centres[name].account,
            self.supervisor_state(name),
        )

    def policy_file(self, name: str) -> Path:
        """The file a centre's gateway reads its Cedar policy from (as its configuration's `policy_file`)."""
        return self.data_dir / "policies" / f"{name}.cedar"

    def change_policy(self, name: str, text: str) -> PolicyVersion:
        """What a centre's operator does to change its policy: write the new text to the gateway's file and
        publish its hash on chain; the running gateway serves it from its next housekeeping round."""
        self.policy_file(name).write_bytes(text.encode("utf-8"))
        return publish_policy(self.chain, self.deployment, self.centres[name].account, text)

    def start_centre(self, name: str, port: int | None = None, **overrides: Any) -> CentreNode:
        """Build a centre's node on its data folder, start it and serve it (again, after stop_centre).

        `overrides` replace build_node arguments (a new issuer key, fewer workers …), as
        an operator would change a centre's configuration between two runs.
        """
        running = self.centres[name]
        if not port:
            if running.server is None:
                raise RuntimeError(f"{name} has never been served: start it on a port")
            port = running.server.port
        node = running.node = self.build_centre(name, **overrides)
        node.start()
        running.server = BackgroundServer(create_app(node), port=port).start()
        return node

    def build_centre(self, name: str, **overrides: Any) -> CentreNode:
        """A centre's node on its data folder, not started: what `xcentre gateway` builds at each start."""
        running = self.centres[name]
        c = running.spec
        arguments: dict[str, Any] = dict(
            name=c.name,
            chain=self.chain,
            deployment=self.deployment,
            account=running.account,
            token_key=running.token_key,
            issuer_key=running.issuer_key,
            schema=self.spec.schema,
            signon_attributes=c.signon_attributes,
            directory=self.directories[c.name],
            policy_file=self.policy_file(c.name),
            auditors=(self.auditor.address,),
            data_dir=self.data_dir / c.name,
            operator_key=running.operator_key,
            allocations=c.allocations,
        )
        if "executor" not in overrides:  # jobs see none of the consortium's data folders
            arguments["executor"] = LocalExecutor(
                self.data_dir / c.name / "jobs", sandbox=job_sandbox(), hide=(self.data_dir,)
            )
        return build_node(**(arguments | overrides))

    def stop_centre(self, name: str) -> None:
        """Stop one centre's gateway and node; its data folder stays, as after a shutdown."""
        running = self.centres[name]
        if running.server:
            running.server.stop()
        if running.node:
            running.node.stop()

    def stop(self) -> None:
        for name in self.centres:
            self.stop_centre(name)

    def url(self, name: str) -> str:
        return self.centres[name].url

    def operator_key(self, name: str) -> str:
        return self.centres[name].operator_key
