"""A centre's published rates on chain: publish a new version, read every version back.

Versions are what usage records name (`rates_version`); the Consortium contract
keeps every one of them unchanged and lets a new one apply no sooner than the
consortium's notice after it is published.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from eth_account.signers.local import LocalAccount
from web3.logs import DISCARD

from ledger.chain import Chain
from ledger.deploy import Deployment, Prices, bind
from ledger.ids import centre_id, centre_name

MINING_MARGIN = 60
"""Seconds added to the earliest start by default, so the block that carries a publication is not later than it."""


@dataclass(frozen=True)
class RatesVersion:
    """One version of a centre's rates as the chain holds it."""

    centre: str
    version: int
    effective_from: int  # UTC seconds
    prices: Prices

    def to_dict(self) -> dict:
        return asdict(self)  # prices nested as a dict of its three fields


def publish(
    chain: Chain, deployment: Deployment, account: LocalAccount, prices: Prices, effective_from: int | None = None
) -> RatesVersion:
    """Publish `prices` as the account's centre's next rates version.

    Without `effective_from`, the version is due as soon as the consortium's notice
    allows (plus MINING_MARGIN). A start within the notice, or not after the
    centre's latest version, reverts on chain (`RatesTooSoon`).
    """
    consortium = bind(chain, deployment).consortium
    if effective_from is None:
        chain_now = int(chain.w3.eth.get_block("latest")["timestamp"])
        notice = int(chain.call(consortium.functions.rateNotice()))
        effective_from = max(chain_now, int(time.time())) + notice + MINING_MARGIN
    receipt = chain.transact(consortium.functions.publishRates(prices.as_tuple(), effective_from), account)
    event = consortium.events.RatesPublished().process_receipt(receipt, errors=DISCARD)[0]["args"]
    name = centre_name(bytes(event["id"]))
    return RatesVersion(name, int(event["version"]), int(event["effectiveFrom"]), prices)


def history(chain: Chain, deployment: Deployment, centre: str) -> list[RatesVersion]:
    """Every rates version `centre` published, oldest first (an unknown centre has none)."""
    consortium = bind(chain, deployment, named=True).consortium.functions
    ident = centre_id(centre)
    versions = []
    for v in range(1, int(chain.call(consortium.ratesCount(ident))) + 1):
        published = chain.call(consortium.rates(ident, v))
        versions.append(
            RatesVersion(
                centre, int(published.version), int(published.effectiveFrom), Prices.from_chain(published.prices)
            )
        )
    return versions
