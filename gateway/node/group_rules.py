"""What a centre requires of a group signature beyond its cryptography: what it discloses must single nobody out.

A signature discloses its credential's home, project, issuer key id, revocation epoch and expiry. Each is an
anonymity set only while the home gives the same value to every member: a home that gives one member a future
epoch, an expiry of their own or an issuer key of their own reads that member off every signature they make. So
both desks that verify group signatures (the serving centre's, gateway.node.anonymous, and the home's grant desk,
gateway.node.groups) take only

- the home's current revocation epoch on chain (an older one was revoked; a newer one nobody else holds);
- an expiry on a week boundary, in the future and no later than a credential issued now gets (credential_expiry):
  at most two expiries are in use at any time;
- an issuer key that is the home's latest on chain, or the one it replaced while the chain still holds that one
  valid and for at most CREDENTIAL_PERIOD after the replacement, whatever end the home gave it: however often a
  home rotates, at most two of its keys serve group signatures at once.

And a desk verifies (~5 ms of pairings, no session needed) only within a bound per network address: past it the
answer is 429 before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from auth.group.credential import CREDENTIAL_PERIOD, credential_expiry
from auth.group.signature import GroupSigned
from gateway.node.errors import Forbidden, TooManyRequests
from gateway.node.ratelimit import RateLimit
from ledger.index.rows import IssuerKeyInfo

#: Group signatures one network address may have a desk verify: a burst, then this many a second. A member sends
#: a few per job (a quote, an order at the centre, the same order at home); anonymous users behind one relay share it.
VERIFICATIONS_PER_SECOND = 20.0
VERIFICATION_BURST = 100


class IssuerKeys(Protocol):
    """What the rules read of the chain index (ledger.index.EventIndex)."""

    def issuer_key(self, centre: str, key_id_prefix_hex: str, at: int) -> bytes | None: ...

    def issuer_keys(self, centre: str) -> list[IssuerKeyInfo]: ...


def verification_limit() -> RateLimit:
    """A desk's bound on the group signatures each network address has it verify."""
    return RateLimit(VERIFICATIONS_PER_SECOND, VERIFICATION_BURST)


def admit(limit: RateLimit, client: str | None, centre: str) -> None:
    """Take one verification for the client's address, or 429 (TooManyRequests, with the wait) before any work."""
    if client is None:
        return
    wait = limit.take(client)
    if wait is not None:
        raise TooManyRequests(
            f"{centre} verifies at most {limit.rate:g} group signatures a second from one network address (after a "
            f"burst of {limit.burst}): nothing was verified or stored; try again in {wait:.1f} s",
            retry_after=wait,
        )


def usable_issuer_keys(keys: Sequence[IssuerKeyInfo], now: int) -> list[IssuerKeyInfo]:
    """Of a home's issuer keys (oldest first, as the index lists them), those a group signature may be under at
    `now`: the latest while valid, and the one before it while valid and less than CREDENTIAL_PERIOD after the
    latest replaced it."""
    if not keys:
        return []
    latest = keys[-1]
    usable = [latest] if latest.valid_at(now) else []
    if len(keys) > 1 and keys[-2].valid_at(now) and now < latest.valid_from + CREDENTIAL_PERIOD:
        usable.append(keys[-2])
    return usable


def group_issuer_key(index: IssuerKeys, home: str, key_id: str, now: int) -> bytes | None:
    """The `issuer_pk_for` of auth.group.signature.verify: the home's key with this id if a group signature may be
    under it now; None for a key the chain does not hold valid (the signature's own refusal); Forbidden for a valid
    key that is neither the home's current one nor the one it replaced lately."""
    pk = index.issuer_key(home, key_id, now)
    if pk is None:
        return None
    if not any(k.pk == pk for k in usable_issuer_keys(index.issuer_keys(home), now)):
        raise Forbidden(
            f"the group credential is under issuer key {key_id} of {home}, which is neither its current one nor the "
            f"key before it (taken for {CREDENTIAL_PERIOD // 86_400} days after its replacement): a key kept for a "
            f"few members would single them out; join again at {home} (xcentre group join) for a credential under "
            "its current key"
        )
    return pk


def check_disclosed(signed: GroupSigned, *, epoch: int, now: int) -> None:
    """Forbidden unless the signature's revocation epoch is its home's current `epoch` and its expiry one that every
    member who joined in the same week holds (a week boundary, after `now`, at most credential_expiry(now))."""
    again = f"join project {signed.project} at {signed.home} again (xcentre group join)"
    if signed.revocation_epoch != epoch:
        why = (
            f"it predates a revocation at {signed.home}"
            if signed.revocation_epoch < epoch
            else "no member has an epoch ahead of its home's, so it would single its holder out"
        )
        raise Forbidden(
            f"the group credential is of revocation epoch {signed.revocation_epoch}, and {signed.home}'s current "
            f"revocation epoch is {epoch} ({why}): {again}"
        )
    if signed.expires_at <= now:
        raise Forbidden(f"the group credential expired at {signed.expires_at} (now {now}): {again} for a fresh one")
    if signed.expires_at % CREDENTIAL_PERIOD:
        raise Forbidden(
            f"the group credential expires at {signed.expires_at}, not on a week boundary (a multiple of "
            f"{CREDENTIAL_PERIOD} s) as every home's credentials do: an expiry of its own would single its holder "
            f"out; {again}"
        )
    latest = credential_expiry(now)
    if signed.expires_at > latest:
        raise Forbidden(
            f"the group credential expires at {signed.expires_at}, later than any credential issued now ({latest} "
            f"at the latest): an expiry of its own would single its holder out; {again}"
        )
