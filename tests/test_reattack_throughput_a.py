"""Hostile review A of the throughput round (issue 11): a user or an outsider against the gateway's
thread pool (gateway/api/app.py: a pool of `server_threads`, 8 by default), its session tokens kept
verified, its directory groups kept and its order recoveries kept. Real parts: the session's
consortium (three real HTTP gateways on loopback, slapd, anvil)."""

from __future__ import annotations

import threading
import time

import httpx

from gateway.api.app import DEFAULT_THREADS

#: Placement requests an outsider keeps in flight at each of two gateways: a few more than the pool.
FLOOD = DEFAULT_THREADS + 4
JOB = {"walltime": 60, "resources": {"cores": 1}}


def _placements(url: str) -> dict[str, int | None]:
    with httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/v1/placement", json=JOB)
    assert answer.status_code == 200, answer.text
    return {c["centre"]: c["free_cpus"] for c in answer.json()["candidates"]}


def _wave(urls: dict[str, str]) -> dict[str, list[dict[str, int | None]]]:
    """FLOOD placement requests at each gateway of `urls`, all let go at once; every answer, by gateway."""
    answers: dict[str, list[dict[str, int | None]]] = {name: [] for name in urls}
    errors: list[BaseException] = []
    start = threading.Barrier(FLOOD * len(urls))

    def one(name: str) -> None:
        try:
            start.wait()
            answers[name].append(_placements(urls[name]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(name,)) for name in urls for _ in range(FLOOD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return answers


def test_an_outsiders_placements_at_two_gateways_blind_them_to_each_other(consortium):
    """POST /v1/placement is public and sync: its thread waits on the shared capacity round (`Peers._round`) while
    that round asks each peer's GET /v1/capacity, itself sync, so answered only when the peer has a thread free.
    With a pool of 8, an outsider's 12 placements at hpc-a and 12 at cloud-b (no session, no money) fill both
    pools with threads each waiting on the other gateway's pool: both rounds wait out the peers' 1 s timeout,
    every gateway is frozen meanwhile, and every placement answered in that second says the other (live, idle)
    centre did not answer: it is ranked as having no room, so other users' jobs are sent to a dearer centre.
    The outsider repeats it every second (the round's answers are kept `fresh_for` 1 s)."""
    a, b = "hpc-a", "cloud-b"
    urls = {a: consortium.url(a), b: consortium.url(b)}
    time.sleep(1.2)  # any round kept from earlier tests is stale: the next placement asks the peers
    alone = _placements(urls[a])
    assert isinstance(alone[b], int) and isinstance(alone["ai-c"], int), alone  # one placement: every peer answers
    blind = []
    for _ in range(3):
        time.sleep(1.2)
        answers = _wave(urls)
        assert all(len(v) == FLOOD for v in answers.values()), answers
        blind += [(here, there) for here, there in ((a, b), (b, a)) for seen in answers[here] if seen[there] is None]
    assert not blind, (
        f"{len(blind)} of {2 * 3 * FLOOD} placements answered while an outsider kept {FLOOD} placements in flight at "
        f"each of {a} and {b} reported the other, live, centre as silent (no room): {sorted(set(blind))}"
    )
