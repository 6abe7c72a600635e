"""Sign-ons per second on one gateway process over HTTP (request + present → token).

A consortium runs in a separate process (`signon_server.py`: embedded chain,
embedded LDAP, real HTTP gateways); this process is the crowd of users. Each
sign-on is the full exchange: GET /v1/auth/request, then POST /v1/auth/present
with a BBS proof answering it. The users' proofs are made between the two
timed phases, so the figure is the gateway's capacity, not the clients'.
The peer measured in the same run is password login (POST /v1/login, an LDAP
bind and a token) on the same gateway.

    .venv/bin/python scripts/bench/bench_signon.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import SIGNON_ID, Result, rate, run_alone

from gateway.client.wallet import Wallet

TITLE = "Attribute-based sign-on on one gateway process"
ABOUT = (
    "One gateway (uvicorn, one process) of a consortium started in its own process "
    "on embedded defaults; 16 client threads in the benchmark process. A sign-on is "
    "`GET /v1/auth/request` + `POST /v1/auth/present` (BBS proof of 10 attributes, "
    "4 disclosed, verified against the issuer key in the gateway's chain index, a "
    "session token signed). Clients make their proofs between the two timed phases, "
    "so the rate is the gateway's. The peer is password login (`POST /v1/login`: "
    "an LDAP bind to the embedded directory and a token) on the same gateway."
)

SERVER = Path(__file__).with_name("signon_server.py")
CLIENTS = 16
LOGIN_ID = "signon.password_login"


def _elapsed(fn, items: list) -> float:
    """Seconds to run fn over items with CLIENTS threads (one HTTP connection pool each)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(fn, items))
    return time.perf_counter() - start


def run(quick: bool = False) -> list[Result]:
    count = 150 if quick else 600
    server = subprocess.Popen(
        [sys.executable, str(SERVER)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        info = json.loads(server.stdout.readline())
        url = info["url"]
        with httpx.Client(base_url=url, timeout=60) as http:
            issued = http.post("/v1/credentials", json=info["user"]).raise_for_status().json()
            wallet = Wallet.from_issuance(url, issued)
            clients = [httpx.Client(base_url=url, timeout=60) for _ in range(CLIENTS)]

            def client_for(i: int) -> httpx.Client:
                return clients[i % CLIENTS]

            def get_request(i: int) -> dict:
                return client_for(i).get("/v1/auth/request").raise_for_status().json()

            warm = [get_request(i) for i in range(20)]
            for request in warm:  # warm up the verifier's caches and connections
                client_for(0).post(
                    "/v1/auth/present", json={"presentation": wallet.present(request)}
                ).raise_for_status()

            requests: list[dict] = []
            t_request = _elapsed(lambda i: requests.append(get_request(i)), list(range(count)))
            presentations = [(i, wallet.present(r)) for i, r in enumerate(requests)]

            def present(item: tuple[int, dict]) -> None:
                i, p = item
                response = client_for(i).post("/v1/auth/present", json={"presentation": p})
                response.raise_for_status()
                assert response.json()["token"]

            t_present = _elapsed(present, presentations)

            def login(i: int) -> None:
                client_for(i).post("/v1/login", json=info["user"]).raise_for_status()

            logins = count // 2
            t_login = _elapsed(login, list(range(logins)))
            for c in clients:
                c.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return [
        rate(LOGIN_ID, "one gateway process", "password login", logins, t_login),
        rate(
            SIGNON_ID,
            "one gateway process",
            "sign-on (request + present)",
            count,
            t_request + t_present,
            peer=LOGIN_ID,
            note=f"{count} sign-ons; request phase {t_request:.2f} s, present phase {t_present:.2f} s",
        ),
    ]


if __name__ == "__main__":
    run_alone(run, __doc__)
