"""Group credentials: a BBS signature over a member's secret that the issuer never sees.

A member of a project at its home draws a secret scalar ``sk`` in its wallet
and shows the home only its tracing key ``T = sk·H_0`` (H_0 is the first
message generator of the BBS draft's SHA-256 suite, here named H_sk) with a
Schnorr proof of knowledge of ``sk`` bound to the home, the project and the
member's uid. The home checks the proof, records T beside the member's
identity (it is what a supervised opening reveals) and signs, blindly, a BBS
credential over five messages: ``sk`` (index 0, never hashed, never
disclosed) and ``project=…``, ``home=…``, ``revocation_epoch=…``,
``expires_at=…`` (indexes 1..4, the draft's messages_to_scalars).

This is the blind issuance of draft-irtf-cfrg-bbs-blind-signatures reduced to
what we need: there, the prover commits to its hidden messages with a random
"prover blind" so that the signer learns nothing about them. Here the
commitment is T itself, with no blind, because the home is meant to know T
(it maps an opened T to a person). Leaving out the blind is safe: T = sk·H_0
reveals sk only through a discrete logarithm, the Schnorr proof makes the
joining member know sk (nobody can register a T they cannot sign with, or
claim another member's T: the proof names the member), and the signature
the home makes, A = (P1 + Q_1·domain + T + Σ H_i·m_i)·1/(SK + e), is exactly
the draft's BBS signature over [sk, m_1..m_4], so the draft's CoreVerify and
CoreProofGen apply unchanged. Because only the member knows sk, only the
member can make a proof with it: the home cannot sign in its name.

e is derived as in the draft's CoreSign with T in the place of sk (the
issuer does not know sk), so the same request signs to the same credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from py_arkworks_bls12381 import G1Point

from auth import bbs
from auth.bbs.core import CoreVerify, msm
from auth.bbs.encoding import (
    OCTET_SCALAR_LENGTH,
    ScalarInt,
    octets_to_point_E1,
    point_to_octets_E1,
    serialize,
    signature_to_octets,
    to_scalar,
)
from auth.bbs.encoding import R as ORDER
from auth.bbs.generators import create_generators
from auth.bbs.utilities import calculate_domain, hash_to_scalar, messages_to_scalars
from auth.credentials.credential import KEY_ID_BYTES, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, hour_floor
from auth.credentials.credential import key_id as _key_id
from ledger.primitives.canonical import canonical_bytes
from ledger.primitives.hex import HexError, from_hex, to_hex
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name

from .errors import GroupError
from .points import random_scalar

SUITE = bbs.SHA256.suite
API_ID = SUITE.api_id
H2S_DST = API_ID + b"H2S_"
HEADER = b"xcentre-group/1"
JOIN_TAG = b"xcentre-join/1"
MESSAGE_COUNT = 5  # sk, project, home, revocation_epoch, expires_at
DISCLOSED = (1, 2, 3, 4)
#: A project is an LDAP group with an allocation; the same rule as the API's PROJECT pattern.
PROJECT_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_PROJECT = re.compile(PROJECT_RULE)
_KEY_ID = re.compile(r"[0-9a-f]{16}")
INT_MAX = 2**63 - 1  # times and epochs are Cedar Longs
MAX_MEMBER_LENGTH = 256


def generators() -> list[G1Point]:
    """[Q_1, H_0 (= H_sk), H_1, H_2, H_3, H_4] of the SHA-256 suite (memoised by auth.bbs)."""
    return create_generators(SUITE, MESSAGE_COUNT + 1, API_ID)


def h_sk() -> G1Point:
    """H_sk = H_0, the generator of the member's secret: T = sk·H_sk."""
    return generators()[1]


def check_project(project: object) -> str:
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        raise GroupError(f"a project must match {PROJECT_RULE}, got {project!r:.80}")
    return project


def check_home(home: object) -> str:
    if not is_centre_name(home):
        raise GroupError(f"a home must be a centre name ({CENTRE_NAME_RULE}), got {home!r:.80}")
    return home


def check_count(value: object, what: str) -> int:
    """A time or an epoch: an integer in [0, 2^63)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT_MAX:
        raise GroupError(f"{what} must be an integer in [0, 2^63), got {value!r:.40}")
    return value


def check_secret(sk: object) -> int:
    if not isinstance(sk, int) or isinstance(sk, bool) or not 0 < sk < ORDER:
        raise GroupError("a member secret must be an integer in [1, r)")
    return sk


def _check_member(member: object) -> str:
    if not isinstance(member, str) or not member or len(member) > MAX_MEMBER_LENGTH:
        raise GroupError(f"a member must be a non-empty uid of at most {MAX_MEMBER_LENGTH} characters")
    return member


@lru_cache(maxsize=1024)
def _messages(project: str, home: str, revocation_epoch: int, expires_at: int) -> tuple[int, ...]:
    return tuple(
        messages_to_scalars(
            SUITE,
            [
                f"project={project}".encode(),
                f"home={home}".encode(),
                f"revocation_epoch={revocation_epoch}".encode(),
                f"expires_at={expires_at}".encode(),
            ],
            API_ID,
        )
    )


def disclosed_messages(project: str, home: str, revocation_epoch: int, expires_at: int) -> list[int]:
    """m_1..m_4, the scalars of the disclosed messages (memoised: verifiers see the same few)."""
    return list(
        _messages(
            check_project(project),
            check_home(home),
            check_count(revocation_epoch, "revocation_epoch"),
            check_count(expires_at, "expires_at"),
        )
    )


def new_member_secret() -> int:
    """A member's secret sk, uniform in [1, r); it never leaves the wallet."""
    return random_scalar()


def tracing_key(sk: int) -> G1Point:
    """T = sk·H_sk: the member's commitment at join and the key an opening reveals."""
    return h_sk() * to_scalar(check_secret(sk))


def issuer_key_id(issuer_pk: bytes) -> str:
    """auth.credentials' key id of an issuer key (16 hex), as a GroupError on a bad key."""
    if not isinstance(issuer_pk, (bytes, bytearray)) or len(issuer_pk) != PUBLIC_KEY_LENGTH:
        raise GroupError(f"an issuer public key is {PUBLIC_KEY_LENGTH} bytes")
    return _key_id(bytes(issuer_pk))


# -- joining -----------------------------------------------------------------------------------


def _join_challenge(T: G1Point, R: G1Point, *, home: str, project: str, member: str) -> int:
    bound = canonical_bytes({"home": home, "project": project, "member": member})
    return hash_to_scalar(SUITE, JOIN_TAG + point_to_octets_E1(T) + point_to_octets_E1(R) + bound, H2S_DST)


def _scalar_hex(value: object, what: str) -> int:
    try:
        raw = from_hex(value, size=OCTET_SCALAR_LENGTH, what=what)
    except HexError as exc:
        raise GroupError(str(exc)) from None
    x = int.from_bytes(raw, "big")
    if x >= ORDER:
        raise GroupError(f"{what} is not a scalar (must be below the group order r)")
    return x


def _exact_keys(data: object, keys: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise GroupError(f"{what} must be a JSON object")
    if set(data) != keys:
        raise GroupError(f"{what} has exactly the fields {sorted(keys)}, got {sorted(map(str, data))}")
    return data


@dataclass(frozen=True)
class JoinRequest:
    """What a member sends its home to join a project: T (compressed) and a Schnorr proof (c, s) of sk."""

    project: str
    tracing_key: bytes
    c: int
    s: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "tracing_key": to_hex(self.tracing_key),
            "proof": {"c": to_hex(self.c.to_bytes(32, "big")), "s": to_hex(self.s.to_bytes(32, "big"))},
        }

    @classmethod
    def from_dict(cls, data: object) -> JoinRequest:
        """Shape-check a join request (the proof is checked by check_join)."""
        data = _exact_keys(data, {"project", "tracing_key", "proof"}, "a join request")
        proof = _exact_keys(data["proof"], {"c", "s"}, "a join request's proof")
        try:
            tk = from_hex(data["tracing_key"], size=48, what="tracing_key")
        except HexError as exc:
            raise GroupError(str(exc)) from None
        return cls(
            project=check_project(data["project"]),
            tracing_key=tk,
            c=_scalar_hex(proof["c"], "proof.c"),
            s=_scalar_hex(proof["s"], "proof.s"),
        )


def join_request(sk: int, *, home: str, project: str, member: str) -> JoinRequest:
    """The member's request to join `project` at `home` as `member` (the uid its home knows it by)."""
    sk = check_secret(sk)
    home, project, member = check_home(home), check_project(project), _check_member(member)
    T = tracing_key(sk)
    k = random_scalar()
    R = h_sk() * to_scalar(k)
    c = _join_challenge(T, R, home=home, project=project, member=member)
    return JoinRequest(project=project, tracing_key=point_to_octets_E1(T), c=c, s=(k + c * sk) % ORDER)


def check_join(req: JoinRequest, *, home: str, member: str) -> G1Point:
    """T of a join request whose proof verifies for this home and member; GroupError otherwise."""
    if not isinstance(req, JoinRequest):
        raise GroupError("a join request is expected")
    home, member, project = check_home(home), _check_member(member), check_project(req.project)
    try:
        T = octets_to_point_E1(req.tracing_key)
    except (bbs.BBSError, TypeError):
        raise GroupError("the tracing key is not a point of G1 (or is the identity)") from None
    for value in (req.c, req.s):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < ORDER:
            raise GroupError("the join proof's c and s must be scalars")
    R = msm([h_sk(), T], [req.s, -req.c])
    if _join_challenge(T, R, home=home, project=project, member=member) != req.c:
        raise GroupError("the join proof does not verify")
    return T


# -- issuing -----------------------------------------------------------------------------------


def _issuer_secret(issuer_sk: object) -> int:
    if not isinstance(issuer_sk, (bytes, bytearray)) or len(issuer_sk) != OCTET_SCALAR_LENGTH:
        raise GroupError(f"an issuer secret key is {OCTET_SCALAR_LENGTH} bytes")
    SK = int.from_bytes(issuer_sk, "big")
    if not 0 < SK < ORDER:
        raise GroupError("the issuer secret key is out of range")
    return SK


def blind_sign(
    issuer_sk: bytes,
    issuer_pk: bytes,
    T: G1Point,
    *,
    project: str,
    home: str,
    revocation_epoch: int,
    expires_at: int,
) -> bytes:
    """The 80-byte BBS signature A‖e over [sk, m_1..m_4] knowing only T = sk·H_sk."""
    SK = _issuer_secret(issuer_sk)
    issuer_key_id(issuer_pk)
    if bbs.SHA256.sk_to_pk(bytes(issuer_sk)) != bytes(issuer_pk):
        raise GroupError("the issuer public key does not belong to the issuer secret key")
    if not isinstance(T, G1Point) or T == G1Point.identity() or not T.is_in_subgroup():
        raise GroupError("the tracing key must be a subgroup point other than the identity")
    messages = disclosed_messages(project, home, revocation_epoch, expires_at)
    Q_1, _, *H = generators()
    domain = calculate_domain(SUITE, bytes(issuer_pk), MESSAGE_COUNT, HEADER, API_ID)
    e = hash_to_scalar(SUITE, serialize([ScalarInt(SK), T, *map(ScalarInt, messages), ScalarInt(domain)]), H2S_DST)
    if (SK + e) % ORDER == 0:
        raise GroupError("SK + e is zero mod r")
    B = msm([SUITE.P1, Q_1, T, *H], [1, domain, 1, *messages])
    return signature_to_octets(B * to_scalar(pow(SK + e, -1, ORDER)), e)


@dataclass(frozen=True)
class GroupCredential:
    """A member's credential for one project at its home; its secret sk is kept beside it, not in it."""

    project: str
    home: str
    key_id: str
    revocation_epoch: int
    expires_at: int
    signature: bytes

    def messages(self, sk: int) -> list[int]:
        """[sk, m_1..m_4], the signed scalars."""
        return [sk, *disclosed_messages(self.project, self.home, self.revocation_epoch, self.expires_at)]

    def verify(self, sk: int, issuer_pk: bytes) -> bool:
        """Does the issuer's key sign this credential over sk? (The wallet checks on receipt.)"""
        try:
            check_secret(sk)
            if issuer_key_id(issuer_pk) != self.key_id:
                return False
            return CoreVerify(SUITE, bytes(issuer_pk), self.signature, HEADER, self.messages(sk), API_ID)
        except (ValueError, TypeError, OverflowError):
            return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "home": self.home,
            "key_id": self.key_id,
            "revocation_epoch": self.revocation_epoch,
            "expires_at": self.expires_at,
            "signature": to_hex(self.signature),
        }

    @classmethod
    def from_dict(cls, data: object) -> GroupCredential:
        """Shape-check a credential (the signature is checked by .verify)."""
        data = _exact_keys(
            data, {"project", "home", "key_id", "revocation_epoch", "expires_at", "signature"}, "a group credential"
        )
        kid = data["key_id"]
        if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
            raise GroupError(f"key_id must be {2 * KEY_ID_BYTES} lowercase hex digits")
        try:
            signature = from_hex(data["signature"], size=SIGNATURE_LENGTH, what="signature")
        except HexError as exc:
            raise GroupError(str(exc)) from None
        return cls(
            project=check_project(data["project"]),
            home=check_home(data["home"]),
            key_id=kid,
            revocation_epoch=check_count(data["revocation_epoch"], "revocation_epoch"),
            expires_at=check_count(data["expires_at"], "expires_at"),
            signature=signature,
        )


CREDENTIAL_PERIOD = 7 * 24 * 3600
"""Group credentials expire on multiples of this since the Unix epoch: week boundaries."""


def credential_expiry(now: int) -> int:
    """The expiry of a group credential issued at `now`: the first week boundary more than a week away (7 to 14
    days out).

    Every signature discloses its credential's expiry and the home knows when each member joined, so the expiry
    is part of the anonymity set: everyone who joins or renews in one week gets the same one, and verifiers take
    no other (a week boundary, in the future, at most this): at most two expiries are in use at any time.
    """
    return (now // CREDENTIAL_PERIOD + 2) * CREDENTIAL_PERIOD


def issue_week(expires_at: int) -> int:
    """The start of the week a credential expiring at `expires_at` (a week boundary) was issued in: everything
    else it discloses (issuer key, revocation epoch) is what its home had at that moment."""
    return expires_at - 2 * CREDENTIAL_PERIOD


JOIN_SLACK = 60
"""Seconds two clocks may disagree at a week's turn: a credential issued by a home whose clock is that much ahead
(expiring at credential_expiry(now + JOIN_SLACK)) is taken by desks, and one issued that much before the turn
is taken by the member's own check of a join."""


def issue_group_credential(
    issuer_sk: bytes,
    issuer_pk: bytes,
    req: JoinRequest,
    *,
    home: str,
    member: str,
    revocation_epoch: int,
    expires_at: int,
) -> GroupCredential:
    """The home's answer to a join request: check_join, then blind_sign; expires_at is floored to the hour."""
    T = check_join(req, home=home, member=member)
    expires_at = hour_floor(check_count(expires_at, "expires_at"))
    signature = blind_sign(
        issuer_sk,
        issuer_pk,
        T,
        project=req.project,
        home=home,
        revocation_epoch=revocation_epoch,
        expires_at=expires_at,
    )
    return GroupCredential(
        project=req.project,
        home=home,
        key_id=issuer_key_id(issuer_pk),
        revocation_epoch=revocation_epoch,
        expires_at=expires_at,
        signature=signature,
    )
