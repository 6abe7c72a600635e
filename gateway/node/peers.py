"""What a gateway asks of the other members' gateways: only public facts, never on a user's behalf.

A gateway holds no user's authority at another centre (tokens are for one
centre only), so all it asks a peer is how much room it has, for placement.

A peer is another member, which controls its gateway's answers: it may answer
slowly, a byte at a time, or without end. So every round of questions has one
deadline for the whole round (httpx's timeouts bound each read, not an answer),
reads at most MAX_ANSWER bytes of an answer (parsed only if shallow:
`ledger.primitives.bounded`), and is shared: concurrent placements
wait for the round under way and reuse its answers for `fresh_for` seconds, so a
flood of placement requests never becomes a flood on the peers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable

import httpx

from ledger.primitives.bounded import Collected

MAX_ANSWER = 4096
"""Bytes of a capacity answer read at most; a real one is about 60."""


class Peers:
    """The other members' gateways, at the URLs the chain gives for them."""

    def __init__(
        self,
        url_of: Callable[[str], str | None],
        timeout: float = 1.0,
        fresh_for: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url_of = url_of
        self.timeout = timeout
        self.fresh_for = fresh_for
        self._transport = transport
        self._round = threading.Lock()
        self._known: dict[str, int | None] = {}
        self._asked_at = float("-inf")

    def capacities(self, centres: Iterable[str]) -> dict[str, int | None]:
        """Free CPUs of each centre, asked in parallel within `timeout` seconds in all;
        None for a centre that did not answer in time, or not with a capacity."""
        centres = list(centres)
        with self._round:
            if time.monotonic() - self._asked_at > self.fresh_for or not set(centres) <= set(self._known):
                self._known = asyncio.run(self._ask(centres))
                self._asked_at = time.monotonic()
            return {c: self._known[c] for c in centres}

    async def _ask(self, centres: list[str]) -> dict[str, int | None]:
        async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as http:
            tasks = [asyncio.ensure_future(self._free_cpus(http, c)) for c in centres]
            await asyncio.wait(tasks, timeout=self.timeout)
            for task in tasks:
                task.cancel()
            return {
                c: (t.result() if t.done() and not t.cancelled() else None) for c, t in zip(centres, tasks, strict=True)
            }

    async def _free_cpus(self, http: httpx.AsyncClient, centre: str) -> int | None:
        base = self._url_of(centre)
        if not base:
            return None
        try:
            async with http.stream(
                "GET", f"{base.rstrip('/')}/v1/capacity", headers={"Accept-Encoding": "identity"}
            ) as response:
                if response.status_code != 200:
                    return None
                answer = Collected(MAX_ANSWER)
                answer.declared(response.headers.get("content-length"))
                async for chunk in response.aiter_raw():
                    answer.add(chunk)
            payload = answer.json()
        except Exception:  # noqa: BLE001 - whatever its URL or its answer, a peer that gave no capacity is silent
            return None
        free = payload.get("free_cpus") if isinstance(payload, dict) else None
        return free if isinstance(free, int) and not isinstance(free, bool) and free >= 0 else None

    def close(self) -> None:
        """Nothing stays open between rounds; kept so a node stops its parts alike."""
