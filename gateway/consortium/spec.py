"""The consortium file (examples/consortium.toml): the members file's settings plus where each centre's files are.

It holds what `xcentre deploy` writes on chain (quorum, collateral, periods, the
supervisors, each member's prices) except what only exists once the centres have made
their keys and picked their ports (accounts, token keys, gateway URLs): `consortium up`
makes those and writes the complete members file. Each member names its gateway's
configuration (a real `xcentre gateway` file) and its directory's entries (an LDIF).
Paths are relative to the consortium file's folder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.books.epochs import check_schedule
from ledger.deploy import (
    DEFAULT_ANCHOR_WINDOW,
    DEFAULT_BOOKING_DELAY,
    DEFAULT_DISPUTE_WINDOW,
    DEFAULT_DKG_WINDOW,
    DEFAULT_RATE_NOTICE,
    Prices,
)
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name

DEFAULT_GAS = 10 * 10**18
"""Wei each centre's account is topped up to on a chain `consortium up` starts (10 ether)."""
MEMBER_KEYS = frozenset({"name", "gateway", "directory", "prices"})
CHAIN_KEYS = frozenset({"anvil", "url", "funder_key_file", "gas_per_centre"})
TOP_KEYS = frozenset(
    {
        "quorum",
        "initial_credit",
        "rate_notice",
        "dispute_window",
        "booking_delay",
        "anchor_window",
        "epoch_length",
        "supervision",
        "chain",
        "member",
    }
)


class SpecError(ValueError):
    """The consortium file cannot be used; the message names the file and the setting."""


@dataclass(frozen=True)
class MemberFiles:
    """One centre: its name, prices (rates version 1), gateway configuration and directory LDIF."""

    name: str
    prices: Prices
    gateway: Path
    directory: Path


@dataclass(frozen=True)
class ChainPlan:
    """Which chain: an anvil `consortium up` starts (`anvil`), or an existing node at `url` whose deployer and
    gas funder is the account in `funder_key_file`. `gas_per_centre`: wei each centre's account is topped up to
    (0: fund nobody; on a chain with a gas price `up` then refuses centres with no gas money)."""

    anvil: bool
    url: str | None
    funder_key_file: Path | None
    gas_per_centre: int


@dataclass(frozen=True)
class ConsortiumFile:
    path: Path
    quorum: int
    initial_credit: int
    rate_notice: int
    dispute_window: int
    booking_delay: int
    anchor_window: int
    epoch_length: int
    supervisors: list[str] | None
    supervision_threshold: int | None
    dkg_window: int
    chain: ChainPlan
    members: list[MemberFiles]

    def member(self, name: str) -> MemberFiles:
        return next(m for m in self.members if m.name == name)


def load_consortium(path: Path) -> ConsortiumFile:
    """Read and check a consortium file; every refusal names the file and what to change."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the consortium file: {exc}") from None
    base = path.parent
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    entries = raw.get("member")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{path}: no [[member]] tables: name at least one centre")
    members = [_member(path, base, i, entry) for i, entry in enumerate(entries, start=1)]
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: a member is named twice: {names}")
    quorum = raw.get("quorum", len(members) // 2 + 1)
    if not _int(quorum) or not 1 <= quorum <= len(members):
        raise SpecError(f"{path}: quorum must be an integer from 1 to {len(members)}, got {quorum!r}")
    supervision = raw.get("supervision", {})
    if not isinstance(supervision, dict) or set(supervision) - {"supervisors", "threshold", "dkg_window"}:
        raise SpecError(f"{path}: [supervision] takes supervisors, threshold and dkg_window")
    booking_delay = _whole(path, raw, "booking_delay", DEFAULT_BOOKING_DELAY)
    epoch_length = _whole(path, raw, "epoch_length", 0)
    if epoch_length:  # refused before anything starts, as the members file `up` writes would be
        try:
            check_schedule(epoch_length, booking_delay, "epoch_length")
        except ValueError as exc:
            raise SpecError(f"{path}: {exc}") from None
    return ConsortiumFile(
        path=path,
        quorum=quorum,
        initial_credit=_whole(path, raw, "initial_credit", 0),
        rate_notice=_whole(path, raw, "rate_notice", DEFAULT_RATE_NOTICE),
        dispute_window=_whole(path, raw, "dispute_window", DEFAULT_DISPUTE_WINDOW),
        booking_delay=booking_delay,
        anchor_window=_whole(path, raw, "anchor_window", DEFAULT_ANCHOR_WINDOW),
        epoch_length=epoch_length,
        supervisors=supervision.get("supervisors"),
        supervision_threshold=supervision.get("threshold"),
        dkg_window=_whole(path, supervision, "dkg_window", DEFAULT_DKG_WINDOW),
        chain=_chain(path, base, raw.get("chain", {})),
        members=members,
    )


def _member(path: Path, base: Path, i: int, entry: Any) -> MemberFiles:
    where = f"{path}: member #{i}"
    if not isinstance(entry, dict):
        raise SpecError(f"{where} must be a table")
    unknown = set(entry) - MEMBER_KEYS
    missing = MEMBER_KEYS - set(entry)
    if unknown or missing:
        raise SpecError(
            f"{where}: give name, prices, gateway and directory"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
            + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
        )
    name = entry["name"]
    if not isinstance(name, str) or not is_centre_name(name):
        raise SpecError(f"{where}: name must be a centre name ({CENTRE_NAME_RULE}), got {name!r}")
    try:
        prices = Prices(**entry["prices"])
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where} ({name}): prices: {exc}") from None
    files = {}
    for key in ("gateway", "directory"):
        value = entry[key]
        if not isinstance(value, str) or not (base / value).is_file():
            raise SpecError(f"{where} ({name}): {key} must name a file (relative to {base}), got {value!r}")
        files[key] = (base / value).resolve()
    return MemberFiles(name, prices, files["gateway"], files["directory"])


def _chain(path: Path, base: Path, raw: Any) -> ChainPlan:
    if not isinstance(raw, dict) or set(raw) - CHAIN_KEYS:
        raise SpecError(f"{path}: [chain] takes {', '.join(sorted(CHAIN_KEYS))}")
    url = raw.get("url")
    anvil = raw.get("anvil", url is None)
    if not isinstance(anvil, bool) or (anvil and url is not None) or (not anvil and not isinstance(url, str)):
        raise SpecError(f"{path}: [chain] either anvil = true (a chain of its own) or url = a JSON-RPC node's URL")
    key = raw.get("funder_key_file")
    if not anvil and key is None:
        raise SpecError(
            f"{path}: [chain] on an existing chain, funder_key_file must name the hex key of a funded account: "
            "it deploys the contracts and pays the centres' gas"
        )
    return ChainPlan(
        anvil=anvil,
        url=url,
        funder_key_file=(base / key).resolve() if isinstance(key, str) else None,
        gas_per_centre=_whole(path, raw, "gas_per_centre", DEFAULT_GAS if anvil else 0),
    )


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(path: Path, raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if not _int(value) or value < 0:
        raise SpecError(f"{path}: {key} must be a non-negative integer, got {value!r}")
    return int(value)
