"""The draft's published fixtures, both ciphersuites (see tests/vectors/bbs/SOURCE.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auth import bbs
from auth.bbs.ciphersuite import EXPAND_LEN
from auth.bbs.encoding import R
from auth.bbs.generators import create_generators
from auth.bbs.hashing import os2ip
from auth.bbs.utilities import calculate_domain, hash_to_scalar

#: The seed of the draft's proof fixtures.
FIXTURE_SEED = b"3.141592653589793238462643383279"


def seeded_random_scalars(bbs_suite, seed: bytes, dst: bytes | None = None):
    """The draft's mocked_calculate_random_scalars (Appendix): deterministic, so for fixtures only."""
    suite = bbs_suite.suite
    dst = suite.api_id + b"MOCK_RANDOM_SCALARS_DST_" if dst is None else dst

    def scalars(count: int) -> list[int]:
        v = suite.expand_message(seed, dst, EXPAND_LEN * count)
        return [os2ip(v[i * EXPAND_LEN : (i + 1) * EXPAND_LEN]) % R for i in range(count)]

    return scalars


VECTORS = Path(__file__).resolve().parent / "vectors" / "bbs"
SUITES = {"bls12-381-sha-256": bbs.SHA256, "bls12-381-shake-256": bbs.SHAKE256}


def _cases(kind: str) -> list:
    return [
        pytest.param(SUITES[suite_dir], path, id=f"{suite_dir}/{path.name}")
        for suite_dir in SUITES
        for path in sorted((VECTORS / suite_dir / kind).glob("*.json"))
    ]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


def _suite_file(name: str) -> list:
    return [pytest.param(SUITES[d], VECTORS / d / name, id=d) for d in SUITES]


@pytest.mark.parametrize("suite,path", _cases("signature"))
def test_signature_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    keys = case["signerKeyPair"]
    pk, header = _hex(keys["publicKey"]), _hex(case["header"])
    messages = [_hex(m) for m in case["messages"]]
    signature = _hex(case["signature"])
    assert suite.verify(pk, signature, header, messages) is case["result"]["valid"]
    if case["result"]["valid"]:
        assert suite.sign(_hex(keys["secretKey"]), pk, header, messages) == signature
        trace_domain = calculate_domain(suite.suite, pk, len(messages), header, suite.api_id)
        assert trace_domain == int(case["trace"]["domain"], 16)


@pytest.mark.parametrize("suite,path", _cases("proof"))
def test_proof_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    pk, header, ph = _hex(case["signerPublicKey"]), _hex(case["header"]), _hex(case["presentationHeader"])
    messages = [_hex(m) for m in case["messages"]]
    indexes = case["disclosedIndexes"]
    disclosed = [messages[i] for i in indexes if i < len(messages)]
    proof = _hex(case["proof"])
    assert suite.proof_verify(pk, proof, header, ph, disclosed, indexes) is case["result"]["valid"]
    if case["result"]["valid"]:
        mocked = seeded_random_scalars(suite, FIXTURE_SEED)
        made = suite.proof_gen(pk, _hex(case["signature"]), header, ph, messages, indexes, random_scalars=mocked)
        assert made.hex() == case["proof"]


@pytest.mark.parametrize("suite,path", _suite_file("keypair.json"))
def test_keypair_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    sk = suite.keygen(_hex(case["keyMaterial"]), _hex(case["keyInfo"]), _hex(case["keyDst"]))
    assert sk.hex() == case["keyPair"]["secretKey"]
    assert suite.sk_to_pk(sk).hex() == case["keyPair"]["publicKey"]
    # The fixture passes api_id || "KEYGEN_DST_"; the draft's default is ciphersuite_id || "KEYGEN_DST_".
    assert _hex(case["keyDst"]) == suite.api_id + b"KEYGEN_DST_"
    default = suite.keygen(_hex(case["keyMaterial"]), _hex(case["keyInfo"]))
    assert default == suite.keygen(
        _hex(case["keyMaterial"]), _hex(case["keyInfo"]), suite.suite.ciphersuite_id + b"KEYGEN_DST_"
    )
    assert default != sk


@pytest.mark.parametrize("suite,path", _suite_file("generators.json"))
def test_generators_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    count = len(case["MsgGenerators"]) + 1
    points = create_generators(suite.suite, count, suite.api_id)
    assert [bytes(p.to_compressed_bytes()).hex() for p in points] == [case["Q1"], *case["MsgGenerators"]]
    # P1 is the first generator of the "BP_MESSAGE_GENERATOR_SEED" sequence.
    p1 = create_generators(suite.suite, 1, suite.api_id, suite.api_id + b"BP_MESSAGE_GENERATOR_SEED")[0]
    assert bytes(p1.to_compressed_bytes()).hex() == case["P1"] == suite.suite.p1_octets.hex()


@pytest.mark.parametrize("suite,path", _suite_file("MapMessageToScalarAsHash.json"))
def test_map_message_to_scalar_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    assert _hex(case["dst"]) == suite.api_id + b"MAP_MSG_TO_SCALAR_AS_HASH_"
    for item in case["cases"]:
        assert hash_to_scalar(suite.suite, _hex(item["message"]), _hex(case["dst"])) == int(item["scalar"], 16)


@pytest.mark.parametrize("suite,path", _suite_file("h2s.json"))
def test_hash_to_scalar_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    assert hash_to_scalar(suite.suite, _hex(case["message"]), _hex(case["dst"])) == int(case["scalar"], 16)


@pytest.mark.parametrize("suite,path", _suite_file("mockedRng.json"))
def test_mocked_rng_fixture(suite: bbs.BBS, path: Path) -> None:
    case = _load(path)
    assert _hex(case["dst"]) == suite.api_id + b"MOCK_RANDOM_SCALARS_DST_"
    mocked = seeded_random_scalars(suite, _hex(case["seed"]))
    assert [f"{s:064x}" for s in mocked(case["count"])] == case["mockedScalars"]
