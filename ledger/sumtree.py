"""Merkle sum tree of a centre's records on one home in one epoch (UsageLedger's claim).

Each node commits to a hash and the sum of the amounts below it, so a proof of one
record also proves its amount is counted exactly once in the claimed total: a centre
cannot inflate a claim without a leaf that a dispute exposes. Pure; the same rules as
UsageLedger.verifyRecord.

leaf(d, a) = (keccak256(abi.encode(d, a)), a); node(L, R) = (keccak256(abi.encode(L.h, L.s,
R.h, R.s)), L.s + R.s); leaves padded with EMPTY = (0, 0) to a power of two, and a subtree
with no leaf below `count` is EMPTY at every level; proofs list the siblings from the leaf
level up, and every sibling starting at or past `count` must be EMPTY (no amount can hide in
padding, where no dispute can name it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.primitives.keccak import keccak256 as keccak
from ledger.primitives.keccak import new as _new

UINT256 = 2**256
EMPTY: tuple[bytes, int] = (bytes(32), 0)

Node = tuple[bytes, int]


class SumTreeError(ValueError):
    """Leaves, an index or a proof that are not what the tree takes."""


def _bytes32(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise SumTreeError(f"{what} must be 32 bytes, got {value!r:.80}")
    return bytes(value)


def _uint(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < UINT256:
        raise SumTreeError(f"{what} must be an int in [0, 2**256), got {value!r:.80}")
    return value


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def leaf(digest: bytes, amount: int) -> Node:
    """The leaf of a record: its EIP-712 digest and its amount (price)."""
    return keccak(digest + _word(amount)), amount


def node(left: Node, right: Node) -> Node:
    total = left[1] + right[1]
    if total >= UINT256:
        raise SumTreeError("the total of a claim must fit in a uint256")
    return keccak(left[0] + _word(left[1]) + right[0] + _word(right[1])), total


def _parent(left: Node, right: Node) -> Node:
    """A node of the tree: EMPTY over two EMPTY children (a subtree wholly in the padding)."""
    return EMPTY if left == EMPTY and right == EMPTY else node(left, right)


def _in_padding(index: int, level: int, count: int) -> bool:
    """Whether the sibling of `index`'s ancestor at `level` starts at or past `count`."""
    return ((index >> level) | 1) << level >= count


def depth(count: int) -> int:
    """ceil(log2(count)): the length of every proof in a tree of `count` leaves (count >= 1)."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SumTreeError(f"a sum tree has at least one leaf, got count {count!r}")
    return (count - 1).bit_length()


@dataclass(frozen=True)
class SumProof:
    """Siblings of a leaf, from the leaf level up: their hashes and their sums."""

    hashes: tuple[bytes, ...]
    sums: tuple[int, ...]

    def __post_init__(self) -> None:
        if (
            not isinstance(self.hashes, Sequence)
            or not isinstance(self.sums, Sequence)
            or isinstance(self.hashes, (str, bytes))
        ):
            raise SumTreeError("a sum proof is a list of hashes and a list of sums")
        if len(self.hashes) != len(self.sums):
            raise SumTreeError(f"a sum proof has as many sums as hashes, got {len(self.hashes)} and {len(self.sums)}")
        object.__setattr__(self, "hashes", tuple(_bytes32(h, f"proof hash {i}") for i, h in enumerate(self.hashes)))
        object.__setattr__(self, "sums", tuple(_uint(s, f"proof sum {i}") for i, s in enumerate(self.sums)))

    def to_dict(self) -> dict[str, Any]:
        """{"hashes": [0x-hex], "sums": [int]}: as the evidence endpoint serves it."""
        return {"hashes": [to_hex(h) for h in self.hashes], "sums": list(self.sums)}

    @classmethod
    def from_dict(cls, data: Any) -> SumProof:
        if not isinstance(data, dict) or set(data) != {"hashes", "sums"}:
            raise SumTreeError('a sum proof must be a JSON object {"hashes": [...], "sums": [...]}')
        hashes, sums = data["hashes"], data["sums"]
        if not isinstance(hashes, list) or not isinstance(sums, list):
            raise SumTreeError("a sum proof's hashes and sums must be lists")
        try:
            parsed = [from_hex(h, size=32, what=f"proof hash {i}") for i, h in enumerate(hashes)]
        except HexError as exc:
            raise SumTreeError(str(exc)) from None
        return cls(tuple(parsed), tuple(sums))


def fold(nodes: Sequence[Node], width: int) -> Node:
    """The root of an aligned subtree of `width` leaf positions (a power of two) whose first nodes are `nodes`
    and the rest padding: what SumTree computes level by level, without building the padded levels.

    A claim's root is fold(its leaves, 2**depth(count)); the leaves of one power-of-two-aligned block of
    positions fold to the node a SumTree has above that block, so blocks can be folded apart (on other cores)
    and their nodes folded again (ledger.audit_scale).
    """
    if not isinstance(width, int) or width < 1 or width & (width - 1) or len(nodes) > width:
        raise SumTreeError(f"width must be a power of two of at least the {len(nodes)} nodes, got {width!r}")
    if not nodes:
        return EMPTY
    hashes = [h for h, _ in nodes]
    sums = [a for _, a in nodes]
    while width > 1:
        if len(hashes) % 2:  # the last node's sibling is padding
            hashes.append(EMPTY[0])
            sums.append(0)
        up_h: list[bytes] = []
        up_s: list[int] = []
        for i in range(0, len(hashes), 2):
            total = sums[i] + sums[i + 1]
            if total >= UINT256:
                raise SumTreeError("the total of a claim must fit in a uint256")
            pair = hashes[i] + sums[i].to_bytes(32, "big") + hashes[i + 1] + sums[i + 1].to_bytes(32, "big")
            up_h.append(_new(pair).digest())
            up_s.append(total)
        hashes, sums, width = up_h, up_s, width // 2
    return hashes[0], sums[0]


def leaves_of(digests: Sequence[bytes], amounts: Sequence[int]) -> list[Node]:
    """leaf(d, a) of each pair, unchecked (the caller's records were checked when made)."""
    return [(keccak(d + a.to_bytes(32, "big")), a) for d, a in zip(digests, amounts, strict=True)]


def root_of(digests: Sequence[bytes], amounts: Sequence[int]) -> Node:
    """(root, total) of the sum tree of these leaves, as SumTree(...).root/.total, without keeping its levels."""
    if not digests:
        raise SumTreeError("a sum tree needs at least one leaf (no leaves: nothing is anchored)")
    return fold(leaves_of(digests, amounts), 1 << depth(len(digests)))


class SumTree:
    """The sum tree of (record digest, amount) pairs, in the order given."""

    def __init__(self, leaves: Iterable[tuple[bytes, int]]) -> None:
        level: list[Node] = []
        for i, pair in enumerate(leaves):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise SumTreeError(f"leaf {i} must be a (digest, amount) pair, got {pair!r:.80}")
            level.append(leaf(_bytes32(pair[0], f"leaf {i} digest"), _uint(pair[1], f"leaf {i} amount")))
        if not level:
            raise SumTreeError("a sum tree needs at least one leaf (no leaves: nothing is anchored)")
        self.count = len(level)
        level += [EMPTY] * ((1 << depth(self.count)) - self.count)
        self._levels = [level]
        while len(level) > 1:
            level = [_parent(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            self._levels.append(level)

    @property
    def root(self) -> bytes:
        return self._levels[-1][0][0]

    @property
    def total(self) -> int:
        return self._levels[-1][0][1]

    def proof(self, index: int) -> SumProof:
        """The siblings of leaf `index`, from the leaf level up."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.count:
            raise SumTreeError(f"index must be an int in [0, {self.count}), got {index!r}")
        siblings = [level[(index >> k) ^ 1] for k, level in enumerate(self._levels[:-1])]
        return SumProof(tuple(h for h, _ in siblings), tuple(s for _, s in siblings))


def verify(root: bytes, total: int, count: int, index: int, digest: bytes, amount: int, proof: SumProof) -> bool:
    """Whether `proof` shows (digest, amount) at `index` of the claim (root, total, count).

    False for a proof that does not fit the claim (wrong length, index past count, another
    leaf, a sibling in the padding that is not EMPTY); SumTreeError for arguments of the wrong type.
    """
    root, digest = _bytes32(root, "root"), _bytes32(digest, "digest")
    total, amount = _uint(total, "total"), _uint(amount, "amount")
    if not isinstance(proof, SumProof):
        raise SumTreeError(f"proof must be a SumProof, got {type(proof).__name__}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise SumTreeError(f"index must be a non-negative int, got {index!r}")
    if len(proof.hashes) != depth(count) or index >= count:
        return False
    running = leaf(digest, amount)
    try:
        for k, sibling in enumerate(zip(proof.hashes, proof.sums, strict=True)):
            if _in_padding(index, k, count) and sibling != EMPTY:
                return False  # an amount hidden in the padding
            running = node(running, sibling) if (index >> k) & 1 == 0 else node(sibling, running)
    except SumTreeError:
        return False  # sums past uint256: the contract's checked addition reverts
    return running == (root, total)
