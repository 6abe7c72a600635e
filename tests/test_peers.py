"""What a gateway asks its peers (their free capacity) must never let one peer stall placement.

Each peer here is a real TCP server on loopback; the hostile ones answer as slowly
or as much as they like, as a member controlling its gateway could.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from gateway.node.peers import Peers


class Server:
    """A loopback TCP server that answers every connection with `answer(socket)`; counts connections."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.connections = 0
        self.stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.answer(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self._listener.close()


@pytest.fixture
def servers() -> Iterator[Callable[[Callable[[socket.socket], None]], Server]]:
    started: list[Server] = []

    def start(answer: Callable[[socket.socket], None]) -> Server:
        started.append(Server(answer))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def honest(free: int) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        body = json.dumps({"centre": "x", "total_cpus": 8, "free_cpus": free}).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    return answer


def trickling(stopped: threading.Event) -> Callable[[socket.socket], None]:
    """Headers one byte at a time, each well within a read timeout: the answer never ends."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stopped.wait(0.2):
            conn.sendall(b"X")

    return answer


def endless(conn: socket.socket) -> None:
    """A body of a terabyte, sent as fast as the reader takes it."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
        b'{"free_cpus": 3, "padding": "'
    )
    chunk = b"x" * 65536
    while True:
        conn.sendall(chunk)


def ask(peers: Peers, centres: list[str], within: float = 20.0) -> dict:
    """peers.capacities(centres), failing the test if it has not returned after `within` seconds."""
    answer: dict = {}
    worker = threading.Thread(target=lambda: answer.update(peers.capacities(centres)), daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), "a peer's answer held placement"
    return answer


def test_a_peer_that_answers_forever_does_not_hold_placement(servers):
    """A hostile member trickles its capacity answer (each byte inside httpx's read timeout):
    placement still answers, that peer counts as silent, the others are heard."""
    stopped = threading.Event()
    slow, good = servers(trickling(stopped)), servers(honest(5))
    urls = {"slow": slow.url, "good": good.url}
    peers = Peers(urls.get, timeout=1.0)
    try:
        assert ask(peers, ["slow", "good"]) == {"slow": None, "good": 5}
    finally:
        stopped.set()
        peers.close()


def test_a_peer_cannot_make_a_gateway_read_an_endless_answer(servers):
    peers = Peers({"big": servers(endless).url}.get, timeout=1.0)
    try:
        assert ask(peers, ["big"]) == {"big": None}
    finally:
        peers.close()


def test_a_flood_of_placements_asks_each_peer_once_at_a_time(servers):
    """An outsider's flood of POST /v1/placement does not become a flood on the peers."""
    good = servers(honest(2))
    peers = Peers({"good": good.url}.get, timeout=1.0)
    try:
        answers: list[dict] = []
        workers = [threading.Thread(target=lambda: answers.append(peers.capacities(["good"]))) for _ in range(20)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(20)
        assert answers == [{"good": 2}] * 20
        assert good.connections < 20
    finally:
        peers.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://\x00", "http://[bad", "ftp://x", "not a url"])
def test_a_peer_with_a_url_nobody_can_reach_is_silent_not_an_error(url):
    """A member sets its gateway URL on chain to anything it likes: placement still answers."""
    peers = Peers({"odd": url}.get, timeout=1.0)
    assert ask(peers, ["odd"]) == {"odd": None}
