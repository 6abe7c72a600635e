"""The sum trees of closed epochs, kept for proofs: GET /v1/audit/usage/{id} must not rebuild a home's tree.

A home's tree in a closed epoch never changes (no record joins a closed epoch and
lapsed records were marked before its trees were built), so a tree kept once is
good for ever. Keeping every node of a million-leaf tree would take hundreds of MB,
so a `KeptTree` keeps the nodes from blocks of `BLOCK` leaves up and each leaf's
store seq; a proof hashes again only its own block's records (one page read by
seq), checked against the block's kept node. The close stores each tree so (`to_blobs`,
a few bytes a leaf), so loading one again is a read and n / BLOCK hashes, never the
epoch's records. `KeptTrees` holds a few in memory, least recently used dropped first,
within a budget of leaves.
"""

from __future__ import annotations

import sys
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ledger.sumtree import EMPTY, Node, SumProof, SumTreeError, depth, fold, leaf, node

BLOCK = 128
"""Leaves under a kept tree's lowest kept node: a proof re-hashes at most this many records (~50 µs each)."""

KEPT_LEAVES = 4_000_000
"""Leaves the kept trees may hold together (about 10 bytes each: an 8-byte seq and the nodes over blocks)."""

KEPT_TREES = 64
"""Trees kept at most (one per home with records, per epoch)."""

BUILD_WAIT = 2.0
"""Seconds an asker waits for another's build before it is told to ask again (TreeBusy): a build from the records
(an epoch closed before trees were stored) takes a minute at a million records, and the askers hold the server's
threads while they wait. Reading a stored tree back never waits."""

_NODE = 64  # bytes of a stored node: its hash, then its sum (32 bytes, big-endian)


class TreeMismatch(RuntimeError):
    """The records read for a proof do not make the kept tree's block: the store changed under a closed epoch."""


class TreeBusy(RuntimeError):
    """Another asker is building a tree from its records: this one is told to ask again rather than hold a thread."""


def _parent(left: Node, right: Node) -> Node:
    return EMPTY if left == EMPTY and right == EMPTY else node(left, right)


def _levels(nodes: Sequence[Node], width: int) -> list[list[Node]]:
    """Every level of the tree over `nodes` padded with EMPTY to `width` (a power of two), bottom first."""
    level = list(nodes) + [EMPTY] * (width - len(nodes))
    levels = [level]
    while len(level) > 1:
        level = [_parent(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


@dataclass(frozen=True)
class KeptTree:
    """A home's sum tree of a closed epoch, from the nodes over `width` leaves up (`levels[0]`: one node a block,
    padded with EMPTY to a power of two), and the store seq of each leaf's record in leaf order."""

    seqs: array
    width: int
    levels: list[list[Node]]

    @property
    def count(self) -> int:
        return len(self.seqs)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0][0]

    @property
    def total(self) -> int:
        return self.levels[-1][0][1]

    def index(self, seq: int) -> int | None:
        """The leaf of the record stored at `seq`, or None when it is no leaf of this tree."""
        i = bisect_left(self.seqs, seq)
        return i if i < len(self.seqs) and self.seqs[i] == seq else None

    def block(self, index: int) -> tuple[int, int]:
        """The seq before the first record of leaf `index`'s block and how many leaves the block has: a page."""
        start = index - index % self.width
        return self.seqs[start] - 1, min(self.width, self.count - start)

    def proof(self, index: int, block: Sequence[tuple[bytes, int]]) -> SumProof:
        """Leaf `index`'s proof, given its block's (digest, amount) pairs in leaf order (`block` says which).

        TreeMismatch when they do not hash to the block's kept node."""
        if not 0 <= index < self.count:
            raise SumTreeError(f"index must be an int in [0, {self.count}), got {index!r}")
        return self.proofs(index - index % self.width, block)[index % self.width]

    def proofs(self, start: int, block: Sequence[tuple[bytes, int]]) -> list[SumProof]:
        """The proof of every leaf of the block that begins at leaf `start`, given its pairs: the block hashed once
        (a page of evidence proves every leaf of its blocks; `proof` would hash a block again per leaf).

        TreeMismatch when they do not hash to the block's kept node."""
        if not 0 <= start < self.count or start % self.width:
            raise SumTreeError(f"start must be the first leaf of a block of {self.width}, got {start!r}")
        at = start // self.width
        if len(block) != self.block(start)[1]:
            raise TreeMismatch(f"leaf {start}'s block has {self.block(start)[1]} leaves, {len(block)} were given")
        below = _levels([leaf(d, a) for d, a in block], self.width)
        if below[-1][0] != self.levels[0][at]:
            raise TreeMismatch(f"the records of leaf {start}'s block do not hash to the node kept for it")
        above = [level[(at >> k) ^ 1] for k, level in enumerate(self.levels[:-1])]
        proofs = []
        for offset in range(len(block)):
            siblings = [level[(offset >> k) ^ 1] for k, level in enumerate(below[:-1])] + above
            proofs.append(SumProof(tuple(h for h, _ in siblings), tuple(s for _, s in siblings)))
        return proofs

    def to_blobs(self) -> tuple[bytes, bytes]:
        """Its leaves' seqs and its block nodes as the store keeps them (`from_blobs` reads them back)."""
        seqs = array("q", self.seqs)
        if sys.byteorder != "little":
            seqs.byteswap()
        blocks = self.levels[0][: -(-self.count // self.width)]  # the padding is not kept
        nodes = b"".join(h + total.to_bytes(32, "big") for h, total in blocks)
        return seqs.tobytes(), nodes

    @classmethod
    def from_blobs(cls, width: int, seqs: bytes, nodes: bytes) -> KeptTree:
        """The tree `to_blobs` wrote; SumTreeError when the blobs cannot be one."""
        count = len(seqs) // 8
        if width < 1 or width & (width - 1) or len(seqs) % 8 or not seqs or len(nodes) % _NODE:
            raise SumTreeError(f"a kept tree's blobs are malformed (width {width}, {len(seqs)} and {len(nodes)} bytes)")
        if width > BLOCK or (count <= width and width != 1 << depth(count)):  # what `keep` makes, nothing wider
            raise SumTreeError(f"a kept tree of {count} leaves cannot have blocks of {width}")
        leaves = array("q")
        leaves.frombytes(seqs)
        if sys.byteorder != "little":
            leaves.byteswap()
        blocks = [
            (nodes[i : i + 32], int.from_bytes(nodes[i + 32 : i + _NODE], "big")) for i in range(0, len(nodes), _NODE)
        ]
        if len(blocks) != -(-len(leaves) // width):
            raise SumTreeError(f"a kept tree of {len(leaves)} leaves in blocks of {width} has {len(blocks)} blocks")
        return cls(leaves, width, _levels(blocks, (1 << depth(len(leaves))) // width))


def keep(leaves: Iterable[tuple[int, bytes, int]], block: int = BLOCK) -> KeptTree:
    """The kept tree of (seq, digest, amount) leaves in leaf order, read as they come (never all held).

    Its root, count and total are the `ledger.sumtree.SumTree`'s of the same (digest, amount) pairs."""
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block!r}")
    seqs = array("q")
    nodes: list[Node] = []
    pending: list[Node] = []
    for seq, digest, amount in leaves:
        seqs.append(seq)
        pending.append(leaf(digest, amount))
        if len(pending) == block:
            nodes.append(fold(pending, block))
            pending = []
    if not seqs:
        raise SumTreeError("a sum tree needs at least one leaf (no leaves: nothing is anchored)")
    width = block if len(seqs) > block else 1 << depth(len(seqs))  # a tree smaller than a block: one block
    if pending:
        nodes.append(fold(pending, width))
    return KeptTree(seqs, width, _levels(nodes, (1 << depth(len(seqs))) // width))


class KeptTrees:
    """Kept trees by (epoch, home), least recently used dropped first past `trees` or `leaves` (the newest stays).

    A missing one is `load(epoch, home)`ed (read back from the store: cheap, never waits for a build) or, when there
    is none to load, `build(epoch, home)` makes it (from the records: long), one build at a time; an asker that
    cannot start its build within `wait` seconds gets TreeBusy. `builds` counts loads and builds."""

    def __init__(
        self,
        load: Callable[[int, str], KeptTree | None],
        build: Callable[[int, str], KeptTree],
        trees: int = KEPT_TREES,
        leaves: int = KEPT_LEAVES,
        wait: float = BUILD_WAIT,
    ) -> None:
        self._load = load
        self._build = build
        self.trees = trees
        self.leaves = leaves
        self.wait = wait
        self.builds = 0
        self._kept: OrderedDict[tuple[int, str], KeptTree] = OrderedDict()
        self._lock = threading.Lock()  # the dict
        self._building = threading.Lock()  # one build at a time: one from the records reads a whole home's

    def get(self, epoch: int, home: str) -> KeptTree:
        key = (epoch, home)
        kept = self._lookup(key)
        if kept is not None:
            return kept
        kept = self._load(epoch, home)
        if kept is not None:
            self.builds += 1
            self.put(epoch, home, kept)
            return kept
        if not self._building.acquire(timeout=self.wait):
            raise TreeBusy(f"the sum tree of epoch {epoch} for home {home[:16]}… is being prepared: ask again shortly")
        try:
            kept = self._lookup(key) or self._load(epoch, home)  # made by the asker this one waited for
            if kept is None:
                kept = self._build(epoch, home)
            self.builds += 1
            self.put(epoch, home, kept)
        finally:
            self._building.release()
        return kept

    def put(self, epoch: int, home: str, kept: KeptTree) -> None:
        """Keep a tree of a closed epoch (the close's own, once committed: the first proof needs no build)."""
        with self._lock:
            self._kept[(epoch, home)] = kept
            self._kept.move_to_end((epoch, home))
            while len(self._kept) > 1 and (
                len(self._kept) > self.trees or sum(t.count for t in self._kept.values()) > self.leaves
            ):
                self._kept.popitem(last=False)

    def forget(self, epoch: int, home: str) -> None:
        """Drop a kept tree (one whose records no longer hash to it: the next asker builds it again)."""
        with self._lock:
            self._kept.pop((epoch, home), None)

    def _lookup(self, key: tuple[int, str]) -> KeptTree | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            return kept
