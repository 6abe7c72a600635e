"""A whole consortium on one machine: one chain, one gateway per centre on loopback.

The demo runs it on the embedded chain and embedded directories; the
integration tests run the very same code on anvil and real slapd instances.
Each gateway is a real HTTP server and centres reach each other only over HTTP.
"""

from __future__ import annotations

import secrets
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from auth.credentials import CredentialSchema, generate_issuer_key
from auth.directory import Directory
from auth.tokens import public_key_bytes
from gateway.app import create_app
from gateway.assemble import build_node
from gateway.node import CentreNode
from gateway.server import BackgroundServer, free_port
from gateway.signon import IssuerKey
from ledger.chain import Chain
from ledger.deploy import Deployment, MemberSpec, Prices, deploy_consortium

GAS_MONEY = 10**20


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


@dataclass(frozen=True)
class ConsortiumSpec:
    quorum: int
    initial_credit: int
    schema: CredentialSchema
    centres: list[CentreSpec]

    def centre(self, name: str) -> CentreSpec:
        return next(c for c in self.centres if c.name == name)


def demo_spec() -> ConsortiumSpec:
    """The three-centre consortium described in gateway/demo_data/consortium.toml."""
    data = resources.files("gateway") / "demo_data"
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
        )
        for c in raw["centre"]
    ]
    schema = CredentialSchema.parse((data / raw["credential_schema"]).read_text())
    return ConsortiumSpec(quorum=raw["quorum"], initial_credit=raw["initial_credit"], schema=schema, centres=centres)


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
        return self.server.url


@dataclass
class LocalConsortium:
    chain: Chain
    spec: ConsortiumSpec
    directories: dict[str, Directory]
    data_dir: Path
    centres: dict[str, RunningCentre] = field(default_factory=dict)
    deployment: Deployment | None = None

    def start(self) -> "LocalConsortium":
        """Deploy the consortium's contracts and start every centre's gateway."""
        ports = {c.name: free_port() for c in self.spec.centres}
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
        self.deployment = deploy_consortium(self.chain, deployer, members, self.spec.quorum, self.spec.initial_credit)
        for c in self.spec.centres:
            running = self.centres[c.name]
            running.node = build_node(
                name=c.name,
                chain=self.chain,
                deployment=self.deployment,
                account=running.account,
                token_key=running.token_key,
                issuer_key=running.issuer_key,
                schema=self.spec.schema,
                signon_attributes=c.signon_attributes,
                directory=self.directories[c.name],
                policy_text=c.policy,
                data_dir=self.data_dir / c.name,
                operator_key=running.operator_key,
            )
            running.node.start()
            running.server = BackgroundServer(create_app(running.node), port=ports[c.name]).start()
        for running in self.centres.values():  # every index sees every issuer key before anyone signs on
            running.node.parts.epochs.flush()
        return self

    def stop(self) -> None:
        for running in self.centres.values():
            if running.server:
                running.server.stop()
            if running.node:
                running.node.stop()

    def url(self, name: str) -> str:
        return self.centres[name].url

    def operator_key(self, name: str) -> str:
        return self.centres[name].operator_key
