"""A centre's decision log: one entry per policy decision, committed per epoch by a Merkle root.

An entry is what an auditor needs to decide the request again and compare: the
Cedar request exactly as the centre's engine evaluated it (`auth.policy.CedarRequest`:
the principal as the centre saw it, a pseudonym and the disclosed attributes, the
queue, the context), the decision, the determining policies and the policy version
and hash it was taken under. Its digest (keccak256 of its canonical JSON) is what a
usage record's `decision` names and what the epoch's tree commits.

The `id` is 16 random bytes: the capability its principal is given to fetch the
entry with its proof. It is inside the entry (so two identical requests in the
same second are two entries) but never a leaf by itself. The tree is
`ledger.merkle`'s StandardMerkleTree over the leaves keccak256(keccak256(digest)),
sorted, so the root is the set's; entries carry their `time`. A closed log's tree is
kept as its node array (`log_tree(...).nodes`), from which `proof_in` reads one
entry's proof without the log.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from eth_hash.auto import keccak  # eth_utils.keccak's own backend, without its argument checks: half the cost

from auth.policy import CedarRequest, Decision, PolicyError
from ledger.merkle import CorruptTree, MerkleTree, NodeArray, proof_from_nodes, verify
from ledger.primitives.canonical import CanonicalError, canonical_bytes, canonical_json
from ledger.primitives.hex import to_hex
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name

VERSION = 1
KINDS = ("quote", "submit")
DECISIONS = ("allow", "deny")
FIELDS = (
    "v",
    "id",
    "centre",
    "time",
    "kind",
    "request",
    "action",
    "principal",
    "resource",
    "context",
    "decision",
    "policies",
    "policy_version",
    "policy_hash",
)
_CEDAR_FIELDS = ("principal", "action", "resource", "context")
_ID = re.compile(r"0x[0-9a-f]{32}")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_UINT64 = 2**64


class DecisionLogError(ValueError):
    """An entry, digest or proof that is not what the decision log holds; the message says which part."""


def new_entry(
    *,
    centre: str,
    time: int,
    kind: str,
    request: bytes,
    cedar: CedarRequest,
    decision: Decision,
    policy_version: int,
    policy_hash: bytes,
    entry_id: bytes | None = None,
) -> dict:
    """The entry for one decision (a fresh random id unless given); a copy, sharing nothing with `cedar`."""
    entry_id = secrets.token_bytes(16) if entry_id is None else entry_id
    if not isinstance(entry_id, bytes) or len(entry_id) != 16:
        raise DecisionLogError(f"entry_id must be 16 bytes, got {entry_id!r:.80}")
    for name, value in (("request", request), ("policy_hash", policy_hash)):
        if not isinstance(value, bytes) or len(value) != 32:
            raise DecisionLogError(f"{name} must be 32 bytes, got {value!r:.80}")
    if not isinstance(cedar, CedarRequest):
        raise DecisionLogError(f"cedar must be an auth.policy.CedarRequest, got {type(cedar).__name__}")
    entry = {
        "v": VERSION,
        "id": to_hex(entry_id),
        "centre": centre,
        "time": time,
        "kind": kind,
        "request": to_hex(request),
        **cedar.to_dict(),
        "decision": "allow" if decision.allowed else "deny",
        "policies": list(decision.policies),
        "policy_version": policy_version,
        "policy_hash": to_hex(policy_hash),
    }
    entry = _plain_copy(entry)
    _check_fields(entry)  # its Cedar part is an engine's CedarRequest, valid as made: checked again only when stored
    return entry


def check_entry(entry: Any) -> dict:
    """`entry` itself when it has the shape of a log entry; DecisionLogError naming the first part that has not."""
    _check(entry)
    return entry


def cedar_request(entry: Any) -> CedarRequest:
    """The Cedar request a well-formed entry logged, to decide again (check_entry's errors otherwise)."""
    return _check(entry)


def _check(entry: Any) -> CedarRequest:
    _check_fields(entry)
    try:
        return CedarRequest.from_dict({k: entry[k] for k in _CEDAR_FIELDS})
    except PolicyError as exc:
        raise DecisionLogError(f"the entry's Cedar request: {exc}") from None


def _check_fields(entry: Any) -> None:
    """Every part of an entry but its Cedar request."""
    if not isinstance(entry, dict):
        raise DecisionLogError(f"a decision log entry must be a JSON object, got {type(entry).__name__}")
    missing = [f for f in FIELDS if f not in entry]
    extra = [k for k in entry if k not in FIELDS]
    if missing or extra:
        raise DecisionLogError(f"decision log entry fields: missing {missing}, unexpected {extra}")
    if entry["v"] != VERSION or isinstance(entry["v"], bool):
        raise DecisionLogError(f"only entries of version {VERSION} are known, got v={entry['v']!r:.40}")
    _match(entry, "id", _ID, "0x and 32 lowercase hex digits")
    if not is_centre_name(entry["centre"]):
        raise DecisionLogError(f"centre must match {CENTRE_NAME_RULE}, got {entry['centre']!r:.40}")
    _uint64(entry, "time", 0)
    if entry["kind"] not in KINDS:
        raise DecisionLogError(f"kind must be one of {list(KINDS)}, got {entry['kind']!r:.40}")
    _match(entry, "request", _HASH, "0x and 64 lowercase hex digits")
    if entry["decision"] not in DECISIONS:
        raise DecisionLogError(f"decision must be one of {list(DECISIONS)}, got {entry['decision']!r:.40}")
    policies = entry["policies"]
    if not isinstance(policies, list) or not all(isinstance(p, str) and p for p in policies):
        raise DecisionLogError(f"policies must be a list of policy ids (non-empty strings), got {policies!r:.80}")
    _uint64(entry, "policy_version", 1)
    _match(entry, "policy_hash", _HASH, "0x and 64 lowercase hex digits")


def entry_digest(entry: dict) -> bytes:
    """keccak256 of the entry's canonical JSON: what a usage record's `decision` names."""
    try:
        return keccak(canonical_bytes(entry))
    except CanonicalError as exc:
        raise DecisionLogError(f"a decision log entry must be plain JSON: {exc}") from None


def entry_leaf(digest: bytes) -> bytes:
    """StandardMerkleTree's leaf of the one value [digest] of type bytes32: keccak256(keccak256(digest))."""
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise DecisionLogError(f"an entry digest must be 32 bytes, got {digest!r:.80}")
    return keccak(keccak(digest))


def log_root(digests: Iterable[bytes]) -> bytes:
    """The root committed for a log with these entry digests; bytes32(0) for an empty log."""
    return log_tree(digests).root


def log_proof(digests: Sequence[bytes], digest: bytes) -> list[bytes]:
    """The proof that `digest` is in the log of `digests` (DecisionLogError if it is not)."""
    leaf = entry_leaf(digest)
    try:
        return log_tree(digests).proof(leaf)
    except KeyError:
        raise DecisionLogError(f"entry {to_hex(digest)} is not in the log") from None


def proof_in(nodes: NodeArray, digest: bytes) -> list[bytes]:
    """log_proof read from the log's tree as stored (`log_tree(...).nodes`): a few node reads, no entry read.
    DecisionLogError if the digest is not in the log or the nodes are not a tree's."""
    leaf = entry_leaf(digest)
    try:
        return proof_from_nodes(nodes, leaf)
    except KeyError:
        raise DecisionLogError(f"entry {to_hex(digest)} is not in the log") from None
    except CorruptTree as exc:
        raise DecisionLogError(f"the log's stored tree is damaged: {exc}") from None


def verify_entry(root: bytes, entry: dict, proof: Sequence[bytes]) -> bool:
    """True when `proof` links `entry` to `root`; False for anything else, a malformed proof included."""
    if not isinstance(root, bytes) or len(root) != 32:
        raise DecisionLogError(f"a log root must be 32 bytes, got {root!r:.80}")
    if not isinstance(proof, Sequence) or not all(isinstance(p, bytes) and len(p) == 32 for p in proof):
        return False
    try:
        leaf = entry_leaf(entry_digest(entry))
    except DecisionLogError:
        return False
    return verify(root, leaf, proof)


def log_tree(digests: Iterable[bytes]) -> MerkleTree:
    """The log's tree (its root is log_root's); built once at the epoch's close, its nodes kept for proofs."""
    leaves = [entry_leaf(d) for d in digests]
    try:
        return MerkleTree(leaves)
    except ValueError as exc:  # the only other refusal: a leaf twice
        raise DecisionLogError(f"an entry is in the log twice ({exc})") from None


def _plain_copy(entry: dict) -> dict:
    """A deep copy through canonical JSON: refuses what JSON cannot carry."""
    try:
        return json.loads(canonical_json(entry))
    except CanonicalError as exc:
        raise DecisionLogError(f"a decision log entry must be plain JSON: {exc}") from None


def _match(entry: dict, name: str, pattern: re.Pattern[str], rule: str) -> None:
    value = entry[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DecisionLogError(f"{name} must be {rule}, got {value!r:.80}")


def _uint64(entry: dict, name: str, least: int) -> None:
    value = entry[name]
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value < _UINT64:
        raise DecisionLogError(f"{name} must be an integer from {least} to 2**64 - 1, got {value!r:.40}")
