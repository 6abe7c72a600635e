"""Group credentials (auth.group.credential) and the point encodings they travel in (auth.group.points):
the join proof binds its member, home and project; the credential verifies only with the member's sk."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import R, to_scalar
from auth.bbs.hashing import P
from auth.credentials import generate_issuer_key, key_id
from auth.group import (
    GroupCredential,
    GroupError,
    JoinRequest,
    blind_sign,
    check_join,
    g1_chain,
    g1_from_chain,
    g1_from_raw,
    g1_raw,
    issue_group_credential,
    join_request,
    lagrange_at_zero,
    new_member_secret,
    random_scalar,
    scalar32,
    tracing_key,
)
from auth.group.credential import h_sk

G = G1Point()
HOME, PROJECT, MEMBER = "hpc-a", "astro", "alice"
EXPIRES = 1_800_000_000
Member = tuple[int, GroupCredential]


@pytest.fixture(scope="module")
def issuer() -> tuple[bytes, bytes]:
    return generate_issuer_key(b"group-issuer".ljust(32, b"."))


@pytest.fixture(scope="module")
def member(issuer: tuple[bytes, bytes]) -> Member:
    sk = new_member_secret()
    req = join_request(sk, home=HOME, project=PROJECT, member=MEMBER)
    cred = issue_group_credential(*issuer, req, home=HOME, member=MEMBER, revocation_epoch=3, expires_at=EXPIRES + 1234)
    return sk, cred


def _on_curve_off_subgroup_raw() -> bytes:
    """x‖y of a point on y² = x³ + 4 that is not in the r-torsion subgroup."""
    x = 1
    while True:
        rhs = (x**3 + 4) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs:
            raw = x.to_bytes(48, "big") + y.to_bytes(48, "big")
            if not G1Point.from_xy_bytes_unchecked_be(raw).is_in_subgroup():
                return raw
        x += 1


# --- points --------------------------------------------------------------------------------------


def test_raw_and_chain_encodings_round_trip() -> None:
    p = G * to_scalar(random_scalar())
    raw = g1_raw(p)
    assert len(raw) == 96 and g1_from_raw(raw) == p
    chain = g1_chain(p)
    assert len(chain) == 128 and chain[:16] == bytes(16) and chain[64:80] == bytes(16)
    assert chain[16:64] + chain[80:] == raw
    assert g1_from_chain(chain) == p


def test_identity_is_all_zero_and_refused_unless_allowed() -> None:
    identity = G1Point.identity()
    assert g1_raw(identity) == bytes(96)
    assert g1_chain(identity) == bytes(128)
    with pytest.raises(GroupError, match="identity"):
        g1_from_raw(bytes(96), what="C1")
    with pytest.raises(GroupError, match="identity"):
        g1_from_chain(bytes(128))
    assert g1_from_raw(bytes(96), allow_identity=True) == identity


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(g1_raw(G)[:-1], id="short"),
        pytest.param(g1_raw(G) + b"\x00", id="long"),
        pytest.param(g1_raw(G)[:-1] + bytes([g1_raw(G)[-1] ^ 1]), id="off-curve"),
        pytest.param(_on_curve_off_subgroup_raw(), id="off-subgroup"),
        pytest.param(
            (int.from_bytes(g1_raw(G)[:48], "big") + P).to_bytes(48, "big") + g1_raw(G)[48:], id="x-not-reduced"
        ),
        pytest.param(bytes(95) + b"\x01", id="zero-x"),
        pytest.param("00" * 96, id="text"),
    ],
)
def test_bad_raw_points_are_refused(data: object) -> None:
    with pytest.raises(GroupError):
        g1_from_raw(data)  # type: ignore[arg-type]


def test_chain_padding_must_be_zero() -> None:
    chain = bytearray(g1_chain(G))
    chain[3] = 1
    with pytest.raises(GroupError, match="padding"):
        g1_from_chain(bytes(chain))
    chain = bytearray(g1_chain(G))
    chain[70] = 1
    with pytest.raises(GroupError, match="padding"):
        g1_from_chain(bytes(chain))


def test_scalar32_is_uint256_of_scalars_only() -> None:
    assert scalar32(1) == bytes(31) + b"\x01"
    assert scalar32(R - 1) == (R - 1).to_bytes(32, "big")
    for bad in (-1, R, True, 1.0):
        with pytest.raises(GroupError):
            scalar32(bad)  # type: ignore[arg-type]


def test_random_scalar_is_in_range_and_fresh() -> None:
    draws = {random_scalar() for _ in range(20)}
    assert len(draws) == 20 and all(0 < x < R for x in draws)


def test_lagrange_at_zero_interpolates_the_constant() -> None:
    coefficients = [random_scalar() for _ in range(3)]

    def f(z: int) -> int:
        return sum(a * z**k for k, a in enumerate(coefficients)) % R

    for indexes in ([1, 2, 3], [2, 4, 5], [5, 1, 3], [1, 2, 3, 4]):
        lambdas = lagrange_at_zero(indexes)
        assert sum(lam * f(i) for lam, i in zip(lambdas, indexes, strict=True)) % R == coefficients[0]
    lambdas = lagrange_at_zero([1, 2])  # one point short of degree 2: not the constant
    assert sum(lam * f(i) for lam, i in zip(lambdas, [1, 2], strict=True)) % R != coefficients[0]
    for bad in ([1, 1, 2], [0, 1], [-1, 2], [R, 1]):
        with pytest.raises(GroupError):
            lagrange_at_zero(bad)


# --- joining --------------------------------------------------------------------------------------


def test_join_request_proves_the_members_secret() -> None:
    sk = new_member_secret()
    req = join_request(sk, home=HOME, project=PROJECT, member=MEMBER)
    T = check_join(req, home=HOME, member=MEMBER)
    assert T == tracing_key(sk) == h_sk() * to_scalar(sk)
    assert JoinRequest.from_dict(req.to_dict()) == req
    assert req.to_dict()["tracing_key"] == "0x" + bytes(T.to_compressed_bytes()).hex()


@pytest.mark.parametrize(
    "home, member, project",
    [
        pytest.param(HOME, "bob", PROJECT, id="another-member"),
        pytest.param("hpc-b", MEMBER, PROJECT, id="another-home"),
        pytest.param(HOME, MEMBER, "physics", id="another-project"),
    ],
)
def test_join_proof_is_bound_to_member_home_and_project(home: str, member: str, project: str) -> None:
    req = join_request(new_member_secret(), home=HOME, project=PROJECT, member=MEMBER)
    req = dataclasses.replace(req, project=project)
    with pytest.raises(GroupError, match="the join proof does not verify"):
        check_join(req, home=home, member=member)


def test_nobody_registers_another_members_tracing_key() -> None:
    alice_sk = new_member_secret()
    alice = join_request(alice_sk, home=HOME, project=PROJECT, member=MEMBER)
    # bob presents alice's T with a proof of his own secret
    bob = join_request(new_member_secret(), home=HOME, project=PROJECT, member="bob")
    forged = dataclasses.replace(bob, tracing_key=alice.tracing_key)
    with pytest.raises(GroupError, match="does not verify"):
        check_join(forged, home=HOME, member="bob")
    # or alice's own proof, replayed under his name
    with pytest.raises(GroupError, match="does not verify"):
        check_join(alice, home=HOME, member="bob")


@pytest.mark.parametrize("field", ["c", "s"])
def test_tampered_join_proof_is_refused(field: str) -> None:
    req = join_request(new_member_secret(), home=HOME, project=PROJECT, member=MEMBER)
    bad = dataclasses.replace(req, **{field: (getattr(req, field) + 1) % R})
    with pytest.raises(GroupError, match="does not verify"):
        check_join(bad, home=HOME, member=MEMBER)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        pytest.param(lambda d: d.pop("proof"), "exactly the fields", id="missing"),
        pytest.param(lambda d: d.update(extra=1), "exactly the fields", id="extra"),
        pytest.param(lambda d: d["proof"].update(c="0x12"), "32 bytes", id="short-c"),
        pytest.param(lambda d: d["proof"].update(s="0x" + "ff" * 32), "group order", id="s-not-scalar"),
        pytest.param(lambda d: d.update(tracing_key="zz"), "hex", id="not-hex"),
        pytest.param(lambda d: d.update(project="a b"), "project", id="bad-project"),
        pytest.param(lambda d: d.update(project=None), "project", id="no-project"),
    ],
)
def test_join_request_from_dict_refuses_bad_shapes(mutate: Callable[[dict], object], reason: str) -> None:
    data = join_request(new_member_secret(), home=HOME, project=PROJECT, member=MEMBER).to_dict()
    mutate(data)
    with pytest.raises(GroupError, match=reason):
        JoinRequest.from_dict(data)
    with pytest.raises(GroupError):
        JoinRequest.from_dict([])


def test_join_with_the_identity_or_an_off_curve_key_is_refused() -> None:
    req = join_request(new_member_secret(), home=HOME, project=PROJECT, member=MEMBER)
    for key in (bytes([0xC0]) + bytes(47), bytes(48), b"\x80" + bytes(46) + b"\x05"):
        with pytest.raises(GroupError, match="tracing key"):
            check_join(dataclasses.replace(req, tracing_key=key), home=HOME, member=MEMBER)


# --- issuing ---------------------------------------------------------------------------------------


def test_credential_verifies_only_with_the_members_sk(issuer: tuple[bytes, bytes], member: Member) -> None:
    sk, cred = member
    _, ipk = issuer
    assert cred.verify(sk, ipk)
    assert not cred.verify((sk + 1) % R, ipk)
    assert not cred.verify(new_member_secret(), ipk)
    assert not cred.verify(sk, generate_issuer_key(b"x" * 32)[1])
    assert not cred.verify(0, ipk) and not cred.verify(R, ipk) and not cred.verify(sk, b"short")
    for field, value in (("project", "physics"), ("home", "hpc-b"), ("revocation_epoch", 4), ("expires_at", 0)):
        assert not dataclasses.replace(cred, **{field: value}).verify(sk, ipk)


def test_credential_fields_and_round_trip(issuer: tuple[bytes, bytes], member: Member) -> None:
    sk, cred = member
    assert (cred.project, cred.home, cred.revocation_epoch) == (PROJECT, HOME, 3)
    assert cred.expires_at == EXPIRES + 1234 - (EXPIRES + 1234) % 3600
    assert cred.key_id == key_id(issuer[1]) and len(cred.signature) == 80
    again = GroupCredential.from_dict(cred.to_dict())
    assert again == cred and again.verify(sk, issuer[1])


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d.pop("home"), id="missing"),
        pytest.param(lambda d: d.update(x=1), id="extra"),
        pytest.param(lambda d: d.update(revocation_epoch="3"), id="epoch-text"),
        pytest.param(lambda d: d.update(revocation_epoch=True), id="epoch-bool"),
        pytest.param(lambda d: d.update(expires_at=-1), id="negative-time"),
        pytest.param(lambda d: d.update(home="HPC A"), id="bad-home"),
        pytest.param(lambda d: d.update(key_id="XYZ"), id="bad-key-id"),
        pytest.param(lambda d: d.update(signature="0x00"), id="short-signature"),
    ],
)
def test_credential_from_dict_refuses_bad_shapes(member: Member, mutate: Callable[[dict], object]) -> None:
    data = member[1].to_dict()
    mutate(data)
    with pytest.raises(GroupError):
        GroupCredential.from_dict(data)


def test_the_credential_is_the_drafts_bbs_signature_over_sk(issuer: tuple[bytes, bytes]) -> None:
    """blind_sign over T makes exactly the signature CoreSign would make knowing sk, but for e's derivation."""
    from auth.bbs.core import CoreSign, CoreVerify
    from auth.group.credential import API_ID, HEADER, SUITE, disclosed_messages

    isk, ipk = issuer
    sk = new_member_secret()
    messages = [sk, *disclosed_messages(PROJECT, HOME, 0, EXPIRES)]
    blind = blind_sign(isk, ipk, tracing_key(sk), project=PROJECT, home=HOME, revocation_epoch=0, expires_at=EXPIRES)
    assert CoreVerify(SUITE, ipk, blind, HEADER, messages, API_ID)
    plain = CoreSign(SUITE, int.from_bytes(isk, "big"), ipk, HEADER, messages, API_ID)
    assert CoreVerify(SUITE, ipk, plain, HEADER, messages, API_ID)


def test_issuing_refuses_a_bad_join_or_a_mismatched_key(issuer: tuple[bytes, bytes]) -> None:
    isk, ipk = issuer
    req = join_request(new_member_secret(), home=HOME, project=PROJECT, member=MEMBER)
    with pytest.raises(GroupError, match="does not verify"):
        issue_group_credential(isk, ipk, req, home=HOME, member="bob", revocation_epoch=0, expires_at=EXPIRES)
    other_pk = generate_issuer_key(b"y" * 32)[1]
    with pytest.raises(GroupError, match="does not belong"):
        issue_group_credential(isk, other_pk, req, home=HOME, member=MEMBER, revocation_epoch=0, expires_at=EXPIRES)
    with pytest.raises(GroupError, match="identity"):
        blind_sign(isk, ipk, G1Point.identity(), project=PROJECT, home=HOME, revocation_epoch=0, expires_at=EXPIRES)
    for epoch, expires in ((-1, EXPIRES), (0, 2**63), (0, "soon")):
        with pytest.raises(GroupError):
            issue_group_credential(isk, ipk, req, home=HOME, member=MEMBER, revocation_epoch=epoch, expires_at=expires)  # type: ignore[arg-type]


def test_a_credential_expires_on_the_first_week_boundary_at_least_a_week_out() -> None:
    """The one expiry every member who joins in a week gets (every signature discloses it): a multiple of the period,
    7 to 14 days after the join; the same for the whole week, the next one as the week turns."""
    from auth.group.credential import CREDENTIAL_PERIOD, credential_expiry

    week = CREDENTIAL_PERIOD
    assert week == 7 * 24 * 3600
    start = 2_000 * week
    for now in (start, start + 1, start + week - 1):
        expiry = credential_expiry(now)
        assert expiry == start + 2 * week and expiry % week == 0 and week < expiry - now <= 2 * week
    assert credential_expiry(start + week) == start + 3 * week
