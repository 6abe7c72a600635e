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

Every submission is paid for (gateway.client.paying): signed on at a centre, the client
first asks it for a quote (POST /v1/jobs/quote: the centre runs the checks of a
submission, its policy included, and names its rates version and the job's maximum
price); only then does it sign an order for that quote with a fresh payment account and
get its home's grant, which holds the maximum price on the project. A centre that
refuses the job at the quote costs no hold. `finish` then checks the record, gives the
receipt and opens the result with the key it releases.

Anonymously (`anonymously`, a member of one of the home's projects, see
gateway.client.wallet.GroupMembership), nobody signs on: the quote is asked under
a group signature over the request's digest, the order (a fresh account as ever) is
granted by the home under a group signature over the order's digest, which the
centre then gets with the job; it follows the job and gives the receipt as the
order's account, as for any job. No centre learns who the member is, only the
project and its home.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import httpx

from auth.credentials import CredentialError
from auth.group.credential import (
    JOIN_SLACK,
    GroupCredential,
    credential_expiry,
    issue_week,
    join_request,
    new_member_secret,
)
from auth.group.points import g1_from_raw
from auth.group.signature import order_message, quote_message
from gateway.api.schemas import CREDIT_LIMIT
from gateway.client.http import GatewayClient, GatewayRefused, GatewayUnreachable, WrongCentre, job_signer
from gateway.client.paying import (
    ORDER_SLACK,
    Paid,
    Quote,
    Result,
    check_record,
    job_request,
    open_result,
    pay,
    receipt_signature,
    signing_domain,
)
from gateway.client.wallet import GroupMembership, PaymentKeys, Wallet
from ledger.payment import Order, order_digest, request_digest
from ledger.primitives.hex import from_hex, to_hex
from ledger.records import Domain, record_digest


@dataclass(frozen=True)
class SignOn:
    """How the client signs on at a centre, where the user's home is, and how it grants orders.

    `at(client, centre)` makes `client` hold a session token good at `centre` (a wallet
    presentation, or a token exchanged at home); `home_url` is the gateway of the
    user's home, which says where every member is; `grant(order, signature)` is the
    home's grant for an order (POST /v1/grants with a password session at home).
    `quote(client, request)` and `submit(client, job, idempotency key)` ask the centre
    (signed on: POST /v1/jobs/quote and /v1/jobs; anonymous: under a group signature).
    """

    home_url: str
    at: Callable[[GatewayClient, str], None]
    grant: Callable[[dict, str], dict]
    quote: Callable[[GatewayClient, dict], dict] = GatewayClient.quote
    submit: Callable[[GatewayClient, dict, str | None], dict] = GatewayClient.submit

    def __call__(self, client: GatewayClient, centre: str) -> None:
        self.at(client, centre)


@dataclass
class Submission:
    """Where a job was accepted, its view, a client signed on there (to follow the job), and what pays for it."""

    centre: str
    view: dict
    client: GatewayClient
    paid: Paid
    centre_account: str
    domain: Domain


class GrantRefused(GatewayRefused):
    """The user's home would not grant the order (402: over the project's budget): no centre is tried further."""


#: Seconds after which a submission no centre could take (some only unavailable) is worth trying again.
RETRY_AFTER = 10


class NoCentreAccepts(GatewayRefused):
    """Every candidate refused the job or could not take it now; reasons name each centre.

    403 only when every centre refused (by policy, or as a request it will not take); 503 when at
    least one was unavailable or unreachable (trying again later may succeed: `retry_after`
    seconds), with every centre's reason, refusals and unavailability alike. `decisions`: for
    each centre whose policy refused, the id of the refusal's entry in its decision log.
    """

    def __init__(self, status: int, error: str, reasons: list[str], decisions: dict[str, str]) -> None:
        only = next(iter(decisions.values())) if len(decisions) == 1 else None
        super().__init__(status, error, reasons, decision=only)
        self.decisions = decisions
        self.retry_after = RETRY_AFTER if status == 503 else None


class StillUnanswered(GatewayUnreachable):
    """A submission a centre took without answering is still unanswered; it stays pending in the wallet."""


def submit_anywhere(
    entry_url: str,
    job: dict,
    sign_on: SignOn,
    *,
    centre: str = "auto",
    idempotency_key: str | None = None,
    transport: httpx.BaseTransport | None = None,
    keys: PaymentKeys | None = None,
    slack: int = ORDER_SLACK,
    label: str | None = None,
) -> Submission:
    """Submit `job` at `centre`, or with "auto" at the best-ranked member that accepts it, paid by an order
    of a fresh account from `keys` (kept in memory when None) and its home's grant. The order must be
    done `slack` seconds after the walltime (paying.make_order).

    `entry_url` (any member's gateway) only ranks the members; their URLs and accounts, and the payment
    domain, come from home; the rates version and maximum price an order names come from the centre
    itself (its quote), asked before home grants anything. A refusal by the home (402: over budget)
    stops the submission; a centre past the credit it gives the user's home (402 `credit-limit`) counts
    as unavailable, as a centre answering 503 does: the next one is tried.

    Before the job is sent to a centre, the wallet (`keys`) records where it goes: the idempotency key,
    the centre, the order and its grant (and `label`, the caller's name for this submission). A
    submission a centre took without answering stays pending there; called again with the same
    idempotency key, this goes to that centre alone with the same order and key, so the job runs
    once whatever the ranking says now (`resume`).
    """
    keys = keys if keys is not None else PaymentKeys()
    if idempotency_key is not None:
        pending = keys.pending(idempotency_key=idempotency_key)
        if pending is not None:
            return resume(pending[0], pending[1], job, sign_on, keys, transport=transport)
    resources = job.get("resources", {})
    with GatewayClient(sign_on.home_url, transport=transport) as home:
        known = home.consortium()
    where = {m["centre"]: m["gateway_url"] for m in known["members"]}
    accounts = {m["centre"]: m["account"] for m in known["members"]}
    domain = signing_domain(known)
    if centre != "auto" and centre not in where:
        raise ValueError(f"unknown centre {centre!r}; members are {', '.join(sorted(where))}")
    with GatewayClient(entry_url, transport=transport) as entry:
        ranking = entry.placement(job["walltime"], resources)
    if centre != "auto":
        names = [centre]
    else:
        ranked = [c["centre"] for c in ranking]
        # The entry's ranking of the members home knows, at the URLs home gives; then any it left out.
        names = [n for n in dict.fromkeys(ranked) if n in where] + sorted(n for n in where if n not in ranked)
    refusals: list[str] = []
    decisions: dict[str, str] = {}
    unavailable = False
    for name in names:
        try:
            client = GatewayClient(where[name], transport=transport)
        except GatewayUnreachable as exc:
            refusals.append(f"{name}: {exc}")
            unavailable = True
            continue
        account = None
        try:
            sign_on(client, name)
            quote = _quote(client, name, job, sign_on)  # refused here (403, 503): nothing granted, nothing held
            account = keys.new()
            paid = _granted(job, quote, account, sign_on, domain, keys, slack)
            # where the job goes, before it goes: a retry after no answer goes there again, with this order
            keys.note(
                account.address,
                centre=name,
                paid=json.dumps(paid.fields()),
                **({"idempotency_key": idempotency_key} if idempotency_key else {}),
                **({"submission": label} if label else {}),
            )
            view = sign_on.submit(client, job | {"centre": name} | paid.fields(), idempotency_key)
        except GrantRefused:
            client.close()
            raise
        except (WrongCentre, CredentialError) as exc:  # a gateway the wallet will not answer
            client.close()
            refusals.append(f"{name}: {exc}")
            unavailable = True
            continue
        except GatewayUnreachable as exc:
            client.close()
            if exc.sent and account is not None:  # past the grant: the submission may have reached the centre
                again = (
                    f"retry with the same idempotency key ({idempotency_key}): the wallet keeps the submission "
                    f"and sends it to {name} again, with the same order"
                    if idempotency_key
                    else "look for it there first"
                )
                raise GatewayUnreachable(
                    f"{name} took the job but did not answer; it may be running there: {again}"
                ) from None
            if account is not None:
                keys.forget(account.address)
            refusals.append(f"{name}: unreachable, try again later ({exc})")
            unavailable = True
            continue
        except GatewayRefused as exc:
            client.close()
            if account is not None:  # the job did not start: its order pays for nothing, the home refunds the hold
                keys.forget(account.address)
            if exc.status == 403 or (exc.status == 401 and not client.token):
                refusals.extend(exc.reasons or [f"{name}: {exc.error}"])
                if exc.decision:
                    decisions[name] = exc.decision
                    refusals.append(f"{name}: decision {exc.decision} records this refusal in its log")
                continue
            if exc.status == 503 or (exc.status == 402 and exc.reasons[:1] == [CREDIT_LIMIT]):
                refusals.append(f"{name}: unavailable ({exc.error})")
                unavailable = True  # a home past its line there: its grants are taken again as settlement pays
                continue
            raise
        keys.note(paid.account, centre=name, job=view["id"], order=to_hex(paid.digest))
        if not client.token:  # no session there (anonymous): the order's account is the job's authority
            client.job_signer = job_signer(name, keys.account(paid.account))
        return Submission(name, view, client, paid, accounts[name], domain)
    if unavailable:
        raise NoCentreAccepts(
            503,
            f"no member centre can take this job now (some are unavailable or unreachable): try again in "
            f"{RETRY_AFTER} s or later",
            refusals,
            decisions,
        )
    raise NoCentreAccepts(403, "no member centre accepts this job", refusals, decisions)


def resume(
    address: str,
    facts: dict[str, str],
    job: dict,
    sign_on: SignOn,
    keys: PaymentKeys,
    *,
    transport: httpx.BaseTransport | None = None,
) -> Submission:
    """Send a pending submission (`keys.pending`) again: to the centre it went to, with its order, grant and
    idempotency key, so that the centre answers with the job it took (or takes it now) and nothing runs
    twice. StillUnanswered (it stays pending) when the centre again does not answer."""
    name, key = facts["centre"], facts["idempotency_key"]
    with GatewayClient(sign_on.home_url, transport=transport) as home:
        known = home.consortium()
    member = next((m for m in known["members"] if m["centre"] == name), None)
    if member is None:
        raise ValueError(f"the pending submission went to {name}, which is no longer a member; ask its operator")
    domain = signing_domain(known)
    paid = paid_from(facts["paid"], address, domain)
    client = GatewayClient(member["gateway_url"], transport=transport)
    try:
        sign_on(client, name)
        view = sign_on.submit(client, job | {"centre": name} | paid.fields(), key)
    except GatewayUnreachable as exc:
        client.close()
        raise StillUnanswered(
            f"{name} still does not answer ({exc}); the submission stays pending in the wallet: run it again later "
            f"(it goes to {name} with idempotency key {key})"
        ) from None
    except GatewayRefused as exc:
        client.close()
        if exc.status < 500 and exc.status != 409:  # it did not take the job under this order: nothing pending
            keys.forget(address)
            raise GatewayRefused(
                exc.status,
                f"{name} refuses the submission that got no answer ({exc.error}); it is dropped from the wallet: "
                "run it again to place it afresh",
                exc.reasons,
                exc.decision,
            ) from None
        raise
    keys.note(address, job=view["id"])
    if not client.token:
        client.job_signer = job_signer(name, keys.account(address))
    return Submission(name, view, client, paid, member["account"], domain)


def paid_from(fields_json: str, account: str, domain: Domain) -> Paid:
    """The Paid an order kept in the wallet stands for (its `paid` fact: `Paid.fields()` as JSON)."""
    fields = json.loads(fields_json)
    order = Order.from_dict(fields["order"])
    return Paid(
        order=order,
        order_signature=from_hex(fields["order_signature"], what="order_signature"),
        grant=fields["grant"],
        grant_signature=fields["grant_signature"],
        account=account,
        digest=order_digest(order, domain),
    )


def _quote(client: GatewayClient, name: str, job: dict, sign_on: SignOn) -> Quote:
    """The centre's own quote for the job, after its checks of a submission (GatewayRefused if it refuses).

    WrongCentre when the answer is not a quote of `name`: no order is signed on it.
    """
    answer = sign_on.quote(client, job | {"centre": name})
    rates_version = answer.get("rates_version") if isinstance(answer, dict) else None
    cost = answer.get("max_price") if isinstance(answer, dict) else None
    if not (_whole(rates_version) and _whole(cost) and answer.get("centre") == name):
        raise WrongCentre(f"the gateway of {name} did not answer with a quote of {name}: {answer!r:.120}")
    return Quote(name, rates_version, cost)


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _granted(
    job: dict, quote: Quote, account: Any, sign_on: SignOn, domain: Domain, keys: PaymentKeys, slack: int
) -> Paid:
    """The order for `quote`, signed by `account`, with its home's grant; GrantRefused if home says no."""
    try:
        return pay(job, quote, account, sign_on.grant, domain, slack=slack)
    except GatewayRefused as exc:
        keys.forget(account.address)
        raise GrantRefused(
            exc.status, f"your home did not grant the order for {quote.centre}: {exc.error}", exc.reasons
        ) from None
    except GatewayUnreachable as exc:
        keys.forget(account.address)
        raise GrantRefused(
            503, f"your home did not answer, so nothing grants the order and no centre runs the job: {exc}", []
        ) from None


def finish(submission: Submission, keys: PaymentKeys, timeout: float = 120.0) -> Result:
    """Wait for the job, check its record, give the receipt and open the outputs with the key it releases.

    RecordRefused (no receipt given) when the record is not for our order, prices above it or is
    not the centre's signature; WrongResultKey when the key does not open the result (the user then
    complains at home). A job that was not billed (no record) shows its outputs as they are.
    """
    client, paid = submission.client, submission.paid
    view = client.wait(submission.view["id"], timeout=timeout)
    if not view.get("record"):
        keys.forget(paid.account)
        return Result(view, view.get("stdout_tail") or "", view.get("stderr_tail") or "", 0, None)
    record = check_record(view, paid, submission.centre, submission.centre_account, submission.domain)
    answer = client.receipt(view["id"], receipt_signature(record, keys.account(paid.account), submission.domain))
    stdout, stderr = open_result(view, record, answer["key"], submission.domain)
    keys.forget(paid.account)
    view = view | {"receipted": True}  # the centre took the receipt: it releases the key only for one
    return Result(view, stdout, stderr, record.price, to_hex(record_digest(record, submission.domain)))


def with_wallet(wallet: Wallet, payer: GatewayClient, project: str | None = None) -> SignOn:
    """Sign on at each centre with a fresh presentation from the user's wallet, for that centre only;
    orders are granted by `payer`, a client signed on at home with a password (against `project`, if named)."""

    def sign_on(client: GatewayClient, centre: str) -> None:
        client.sign_on(wallet, centre)

    def grant(order: dict, signature: str) -> dict:
        return payer.grant(order, signature, project)

    return SignOn(wallet.home_url, sign_on, grant)


def with_home_session(home: GatewayClient) -> SignOn:
    """Sign on at each centre with a token the user's home issues for it (token exchange); orders are
    granted by the home on the same session.

    `home` is a client that logged in at the user's home with a password.
    """

    def sign_on(client: GatewayClient, centre: str) -> None:
        client.token = home.token if centre == home.home else home.exchange(centre)["token"]

    return SignOn(home.url, sign_on, home.grant)


def anonymously(
    membership: GroupMembership, home_url: str, domain: Domain, transport: httpx.BaseTransport | None = None
) -> SignOn:
    """Transact as a member of `membership`'s project, signing on nowhere: each quote under a group signature
    over the request's digest, each order granted by the home (`home_url`) under a group signature over the
    order's digest (orders signed in `domain`), and the job submitted with that same signature, which its
    record names by hash (what supervisors may be asked to open)."""
    signed: dict[bytes, str] = {}  # order digest -> its group signature: one for the grant and the job

    def order_signature(order: dict) -> str:
        digest = order_digest(Order.from_dict(order), domain)
        if digest not in signed:
            signed[digest] = to_hex(membership.sign(order_message(digest)))
        return signed[digest]

    def quote(client: GatewayClient, request: dict) -> dict:
        digest = request_digest(job_request(request, request["centre"]))
        return client.anonymous_quote(request, to_hex(membership.sign(quote_message(digest))))

    def grant(order: dict, signature: str) -> dict:
        with GatewayClient(home_url, transport=transport) as home:
            return home.anonymous_grant(order, signature, order_signature(order))

    def submit(client: GatewayClient, job: dict, idempotency_key: str | None) -> dict:
        return client.anonymous_submit(job, order_signature(job["order"]), idempotency_key)

    return SignOn(home_url, lambda client, centre: None, grant, quote, submit)


def join_group(
    home: GatewayClient, member: str, wallet: Wallet, project: str, *, check: GatewayClient
) -> GroupMembership:
    """Join `project` at the wallet's home, where `home` is signed on with a password as `member` (the uid the
    home knows the user by): a fresh secret sk, a proof of knowing it sent with its tracing key, and the home's
    blind credential over it, kept only once it verifies under its issuer key and `check`, the gateway of a member
    other than the home, confirms all the credential's signatures would disclose or encrypt under (the
    supervisors' key, this week's expiry, and the issuer key and revocation epoch the home had when the week
    began): a home answering otherwise could single the member out. ValueError (nothing kept) otherwise."""
    secret = new_member_secret()
    request = join_request(secret, home=wallet.home, project=project, member=member)
    answer = home.group_join(request.to_dict())
    where = f"{wallet.home}'s answer to joining {project}"
    try:
        credential = GroupCredential.from_dict(answer["credential"])
        issuer_pk = from_hex(answer["issuer_pk"], what="issuer_pk") if answer.get("issuer_pk") else wallet.issuer_pk
        supervision_key = from_hex(answer["supervision_key"], size=96, what="supervision_key")
        g1_from_raw(supervision_key)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not a group credential ({type(exc).__name__}: {exc}); nothing was kept") from None
    if (credential.project, credential.home) != (project, wallet.home):
        raise ValueError(f"{where} is a credential for {credential.project}@{credential.home}; nothing was kept")
    if not credential.verify(secret, issuer_pk):
        raise ValueError(f"{where} does not verify under its issuer key over your secret; nothing was kept")
    try:
        facts = check.supervision(wallet.home, credential.expires_at)
    except GatewayRefused as exc:
        raise ValueError(f"{check.url} cannot confirm {where} ({exc}); nothing was kept") from None
    different = singled_out(credential, issuer_pk, supervision_key, facts)
    if different:
        raise ValueError(
            f"{where} is not what every member of {wallet.home} gets, as {check.url} reads the chain: {different}. "
            f"It would let {wallet.home} single you out; nothing was kept"
        )
    return GroupMembership(project, secret, credential, issuer_pk, supervision_key)


def singled_out(credential: GroupCredential, issuer_pk: bytes, supervision_key: bytes, facts: Any) -> str | None:
    """How a home's answer to a join differs from what every member of the home gets, by `facts`, another member's
    `GET /v1/supervision?home=&expires_at=` for the credential's expiry (the chain's supervision key, that
    gateway's clock, and the issuer key and revocation epoch the home had when the credential's issue week began);
    None when it does not. ValueError for facts that are not such an answer."""
    try:
        keys = facts["home"]
        chain_key = from_hex(facts["supervision_key"], size=96, what="supervision_key")
        of_week = keys["group_issuer_key"] and from_hex(keys["group_issuer_key"], what="group_issuer_key")
        epoch, now, week = keys["revocation_epoch"], facts["now"], keys["week_start"]
        if not (_is_count(epoch) and _is_count(now) and _is_count(week)):
            raise TypeError(f"revocation_epoch {epoch!r}, now {now!r} and week_start {week!r} must be whole numbers")
        if week != issue_week(credential.expires_at):
            raise ValueError(
                f"it is for the week from {week}, not the credential's, from {issue_week(credential.expires_at)}"
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"the check gateway's answer is not GET /v1/supervision's ({type(exc).__name__}: {exc})"
        ) from None
    if supervision_key != chain_key:
        return "the supervisors' key it gave is not the one on chain (whoever made that key decrypts your signatures)"
    if credential.expires_at not in (credential_expiry(now), credential_expiry(now - JOIN_SLACK)):
        return (
            f"it expires at {credential.expires_at}, not at {credential_expiry(now)} as every credential issued this "
            "week does"
        )
    if issuer_pk != of_week:
        return (
            "the credential is not signed with the issuer key the home had on chain when the week began (a key of "
            "your own names you)"
        )
    if credential.revocation_epoch != epoch:
        return (
            f"its revocation epoch is {credential.revocation_epoch}, not {epoch}, the home's when the week began "
            "(an epoch of your own names you)"
        )
    return None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
