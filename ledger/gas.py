"""Gas money for the centres' chain accounts: what each holds, what it needs, and funding it.

Every gateway sends transactions from its centre's account (its issuer key at start, its
policy versions, one anchor per epoch, settlement, the supervisors' key generation). On a
chain with a gas price those cost ether the account must hold: an account holding none
cannot send its first transaction. Consortium chains often run with a zero gas price
(Besu: `--min-gas-price=0` with a zero base fee), where an empty account is fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from ledger.chain import Chain

GAS_PER_CENTRE = 10_000_000
"""Gas a centre's account should be able to pay for: its start (issuer key, policy), its part of the supervisors'
key generation and the anchors and settlements of its first epochs."""
HEADROOM = 2
"""Times the current gas price the advice allows for (EIP-1559 base fees rise under load)."""


@dataclass(frozen=True)
class GasAccount:
    """One centre's account: its balance and what it needs at the chain's current gas price (wei)."""

    centre: str
    account: str
    balance: int
    needed: int

    @property
    def short(self) -> bool:
        return self.balance < self.needed


def gas_price(chain: Chain) -> int:
    """The chain's current gas price in wei (0 on a zero-gas-price consortium chain)."""
    return int(chain.w3.eth.gas_price)


def needed(price: int) -> int:
    """Wei a centre's account should hold at gas price `price`: nothing on a zero-gas-price chain."""
    return price * GAS_PER_CENTRE * HEADROOM


def accounts_gas(chain: Chain, accounts: Mapping[str, str]) -> list[GasAccount]:
    """Each centre's (name -> address) balance and need, read from the chain now."""
    need = needed(gas_price(chain))
    return [
        GasAccount(
            name, to_checksum_address(address), int(chain.w3.eth.get_balance(to_checksum_address(address))), need
        )
        for name, address in accounts.items()
    ]


def fund(chain: Chain, funder: LocalAccount, accounts: Mapping[str, str], wei: int) -> dict[str, int]:
    """Send each account what it lacks of `wei` from `funder`; returns what was sent to each (0: it had enough)."""
    if wei < 0:
        raise ValueError(f"cannot fund with a negative amount: {wei}")
    sent = {}
    for name, address in accounts.items():
        lacking = wei - int(chain.w3.eth.get_balance(to_checksum_address(address)))
        sent[name] = max(lacking, 0)
        if lacking > 0:
            chain.send_value(funder, address, lacking)
    return sent


def shortfall_message(short: list[GasAccount], price: int, fund_hint: str) -> str:
    """What an operator reads when centres' accounts cannot pay for gas: who, how much, and how to fix it."""
    lines = [
        (
            f"the chain's gas price is {price} wei, and {len(short)} centre account(s) hold too little gas money "
            "to send their gateway's first transactions:"
        )
    ]
    lines += [f"  {g.centre} {g.account}: holds {g.balance} wei, needs about {g.needed} wei" for g in short]
    lines.append(
        f"fund them ({fund_hint}), or run the consortium's chain with a zero gas price "
        "(Besu: --min-gas-price=0 and a zero base fee in genesis)"
    )
    return "\n".join(lines)
