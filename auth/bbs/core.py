"""The core operations of the draft (§3.6 Core operations, §3.7 proof subroutines).

Messages are already scalars here; the interface layer (``interface.py``) maps
octet messages to scalars and picks the generators. Sums of point multiples
are computed as one multi-scalar multiplication (``msm``); where the draft
writes a sum whose terms are folded differently for speed, the docstring says
so.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from py_arkworks_bls12381 import GT, G1Point, G2Point

from .ciphersuite import Ciphersuite
from .encoding import (
    R,
    ScalarInt,
    octets_to_proof,
    octets_to_pubkey,
    octets_to_signature,
    proof_to_octets,
    serialize,
    signature_to_octets,
    to_scalar,
)
from .errors import BBSError
from .generators import create_generators
from .hashing import i2osp
from .parallel import background
from .randomness import RandomScalars
from .utilities import calculate_domain, hash_to_scalar

BP2 = G2Point()  # the standard generator of G2


def msm(points: Sequence[G1Point], scalars: Sequence[int]) -> G1Point:
    """sum(points[i] * scalars[i]); the library silently truncates uneven lists."""
    if len(points) != len(scalars):
        raise AssertionError("msm: points and scalars differ in length")
    if not points:
        return G1Point.identity()
    return G1Point.multiexp_unchecked(list(points), [to_scalar(s % R) for s in scalars])


@lru_cache(maxsize=1024)
def cached_pubkey(pk: bytes) -> G2Point:
    """octets_to_pubkey, memoised: decompressing and subgroup-checking W costs ~0.2 ms
    and verifiers see the same few issuer keys again and again."""
    return octets_to_pubkey(pk)


def _B(suite: Ciphersuite, generators: Sequence[G1Point], domain: int, messages: Sequence[int]) -> G1Point:
    """B = P1 + Q_1 * domain + H_1 * msg_1 + ... + H_L * msg_L."""
    return msm([suite.P1, *generators], [1, domain, *messages])


def CoreSign(suite: Ciphersuite, SK: int, PK: bytes, header: bytes, messages: Sequence[int], api_id: bytes) -> bytes:
    """CoreSign (§3.6.1): A = B * 1/(SK + e), e derived deterministically."""
    L = len(messages)
    generators = create_generators(suite, L + 1, api_id)
    domain = calculate_domain(suite, PK, L, header, api_id)
    e = hash_to_scalar(
        suite, serialize([ScalarInt(SK), *map(ScalarInt, messages), ScalarInt(domain)]), api_id + b"H2S_"
    )
    if (SK + e) % R == 0:
        raise BBSError("SK + e is zero mod r")
    B = _B(suite, generators, domain, messages)
    A = B * to_scalar(pow(SK + e, -1, R))
    return signature_to_octets(A, e)


def CoreVerify(
    suite: Ciphersuite, PK: bytes, signature: bytes, header: bytes, messages: Sequence[int], api_id: bytes
) -> bool:
    """CoreVerify (§3.6.2): h(A, W + BP2 * e) * h(B, -BP2) == Identity_GT.

    Rewritten as h(A, W) * h(A * e - B, BP2) == 1 so the G2 side needs no
    multiplication and A * e - B is one msm.
    """
    A, e = octets_to_signature(signature)
    W = cached_pubkey(PK)
    L = len(messages)
    generators = create_generators(suite, L + 1, api_id)
    domain = calculate_domain(suite, PK, L, header, api_id)
    C = msm([A, suite.P1, *generators], [e, -1, -domain, *(-m for m in messages)])
    return GT.pairing_check([A, C], [W, BP2])


class InitResult(NamedTuple):
    """Output of ProofInit / ProofVerifyInit: (Abar, Bbar, D, T1, T2, domain)."""

    Abar: G1Point
    Bbar: G1Point
    D: G1Point
    T1: G1Point
    T2: G1Point
    domain: int


def ProofInit(
    suite: Ciphersuite,
    PK: bytes,
    A: G1Point,
    e: int,
    generators: Sequence[G1Point],
    random_scalars: Sequence[int],
    header: bytes,
    messages: Sequence[int],
    undisclosed_indexes: Sequence[int],
    api_id: bytes,
) -> InitResult:
    """ProofInit (§3.7.1): randomise the signature and commit to the hidden values."""
    r1, r2, e_tilde, r1_tilde, r3_tilde, *m_tilde = random_scalars
    L = len(messages)
    if len(m_tilde) != len(undisclosed_indexes):
        raise BBSError("wrong number of random scalars")
    H = generators[1:]
    domain = calculate_domain(suite, PK, L, header, api_id)
    B = _B(suite, generators, domain, messages)
    D = B * to_scalar(r2)
    Abar = A * to_scalar(r1 * r2 % R)
    Bbar = msm([D, Abar], [r1, -e])
    T1 = msm([Abar, D], [e_tilde, r1_tilde])
    T2 = msm([D, *(H[j] for j in undisclosed_indexes)], [r3_tilde, *m_tilde])
    return InitResult(Abar, Bbar, D, T1, T2, domain)


def ProofFinalize(
    init_res: InitResult,
    challenge: int,
    e_value: int,
    random_scalars: Sequence[int],
    undisclosed_messages: Sequence[int],
) -> bytes:
    """ProofFinalize (§3.7.2): the Schnorr responses, then proof_to_octets."""
    r1, r2, e_tilde, r1_tilde, r3_tilde, *m_tilde = random_scalars
    r3 = pow(r2, -1, R)
    e_hat = (e_tilde + e_value * challenge) % R
    r1_hat = (r1_tilde - r1 * challenge) % R
    r3_hat = (r3_tilde - r3 * challenge) % R
    m_hat = [(mt + m * challenge) % R for mt, m in zip(m_tilde, undisclosed_messages, strict=True)]
    return proof_to_octets([init_res.Abar, init_res.Bbar, init_res.D], [e_hat, r1_hat, r3_hat, *m_hat, challenge])


def ProofVerifyInit(
    suite: Ciphersuite,
    PK: bytes,
    Abar: G1Point,
    Bbar: G1Point,
    D: G1Point,
    e_hat: int,
    r1_hat: int,
    r3_hat: int,
    commitments: Sequence[int],
    c: int,
    generators: Sequence[G1Point],
    header: bytes,
    disclosed_messages: Sequence[int],
    disclosed_indexes: Sequence[int],
    undisclosed_indexes: Sequence[int],
    api_id: bytes,
) -> InitResult:
    """ProofVerifyInit (§3.7.3): recompute T1 and T2 from the responses.

    The draft's T2 = Bv * c + D * r3^ + sum(H_j * m^_j) with
    Bv = P1 + Q_1 * domain + sum(H_i * msg_i) is evaluated as a single msm
    over P1, Q_1, H_i, D, H_j with the factor c folded into the scalars.
    """
    L = len(disclosed_indexes) + len(commitments)
    Q_1, H = generators[0], generators[1:]
    domain = calculate_domain(suite, PK, L, header, api_id)
    T1 = msm([Bbar, Abar, D], [c, e_hat, r1_hat])
    T2 = msm(
        [suite.P1, Q_1, *(H[i] for i in disclosed_indexes), D, *(H[j] for j in undisclosed_indexes)],
        [c, domain * c, *(m * c for m in disclosed_messages), r3_hat, *commitments],
    )
    return InitResult(Abar, Bbar, D, T1, T2, domain)


def ProofChallengeCalculate(
    suite: Ciphersuite,
    init_res: InitResult,
    disclosed_messages: Sequence[int],
    disclosed_indexes: Sequence[int],
    ph: bytes,
    api_id: bytes,
) -> int:
    """ProofChallengeCalculate (§3.7.4): Fiat–Shamir challenge over everything public."""
    if len(ph) >= 1 << 64:
        raise BBSError("presentation header too long")
    c_arr: list = [len(disclosed_indexes)]
    for i, msg in zip(disclosed_indexes, disclosed_messages, strict=True):
        c_arr += [i, ScalarInt(msg)]
    c_arr += [init_res.Abar, init_res.Bbar, init_res.D, init_res.T1, init_res.T2, ScalarInt(init_res.domain)]
    c_octs = serialize(c_arr) + i2osp(len(ph), 8) + ph
    return hash_to_scalar(suite, c_octs, api_id + b"H2S_")


def CoreProofGen(
    suite: Ciphersuite,
    PK: bytes,
    signature: bytes,
    header: bytes,
    ph: bytes,
    messages: Sequence[int],
    disclosed_indexes: Sequence[int],
    api_id: bytes,
    calculate_random_scalars: RandomScalars,
) -> bytes:
    """CoreProofGen (§3.6.3). ``disclosed_indexes`` must be sorted, unique, in range."""
    A, e = octets_to_signature(signature)
    cached_pubkey(PK)  # reject a malformed PK before doing work
    L = len(messages)
    disclosed = set(disclosed_indexes)
    undisclosed_indexes = [j for j in range(L) if j not in disclosed]
    generators = create_generators(suite, L + 1, api_id)
    random_scalars = calculate_random_scalars(5 + len(undisclosed_indexes))
    init_res = ProofInit(suite, PK, A, e, generators, random_scalars, header, messages, undisclosed_indexes, api_id)
    challenge = ProofChallengeCalculate(
        suite, init_res, [messages[i] for i in disclosed_indexes], disclosed_indexes, ph, api_id
    )
    return ProofFinalize(init_res, challenge, e, random_scalars, [messages[j] for j in undisclosed_indexes])


def CoreProofVerify(
    suite: Ciphersuite,
    PK: bytes,
    proof: bytes,
    header: bytes,
    ph: bytes,
    disclosed_messages: Sequence[int],
    disclosed_indexes: Sequence[int],
    api_id: bytes,
) -> bool:
    """CoreProofVerify (§3.6.4). ``disclosed_indexes`` must be sorted and unique."""
    Abar, Bbar, D, e_hat, r1_hat, r3_hat, commitments, cp = octets_to_proof(proof)
    W = cached_pubkey(PK)
    if len(disclosed_messages) != len(disclosed_indexes):
        raise BBSError("number of disclosed messages and indexes differ")
    L = len(disclosed_indexes) + len(commitments)
    if disclosed_indexes and disclosed_indexes[-1] >= L:
        raise BBSError("disclosed index out of range for this proof")
    # h(Abar, W) * h(Bbar, -BP2) == Identity_GT, checked on a worker thread
    # while the challenge is recomputed here.
    pairing_ok = background(GT.pairing_check, [Abar, -Bbar], [W, BP2])
    disclosed = set(disclosed_indexes)
    undisclosed_indexes = [j for j in range(L) if j not in disclosed]
    generators = create_generators(suite, L + 1, api_id)
    init_res = ProofVerifyInit(
        suite,
        PK,
        Abar,
        Bbar,
        D,
        e_hat,
        r1_hat,
        r3_hat,
        commitments,
        cp,
        generators,
        header,
        disclosed_messages,
        disclosed_indexes,
        undisclosed_indexes,
        api_id,
    )
    challenge = ProofChallengeCalculate(suite, init_res, disclosed_messages, disclosed_indexes, ph, api_id)
    return challenge == cp and pairing_ok.result()
