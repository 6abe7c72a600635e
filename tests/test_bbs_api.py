"""Behaviour of the public BBS API beyond the fixtures: round trips, argument
errors from sign/proof_gen, and False (never an exception) from the verifiers
on malformed keys, signatures and proofs."""

from __future__ import annotations

import pytest
from py_arkworks_bls12381 import G1Point

from auth import bbs
from auth.bbs.encoding import R
from auth.bbs.hashing import P

SUITES = [pytest.param(bbs.SHA256, id="sha256"), pytest.param(bbs.SHAKE256, id="shake256")]
HEADER = b"issuer=hpc-a;schema=v1"
PH = b"verifier-challenge-42"
MESSAGES = [b"uid=alice", b"home=hpc-a", b"dept=physics", b"type=staff", b"", b"gpu=yes"]


@pytest.fixture(scope="module", params=SUITES)
def ctx(request: pytest.FixtureRequest) -> dict:
    suite = request.param
    sk = suite.keygen(b"k" * 32, b"test")
    pk = suite.sk_to_pk(sk)
    sig = suite.sign(sk, pk, HEADER, MESSAGES)
    proof = suite.proof_gen(pk, sig, HEADER, PH, MESSAGES, [1, 3])
    return {"suite": suite, "sk": sk, "pk": pk, "sig": sig, "proof": proof}


def _g1_x_octets(x: int, on_curve: bool) -> bytes:
    """Compressed encoding of an x whose x^3 + 4 is (or is not) a square mod p."""
    while (pow(x**3 + 4, (P - 1) // 2, P) == 1) != on_curve:
        x += 1
    data = bytearray(x.to_bytes(48, "big"))
    data[0] |= 0x80  # compression flag
    return bytes(data)


OFF_CURVE = _g1_x_octets(5, on_curve=False)
OFF_SUBGROUP = _g1_x_octets(5, on_curve=True)
IDENTITY_G1 = bytes([0xC0]) + bytes(47)
IDENTITY_G2 = bytes([0xC0]) + bytes(95)
NON_CANONICAL_X = bytes([0x80 | 0x1A]) + (P + 1 - (0x1A << 376)).to_bytes(48, "big")[1:]


def test_crafted_points_are_what_they_claim() -> None:
    G1Point.from_compressed_bytes_unchecked(OFF_SUBGROUP)  # on the curve ...
    with pytest.raises(ValueError):
        G1Point.from_compressed_bytes(OFF_SUBGROUP)  # ... but not in G1
    with pytest.raises(ValueError):
        G1Point.from_compressed_bytes_unchecked(OFF_CURVE)
    assert G1Point.from_compressed_bytes(IDENTITY_G1) == G1Point.identity()  # the library trap


# --- round trips -----------------------------------------------------------------


def test_sign_verify_round_trip(ctx: dict) -> None:
    s = ctx["suite"]
    assert len(ctx["sk"]) == 32 and len(ctx["pk"]) == 96 and len(ctx["sig"]) == 80
    assert s.verify(ctx["pk"], ctx["sig"], HEADER, MESSAGES)
    assert not s.verify(ctx["pk"], ctx["sig"], HEADER + b"x", MESSAGES)
    assert not s.verify(ctx["pk"], ctx["sig"], HEADER, MESSAGES[:-1])
    assert not s.verify(ctx["pk"], ctx["sig"], HEADER, [*MESSAGES[:-1], b"gpu=no"])
    other_pk = s.sk_to_pk(s.keygen(b"o" * 32))
    assert not s.verify(other_pk, ctx["sig"], HEADER, MESSAGES)
    negated_pk = bytes([ctx["pk"][0] ^ 0x20]) + ctx["pk"][1:]  # -W: on the curve, wrong key
    assert not s.verify(negated_pk, ctx["sig"], HEADER, MESSAGES)


def test_signing_is_deterministic_and_suites_differ(ctx: dict) -> None:
    s = ctx["suite"]
    assert s.sign(ctx["sk"], ctx["pk"], HEADER, MESSAGES) == ctx["sig"]
    other = bbs.SHAKE256 if s is bbs.SHA256 else bbs.SHA256
    assert not other.verify(ctx["pk"], ctx["sig"], HEADER, MESSAGES)


def test_no_messages(ctx: dict) -> None:
    s = ctx["suite"]
    sig = s.sign(ctx["sk"], ctx["pk"], b"", [])
    assert s.verify(ctx["pk"], sig, b"", [])
    proof = s.proof_gen(ctx["pk"], sig, b"", PH, [], [])
    assert len(proof) == 3 * 48 + 4 * 32
    assert s.proof_verify(ctx["pk"], proof, b"", PH, [], [])


@pytest.mark.parametrize("disclosed", [[], [0], [1, 3], [5, 0, 2], list(range(6))])
def test_proof_round_trip(ctx: dict, disclosed: list[int]) -> None:
    s, pk = ctx["suite"], ctx["pk"]
    proof = s.proof_gen(pk, ctx["sig"], HEADER, PH, MESSAGES, disclosed)
    assert len(proof) == 3 * 48 + (4 + len(MESSAGES) - len(disclosed)) * 32
    shown = [MESSAGES[i] for i in disclosed]
    assert s.proof_verify(pk, proof, HEADER, PH, shown, disclosed)
    # The pairing of index and message is what counts, not the order given.
    assert s.proof_verify(pk, proof, HEADER, PH, shown[::-1], disclosed[::-1])
    assert not s.proof_verify(pk, proof, HEADER, PH + b"!", shown, disclosed)
    assert not s.proof_verify(pk, proof, HEADER + b"!", PH, shown, disclosed)
    if disclosed:
        assert not s.proof_verify(pk, proof, HEADER, PH, [b"forged", *shown[1:]], disclosed)
        assert not s.proof_verify(pk, proof, HEADER, PH, shown[:-1], disclosed[:-1])


def test_proofs_are_randomised(ctx: dict) -> None:
    s = ctx["suite"]
    again = s.proof_gen(ctx["pk"], ctx["sig"], HEADER, PH, MESSAGES, [1, 3])
    assert again != ctx["proof"]
    assert s.proof_verify(ctx["pk"], again, HEADER, PH, [MESSAGES[1], MESSAGES[3]], [1, 3])


def test_proof_of_bad_signature_does_not_verify(ctx: dict) -> None:
    s = ctx["suite"]
    bad_sig = s.sign(ctx["sk"], ctx["pk"], HEADER, [b"other", *MESSAGES[1:]])
    proof = s.proof_gen(ctx["pk"], bad_sig, HEADER, PH, MESSAGES, [1])
    assert not s.proof_verify(ctx["pk"], proof, HEADER, PH, [MESSAGES[1]], [1])


# --- verify: malformed input gives False ------------------------------------------


def _bad_public_keys(pk: bytes) -> dict[str, object]:
    return {
        "empty": b"",
        "short": pk[:-1],
        "long": pk + b"\x00",
        "identity": IDENTITY_G2,
        "garbage": bytes([0x80]) + b"\xff" * 95,
        "uncompressed flag": bytes([pk[0] & 0x7F]) + pk[1:],
        "G1 point": G1Point().to_compressed_bytes() * 2,
        "None": None,
        "str": pk.hex(),
    }


def _bad_signatures(sig: bytes) -> dict[str, object]:
    a, e = sig[:48], sig[48:]
    return {
        "empty": b"",
        "short": sig[:-1],
        "long": sig + b"\x00",
        "A identity": IDENTITY_G1 + e,
        "A off curve": OFF_CURVE + e,
        "A off subgroup": OFF_SUBGROUP + e,
        "A non-canonical": NON_CANONICAL_X + e,
        "e zero": a + bytes(32),
        "e equals r": a + R.to_bytes(32, "big"),
        "e above r": a + b"\xff" * 32,
        "e changed": a + ((int.from_bytes(e, "big") + 1) % R).to_bytes(32, "big"),
        "None": None,
    }


def test_verify_rejects_malformed_public_keys(ctx: dict) -> None:
    s = ctx["suite"]
    for name, pk in _bad_public_keys(ctx["pk"]).items():
        assert s.verify(pk, ctx["sig"], HEADER, MESSAGES) is False, name


def test_verify_rejects_malformed_signatures(ctx: dict) -> None:
    s = ctx["suite"]
    for name, sig in _bad_signatures(ctx["sig"]).items():
        assert s.verify(ctx["pk"], sig, HEADER, MESSAGES) is False, name


@pytest.mark.parametrize("messages", [None, b"abc", "abc", ["text"], [None], [1, 2]])
def test_verify_rejects_malformed_messages(ctx: dict, messages: object) -> None:
    assert ctx["suite"].verify(ctx["pk"], ctx["sig"], HEADER, messages) is False
    assert ctx["suite"].verify(ctx["pk"], ctx["sig"], None, MESSAGES) is False


def _bad_proofs(proof: bytes) -> dict[str, bytes]:
    head, scalars = proof[:144], proof[144:]
    out: dict[str, bytes] = {
        "empty": b"",
        "truncated to floor - 1": proof[: 144 + 128 - 1],
        "one byte short": proof[:-1],
        "one byte long": proof + b"\x00",
        "one scalar short": proof[:-32],
        "one scalar long": proof + proof[-32:],
    }
    for k, name in enumerate(["Abar", "Bbar", "D"]):
        for label, octets in [
            ("identity", IDENTITY_G1),
            ("off curve", OFF_CURVE),
            ("off subgroup", OFF_SUBGROUP),
            ("non-canonical", NON_CANONICAL_X),
        ]:
            out[f"{name} {label}"] = head[: 48 * k] + octets + head[48 * (k + 1) :] + scalars
    for k in range(len(scalars) // 32):
        for label, value in [("zero", 0), ("r", R), ("2^256-1", (1 << 256) - 1)]:
            out[f"scalar {k} {label}"] = head + scalars[: 32 * k] + value.to_bytes(32, "big") + scalars[32 * (k + 1) :]
        tweaked = (int.from_bytes(scalars[32 * k : 32 * (k + 1)], "big") + 1) % R
        out[f"scalar {k} changed"] = head + scalars[: 32 * k] + tweaked.to_bytes(32, "big") + scalars[32 * (k + 1) :]
    return out


def test_proof_verify_rejects_malformed_proofs(ctx: dict) -> None:
    s = ctx["suite"]
    shown = [MESSAGES[1], MESSAGES[3]]
    assert s.proof_verify(ctx["pk"], ctx["proof"], HEADER, PH, shown, [1, 3])
    for name, proof in _bad_proofs(ctx["proof"]).items():
        assert s.proof_verify(ctx["pk"], proof, HEADER, PH, shown, [1, 3]) is False, name


def test_proof_verify_rejects_malformed_public_keys(ctx: dict) -> None:
    s = ctx["suite"]
    for name, pk in _bad_public_keys(ctx["pk"]).items():
        assert s.proof_verify(pk, ctx["proof"], HEADER, PH, [MESSAGES[1], MESSAGES[3]], [1, 3]) is False, name


@pytest.mark.parametrize(
    "shown,indexes",
    [
        ([MESSAGES[1], MESSAGES[3]], [1, 6]),  # out of range for the 6 messages the proof covers
        ([MESSAGES[1], MESSAGES[3]], [1, 1]),  # repeated
        ([MESSAGES[1], MESSAGES[3]], [-1, 3]),  # negative
        ([MESSAGES[1], MESSAGES[3]], [1]),  # counts differ
        ([MESSAGES[1]], [1, 3]),
        ([MESSAGES[1], MESSAGES[3]], [1.0, 3]),  # not integers
        ([MESSAGES[1], MESSAGES[3]], None),
        ([MESSAGES[1], MESSAGES[3]], [1, 2**70]),
    ],
)
def test_proof_verify_rejects_bad_disclosure(ctx: dict, shown: list, indexes: object) -> None:
    assert ctx["suite"].proof_verify(ctx["pk"], ctx["proof"], HEADER, PH, shown, indexes) is False


def test_proof_verify_rejects_non_bytes(ctx: dict) -> None:
    s, pk, proof = ctx["suite"], ctx["pk"], ctx["proof"]
    shown = [MESSAGES[1], MESSAGES[3]]
    assert s.proof_verify(pk, None, HEADER, PH, shown, [1, 3]) is False
    assert s.proof_verify(pk, proof.hex(), HEADER, PH, shown, [1, 3]) is False
    assert s.proof_verify(pk, proof, None, PH, shown, [1, 3]) is False
    assert s.proof_verify(pk, proof, HEADER, "ph", shown, [1, 3]) is False
    assert s.proof_verify(pk, proof, HEADER, PH, ["uid", "x"], [1, 3]) is False


# --- sign / proof_gen / keygen: bad arguments raise ValueError ----------------------


@pytest.mark.parametrize(
    "sk,match",
    [
        (b"", "32 octets"),
        (b"\x01" * 31, "32 octets"),
        (b"\x01" * 33, "32 octets"),
        (bytes(32), "out of range"),
        (R.to_bytes(32, "big"), "out of range"),
        (b"\xff" * 32, "out of range"),
        ("00" * 32, "must be bytes"),
    ],
)
def test_sign_rejects_bad_secret_key(ctx: dict, sk: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ctx["suite"].sign(sk, ctx["pk"], HEADER, MESSAGES)
    with pytest.raises(ValueError, match=match):
        ctx["suite"].sk_to_pk(sk)


def test_sign_rejects_bad_arguments(ctx: dict) -> None:
    s, sk, pk = ctx["suite"], ctx["sk"], ctx["pk"]
    for bad_pk in _bad_public_keys(pk).values():
        with pytest.raises(ValueError):
            s.sign(sk, bad_pk, HEADER, MESSAGES)
    with pytest.raises(ValueError, match="header must be bytes"):
        s.sign(sk, pk, "header", MESSAGES)
    with pytest.raises(ValueError, match=r"messages\[1\] must be bytes"):
        s.sign(sk, pk, HEADER, [b"a", "b"])
    with pytest.raises(ValueError, match="list of bytes"):
        s.sign(sk, pk, HEADER, b"not a list")


@pytest.mark.parametrize(
    "indexes,match",
    [
        ([6], "out of range"),
        ([-1], "out of range"),
        ([0, 2, 0], "repeated"),
        ([True], "not an integer"),
        (["1"], "not an integer"),
        ("01", "list of integers"),
    ],
)
def test_proof_gen_rejects_bad_indexes(ctx: dict, indexes: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ctx["suite"].proof_gen(ctx["pk"], ctx["sig"], HEADER, PH, MESSAGES, indexes)


def test_proof_gen_rejects_malformed_signature_and_key(ctx: dict) -> None:
    s = ctx["suite"]
    for name, sig in _bad_signatures(ctx["sig"]).items():
        if name == "e changed":  # well-formed, merely wrong: gives a proof that fails to verify
            continue
        with pytest.raises(ValueError):
            s.proof_gen(ctx["pk"], sig, HEADER, PH, MESSAGES, [0])
    for pk in _bad_public_keys(ctx["pk"]).values():
        with pytest.raises(ValueError):
            s.proof_gen(pk, ctx["sig"], HEADER, PH, MESSAGES, [0])


def test_keygen_rules() -> None:
    s = bbs.SHA256
    with pytest.raises(ValueError, match="at least 32 octets"):
        s.keygen(b"x" * 31)
    with pytest.raises(ValueError, match="65535"):
        s.keygen(b"x" * 32, b"i" * 65536)
    assert s.keygen(b"x" * 32) != s.keygen(b"x" * 32, b"info")
    assert s.keygen(b"x" * 32) != bbs.SHAKE256.keygen(b"x" * 32)
    assert s.keygen(b"x" * 32, key_dst=b"app-specific") != s.keygen(b"x" * 32)


def test_errors_are_bbs_errors(ctx: dict) -> None:
    with pytest.raises(bbs.BBSError):
        ctx["suite"].proof_gen(ctx["pk"], ctx["sig"], HEADER, PH, MESSAGES, [99])


# --- the pairing worker (auth/bbs/parallel.py) --------------------------------------


def _in_forked_child(fn) -> int:
    """Run fn() in a forked child; its exit status (0 if fn returned True), or -1 if it hung."""
    import os
    import time

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os._exit(0 if fn() else 1)
        except BaseException:  # noqa: BLE001 - the forked child never returns into pytest
            os._exit(2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


def test_proof_verify_works_in_a_forked_child(ctx: dict) -> None:
    from auth.bbs import parallel

    s = ctx["suite"]
    assert s.proof_verify(ctx["pk"], ctx["proof"], HEADER, PH, [MESSAGES[1], MESSAGES[3]], [1, 3])
    check = lambda: s.proof_verify(ctx["pk"], ctx["proof"], HEADER, PH, [MESSAGES[1], MESSAGES[3]], [1, 3])  # noqa: E731
    assert _in_forked_child(check) == 0
    # A fork while another thread held the pool's lock must not leave the child's lock held.
    with parallel._lock:
        status = _in_forked_child(check)
    assert status == 0


def test_an_exception_in_the_worker_reaches_the_caller() -> None:
    from auth.bbs.parallel import background

    def boom() -> None:
        raise TypeError("bad pairing input")

    with pytest.raises(TypeError, match="bad pairing input"):
        background(boom).result(timeout=10)
