"""Anyone's check of one access decision against the chain: the refused (or admitted) user's, or a third party's.

The centre gives the entry (by the id it answered the request with) and, once its
epoch is closed, the entry's Merkle proof; the chain gives the root the centre
anchored for that epoch's decision log and the centre's account. The entry is
believed only when its proof reaches the anchored root; a refusal's signature
(the 403's `signature`) shows the centre made the entry even before it is anchored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.client.http import GatewayClient, GatewayRefused
from ledger.chain import Chain, ChainRevert
from ledger.decisions import DecisionLogError, check_entry, entry_digest, verify_entry
from ledger.deploy import Deployment, bind
from ledger.ids import centre_id
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.records import Domain, InvalidSignature
from ledger.signed_decisions import entry_signer


class DecisionUncheckable(ValueError):
    """The check cannot be made: an unknown centre, or an answer that is not an entry of it."""


@dataclass(frozen=True)
class CheckedDecision:
    """What the chain confirms of one entry; `ok` unless something contradicts it."""

    centre: str
    entry: dict
    digest: bytes
    epoch: int | None
    """The epoch the centre says the entry is in (None when it does not give the entry)."""
    anchored: bool
    """Its proof reaches the root the centre anchored for `epoch` (False while the epoch is not anchored)."""
    signed: bool | None
    """The signature given is the centre's (None when none was given)."""
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_decision(
    chain: Chain,
    deployment: Deployment,
    centre: str,
    entry_id: str,
    *,
    gateway: str | None = None,
    held: dict | None = None,
    signature: str | None = None,
) -> CheckedDecision:
    """Fetch entry `entry_id` from `centre`'s gateway (its URL on chain unless `gateway`) and check it against
    the chain; `held` and `signature` are what a refusal carried (the 403's `entry` and `signature`)."""
    contracts = bind(chain, deployment, named=True)
    ident = centre_id(centre)
    try:
        member = chain.call(contracts.consortium.functions.member(ident))
    except ChainRevert as exc:
        if exc.reason != "NotMember":
            raise
        raise DecisionUncheckable(f"{centre} is not a member of this consortium, now or before") from None
    problems: list[str] = []
    with GatewayClient(gateway or member.gatewayUrl) as client:
        try:
            answer: dict | None = client.decision(entry_id)
        except GatewayRefused as exc:
            if exc.status != 404 or held is None:
                raise
            answer = None
            problems.append(f"{centre} no longer gives entry {entry_id}: {exc.error}")
    if answer is not None and not isinstance(answer, dict):
        raise DecisionUncheckable(f"{centre}'s gateway answered something that is not an object: {answer!r:.80}")
    entry = _entry(answer.get("entry"), centre) if answer else None
    if held is not None:
        held = _entry(held, centre)
        if entry is not None and entry != held:
            problems.append(f"{centre} now gives another entry under {entry_id} than the one held")
    entry = held if held is not None else entry
    assert entry is not None
    if entry["id"] != entry_id.lower() or entry["centre"] != centre:
        problems.append(f"the entry is {entry['id']} of {entry['centre']}, not {entry_id} of {centre}")
    epoch = answer.get("epoch") if answer else None
    if answer and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1):
        raise DecisionUncheckable(f"{centre}'s gateway names no epoch for the entry: {epoch!r:.40}")
    anchored = False
    if epoch is not None:
        anchors = _anchor_times(contracts, deployment, ident)
        problems.extend(_placement(centre, epoch, entry["time"], anchors))
        if epoch in anchors:
            proof = answer.get("proof") if answer else None
            anchored = _in_anchored_log(chain, contracts.usage_ledger.functions, ident, epoch, entry, proof, problems)
    signed = None
    if signature is not None:
        signed = _signed_by(entry, signature, Domain.for_deployment(deployment), member.account)
        if not signed:
            problems.append(f"the signature given is not {centre}'s ({member.account}) of this entry")
    return CheckedDecision(centre, entry, entry_digest(entry), epoch, anchored, signed, tuple(problems))


def _entry(value: object, centre: str) -> dict:
    try:
        return check_entry(value)
    except DecisionLogError as exc:
        raise DecisionUncheckable(f"not a decision entry of {centre}'s: {exc}") from None


#: Seconds of clock difference allowed between a gateway's entry times and the chain's anchor times.
GRACE = 60
#: Seconds an anchor may follow its epoch's close (the outbox sends it at once; a chain outage delays it).
ANCHOR_DELAY = 3600


def _anchor_times(contracts: Any, deployment: Deployment, ident: bytes) -> dict[int, int]:
    """Every epoch the centre anchored, with the anchor's block time (its EpochAnchored events)."""
    logs = contracts.usage_ledger.events.EpochAnchored.get_logs(
        from_block=deployment.start_block, argument_filters={"centre": ident}
    )
    return {int(log.args.epoch): int(log.args.anchoredAt) for log in logs}


def _placement(centre: str, epoch: int, time: int, anchors: dict[int, int]) -> list[str]:
    """Whether the epoch the gateway names can hold an entry of `time`, by the centre's anchors on chain.

    A centre closes its epochs in turn and anchors each as it closes it, so the epochs it anchored from 1 on
    without a gap end at the one before its open epoch (or the one before that, while an anchor is still on
    its way). An unanchored epoch past those is one the centre is not in: a gateway naming it would put the
    check off for ever. An entry joins the epoch open when it is made, after the previous epoch's close (so
    not long before that epoch's anchor: ANCHOR_DELAY) and before its own epoch's anchor.
    """
    settled = 0  # the epochs anchored without a gap: 1, 2, ... settled (a far epoch anchored out of turn aside)
    while settled + 1 in anchors:
        settled += 1
    if epoch not in anchors and epoch not in (settled + 1, settled + 2):
        why = (
            f"{centre}'s gateway puts the entry in epoch {epoch}, which {centre} has not anchored; it anchored "
            f"epochs 1 to {settled} in turn, so its open epoch is {settled + 1} (or {settled + 2} while an "
            "anchor is on its way)"
        )
        return [why]
    problems = []
    if epoch in anchors and time > anchors[epoch] + GRACE:
        problems.append(f"the entry's time {time} is after {centre} anchored epoch {epoch} ({anchors[epoch]})")
    before = max((e for e in anchors if e < epoch), default=None)
    if before is not None and time < anchors[before] - ANCHOR_DELAY - GRACE:
        problems.append(
            f"the entry's time {time} is before {centre} anchored epoch {before} ({anchors[before]}), so it "
            f"belongs in that epoch's log or an earlier one, not in epoch {epoch}'s"
        )
    return problems


def _in_anchored_log(
    chain: Chain, usage: Any, ident: bytes, epoch: int, entry: dict, proof: object, problems: list[str]
) -> bool:
    root = bytes(chain.call(usage.decisionsOf(ident, epoch)).root)
    try:
        hashes = [from_hex(p, size=32) for p in proof] if isinstance(proof, list) else None
    except (HexError, TypeError):
        hashes = None
    if hashes is None or not verify_entry(root, entry, hashes):
        problems.append(
            f"epoch {epoch} is anchored with decision-log root {to_hex(root)}, and the entry's proof does not reach "
            "it: the entry is not in the log the centre committed"
        )
        return False
    return True


def _signed_by(entry: dict, signature: str, domain: Domain, account: str) -> bool:
    try:
        return entry_signer(entry, from_hex(signature, size=65), domain) == account
    except (HexError, InvalidSignature):
        return False
