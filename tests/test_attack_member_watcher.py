"""Attacks on the payer home's watcher by a serving centre that controls its own evidence endpoint.

1. Slow evidence: `fetch_evidence` once gave httpx a 30 s timeout, which bounds each read, not the
   whole response. A centre that drips one byte at a time kept the home's housekeeping thread
   (disputes, answers, anchors, settlements) waiting for as long as it liked: past the dispute
   window of its own made-up claim, which then stood. Endless evidence filled its memory.
2. A huge count: a claim whose evidence cannot be had was disputed on EVERY leaf, as
   `[LeafDispute(i) for i in range(claim.count)]`; the centre chooses count = 2**64 - 1. The home
   exhausted its memory building the list and queued no dispute at all, so the made-up claim stood.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.api.schemas import EVIDENCE_PAGE
from gateway.books.watcher import (
    MAX_EVIDENCE_BYTES,
    PROOF_LEVEL_BYTES,
    RECORD_BYTES,
    EvidenceUnavailable,
    fetch_evidence,
)


def _server(head: bytes, body: Iterator[bytes], pause: float) -> tuple[str, threading.Event]:
    """One connection: `head`, then `body`'s chunks `pause` seconds apart until it ends, the peer goes or stop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = sock.accept()
        conn.recv(65536)
        try:
            conn.sendall(head)
            for chunk in body:
                if stop.is_set():
                    break
                conn.sendall(chunk)
                time.sleep(pause)
        except OSError:
            pass
        conn.close()
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def _for(seconds: float, chunk: bytes) -> Iterator[bytes]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield chunk


def _refused(url: str, count: int = 100_000, **limits) -> tuple[EvidenceUnavailable, float]:
    """What a claim of `count` records gets (the count sets how long and how much its evidence may take)."""
    started = time.monotonic()
    with pytest.raises(EvidenceUnavailable) as refused:
        fetch_evidence(url, 1, "hpc-a", count, **limits)
    return refused.value, time.monotonic() - started


def test_a_centre_dripping_its_evidence_cannot_hold_the_home_past_the_deadline():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
    url, stop = _server(head, _for(12, b" "), pause=0.2)
    try:
        error, waited = _refused(url, 1, timeout=1.0)  # a claim of one record: due within 1.002 s
    finally:
        stop.set()
    assert waited < 2, f"a 1 s deadline held the watcher {waited:.1f} s (as long as the centre kept dripping)"
    assert "1.002 s" in str(error) and "deadline" in str(error)


def test_endless_or_oversized_evidence_is_refused_without_reading_it_all():
    chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"[" + b" " * 8191
    url, stop = _server(chunked, (f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(10**6)), 0)
    try:
        error, waited = _refused(url, timeout=10.0, max_bytes=100_000)
    finally:
        stop.set()
    assert "100000 bytes" in str(error) and waited < 5
    declared = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n["
    url, stop = _server(declared, _for(10, b" " * 8192), pause=0.01)
    try:
        error, waited = _refused(url, timeout=10.0)
    finally:
        stop.set()
    assert f"{MAX_EVIDENCE_BYTES} bytes" in str(error) and waited < 2
    assert MAX_EVIDENCE_BYTES >= EVIDENCE_PAGE * (RECORD_BYTES + 64 * PROOF_LEVEL_BYTES)  # a page, 64-level proofs


DEEP_EVIDENCE = """
import sys
from gateway.books.watcher import EvidenceUnavailable, fetch_evidence  # with web3: recursion limit 100,000
try:
    fetch_evidence(sys.argv[1], 1, "hpc-a", 1_000, timeout=10.0)
except EvidenceUnavailable as exc:
    print("unavailable:", exc)
"""


def test_deeply_nested_evidence_is_unavailable_not_a_crash():
    """Evidence nested 100,000 deep (200 kB, far under the size cap): json.loads recursed past the C stack (py_ecc
    raises Python's recursion limit to 100,000) and the home's gateway died of SIGSEGV."""
    deep = b"[" * 100_000 + b"]" * 100_000
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(deep)
    url, stop = _server(head, iter([deep]), pause=0)
    try:
        argv = [sys.executable, "-c", DEEP_EVIDENCE, url]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    finally:
        stop.set()
    assert run.returncode == 0, f"the watcher died (exit {run.returncode}): {run.stderr[-300:]}"
    assert "unavailable:" in run.stdout and "nested more than" in run.stdout, run.stdout


def test_a_claim_with_a_huge_count_and_no_evidence_is_disputed_on_a_bounded_number_of_leaves(tmp_path):
    """count = 2**64 - 1 and no evidence: hpc-a has 2 holds that cloud-b could bill in that claim, so at most 2 of
    its leaves can be answered (a grant answers one leaf, on chain): leaves 0, 1 and 2 are disputed and one of them
    can never be answered. The round ends at once, in a child capped at 1 GiB, and the claim is checked."""
    code = textwrap.dedent(
        f"""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from types import SimpleNamespace
        from gateway.books.watcher import LeafDispute, Watcher
        from gateway.store import Store
        from gateway.store.holds import HoldBook, NewHold
        from ledger.ids import centre_id
        from ledger.index import ClaimInfo

        NOW = 10_000
        claim = ClaimInfo(centre_id("cloud-b"), 1, centre_id("hpc-a"), bytes(32), 2**64 - 1, 400_000_000, False, 9_960)

        class Index:  # unit double of the index: one claim, from a centre that serves no evidence
            chain_time = NOW
            def claims_on(self, home, epoch=None):
                return [claim]
            def member(self, _):
                return None

        class Outbox:  # unit double: what would go on chain
            def __init__(self):
                self.queued = []
            def enqueue(self, kind, key, payload):
                self.queued.append(payload)

        book = HoldBook(Store({str(tmp_path / "gateway.db")!r}))
        def hold(n, centre, deadline, status="held"):
            book.reserve(NewHold(bytes([n]) * 32, bytes([n + 100]) * 32, f"0x{{n:040x}}", "bob", "physics", centre,
                                 10, deadline, {{}}, {{}}, b"s"), 10**6, 10**6)
            if status == "refunded":
                book.refund(bytes([n + 100]) * 32)
        hold(1, "cloud-b", NOW + 100)
        hold(2, "cloud-b", NOW + 100, "refunded")  # refunded after a voided claim: billable again on chain
        hold(3, "ai-c", NOW + 100)  # another centre's: cannot be billed by cloud-b
        hold(4, "cloud-b", 9_960 - 61)  # its deadline + booking delay (60) passed before the anchor
        outbox = Outbox()
        w = Watcher(name="hpc-a", index=Index(), outbox=outbox, payer=SimpleNamespace(book=book), domain=None,
                    dispute_window=100, booking_delay=60, fetch=lambda *a: None, clock=lambda: NOW)
        started = time.monotonic()
        try:
            found = w.check_claims()
        except MemoryError:
            print("MemoryError: no dispute queued"); sys.exit(3)
        took = time.monotonic() - started
        print(took, [f.index for _, f in found], [q["index"] for q in outbox.queued], w._checked)
        assert took < 5, took
        assert [f for _, f in found] == [LeafDispute(0), LeafDispute(1), LeafDispute(2)], found
        assert [q["index"] for q in outbox.queued] == [0, 1, 2]
        assert (claim.centre, 1) in w._checked
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr[-1500:]
