"""Benchmark of AnonCreds (PyPI ``anoncreds``, the Rust anoncreds-rs, CL signatures).

The peer our BBS presentations are compared with: a schema of 10 attributes, a
credential definition WITHOUT revocation support (our BBS credentials have no
revocation inside the proof either), one credential, then presentation create
and verify revealing 3 attributes (no predicates). Peers are the BBS SHA-256
figures for 10 messages / 3 disclosed from bench_bbs in the same run.

    .venv/bin/python scripts/bench/bench_anoncreds.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anoncreds
from anoncreds import (
    Credential,
    CredentialDefinition,
    CredentialOffer,
    CredentialRequest,
    Presentation,
    PresentationRequest,
    PresentCredentials,
    Schema,
)
from common import ANONCREDS_VERIFY, Result, measure, one_core, print_results

TITLE = "AnonCreds (anoncreds-rs via PyPI `anoncreds`)"
ABOUT = (
    "The established anonymous-credential peer: CL signatures over a schema of 10 "
    "attributes, credential definition **without revocation support** (like for "
    "like: our BBS proofs carry no revocation either), one issued credential, a "
    "presentation revealing 3 attributes (no predicates, no self-attested "
    "attributes). Verify is timed on the already-parsed presentation object "
    "(JSON parsing excluded, which favours AnonCreds). Peers are the BBS "
    "SHA-256 figures for 10 messages / 3 disclosed measured in the same run; "
    "the ratio is how many BBS operations one AnonCreds operation costs."
)

ATTRIBUTES = [f"attr{i}" for i in range(10)]
REVEALED = (0, 3, 6)  # the indexes bench_bbs discloses out of 10
ISSUER = "did:example:xcentre-bench"
SCHEMA_ID = f"{ISSUER}/anoncreds/v0/SCHEMA/bench/1.0"
CRED_DEF_ID = f"{ISSUER}/anoncreds/v0/CLAIM_DEF/bench/default"


def run(quick: bool = False) -> list[Result]:
    """Issue one credential, then time presentation create and verify."""
    rounds = 5 if quick else 30
    schema = Schema.create("bench", "1.0", ISSUER, ATTRIBUTES)
    start = time.perf_counter()
    cred_def, cred_def_private, key_proof = CredentialDefinition.create(
        SCHEMA_ID, schema, ISSUER, "default", "CL", support_revocation=False
    )
    cred_def_seconds = time.perf_counter() - start

    link_secret = anoncreds.create_link_secret()
    offer = CredentialOffer.create(SCHEMA_ID, CRED_DEF_ID, key_proof)
    request, request_meta = CredentialRequest.create(
        "bench-prover-entropy", None, cred_def, link_secret, "link-secret", offer
    )
    values = {name: f"value of {name}" for name in ATTRIBUTES}

    def issue() -> Credential:
        return Credential.create(cred_def, cred_def_private, offer, request, values)

    credential = issue().process(request_meta, link_secret, cred_def)

    referents = {f"revealed_{i}": {"name": ATTRIBUTES[i]} for i in REVEALED}
    pres_request = PresentationRequest.load(
        {
            "nonce": anoncreds.generate_nonce(),
            "name": "bench",
            "version": "1.0",
            "requested_attributes": referents,
            "requested_predicates": {},
        }
    )
    present = PresentCredentials()
    present.add_attributes(credential, *referents, reveal=True)
    schemas, cred_defs = {SCHEMA_ID: schema}, {CRED_DEF_ID: cred_def}

    def create() -> Presentation:
        return Presentation.create(pres_request, present, {}, link_secret, schemas, cred_defs)

    presentation = create()

    def verify() -> bool:
        return presentation.verify(pres_request, schemas, cred_defs)

    if not verify():
        raise RuntimeError("a fresh AnonCreds presentation did not verify")
    revealed = presentation.to_dict()["requested_proof"]["revealed_attrs"]
    if sorted(v["raw"] for v in revealed.values()) != sorted(values[ATTRIBUTES[i]] for i in REVEALED):
        raise RuntimeError("the presentation does not reveal the 3 requested attributes")

    case = "10 attributes, 3 revealed"
    results = [
        Result(
            id="anoncreds.cred_def",
            case="setup",
            operation="credential definition (no revocation)",
            value=cred_def_seconds * 1000,
            runs=1,
            note="one run: the safe-prime search makes it vary by seconds",
        ),
        Result.from_timing(
            "anoncreds.issue", case, "credential issue", measure(issue, max(5, rounds // 3)), peer="bbs.sha256.L10.sign"
        ),
        Result.from_timing(
            "anoncreds.create", case, "presentation create", measure(create, rounds), peer="bbs.sha256.L10.proof_gen"
        ),
        Result.from_timing(
            ANONCREDS_VERIFY, case, "presentation verify", measure(verify, rounds), peer="bbs.sha256.L10.proof_verify"
        ),
    ]
    with one_core() as pinned:
        if pinned:
            results.append(
                Result.from_timing(
                    "anoncreds.create.1core",
                    case,
                    "presentation create (1 core)",
                    measure(create, rounds),
                    peer="bbs.sha256.L10.proof_gen.1core",
                    note="process pinned to one CPU",
                )
            )
            results.append(
                Result.from_timing(
                    f"{ANONCREDS_VERIFY}.1core",
                    case,
                    "presentation verify (1 core)",
                    measure(verify, rounds),
                    peer="bbs.sha256.L10.proof_verify.1core",
                    note="process pinned to one CPU",
                )
            )
    return results


def main() -> None:
    print(f"anoncreds {anoncreds.library_version()} (peers from bench_bbs appear only under run_all.py)")
    print_results(run())


if __name__ == "__main__":
    main()
