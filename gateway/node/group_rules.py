"""What a centre requires of a group signature beyond its cryptography: what it discloses must single nobody out.

A signature discloses its credential's home, project, issuer key id, revocation epoch and expiry. Each is an
anonymity set only while every value depends on nothing but the home, the project and the week: a home that could
start a value when one member joins (a revocation of an enrolment of its own, a key rotation, an expiry of its own:
all unilateral, free, at any second) would read that member off every signature they make. So the expiry fixes the
week a credential was issued in (the week from `issue_week(expires_at)`), and both desks that verify group
signatures (the serving centre's, gateway.node.anonymous, and the home's grant desk, gateway.node.groups) take only

- an expiry on a week boundary, in the future and no later than a credential issued now gets (credential_expiry,
  allowing JOIN_SLACK for a home whose clock is ahead): at most two expiries are in use at any time;
- the revocation epoch the home had at the start of the issue week (from the Revoked events' block times): a
  revocation reaches anonymous use at the next week's turn, never mid-week;
- the issuer key the home had at the start of the issue week (`week_issuer_key`), while the chain holds it valid:
  a rotation takes effect for groups at the next week, so at most two keys of a home serve at once.

And a desk verifies (~5 ms of pairings, no session needed) only within a bound per network address (an IPv6 /64
is one address: ratelimit.network_key) and a bound on all its verifications together: past either the answer is
429 before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from auth.group.credential import CREDENTIAL_PERIOD, JOIN_SLACK, credential_expiry, issue_week
from auth.group.signature import GroupSigned
from gateway.node.errors import Forbidden, TooManyRequests
from gateway.node.ratelimit import RateLimit, network_key
from ledger.index.rows import IssuerKeyInfo

#: Group signatures one network address may have a desk verify: a burst, then this many a second. A member sends
#: a few per job (a quote, an order at the centre, the same order at home); anonymous users behind one relay share it.
VERIFICATIONS_PER_SECOND = 20.0
VERIFICATION_BURST = 100
#: Group signatures a desk verifies from every address together: about what two cores verify (~5 ms each), so
#: addresses enough (a botnet, many /64s) cannot take the whole machine.
DESK_VERIFICATIONS_PER_SECOND = 300.0
DESK_VERIFICATION_BURST = 600


class IssuerKeys(Protocol):
    """What the rules read of the chain index (ledger.index.EventIndex)."""

    def issuer_key(self, centre: str, key_id_prefix_hex: str, at: int) -> bytes | None: ...

    def issuer_keys(self, centre: str) -> list[IssuerKeyInfo]: ...


def verification_limit() -> RateLimit:
    """A desk's bound on the group signatures each network address has it verify."""
    return RateLimit(VERIFICATIONS_PER_SECOND, VERIFICATION_BURST)


def desk_limit() -> RateLimit:
    """A desk's bound on the group signatures it verifies in all (one bucket)."""
    return RateLimit(DESK_VERIFICATIONS_PER_SECOND, DESK_VERIFICATION_BURST, max_keys=1)


def admit(limit: RateLimit, overall: RateLimit, client: str | None, centre: str) -> None:
    """Take one verification for the client's network (ratelimit.network_key), then one of the desk's own, or 429
    (TooManyRequests, with the wait) before any work."""
    if client is not None:
        wait = limit.take(network_key(client))
        if wait is not None:
            raise TooManyRequests(
                f"{centre} verifies at most {limit.rate:g} group signatures a second from one network address (an "
                f"IPv6 /64 counts as one; after a burst of {limit.burst}): nothing was verified or stored; try "
                f"again in {wait:.1f} s",
                retry_after=wait,
            )
    wait = overall.take(centre)
    if wait is not None:
        raise TooManyRequests(
            f"{centre} verifies at most {overall.rate:g} group signatures a second from all addresses together "
            f"(after a burst of {overall.burst}): nothing was verified or stored; try again in {wait:.1f} s",
            retry_after=wait,
        )


def week_issuer_key(keys: Sequence[IssuerKeyInfo], week_start: int) -> IssuerKeyInfo | None:
    """Of a home's issuer keys (oldest first, as the index lists them), the one its group credentials of the week
    from `week_start` are under: the newest set by then and not ended by then; for a home that had none then (its
    first key, or its first after the consortium revoked its keys, came later), the first it set during that week.

    Once the week has begun (or that first key is set), nothing the home does changes the answer: a key's end is
    never set before the block it is set in, and a key set later starts no earlier. So a key the home sets around
    one member's join serves nobody until the next week, with everyone who joins in it."""
    in_force = [k for k in keys if k.valid_from <= week_start and k.valid_at(week_start)]
    if in_force:
        return in_force[-1]
    later = [k for k in keys if week_start < k.valid_from < week_start + CREDENTIAL_PERIOD]
    return later[0] if later else None


def group_issuer_key(index: IssuerKeys, home: str, key_id: str, expires_at: int, now: int) -> bytes | None:
    """The `issuer_pk_for` of auth.group.signature.verify for a signature disclosing `expires_at`: the home's key
    with this id if it is valid now; None for a key the chain does not hold valid (the signature's own refusal);
    Forbidden for a valid key that is not the home's key of the credential's issue week (week_issuer_key)."""
    pk = index.issuer_key(home, key_id, now)
    if pk is None:
        return None
    week = issue_week(expires_at)
    of_week = week_issuer_key(index.issuer_keys(home), week)
    if of_week is None or of_week.pk != pk:
        had = f"key {of_week.short_id}" if of_week is not None else "no key"
        raise Forbidden(
            f"the group credential is under issuer key {key_id} of {home}, but {home}'s group credentials of the week "
            f"from {week} are all under the key it had when that week began ({had}): a key set in the course of a "
            f"week would single out whoever joined under it; join again at {home} (xcentre group join)"
        )
    return pk


def check_expiry(claimed: GroupSigned, *, now: int) -> None:
    """Forbidden unless the credential's expiry is one that every member who joined in the same week holds: a week
    boundary, after `now`, at most credential_expiry(now + JOIN_SLACK) (a home whose clock is a little ahead at a
    week's turn). Checked on a signature's claims before its verification: the expiry fixes the week the rest is
    judged by."""
    again = f"join project {claimed.project} at {claimed.home} again (xcentre group join)"
    if claimed.expires_at <= now:
        raise Forbidden(f"the group credential expired at {claimed.expires_at} (now {now}): {again} for a fresh one")
    if claimed.expires_at % CREDENTIAL_PERIOD:
        raise Forbidden(
            f"the group credential expires at {claimed.expires_at}, not on a week boundary (a multiple of "
            f"{CREDENTIAL_PERIOD} s) as every home's credentials do: an expiry of its own would single its holder "
            f"out; {again}"
        )
    latest = credential_expiry(now + JOIN_SLACK)
    if claimed.expires_at > latest:
        raise Forbidden(
            f"the group credential expires at {claimed.expires_at}, later than any credential issued now ({latest} "
            f"at the latest): an expiry of its own would single its holder out; {again}"
        )


def check_disclosed(signed: GroupSigned, *, epoch: int, now: int) -> None:
    """Forbidden unless the signature's expiry passes check_expiry and its revocation epoch is `epoch`, its home's
    at the start of the credential's issue week (EventIndex.revocation_epoch_at(home, issue_week(expires_at)))."""
    check_expiry(signed, now=now)
    if signed.revocation_epoch != epoch:
        why = (
            f"it predates a revocation at {signed.home}"
            if signed.revocation_epoch < epoch
            else "no member of that week has a later one, so it would single its holder out"
        )
        raise Forbidden(
            f"the group credential is of revocation epoch {signed.revocation_epoch}, and {signed.home}'s revocation "
            f"epoch at the start of its issue week ({issue_week(signed.expires_at)}) is {epoch} ({why}): join "
            f"project {signed.project} at {signed.home} again (xcentre group join)"
        )
