"""The per-record part of an epoch's audit — digests, sum trees, record checks — on every core.

Auditing a million records is a million EIP-712 digests, two million sum-tree hashes and, where
signatures are checked, a million ECDSA recoveries: pure work on data already in memory. Each
claim's leaf positions are cut in blocks aligned on a power of two, so a block folds to the node
its claim's tree has above it (ledger.sumtree.fold) and the blocks' nodes fold to the claim's
root. Blocks run in forked worker processes, which inherit the records and send back only a
node and the findings: nothing is pickled per record either way.

Which record signatures are checked (`signatures`):

- "all": every record's, as the audit always has;
- "unbound": only those of records no anchored root binds. UsageLedger.anchor takes the
  serving centre from the transaction's sender, so a claim whose sum tree, rebuilt from the
  supplied records, equals the root on chain is that centre's own statement of every leaf under
  it, signed once by its account: a signature per record adds nothing to the books. Signatures
  matter where a record stands alone — shown without its claim (to a user, in a complaint), or
  in a claim whose tree does not match, for a home no claim is anchored on, in an epoch not
  anchored — and there they are checked. The two modes differ only on a record whose claim
  matches but whose signature does not: a fault of the centre's signing, not of its books,
  which "all" reports.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from eth_utils import to_checksum_address

from ledger.ids import InvalidName, centre_name
from ledger.primitives.hex import to_hex
from ledger.primitives.keccak import keccak256
from ledger.primitives.keccak import new as keccak
from ledger.records import DomainLike, InvalidSignature, UsageRecord, _domain, recover_digest, struct_encoder
from ledger.sumtree import EMPTY, Node, SumTreeError, depth, fold

Signatures = Literal["all", "unbound"]
SIGNATURE_MODES: tuple[str, ...] = ("all", "unbound")

BLOCK = 1 << 15
"""Leaf positions per block: large enough that a block's result outweighs its round trip, small enough to share."""
PARALLEL_FROM = 1 << 15
"""Records below which one process does the work: forking costs more than it saves."""

T = TypeVar("T")
R = TypeVar("R")


def label(centre: bytes) -> str:
    """A centre's name, or its hex id when the bytes32 is not a valid name."""
    try:
        return centre_name(centre)
    except InvalidName:
        return to_hex(centre)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- running blocks on every core --------------------------------------------------------------

_WORK: list[Callable[[Any], Any]] = []  # what the forked workers run: set by run_blocks around its pool


def _call(task: Any) -> Any:
    return _WORK[0](task)


def run_blocks(work: Callable[[T], R], tasks: Sequence[T], workers: int) -> list[R]:
    """[work(t) for t in tasks], on `workers` forked processes when there is more than one task.

    The workers inherit `work` and all it closes over (the records) by fork; only the tasks
    (small tuples) and the results cross a pipe. Without fork (not Linux), one process does it all.
    """
    if workers <= 1 or len(tasks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [work(t) for t in tasks]
    if _WORK:
        raise RuntimeError("run_blocks is not re-entrant")
    _WORK.append(work)
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
            return pool.map(_call, tasks, chunksize=1)
    finally:
        _WORK.clear()


# --- one centre's records -------------------------------------------------------------------------


@dataclass
class Scan:
    """What the scan of one centre's records found: per home, the tree its records build; per record, findings."""

    roots: dict[bytes, Node] = field(default_factory=dict)  # home -> (root, total) of its records in leaf order
    findings: dict[int, list[str]] = field(default_factory=dict)  # position in the input -> its findings


@dataclass(frozen=True)
class _Centre:
    """What checking one record as `centre`'s of `epoch` needs."""

    centre: bytes
    name: str
    epoch: int
    account: bytes | None  # 20 bytes; None: a centre without an account (reported once, elsewhere)
    prefix: bytes  # 0x1901 ‖ domain separator


def field_findings(c: _Centre, rec: UsageRecord) -> list[str]:
    """One record as the centre's of the epoch: its serving centre and its epoch (a repeated id is the caller's)."""
    out: list[str] = []
    if rec.serving_centre != c.centre:
        out.append(f"{c.name}: record {to_hex(rec.record_id)} names {label(rec.serving_centre)} as serving centre")
    if rec.epoch != c.epoch:
        out.append(f"{c.name}: record {to_hex(rec.record_id)} is for epoch {rec.epoch}, not {c.epoch}")
    return out


def signature_findings(c: _Centre, rec: UsageRecord, signature: bytes, digest: bytes) -> list[str]:
    """The record's signature (of its digest `digest`) by the centre's account; none without an account."""
    if c.account is None:
        return []  # already reported: the centre has no account to check against
    rid = to_hex(rec.record_id)
    try:
        signer = recover_digest(digest, signature, rec.WHAT)
    except InvalidSignature as exc:
        return [f"{c.name}: record {rid} has a malformed signature ({exc})"]
    if signer != c.account:
        recovered = to_checksum_address(signer)
        return [f"{c.name}: record {rid} signature does not recover to {c.name}'s account (recovers to {recovered})"]
    return []


def centre_of(centre: bytes, epoch: int, domain: DomainLike, account: str | None) -> _Centre:
    """What checking records as `centre`'s of `epoch` needs (its account as bytes, the domain's digest prefix)."""
    return _Centre(
        centre=centre,
        name=label(centre),
        epoch=epoch,
        account=None if account is None else bytes.fromhex(account[2:]),
        prefix=b"\x19\x01" + _domain(domain).separator(),
    )


def scan(
    centre: bytes,
    epoch: int,
    records: Sequence[UsageRecord],
    signatures: Sequence[bytes],
    leaf_order: dict[bytes, list[int]],
    domain: DomainLike,
    account: str | None,
    *,
    check_signatures: bool,
    workers: int | None = None,
) -> Scan:
    """Digests, per-home sum trees and per-record findings of `centre`'s records of `epoch`.

    `leaf_order` maps each home to the positions (in `records`) of its records in leaf order.
    Signatures are checked when `check_signatures` (see the module docstring for when an audit
    asks). `workers` defaults to every core for PARALLEL_FROM records or more, one below.
    """
    c = centre_of(centre, epoch, domain, account)
    homes = list(leaf_order)
    tasks: list[tuple[int, int, int, int]] = []  # (home index, first position index, end, block width)
    for h, home in enumerate(homes):
        n = len(leaf_order[home])
        if n == 0:
            continue
        width = min(BLOCK, 1 << depth(n))
        tasks += [(h, i, min(i + width, n), width) for i in range(0, n, width)]

    type_hash, encode = struct_encoder(UsageRecord)
    prefix, epoch_, centre_ = c.prefix, c.epoch, c.centre

    def block(task: tuple[int, int, int, int]) -> tuple[Node, list[tuple[int, list[str]]]]:
        h, start, end, width = task
        leaves: list[Node] = []
        found: list[tuple[int, list[str]]] = []
        for pos in leaf_order[homes[h]][start:end]:
            rec = records[pos]
            d = keccak(prefix + keccak(type_hash + encode(rec)).digest()).digest()
            price = rec.price
            leaves.append((keccak(d + price.to_bytes(32, "big")).digest(), price))
            problems = field_findings(c, rec) if rec.serving_centre != centre_ or rec.epoch != epoch_ else []
            if check_signatures:
                problems += signature_findings(c, rec, signatures[pos], d)
            if problems:
                found.append((pos, problems))
        try:
            node = fold(leaves, width)
        except SumTreeError:  # a total past uint256: no tree, so no root can match
            node = (b"", -1)
        return node, found

    if workers is None:
        workers = cores() if len(records) >= PARALLEL_FROM else 1
    results = run_blocks(block, tasks, workers)
    out = Scan()
    nodes: dict[int, list[Node]] = {}
    widths: dict[int, int] = {}
    for (h, _, _, width), (node, found) in zip(tasks, results, strict=True):
        nodes.setdefault(h, []).append(node)
        widths[h] = width
        for pos, problems in found:
            out.findings[pos] = problems
    for h, blocks in nodes.items():
        n = len(leaf_order[homes[h]])
        out.roots[homes[h]] = _fold_blocks(blocks, (1 << depth(n)) // widths[h])
    return out


def _fold_blocks(blocks: list[Node], width: int) -> Node:
    if any(total < 0 for _, total in blocks):
        return (b"", -1)
    try:
        return fold(blocks, width)
    except SumTreeError:
        return (b"", -1)


def check_signatures(
    centre: bytes,
    epoch: int,
    records: Sequence[UsageRecord],
    signatures: Sequence[bytes],
    positions: Sequence[int],
    domain: DomainLike,
    account: str | None,
    *,
    workers: int | None = None,
) -> dict[int, list[str]]:
    """The signature findings of the records at `positions`: the records a scan without signatures left
    standing alone (their digests hashed again: a digest costs a tenth of a recovery)."""
    c = centre_of(centre, epoch, domain, account)
    type_hash, encode = struct_encoder(UsageRecord)
    spans = [(i, min(i + BLOCK, len(positions))) for i in range(0, len(positions), BLOCK)]

    def block(span: tuple[int, int]) -> list[tuple[int, list[str]]]:
        found = []
        for pos in positions[span[0] : span[1]]:
            rec = records[pos]
            digest = keccak256(c.prefix + keccak256(type_hash + encode(rec)))
            problems = signature_findings(c, rec, signatures[pos], digest)
            if problems:
                found.append((pos, problems))
        return found

    if workers is None:
        workers = cores() if len(positions) >= PARALLEL_FROM else 1
    return {pos: problems for found in run_blocks(block, spans, workers) for pos, problems in found}


__all__ = [
    "BLOCK",
    "EMPTY",
    "PARALLEL_FROM",
    "SIGNATURE_MODES",
    "Scan",
    "Signatures",
    "check_signatures",
    "cores",
    "field_findings",
    "label",
    "run_blocks",
    "scan",
    "signature_findings",
]
