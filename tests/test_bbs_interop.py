"""Interoperability of auth.bbs with an independent implementation:
npm @digitalbazaar/bbs-signatures (pinned in tests/interop/package.json),
driven through tests/interop/peer.mjs. Both directions, both ciphersuites."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from auth import bbs

INTEROP = Path(__file__).resolve().parent / "interop"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (needed for the BBS interop peer)"),
    pytest.mark.skipif(
        not (INTEROP / "node_modules" / "@digitalbazaar" / "bbs-signatures").is_dir(),
        reason="tests/interop/node_modules is absent: run `npm ci` in tests/interop",
    ),
]

SUITES = {"BLS12-381-SHA-256": bbs.SHA256, "BLS12-381-SHAKE-256": bbs.SHAKE256}
SEED = bytes(range(32))
HEADER = b"issuer=hpc-a"
PH = b"nonce-from-hpc-b"
MESSAGES = [b"uid=alice", b"home=hpc-a", b"dept=physics", b"", b"clearance=2", b"gpu=a100"]
DISCLOSED = [1, 4, 5]


def _peer(ops: list[dict]) -> list[dict]:
    """Run a batch of operations in one node process."""
    proc = subprocess.run(
        [NODE, str(INTEROP / "peer.mjs")],
        input=json.dumps({"ops": ops}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=INTEROP,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == len(ops)
    return results


def _tamper(octets: bytes) -> bytes:
    return octets[:-1] + bytes([octets[-1] ^ 1])


@pytest.fixture(scope="module")
def exchange() -> dict:
    """Our artefacts, the peer's verdicts on them and the peer's own artefacts."""
    ours: dict[str, dict] = {}
    ops: list[dict] = []
    shown = [MESSAGES[i].hex() for i in DISCLOSED]
    for name, suite in SUITES.items():
        sk = suite.keygen(SEED)
        pk = suite.sk_to_pk(sk)
        sig = suite.sign(sk, pk, HEADER, MESSAGES)
        proof = suite.proof_gen(pk, sig, HEADER, PH, MESSAGES, DISCLOSED)
        ours[name] = {"sk": sk, "pk": pk, "sig": sig, "proof": proof}
        common = {"ciphersuite": name, "publicKey": pk.hex(), "header": HEADER.hex()}
        msgs = [m.hex() for m in MESSAGES]
        ops += [
            {"op": "keypair", "ciphersuite": name, "seed": SEED.hex()},
            {"op": "verify", **common, "signature": sig.hex(), "messages": msgs},
            {"op": "verify", **common, "signature": _tamper(sig).hex(), "messages": msgs},
            {
                "op": "proofVerify",
                **common,
                "proof": proof.hex(),
                "presentationHeader": PH.hex(),
                "disclosedMessages": shown,
                "disclosedIndexes": DISCLOSED,
            },
            {
                "op": "proofVerify",
                **common,
                "proof": _tamper(proof).hex(),
                "presentationHeader": PH.hex(),
                "disclosedMessages": shown,
                "disclosedIndexes": DISCLOSED,
            },
            {"op": "sign", **common, "secretKey": sk.hex(), "messages": msgs},
            {
                "op": "proofGen",
                **common,
                "signature": sig.hex(),
                "presentationHeader": PH.hex(),
                "messages": msgs,
                "disclosedIndexes": DISCLOSED,
            },
        ]
    results = _peer(ops)
    per_suite = len(ops) // len(SUITES)
    theirs = {}
    for k, name in enumerate(SUITES):
        keypair, v_sig, v_bad_sig, v_proof, v_bad_proof, signed, proved = results[k * per_suite : (k + 1) * per_suite]
        theirs[name] = {
            "keypair": keypair,
            "verify": v_sig,
            "verify_tampered": v_bad_sig,
            "proof_verify": v_proof,
            "proof_verify_tampered": v_bad_proof,
            "sign": signed,
            "proof_gen": proved,
        }
    return {"ours": ours, "theirs": theirs}


@pytest.mark.parametrize("name", SUITES)
def test_same_keys_from_same_seed(exchange: dict, name: str) -> None:
    ours, theirs = exchange["ours"][name], exchange["theirs"][name]["keypair"]
    assert theirs == {"secretKey": ours["sk"].hex(), "publicKey": ours["pk"].hex()}


@pytest.mark.parametrize("name", SUITES)
def test_peer_verifies_our_signature_and_proof(exchange: dict, name: str) -> None:
    theirs = exchange["theirs"][name]
    assert theirs["verify"] == {"verified": True}
    assert theirs["proof_verify"] == {"verified": True}
    # A control: the peer is not saying yes to everything.
    assert theirs["verify_tampered"].get("verified") is not True
    assert theirs["proof_verify_tampered"].get("verified") is not True


@pytest.mark.parametrize("name", SUITES)
def test_we_verify_peer_signature_and_proof(exchange: dict, name: str) -> None:
    suite, ours, theirs = SUITES[name], exchange["ours"][name], exchange["theirs"][name]
    their_sig = bytes.fromhex(theirs["sign"]["signature"])
    assert their_sig == ours["sig"]  # signing is deterministic, so byte-equal
    assert suite.verify(ours["pk"], their_sig, HEADER, MESSAGES)
    their_proof = bytes.fromhex(theirs["proof_gen"]["proof"])
    shown = [MESSAGES[i] for i in DISCLOSED]
    assert their_proof != ours["proof"]  # fresh randomness on each side
    assert suite.proof_verify(ours["pk"], their_proof, HEADER, PH, shown, DISCLOSED)
    assert not suite.proof_verify(ours["pk"], _tamper(their_proof), HEADER, PH, shown, DISCLOSED)
