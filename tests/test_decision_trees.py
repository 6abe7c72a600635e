"""A closed epoch's decision log tree, built once in its closing transaction and kept as its node array:
proofs read from it (ledger.decisions.proof_in, Store.decision_proof, DecisionLog.entry) are the log's
proofs, read without the log, and a damaged tree is refused, never answered from."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from auth.policy import CedarRequest, Decision
from gateway.node.decisions import DecisionLog
from gateway.store import NewDecision, Store, StoreError
from gateway.store.schema import LATEST
from ledger.decisions import DecisionLogError, entry_digest, log_proof, log_root, log_tree, new_entry, proof_in
from ledger.primitives.hex import from_hex

FIXTURES = Path(__file__).parent / "fixtures" / "databases"


def entry(n: int) -> dict:
    cedar = CedarRequest(
        principal=f"u{n}@hpc-a",
        attrs={"principal": f"u{n}@hpc-a", "home": "hpc-a"},
        groups=(),
        action="submit",
        queue="cpu",
        resource_attrs={},
        context={"walltime": 60},
    )
    return new_entry(
        centre="hpc-a",
        time=1_764_650_000 + n,
        kind="quote",
        request=hashlib.sha256(b"r%d" % n).digest(),
        cedar=cedar,
        decision=Decision(n % 3 != 0, [], ["p"]),
        policy_version=1,
        policy_hash=hashlib.sha256(b"policy").digest(),
        entry_id=hashlib.sha256(b"id %d" % n).digest()[:16],
    )


class NoAnchors:
    """Index double: nothing anchored (the proof does not depend on it)."""

    def anchor(self, centre: bytes, epoch: int) -> None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.sqlite")
    yield s
    s.close()


def fill(store: Store, numbers: range) -> list[bytes]:
    return [store.log_decision(NewDecision.of(entry(n))).digest_bytes for n in numbers]


def nodes_of(store: Store, epoch: int) -> bytes | None:
    row = store._db.execute("SELECT nodes FROM decision_trees WHERE epoch = ?", (epoch,)).fetchone()
    return None if row is None else row[0]


def set_nodes(store: Store, epoch: int, nodes: bytes) -> None:
    with store._db:
        store._db.execute("UPDATE decision_trees SET nodes = ? WHERE epoch = ?", (nodes, epoch))


# ------------------------------------------------------------------ the pure part


def test_proof_in_a_logs_nodes_is_its_log_proof() -> None:
    digests = [entry_digest(entry(n)) for n in range(23)]
    nodes = log_tree(digests).nodes
    assert nodes[:32] == log_root(digests)
    for digest in digests:
        assert proof_in(nodes, digest) == log_proof(digests, digest)
    with pytest.raises(DecisionLogError, match="not in the log"):
        proof_in(nodes, entry_digest(entry(99)))
    damaged = bytearray(nodes)
    damaged[40] ^= 1  # node 1: on the path of half the leaves
    with pytest.raises(DecisionLogError, match="stored tree is damaged"):
        for digest in digests:
            proof_in(bytes(damaged), digest)
    with pytest.raises(DecisionLogError, match="32 bytes"):
        proof_in(nodes, b"short")


# ------------------------------------------------------------------ the store


def test_a_close_keeps_its_logs_tree_and_proofs_read_it(store: Store) -> None:
    digests = fill(store, range(1, 38))
    closed = store.close_open_epoch(lambda epoch, records: {})
    assert nodes_of(store, 1) == log_tree(digests).nodes and closed.decision_root == log_root(digests)
    for digest in digests:
        assert store.decision_proof(1, digest) == log_proof(digests, digest)
    assert store.decision_proof(1, "0x" + digests[0].hex()) == log_proof(digests, digests[0])
    assert store.decision_digests(1) == digests == [d.digest_bytes for d in store.decisions_for_epoch(1)]

    later = fill(store, range(100, 103))  # the open epoch keeps no tree yet
    assert store.decision_proof(2, later[0]) is None and nodes_of(store, 2) is None
    assert store.decision_digests(2) == later
    with pytest.raises(StoreError, match="not in the log"):
        store.decision_proof(1, later[0])
    assert store.close_epoch(1, {}) == closed and nodes_of(store, 1) == log_tree(digests).nodes  # a retry


def test_an_empty_log_keeps_no_tree(store: Store) -> None:
    closed = store.close_open_epoch(lambda epoch, records: {})
    assert (closed.decision_root, closed.decision_count) == (bytes(32), 0)
    assert store._db.execute("SELECT COUNT(*) FROM decision_trees").fetchone()[0] == 0
    assert store.decision_proof(1, b"\x01" * 32) is None and store.decision_digests(1) == []


def test_bad_arguments_to_the_proof_are_refused(store: Store) -> None:
    for epoch, digest, message in ((0, b"\x01" * 32, "epoch"), (1, b"\x01" * 31, "digest"), (1, "0xzz", "digest")):
        with pytest.raises(StoreError, match=message):
            store.decision_proof(epoch, digest)


def test_the_store_refuses_a_node_array_that_is_no_tree(store: Store) -> None:
    fill(store, range(1, 6))
    store.close_open_epoch(lambda epoch, records: {})
    nodes = nodes_of(store, 1)
    for bad in (nodes[:-1], nodes[:-32], nodes.hex()):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            set_nodes(store, 1, bad)
    assert nodes_of(store, 1) == nodes


def test_a_damaged_tree_is_refused_by_the_store_and_the_node(store: Store) -> None:
    digests = fill(store, range(1, 30))
    store.close_open_epoch(lambda epoch, records: {})
    stored = store.decision_by_digest(digests[5])
    log = DecisionLog("hpc-a", store, NoAnchors())
    assert log.entry("0x" + stored.id)["proof"] == ["0x" + p.hex() for p in log_proof(digests, digests[5])]

    damaged = bytearray(nodes_of(store, 1))
    damaged[:32] = bytes(32)  # the root: on every path
    set_nodes(store, 1, bytes(damaged))
    with pytest.raises(StoreError, match="damaged"):
        store.decision_proof(1, digests[5])
    with pytest.raises(StoreError, match="damaged"):
        log.entry("0x" + stored.id)

    # a sound tree, but not of the log its close fixed: the node checks the proof against the closure's root
    set_nodes(store, 1, log_tree([*digests, entry_digest(entry(500))]).nodes)
    assert store.decision_proof(1, digests[5]) is not None
    with pytest.raises(StoreError, match=r"does not prove entry .* its close fixed: the store is damaged"):
        log.entry("0x" + stored.id)

    with store._db:
        store._db.execute("DELETE FROM decision_trees WHERE epoch = 1")
    with pytest.raises(StoreError, match="the store is damaged"):
        log.entry("0x" + stored.id)


def test_proofs_over_many_closed_epochs_keep_nothing_in_the_node(store: Store) -> None:
    epochs: list[list[bytes]] = []
    for epoch in range(1, 6):
        epochs.append(fill(store, range(epoch * 100, epoch * 100 + 7 * epoch)))
        store.close_open_epoch(lambda e, records: {})
    log = DecisionLog("hpc-a", store, NoAnchors())
    asked = [(e, d) for e, digests in enumerate(epochs, start=1) for d in digests]
    random.Random(3).shuffle(asked)
    for epoch, digest in asked:
        answer = log.entry("0x" + store.decision_by_digest(digest).id)
        assert answer["epoch"] == epoch and answer["root"] == "0x" + log_root(epochs[epoch - 1]).hex()
        assert [from_hex(p) for p in answer["proof"]] == log_proof(epochs[epoch - 1], digest)
    assert not [v for v in vars(log).values() if isinstance(v, dict)]  # no cache of trees or proofs


# ------------------------------------------------------------------ migration 8


def test_a_version_7_store_gains_the_tree_table_and_keeps_trees_from_its_next_close(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    db = sqlite3.connect(path)
    db.executescript((FIXTURES / "gateway_v7.sql").read_text())
    db.close()
    with Store(path) as store:
        assert LATEST >= 8
        assert store._db.execute("SELECT COUNT(*) FROM decision_trees").fetchone()[0] == 0  # epoch 1: no log
        assert store.decision_proof(1, b"\x01" * 32) is None
        digests = fill(store, range(1, 4))
        closed = store.close_open_epoch(lambda epoch, records: {})
        assert [store.decision_proof(closed.epoch, d) for d in digests] == [log_proof(digests, d) for d in digests]
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []
