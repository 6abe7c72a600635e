"""GatewayClient against a gateway that answers as it likes: deeply nested, huge or dripped answers.

The gateway is another party (a member centre controls its own), so what it sends must not decide how long
a call takes, how much it reads, or whether the caller's process survives parsing it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from gateway.client.http import (
    MAX_ANSWER_BYTES,
    MAX_AUDIT_ANSWER_BYTES,
    GatewayClient,
    GatewayRefused,
    GatewayUnreachable,
    UnreadableAnswer,
)
from ledger.primitives.bounded import MAX_DEPTH, Collected, OverLimit, json_depth, loads
from tests.test_attack_member_watcher import _for, _server  # a real loopback server, dripping

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def _client(answer) -> GatewayClient:
    """A client whose gateway is `answer(request) -> httpx.Response` (a unit double of the wire)."""
    return GatewayClient("http://gateway.example", transport=httpx.MockTransport(answer))


DEEP_ANSWER = """
import httpx, web3  # noqa: F401 - web3 (py_ecc) raises the recursion limit to 100,000, as in the CLI
from gateway.client.http import GatewayClient
deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
wire = httpx.MockTransport(lambda r: httpx.Response(200, content=deep))
client = GatewayClient("http://gateway.example", transport=wire)
try:
    print("answer", type(client.policy()).__name__)
except Exception as exc:
    print(type(exc).__name__, isinstance(exc, ConnectionError), exc)
"""


def test_a_deeply_nested_answer_is_refused_not_a_crash():
    """600 kB nested 100,000 deep: json.loads recursed past the C stack and the client died of SIGSEGV."""
    argv = [sys.executable, "-c", DEEP_ANSWER]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"the client died (exit {done.returncode}): {done.stderr[-300:]}"
    assert done.stdout.startswith("UnreadableAnswer True"), done.stdout
    assert f"nested more than {MAX_DEPTH} levels" in done.stdout


def test_a_huge_answer_is_not_read_whole():
    sent = [0]

    def endless() -> Iterator[bytes]:
        for _ in range(96):
            sent[0] += MiB
            yield b"a" * MiB

    with _client(lambda r: httpx.Response(200, content=endless())) as client, pytest.raises(UnreadableAnswer) as err:
        client.policy()
    assert f"{MAX_ANSWER_BYTES} bytes" in str(err.value)
    assert sent[0] <= MAX_ANSWER_BYTES + MiB, f"the client read {sent[0] // MiB} MiB of a policy answer"

    declared = httpx.Response(200, headers={"Content-Length": str(96 * MiB)}, content=endless())
    sent[0] = 0
    with _client(lambda r: declared) as client, pytest.raises(UnreadableAnswer):
        client.members()
    assert sent[0] == 0, "an answer declaring 96 MiB was read"


def test_the_audit_reads_pages_larger_than_ordinary_answers():
    """A page of a decision log (10,000 entries, ~10 MB) or of an epoch's records is read; any other answer that
    large is refused."""
    page = {"centre": "hpc-a", "epoch": 1, "root": "0x00", "count": 1, "next": None}
    page["entries"] = [{"pad": "x" * (MAX_ANSWER_BYTES + MiB)}]
    body = json.dumps(page).encode()
    assert MAX_ANSWER_BYTES < len(body) < MAX_AUDIT_ANSWER_BYTES
    with _client(lambda r: httpx.Response(200, content=body)) as client:
        assert client.audit_decisions_page(1, Account.create(), "hpc-a")["count"] == 1
        assert client.epoch_records_page(1)["count"] == 1
        with pytest.raises(UnreadableAnswer):
            client.audit_epoch(1)


@pytest.mark.parametrize("dripped", ["body", "headers"])
def test_a_dripping_gateway_is_cut_off_at_the_deadline(dripped):
    """A byte every 0.2 s never trips httpx's per-read timeout: the call waited as long as the gateway dripped."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n["
    url, stop = _server(head if dripped == "body" else b"HTTP/1.1 200 OK\r\nX-Slow:", _for(15, b" "), pause=0.2)
    started = time.monotonic()
    try:
        with GatewayClient(url, timeout=1.0) as client, pytest.raises(UnreadableAnswer) as err:
            client.policy()
    finally:
        stop.set()
    waited = time.monotonic() - started
    assert waited < 3, f"a 1 s deadline held the client {waited:.1f} s"
    assert "1 s deadline" in str(err.value)
    assert isinstance(err.value, GatewayUnreachable)  # dispatch moves on to the next centre, as for no answer


def test_an_error_page_that_is_not_json_is_still_a_refusal():
    page = b"<html><body>502 Bad Gateway</body></html>"
    with _client(lambda r: httpx.Response(502, content=page)) as client, pytest.raises(GatewayRefused) as err:
        client.members()
    assert err.value.status == 502 and "502 Bad Gateway" in err.value.error


def test_json_depth_and_bounded_reading():
    assert json_depth(b'{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert json_depth(b"not json [[") == 2  # never parsed: an unclosed bracket counts
    assert loads(b'{"a": [1]}') == {"a": [1]}
    with pytest.raises(OverLimit, match="nested more than 2 levels"):
        loads(b"[[[1]]]", max_depth=2)
    with pytest.raises(ValueError):
        loads(b"{not json")
    answer = Collected(10)
    answer.declared("10")
    answer.add(b"[1, 2, 3]")
    assert answer.json() == [1, 2, 3]
    with pytest.raises(OverLimit, match="10 bytes"):
        answer.add(b"45")
    with pytest.raises(OverLimit, match="10 bytes"):
        Collected(10).declared("11")
