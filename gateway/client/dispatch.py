"""Placing a job, on the user's side: the client, not a gateway, carries the user's authority.

A gateway ranks the member centres (`POST /v1/placement`); the client then signs on at
each candidate in turn and submits there, so every centre that runs a job authorised it
from evidence it verified itself, and no member ever holds a token good at another.
The client moves on only when the job certainly did not start at a centre (refused by
its policy, unavailable, or not reachable); a centre that took the request but gave no
answer may be running it, so the client stops and says how to retry safely.

Only the ranking comes from the entry gateway, which may be any member. Where each
member is comes from the user's home (`GET /v1/members`, its index of the chain), the
one gateway the user already trusts: an entry that lists its own server as another
member's would otherwise receive the user's tokens and proofs for that member. And a
wallet answers only a challenge of the centre it means to sign on at, so no gateway
can relay another centre's challenge to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from auth.credentials import CredentialError
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable, WrongCentre
from gateway.client.wallet import Wallet


@dataclass(frozen=True)
class SignOn:
    """How the client signs on at a centre, and where the user's home is.

    `at(client, centre)` makes `client` hold a session token good at `centre` (a wallet
    presentation, or a token exchanged at home); `home_url` is the gateway of the
    user's home, which says where every member is.
    """

    home_url: str
    at: Callable[[GatewayClient, str], None]

    def __call__(self, client: GatewayClient, centre: str) -> None:
        self.at(client, centre)


@dataclass
class Submission:
    """Where a job was accepted, its view, and a client signed on there (to follow the job)."""

    centre: str
    view: dict
    client: GatewayClient


class NoCentreAccepts(GatewayRefused):
    """Every candidate refused the job or could not take it now; reasons name each centre.

    403 when every centre refused by policy, 503 when at least one was only unavailable
    (trying again later may succeed).
    """


def submit_anywhere(
    entry_url: str,
    job: dict,
    sign_on: SignOn,
    *,
    centre: str = "auto",
    idempotency_key: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Submission:
    """Submit `job` at `centre`, or with "auto" at the best-ranked member that accepts it.

    `entry_url` (any member's gateway) only ranks the members; their URLs come from home.
    """
    resources = job.get("resources", {})
    with GatewayClient(sign_on.home_url, transport=transport) as home:
        where = home.members()
    if centre != "auto":
        if centre not in where:
            raise ValueError(f"unknown centre {centre!r}; members are {', '.join(sorted(where))}")
        names = [centre]
    else:
        with GatewayClient(entry_url, transport=transport) as entry:
            ranked = [c["centre"] for c in entry.placement(job["walltime"], resources)]
        # The entry's ranking of the members home knows, at the URLs home gives; then any it left out.
        names = [n for n in dict.fromkeys(ranked) if n in where] + sorted(n for n in where if n not in ranked)
    refusals: list[str] = []
    unavailable = False
    for name in names:
        try:
            client = GatewayClient(where[name], transport=transport)
        except GatewayUnreachable as exc:
            refusals.append(f"{name}: {exc}")
            unavailable = True
            continue
        try:
            sign_on(client, name)
            view = client.submit(job | {"centre": name}, idempotency_key)
        except (WrongCentre, CredentialError) as exc:  # a gateway the wallet will not answer
            client.close()
            refusals.append(f"{name}: {exc}")
            unavailable = True
            continue
        except GatewayUnreachable as exc:
            client.close()
            if exc.sent and client.token:
                again = "retry with the same idempotency key" if idempotency_key else "look for it there first"
                raise GatewayUnreachable(
                    f"{name} took the job but did not answer; it may be running there: {again}"
                ) from None
            refusals.append(f"{name}: gateway unreachable")
            unavailable = True
            continue
        except GatewayRefused as exc:
            client.close()
            if exc.status == 403 or (exc.status == 401 and not client.token):
                refusals.extend(exc.reasons or [f"{name}: {exc.error}"])
                continue
            if exc.status == 503:
                refusals.append(f"{name}: unavailable ({exc.error})")
                unavailable = True
                continue
            raise
        return Submission(name, view, client)
    raise NoCentreAccepts(503 if unavailable else 403, "no member centre accepts this job", refusals)


def with_wallet(wallet: Wallet) -> SignOn:
    """Sign on at each centre with a fresh presentation from the user's wallet, for that centre only."""

    def sign_on(client: GatewayClient, centre: str) -> None:
        client.sign_on(wallet, centre)

    return SignOn(wallet.home_url, sign_on)


def with_home_session(home: GatewayClient) -> SignOn:
    """Sign on at each centre with a token the user's home issues for it (token exchange).

    `home` is a client that logged in at the user's home with a password.
    """

    def sign_on(client: GatewayClient, centre: str) -> None:
        client.token = home.token if centre == home.home else home.exchange(centre)["token"]

    return SignOn(home.url, sign_on)
