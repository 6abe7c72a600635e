"""A dishonest member, for the demo: it anchors a claim no record stands behind.

It goes around its own gateway (which would only anchor what it recorded) and
calls UsageLedger.anchor with its chain key, as any member can. What follows is
the consortium's answer, not the demo's: the payer's watcher finds no evidence
and disputes, nobody can answer, and settlement voids the claim.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gateway.demo.local import LocalConsortium
from ledger.deploy import bind
from ledger.ids import centre_id


@dataclass(frozen=True)
class Cheat:
    """What was claimed: a number of made-up records and their total."""

    records: int
    total: int


def anchor_made_up_claim(
    consortium: LocalConsortium, centre: str, *, epoch: int, debtor: str, records: int, total: int
) -> Cheat:
    """Anchor `centre`'s `epoch` with a claim of `total` on `debtor` over `records` records that do not exist."""
    ledger = bind(consortium.chain, consortium.deployment).usage_ledger
    made_up_root = secrets.token_bytes(32)
    fn = ledger.functions.anchor(epoch, [centre_id(debtor)], [made_up_root], [records], [total], bytes(32), 0)
    consortium.chain.transact(fn, consortium.centres[centre].account)
    return Cheat(records, total)
