"""Closing an epoch while the chain node is stopped (SIGSTOP), and the node's answers meanwhile.

Three gateways (HTTP on loopback, embedded LDAP directories) on one anvil. The anvil process
is stopped with SIGSTOP, as a hung node looks to a gateway: connections are taken, nothing is
answered. Measured in the same run: the epoch close (POST /v1/epochs/close) and a health
request before the stop (the peer) and while the node is stopped, then the time from SIGCONT
to the anchor of the epoch closed during the outage being on chain.

    .venv/bin/python scripts/bench/bench_chain_outage.py
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import Result, print_results

from auth.directory import Directory
from auth.ldap_embedded import EmbeddedLdap
from auth.ldif import centre_ldif, service_dn
from gateway.consortium.anvil import answers, anvil_binary, start_anvil
from gateway.consortium.processes import free_port, stop
from gateway.demo.local import LocalConsortium, demo_spec
from ledger.chain import connect
from ledger.ids import centre_id

TITLE = "Epoch close with the chain node stopped"
ABOUT = (
    "Three gateways on one anvil; the anvil process is stopped with SIGSTOP (a hung node: connections "
    "are taken, nothing is answered). The close and a health request are timed before the stop (the "
    "peer) and during it; then the time from SIGCONT until the anchor queued during the outage is on chain."
)
CENTRE = "hpc-a"


@contextlib.contextmanager
def anvil(log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    binary = anvil_binary()
    if binary is None:
        raise RuntimeError("anvil is not installed: run `npm ci` in contracts/")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = start_anvil(binary, port, out, home=log.parent)  # its scratch states go with the run's folder
    try:
        deadline = time.monotonic() + 30
        while not answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("anvil did not start")
            time.sleep(0.05)
        yield url, proc
    finally:
        stop(proc.pid, timeout=10)  # a SIGSTOPped node is woken first


def timed(call) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    answer = call()
    return (time.perf_counter() - started) * 1000, answer


def run(quick: bool = False) -> list[Result]:
    spec = demo_spec()
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="xcentre-outage-") as tmp, anvil(Path(tmp) / "anvil.log") as (url, proc):
        ldaps = {
            c.name: EmbeddedLdap(centre_ldif(c.base_dn, c.users, c.groups, service_password=password))
            for c in spec.centres
        }
        directories = {
            c.name: Directory(ldaps[c.name].start(), c.base_dn, service_dn(c.base_dn), password, centre=c.name)
            for c in spec.centres
        }
        consortium = LocalConsortium(connect(url), spec, directories, Path(tmp) / "c").start()
        try:
            gateway = consortium.url(CENTRE)
            key = {"X-Operator-Key": consortium.operator_key(CENTRE)}
            index = consortium.centres[CENTRE].node.parts.index
            with httpx.Client(base_url=gateway, timeout=600) as http:
                health_up, _ = timed(lambda: http.get("/v1/health"))
                close_up, answer = timed(lambda: http.post("/v1/epochs/close", headers=key))
                assert answer.status_code == 202, answer.text
                up_epoch = answer.json()["epoch"]
                while index.anchor(centre_id(CENTRE), up_epoch) is None:
                    time.sleep(0.05)

                proc.send_signal(signal.SIGSTOP)
                time.sleep(1.0)  # housekeeping meets the hung node
                close_down, answer = timed(lambda: http.post("/v1/epochs/close", headers=key))
                assert answer.status_code == 202, answer.text
                epoch = answer.json()["epoch"]
                health_down, health = timed(lambda: http.get("/v1/health"))
                assert health.status_code == 200, health.text
                time.sleep(2.0)
                resumed = time.perf_counter()
                proc.send_signal(signal.SIGCONT)
                while index.anchor(centre_id(CENTRE), epoch) is None:
                    time.sleep(0.05)
                drained = time.perf_counter() - resumed
        finally:
            consortium.stop()
            for ldap in ldaps.values():
                ldap.stop()
    note = "one request each"
    return [
        Result("outage.close.up", "chain answering", "POST /v1/epochs/close (202)", close_up, note=note),
        Result(
            "outage.close.stopped",
            "chain stopped (SIGSTOP)",
            "POST /v1/epochs/close (202)",
            close_down,
            peer="outage.close.up",
            note=note,
        ),
        Result("outage.health.up", "chain answering", "GET /v1/health", health_up, note=note),
        Result(
            "outage.health.stopped",
            "chain stopped (SIGSTOP)",
            "GET /v1/health",
            health_down,
            peer="outage.health.up",
            note=note,
        ),
        Result(
            "outage.anchor.after_resume",
            "chain resumed (SIGCONT)",
            "until the queued anchor is on chain",
            drained * 1000,
            note="housekeeping's next round after the hung request times out",
        ),
    ]


if __name__ == "__main__":
    print_results(run())
