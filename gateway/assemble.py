"""Building a centre's node from its parts: chain, directory, keys, policy, storage.

`node_from_config` is what `xcentre gateway` runs; `build_node` is shared with
the local consortium that the demo and the tests start.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from auth.directory import Directory
from auth.policy import PolicyEngine
from auth.tokens import TokenIssuer, load_private_key
from gateway.config import GatewayConfig
from gateway.epochs import EpochCloser
from gateway.executor import LocalExecutor
from gateway.forwarding import Peers
from gateway.node import CentreNode, NodeParts
from gateway.store import Store
from ledger.chain import Chain, ChainRevert, connect
from ledger.deploy import Deployment, bind
from ledger.ids import centre_id
from ledger.index import EventIndex
from ledger.outbox import Outbox
from ledger.records import domain_for


def build_node(
    *,
    name: str,
    chain: Chain,
    deployment: Deployment,
    account: LocalAccount,
    token_key: Ed25519PrivateKey,
    directory: Directory,
    policy_text: str,
    data_dir: Path,
    operator_key: str,
    token_ttl: int = 900,
    workers: int = 4,
) -> CentreNode:
    data_dir.mkdir(parents=True, exist_ok=True)
    index = EventIndex(data_dir / "index.db", chain, deployment)
    store = Store(data_dir / "gateway.db")
    outbox = Outbox(data_dir / "outbox.db")
    _register_chain_writes(outbox, chain, deployment, account)
    parts = NodeParts(
        name=name,
        account=account,
        index=index,
        store=store,
        directory=directory,
        policy=PolicyEngine(policy_text),
        issuer=TokenIssuer(name, token_key, ttl=token_ttl),
        executor=LocalExecutor(data_dir / "jobs"),
        epochs=EpochCloser(name, store, outbox, index),
        peers=Peers(lambda centre: getattr(index.member(centre), "gateway_url", None)),
        domain=domain_for(deployment),
        operator_key=operator_key,
        workers=workers,
    )
    return CentreNode(parts)


def node_from_config(config: GatewayConfig, chain: Chain | None = None) -> CentreNode:
    """A node for `xcentre gateway`: everything named by the centre's configuration file."""
    chain = chain or connect(config.chain_url)
    return build_node(
        name=config.centre,
        chain=chain,
        deployment=Deployment.from_json(config.deployment.read_text()),
        account=Account.from_key(config.chain_key_file.read_text().strip()),
        token_key=load_private_key(config.token_key_file),
        directory=Directory(
            config.ldap_url, config.ldap_base_dn, config.ldap_bind_dn, config.ldap_bind_password, centre=config.centre
        ),
        policy_text=config.policy_file.read_text(),
        data_dir=config.data_dir,
        operator_key=config.operator_key,
        token_ttl=config.token_ttl,
        workers=config.workers,
    )


def _register_chain_writes(outbox: Outbox, chain: Chain, deployment: Deployment, account: LocalAccount) -> None:
    """The chain writes a gateway makes, each safe to repeat after a crash."""
    contracts = bind(chain, deployment)
    me = centre_id_of(contracts, account)

    def anchor(payload: dict) -> str | None:
        try:
            receipt = chain.transact(
                contracts.usage_ledger.functions.anchor(
                    payload["epoch"],
                    bytes.fromhex(payload["root"][2:]),
                    payload["count"],
                    [centre_id(d) for d in payload["debtors"]],
                    payload["amounts"],
                ),
                account,
            )
        except ChainRevert as exc:
            if "AlreadyAnchored" in exc.reason and contracts.usage_ledger.functions.anchorOf(me, payload["epoch"]).call()[2]:
                return None
            raise
        return receipt["transactionHash"].to_0x_hex()

    def settle(payload: dict) -> str | None:
        try:
            receipt = chain.transact(contracts.settlement.functions.settle(payload["epoch"]), account)
        except ChainRevert as exc:
            if "AlreadySettled" in exc.reason:
                return None
            raise
        return receipt["transactionHash"].to_0x_hex()

    outbox.register("anchor", anchor)
    outbox.register("settle", settle)


def centre_id_of(contracts, account: LocalAccount) -> bytes:
    return contracts.consortium.functions.idOf(account.address).call()
