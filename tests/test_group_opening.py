"""Threshold opening (auth.group.opening): t proven shares reveal T, t−1 do not, a bad share is caught,
and the DLEQ challenge is the bytes Solidity's abi.encodePacked hashes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from itertools import combinations

import pytest
from eth_abi.packed import encode_packed
from eth_hash.auto import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import R, to_scalar
from auth.group import GroupError, Share, combine, decryption_share, dkg, g1_raw, tracing_key, verify_share
from auth.group.opening import dleq_challenge
from tests.group_vectors import combine_vector, dleq_check, dleq_vector, signature_vector

G = G1Point()
N, T_ = 5, 3
POOL = 7


@pytest.fixture(scope="module")
def committee() -> dict:
    Y, xs = dkg.run_local(N, T_)
    sk = 0xABCDEF
    r = 0x1234567
    c1, c2 = G * to_scalar(r), tracing_key(sk) + Y * to_scalar(r)
    shares = [decryption_share(x, i, c1, POOL) for i, x in enumerate(xs, 1)]
    return {
        "Y": Y,
        "xs": xs,
        "ys": [G * to_scalar(x) for x in xs],
        "c1": c1,
        "c2": c2,
        "T": tracing_key(sk),
        "shares": shares,
    }


def test_every_honest_share_verifies(committee: dict) -> None:
    for share, y in zip(committee["shares"], committee["ys"], strict=True):
        assert verify_share(share, y, committee["c1"], POOL)


def test_any_t_shares_open_and_no_t_minus_1_do(committee: dict) -> None:
    shares, T = committee["shares"], committee["T"]
    for subset in combinations(shares, T_):
        assert combine(committee["c2"], list(subset)) == T
    for subset in combinations(shares, T_ + 1):
        assert combine(committee["c2"], list(subset)) == T
    for subset in combinations(shares, T_ - 1):
        assert combine(committee["c2"], list(subset)) != T


def test_a_share_made_with_a_wrong_secret_fails(committee: dict) -> None:
    c1, ys = committee["c1"], committee["ys"]
    wrong = decryption_share((committee["xs"][0] + 1) % R, 1, c1, POOL)
    assert not verify_share(wrong, ys[0], c1, POOL)
    # a true share checked against another supervisor's key, or under another index
    assert not verify_share(committee["shares"][0], ys[1], c1, POOL)
    assert not verify_share(dataclasses.replace(committee["shares"][0], index=2), ys[0], c1, POOL)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: dataclasses.replace(s, d=s.d + G), id="D"),
        pytest.param(lambda s: dataclasses.replace(s, c=(s.c + 1) % R), id="c"),
        pytest.param(lambda s: dataclasses.replace(s, z=(s.z + 1) % R), id="z"),
        pytest.param(lambda s: dataclasses.replace(s, d=G1Point.identity()), id="D-identity"),
        pytest.param(lambda s: dataclasses.replace(s, c=s.c + R), id="c-unreduced"),
        pytest.param(lambda s: dataclasses.replace(s, z=-1), id="z-negative"),
        pytest.param(lambda s: dataclasses.replace(s, index=0), id="index-0"),
        pytest.param(lambda s: dataclasses.replace(s, index="1"), id="index-text"),
        pytest.param(lambda s: dataclasses.replace(s, d=b"\x00" * 96), id="D-bytes"),
        pytest.param(lambda s: (s.index, s.d, s.c, s.z), id="tuple"),
    ],
)
def test_a_tampered_share_fails_without_raising(committee: dict, change: Callable[[Share], object]) -> None:
    bad = change(committee["shares"][0])
    assert verify_share(bad, committee["ys"][0], committee["c1"], POOL) is False


def test_a_share_is_bound_to_its_pool_and_ciphertext(committee: dict) -> None:
    share, y = committee["shares"][0], committee["ys"][0]
    assert not verify_share(share, y, committee["c1"], POOL + 1)
    assert not verify_share(share, y, committee["c1"] + G, POOL)
    assert not verify_share(share, y, committee["c1"], -1)
    assert not verify_share(share, G1Point.identity(), committee["c1"], POOL)


def test_the_challenge_is_solidity_abi_encode_packed(committee: dict) -> None:
    """Rebuilt here from the ABI rules, independently of auth.group.points' encoders."""
    share, y, c1 = committee["shares"][2], committee["ys"][2], committee["c1"]
    a1 = G * to_scalar(share.z) + (-(y * to_scalar(share.c)))
    a2 = c1 * to_scalar(share.z) + (-(share.d * to_scalar(share.c)))

    def eip2537(p: G1Point) -> bytes:
        xy = bytes(p.to_xy_bytes_be())
        return b"\x00" * 16 + xy[:48] + b"\x00" * 16 + xy[48:]

    packed = encode_packed(
        ["string", "uint256", "uint256", "bytes", "bytes", "bytes", "bytes", "bytes"],
        ["xcentre-dleq/1", POOL, 3, *(eip2537(p) for p in (y, c1, share.d, a1, a2))],
    )
    assert int.from_bytes(keccak(packed), "big") % R == share.c
    assert dleq_challenge(POOL, 3, y, c1, share.d, a1, a2) == share.c


def test_combine_refuses_no_share_and_a_repeated_index(committee: dict) -> None:
    shares = committee["shares"]
    with pytest.raises(GroupError, match="at least one"):
        combine(committee["c2"], [])
    with pytest.raises(GroupError, match="repeated"):
        combine(committee["c2"], [shares[0], shares[1], shares[0]])
    with pytest.raises(GroupError, match="identity"):
        combine(G1Point.identity(), shares[:3])


def test_decryption_share_refuses_bad_input(committee: dict) -> None:
    for x, i, c1, pool in (
        (0, 1, committee["c1"], 1),
        (R, 1, committee["c1"], 1),
        (5, 0, committee["c1"], 1),
        (5, 1, G1Point.identity(), 1),
        (5, 1, committee["c1"], -1),
        (5, 1, committee["c1"], 1 << 256),
    ):
        with pytest.raises(GroupError):
            decryption_share(x, i, c1, pool)


# --- the vectors a contract test uses agree with the verdicts here ------------------------------


def test_dleq_vector_is_valid_and_its_tampered_forms_are_not() -> None:
    v = dleq_vector(pool_id=3, index=2)
    args = (v["pool_id"], v["index"], v["y"], v["c1"], v["d"], v["c"], v["z"])
    assert v["valid"] and dleq_check(*args)
    assert int.from_bytes(keccak(v["packed"]), "big") % R == v["c"]
    assert not dleq_check(4, *args[1:])
    assert not dleq_check(v["pool_id"], 1, *args[2:])
    assert not dleq_check(*args[:5], (v["c"] + 1) % R, v["z"])
    assert not dleq_check(*args[:4], v["c1"], v["c"], v["z"])  # D = C1
    assert not dleq_check(*args[:4], bytes(96), v["c"], v["z"])  # D the identity
    assert not dleq_check(*args[:4], v["d"][:-1] + bytes([v["d"][-1] ^ 1]), v["c"], v["z"])  # off the curve


def test_combine_vector_opens_with_t_and_not_with_fewer() -> None:
    assert combine_vector(5, 3, [1, 3, 5])["opens"]
    assert combine_vector(5, 3, [2, 3, 4, 5])["opens"]
    assert not combine_vector(5, 3, [2, 4])["opens"]


def test_signature_vector_opens_to_its_signer_with_t_shares_of_its_dkg() -> None:
    from auth.group import ciphertext, g1_from_raw, verify

    v = signature_vector(3, 2)
    d = v["dkg"]
    Y = g1_from_raw(d["public_key"])
    verify(v["signature"], v["message"], issuer_pk_for=lambda h, k: v["issuer_pk"], supervision_key=Y)
    c1, c2 = ciphertext(v["signature"])
    assert v["signature"][9:105] == g1_raw(c1) and v["signature"][105:201] == g1_raw(c2)
    shares = [decryption_share(d["secret_shares"][i - 1], i, c1, 1) for i in (1, 3)]
    for share in shares:
        assert verify_share(share, g1_from_raw(d["verification_keys"][share.index - 1]), c1, 1)
    assert g1_raw(combine(c2, shares)) == v["tracing_key"]
    assert g1_raw(combine(c2, shares[:1])) != v["tracing_key"]
