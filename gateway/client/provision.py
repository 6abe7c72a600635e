"""Setting a consortium up: each centre makes its keys, one operator deploys the contracts.

A centre keeps its three secret keys in its own folder and shares only the
public halves (`xcentre keygen` prints them); the consortium's members file
gathers those public halves and the prices, and `xcentre deploy` writes them
on chain as the genesis members.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from auth.credentials import generate_issuer_key
from auth.tokens import generate_key, public_key_bytes, save_private_key
from gateway.books.epochs import check_schedule
from ledger.chain import Chain
from ledger.deploy import (
    DEFAULT_ANCHOR_WINDOW,
    DEFAULT_BOOKING_DELAY,
    DEFAULT_DISPUTE_WINDOW,
    DEFAULT_DKG_WINDOW,
    DEFAULT_RATE_NOTICE,
    Deployment,
    MemberSpec,
    Prices,
    deploy_consortium,
)
from ledger.primitives.files import write_private
from ledger.primitives.hex import from_hex, to_hex

CHAIN_KEY = "chain.key"
TOKEN_KEY = "token.pem"
ISSUER_KEY = "issuer.key"


class ProvisionError(ValueError):
    """A members file or key folder cannot be used; the message says why."""


def new_centre_keys(folder: Path, centre: str) -> dict:
    """Create a centre's chain, token and issuer keys (0600) in `folder`; return the public halves.

    Refuses to overwrite existing keys: losing a key means losing the centre's
    identity on chain.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = [name for name in (CHAIN_KEY, TOKEN_KEY, ISSUER_KEY) if (folder / name).exists()]
    if existing:
        raise ProvisionError(f"{folder} already holds {', '.join(existing)}; keys are never overwritten")
    account = Account.create()
    write_private(folder / CHAIN_KEY, account.key.hex() + "\n")
    token_key = generate_key()
    save_private_key(token_key, folder / TOKEN_KEY)
    issuer_sk, issuer_pk = generate_issuer_key()
    write_private(folder / ISSUER_KEY, issuer_sk.hex() + "\n")
    return {
        "centre": centre,
        "account": account.address,
        "token_key": to_hex(public_key_bytes(token_key)),
        "issuer_pk": to_hex(issuer_pk),
    }


@dataclass(frozen=True)
class ConsortiumPlan:
    """What `xcentre deploy` writes on chain: the genesis members, the quorum, the credit and the consortium's
    periods in seconds (rates notice, dispute window, booking delay)."""

    members: list[MemberSpec]
    quorum: int
    initial_credit: int
    rate_notice: int = DEFAULT_RATE_NOTICE
    dispute_window: int = DEFAULT_DISPUTE_WINDOW
    booking_delay: int = DEFAULT_BOOKING_DELAY
    anchor_window: int = DEFAULT_ANCHOR_WINDOW
    """How long after an epoch's clock starts (its quorum-th on-time anchor) settlement waits for the other anchors."""
    supervisors: list[str] | None = None
    """The supervisors' committee (member names); None: every member."""
    supervision_threshold: int | None = None
    """How many supervisors open a signature together; None: a majority of the committee."""
    dkg_window: int = DEFAULT_DKG_WINDOW
    epoch_length: int = 0
    """Seconds an epoch lasts on the chain's clock; 0: the centres count epochs, closed by schedule or by hand."""

    def deploy(self, chain: Chain, deployer: LocalAccount) -> Deployment:
        """Deploy the consortium this plan describes, every setting of it passed on."""
        return deploy_consortium(
            chain,
            deployer,
            self.members,
            self.quorum,
            self.initial_credit,
            rate_notice=self.rate_notice,
            dispute_window=self.dispute_window,
            booking_delay=self.booking_delay,
            anchor_window=self.anchor_window,
            supervisors=self.supervisors,
            supervision_threshold=self.supervision_threshold,
            dkg_window=self.dkg_window,
            epoch_length=self.epoch_length,
        )


def load_members(path: Path) -> ConsortiumPlan:
    """Read a members file: `quorum`, `initial_credit`, `rate_notice`, `dispute_window`, `booking_delay`,
    `anchor_window`, `epoch_length`, one [[member]] table per centre and, optionally, `[supervision]` (`supervisors`,
    `threshold`, `dkg_window`)."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProvisionError(f"{path}: cannot read the members file: {exc}") from None
    entries = raw.get("member")
    if not isinstance(entries, list) or not entries:
        raise ProvisionError(f"{path}: no [[member]] tables")
    members = []
    for i, entry in enumerate(entries, start=1):
        try:
            members.append(
                MemberSpec(
                    name=entry["name"],
                    account=entry["account"],
                    gateway_url=entry["gateway_url"],
                    token_key=from_hex(entry["token_key"], size=32, what="token_key"),
                    prices=Prices(**entry["prices"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisionError(f"{path}: member #{i}: {type(exc).__name__}: {exc}") from None
    quorum, credit = raw.get("quorum"), raw.get("initial_credit", 0)
    if not isinstance(quorum, int) or not 1 <= quorum <= len(members):
        raise ProvisionError(f"{path}: quorum must be an integer from 1 to {len(members)}, got {quorum!r}")
    if not isinstance(credit, int) or credit < 0:
        raise ProvisionError(f"{path}: initial_credit must be a non-negative integer, got {credit!r}")
    periods = {
        key: _seconds(path, raw, key, default)
        for key, default in (
            ("rate_notice", DEFAULT_RATE_NOTICE),
            ("dispute_window", DEFAULT_DISPUTE_WINDOW),
            ("booking_delay", DEFAULT_BOOKING_DELAY),
            ("anchor_window", DEFAULT_ANCHOR_WINDOW),
            ("epoch_length", 0),
        )
    }
    if periods["epoch_length"]:
        try:
            check_schedule(periods["epoch_length"], periods["booking_delay"], "epoch_length")
        except ValueError as exc:
            raise ProvisionError(f"{path}: {exc}") from None
    supervisors, threshold, dkg_window = _supervision(path, raw.get("supervision", {}), [m.name for m in members])
    return ConsortiumPlan(
        members,
        quorum,
        credit,
        **periods,
        supervisors=supervisors,
        supervision_threshold=threshold,
        dkg_window=dkg_window,
    )


def _supervision(path: Path, raw: object, names: list[str]) -> tuple[list[str] | None, int | None, int]:
    """The `[supervision]` table: a committee of members, its threshold (2 to its size; 1 for a committee of one)
    and the DKG's window."""
    if not isinstance(raw, dict):
        raise ProvisionError(f"{path}: [supervision] must be a table")
    unknown = set(raw) - {"supervisors", "threshold", "dkg_window"}
    if unknown:
        raise ProvisionError(f"{path}: [supervision] has unknown keys: {', '.join(sorted(unknown))}")
    supervisors = raw.get("supervisors")
    if supervisors is not None:
        if not isinstance(supervisors, list) or not supervisors or not all(isinstance(s, str) for s in supervisors):
            raise ProvisionError(f"{path}: [supervision] supervisors must be a non-empty list of member names")
        strangers = [s for s in supervisors if s not in names]
        if strangers or len(set(supervisors)) != len(supervisors):
            raise ProvisionError(
                f"{path}: [supervision] supervisors must be distinct members ({', '.join(names)}); "
                f"got {', '.join(supervisors)}"
            )
    size = len(supervisors) if supervisors is not None else len(names)
    low = 1 if size == 1 else 2  # with a threshold of 1, one supervisor of several would open alone
    threshold = raw.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int) or isinstance(threshold, bool) or not low <= threshold <= size
    ):
        raise ProvisionError(
            f"{path}: [supervision] threshold must be an integer from {low} to {size}, got {threshold!r}"
        )
    dkg_window = raw.get("dkg_window", DEFAULT_DKG_WINDOW)
    if not isinstance(dkg_window, int) or isinstance(dkg_window, bool) or not 0 < dkg_window < 2**32:
        raise ProvisionError(f"{path}: [supervision] dkg_window must be 1 to 2**32 - 1 seconds, got {dkg_window!r}")
    return supervisors, threshold, dkg_window


def _seconds(path: Path, raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ProvisionError(f"{path}: {key} must be a non-negative integer (seconds), got {value!r}")
    return value
