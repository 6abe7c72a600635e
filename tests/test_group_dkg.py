"""The supervisors' key generation (auth.group.dkg): joint-Feldman shares, their encryption to each
recipient, the keys computed from the commitments, and the checks a complaint rests on."""

from __future__ import annotations

from itertools import combinations

import pytest
from py_arkworks_bls12381 import G1Point

from auth.bbs.encoding import R, to_scalar
from auth.group import GroupError, dkg, g1_raw, lagrange_at_zero
from tests.group_vectors import dkg_vector, feldman_check, feldman_vector

G = G1Point()


def _mul(x: int) -> G1Point:
    return G * to_scalar(x % R)


def _combine_secret(xs: dict[int, int]) -> int:
    lambdas = lagrange_at_zero(list(xs))
    return sum(lam * x for lam, x in zip(lambdas, xs.values(), strict=True)) % R


def test_run_local_shares_a_key_that_t_reconstruct_and_t_minus_1_do_not() -> None:
    Y, xs = dkg.run_local(5, 3)
    assert len(xs) == 5 and len(set(xs)) == 5
    for subset in combinations(range(1, 6), 3):
        assert _mul(_combine_secret({i: xs[i - 1] for i in subset})) == Y
    for subset in combinations(range(1, 6), 2):
        assert _mul(_combine_secret({i: xs[i - 1] for i in subset})) != Y


def test_the_protocol_step_by_step() -> None:
    n, t = 4, 2
    keys = [dkg.EncryptionKey.new() for _ in range(n)]
    dealers = [dkg.Dealer.new(t) for _ in range(n)]
    posted = [(d.commitments_raw(), d.deal(i, [k.E for k in keys])) for i, d in enumerate(dealers, 1)]
    assert all(len(c) == t * 96 and len(blob) == n * 128 for c, blob in posted)
    commitments = [dkg.parse_commitments(c, t) for c, _ in posted]
    xs = []
    for j, key in enumerate(keys, 1):
        received = [dkg.decrypt_share(key.e, blob, i, j) for i, (_, blob) in enumerate(posted, 1)]
        assert received == [d.share_for(j) for d in dealers]
        assert all(dkg.verify_share(commitments[i], j, s) for i, s in enumerate(received))
        xs.append(dkg.secret_share(received))
    Y = dkg.public_key(commitments)
    assert Y == _mul(sum(d.coefficients[0] for d in dealers))
    for j, x in enumerate(xs, 1):
        assert dkg.verification_key(commitments, j) == _mul(x)
    assert _mul(_combine_secret({1: xs[0], 3: xs[2]})) == Y
    # A disqualified dealer is left out of everything, consistently.
    qual = [commitments[0], commitments[2], commitments[3]]
    xs_qual = [(dealers[0].share_for(j) + dealers[2].share_for(j) + dealers[3].share_for(j)) % R for j in (1, 2)]
    assert dkg.verification_key(qual, 2) == _mul(xs_qual[1])
    assert _mul(_combine_secret({1: xs_qual[0], 2: xs_qual[1]})) == dkg.public_key(qual)


def test_a_dealers_bad_share_fails_the_feldman_check() -> None:
    dealer = dkg.Dealer.new(3)
    commitments = dealer.commitments()
    assert dkg.verify_share(commitments, 2, dealer.share_for(2))
    assert not dkg.verify_share(commitments, 2, (dealer.share_for(2) + 1) % R)
    assert not dkg.verify_share(commitments, 3, dealer.share_for(2))
    assert not dkg.verify_share(dkg.Dealer.new(3).commitments(), 2, dealer.share_for(2))
    # a dealer whose encrypted share is wrong is caught by its recipient
    key = dkg.EncryptionKey.new()
    blob = dkg.encrypt_share((dealer.share_for(2) + 5) % R, 1, 2, key.E)
    assert not dkg.verify_share(commitments, 2, dkg.decrypt_share(key.e, blob, 1, 2))
    for bad in (R, -1, "1", None):
        assert dkg.verify_share(commitments, 2, bad) is False  # type: ignore[arg-type]
    assert dkg.verify_share([], 2, 1) is False
    assert dkg.verify_share(commitments, 0, dealer.share_for(0 + 1)) is False


def test_decrypt_share_inverts_encrypt_share_only_with_the_right_key() -> None:
    key, other = dkg.EncryptionKey.new(), dkg.EncryptionKey.new()
    s = dkg.Dealer.new(2).share_for(3)
    blob = dkg.encrypt_share(s, 2, 3, key.E)
    assert len(blob) == 128
    assert dkg.decrypt_share(key.e, blob, 2, 3) == s
    for e, i, j in ((other.e, 2, 3), (key.e, 1, 3), (key.e, 2, 4)):  # wrong key, or labels of another slot
        try:
            assert dkg.decrypt_share(e, blob, i, j) != s
        except GroupError as exc:
            assert "does not decrypt" in str(exc)
    assert dkg.encrypt_share(s, 2, 3, key.E) != blob  # fresh ephemeral key each time


def test_decrypt_share_picks_its_slot_and_refuses_malformed_blobs() -> None:
    keys = [dkg.EncryptionKey.new() for _ in range(3)]
    dealer = dkg.Dealer.new(2)
    blob = dealer.deal(2, [k.E for k in keys])
    for j, k in enumerate(keys, 1):
        assert dkg.decrypt_share(k.e, blob, 2, j) == dealer.share_for(j)
        assert dkg.decrypt_share(k.e, blob[(j - 1) * 128 : j * 128], 2, j) == dealer.share_for(j)
    for bad in (b"", blob[:-1], blob + b"\x00", bytes(128), blob[:95] + blob[96:129], "00" * 128):
        with pytest.raises(GroupError):
            dkg.decrypt_share(keys[0].e, bad, 2, 1)  # type: ignore[arg-type]
    with pytest.raises(GroupError, match="no slot"):
        dkg.decrypt_share(keys[0].e, blob[:256], 2, 3)
    with pytest.raises(GroupError):
        dkg.decrypt_share(0, blob, 2, 1)


def test_parse_commitments() -> None:
    dealer = dkg.Dealer.new(3)
    raw = dealer.commitments_raw()
    assert dkg.parse_commitments(raw) == dealer.commitments() == dkg.parse_commitments(raw, 3)
    assert [g1_raw(p) for p in dealer.commitments()] == [raw[k * 96 : (k + 1) * 96] for k in range(3)]
    with pytest.raises(GroupError, match="expected 2"):
        dkg.parse_commitments(raw, 2)
    with pytest.raises(GroupError, match="A_0"):
        dkg.parse_commitments(bytes(96) + raw[96:])
    assert dkg.parse_commitments(raw[:96] + bytes(96) + raw[192:])[1] == G1Point.identity()  # a zero coefficient
    for bad in (b"", raw[:-1], raw[:96] + b"\x01" * 96):
        with pytest.raises(GroupError):
            dkg.parse_commitments(bad)


@pytest.mark.parametrize("n, t", [(0, 0), (3, 0), (3, 4), (33, 2), (True, 1)])
def test_committee_bounds(n: int, t: int) -> None:
    with pytest.raises(GroupError):
        dkg.run_local(n, t)


def test_secrets_round_trip_through_their_state_form() -> None:
    key, dealer = dkg.EncryptionKey.new(), dkg.Dealer.new(3)
    assert dkg.EncryptionKey.from_dict(key.to_dict()) == key
    assert dkg.Dealer.from_dict(dealer.to_dict()) == dealer
    for bad in ({}, {"e": "0x00"}, {"e": "0x" + "00" * 32}, {"e": 5}):
        with pytest.raises(GroupError):
            dkg.EncryptionKey.from_dict(bad)
    for bad in ({"coefficients": []}, {"coefficients": ["0x" + "ff" * 32]}, {"coefficients": "x"}):
        with pytest.raises(GroupError):
            dkg.Dealer.from_dict(bad)


def test_vectors_for_the_contract() -> None:
    v = dkg_vector(3, 2)
    Y = G1Point.from_xy_bytes_be(v["public_key"])
    xs = v["secret_shares"]
    for j, (x, y) in enumerate(zip(xs, v["verification_keys"], strict=True), 1):
        assert g1_raw(_mul(x)) == y, j
    assert _mul(_combine_secret({2: xs[1], 3: xs[2]})) == Y
    assert dkg_vector(3, 2)["public_key"] == v["public_key"]  # deterministic
    f = feldman_vector(3, 2)
    assert feldman_check(f["commitments"], 2, f["share"])
    assert not feldman_check(f["commitments"], 2, f["bad_share"])
    assert not feldman_check(f["commitments"], 1, f["share"])
    assert not feldman_check(f["commitments"][:-1], 2, f["share"])
