"""Distributed generation of the supervisors' key: joint-Feldman with complaints.

Pedersen's DKG ("A threshold cryptosystem without a trusted party",
EUROCRYPT 1991): each of the n supervisors deals a random polynomial f_i of
degree t−1 with Feldman commitments A_ik = a_ik·G (on chain), and sends
every other supervisor j its share s_ij = f_i(j), encrypted to j's posted key
E_j. A recipient checks s_ij·G = Σ_k j^k·A_ik; a bad share is complained of,
and the dealer must reveal it on chain (where the contract checks it) or be
disqualified. Over the qualified dealers QUAL: Y = Σ A_i0 is the joint key,
x_j = Σ s_ij supervisor j's secret share, Y_j = Σ_i Σ_k j^k·A_ik its
verification key; x = Σ f_i(0) is never held by anyone, and any t of the x_j
determine it (Shamir).

Gennaro, Jarecki, Krawczyk and Rabin ("Secure distributed key generation for
discrete-log based cryptosystems", EUROCRYPT 1999; J. Cryptology 2007) show
that a rushing adversary can bias the distribution of Y in this protocol
(by choosing, after seeing the others' commitments, whether to get itself
disqualified). Their later "Secure applications of Pedersen's distributed key
generation protocol" (CT-RSA 2003) shows that the bias does not help against
schemes whose security reduces to the hardness of discrete logarithms in the
group; ElGamal encryption of T to Y, as used here, is one, so we keep the
simpler one-round protocol. The trust bound is the same as for GJKR: t
supervisors can decrypt, t−1 learn nothing.

A share travels encrypted to its recipient j with an ephemeral Diffie–Hellman
pad: k random, K = k·G, ct = s XOR keccak256("xcentre-dkg/1" ‖ compressed(k·E_j)
‖ uint256(i) ‖ uint256(j)); 128 bytes raw(K) ‖ ct per recipient, n of them in
recipient order (the dealer's own slot included). The pad has no MAC: a share
that decrypts to garbage simply fails the Feldman check, which is what a
complaint is for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_hash.auto import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.core import msm
from auth.bbs.encoding import R as ORDER
from auth.bbs.encoding import point_to_octets_E1, to_scalar
from ledger.primitives.hex import HexError, from_hex, to_hex

from .errors import GroupError
from .points import RAW_LENGTH, g1_from_raw, g1_raw, random_scalar, scalar32, uint256

DKG_TAG = b"xcentre-dkg/1"
MAX_COMMITTEE = 32
SLOT_LENGTH = RAW_LENGTH + 32  # raw(K) ‖ ct
_G = G1Point()
_IDENTITY = G1Point.identity()


def check_committee(n: int, t: int) -> None:
    """1 ≤ t ≤ n ≤ 32: t shares open, polynomials have degree t − 1."""
    for v in (n, t):
        if not isinstance(v, int) or isinstance(v, bool):
            raise GroupError("committee size and threshold are integers")
    if not 1 <= t <= n <= MAX_COMMITTEE:
        raise GroupError(f"need 1 ≤ threshold ≤ committee size ≤ {MAX_COMMITTEE}, got t={t}, n={n}")


def _party(i: object, what: str, n: int = MAX_COMMITTEE) -> int:
    if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= n:
        raise GroupError(f"{what} must be a supervisor index in 1..{n}, got {i!r:.40}")
    return i


def _secret(x: object, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 < x < ORDER:
        raise GroupError(f"{what} must be an integer in [1, r)")
    return x


def _scalar_from_hex(value: object, what: str) -> int:
    try:
        x = int.from_bytes(from_hex(value, size=32, what=what), "big")
    except HexError as exc:
        raise GroupError(str(exc)) from None
    return _secret(x, what)


@dataclass(frozen=True)
class EncryptionKey:
    """A supervisor's key for receiving shares: e secret, E = e·G posted on chain (raw)."""

    e: int
    E: G1Point

    @classmethod
    def new(cls) -> EncryptionKey:
        return cls.from_secret(random_scalar())

    @classmethod
    def from_secret(cls, e: int) -> EncryptionKey:
        e = _secret(e, "an encryption secret")
        return cls(e=e, E=_G * to_scalar(e))

    def raw(self) -> bytes:
        """E as the 96 raw bytes `Supervision.register` takes."""
        return g1_raw(self.E)

    def to_dict(self) -> dict[str, Any]:
        return {"e": to_hex(scalar32(self.e))}

    @classmethod
    def from_dict(cls, data: Any) -> EncryptionKey:
        if not isinstance(data, dict) or set(data) != {"e"}:
            raise GroupError('an encryption key is {"e": "0x…"}')
        return cls.from_secret(_scalar_from_hex(data["e"], "e"))


@dataclass(frozen=True)
class Dealer:
    """One supervisor's random polynomial f(z) = a_0 + a_1·z + … + a_{t−1}·z^{t−1}."""

    coefficients: tuple[int, ...]

    @classmethod
    def new(cls, t: int) -> Dealer:
        check_committee(t, t)
        return cls(tuple(random_scalar() for _ in range(t)))

    @property
    def t(self) -> int:
        return len(self.coefficients)

    def commitments(self) -> list[G1Point]:
        """Feldman's commitments [a_k·G]."""
        return [_G * to_scalar(a) for a in self.coefficients]

    def commitments_raw(self) -> bytes:
        """The commitments as `Supervision.deal` takes them: t × 96 raw bytes."""
        return b"".join(g1_raw(p) for p in self.commitments())

    def share_for(self, j: int) -> int:
        """s = f(j) mod r (Horner)."""
        j = _party(j, "a recipient", 1 << 64)
        s = 0
        for a in reversed(self.coefficients):
            s = (s * j + a) % ORDER
        return s

    def deal(self, i: int, encryption_keys: Sequence[G1Point]) -> bytes:
        """Dealer i's shares blob: every recipient's share, encrypted to its key, recipients 1..n in order."""
        n = len(encryption_keys)
        check_committee(n, self.t)
        _party(i, "the dealer", n)
        return b"".join(encrypt_share(self.share_for(j), i, j, E) for j, E in enumerate(encryption_keys, 1))

    def to_dict(self) -> dict[str, Any]:
        return {"coefficients": [to_hex(scalar32(a)) for a in self.coefficients]}

    @classmethod
    def from_dict(cls, data: Any) -> Dealer:
        if not isinstance(data, dict) or set(data) != {"coefficients"} or not isinstance(data["coefficients"], list):
            raise GroupError('a dealer is {"coefficients": ["0x…", …]}')
        coefficients = tuple(_scalar_from_hex(a, "a coefficient") for a in data["coefficients"])
        check_committee(len(coefficients), len(coefficients))
        return cls(coefficients)


def _pad(shared: G1Point, i: int, j: int) -> bytes:
    return keccak(DKG_TAG + point_to_octets_E1(shared) + uint256(i) + uint256(j))


def encrypt_share(s: int, i: int, j: int, E_j: G1Point) -> bytes:
    """Dealer i's share s for recipient j, encrypted to E_j: raw(K) ‖ (s XOR pad), 128 bytes."""
    if not isinstance(E_j, G1Point) or E_j == _IDENTITY:
        raise GroupError("a recipient's encryption key must be a G1 point other than the identity")
    plain = scalar32(s)
    k = to_scalar(random_scalar())
    pad = _pad(E_j * k, _party(i, "the dealer"), _party(j, "the recipient"))
    return g1_raw(_G * k) + bytes(a ^ b for a, b in zip(plain, pad, strict=True))


def decrypt_share(e_j: int, blob: bytes, i: int, j: int) -> int:
    """Recipient j's share from dealer i: `blob` is the dealer's whole shares blob (or j's 128-byte slot).

    GroupError when the slot is malformed or does not decrypt to a scalar:
    either way the recipient complains of dealer i.
    """
    e_j = _secret(e_j, "an encryption secret")
    i, j = _party(i, "the dealer"), _party(j, "the recipient")
    if not isinstance(blob, (bytes, bytearray)) or not blob or len(blob) % SLOT_LENGTH:
        raise GroupError(f"a shares blob is a whole number of {SLOT_LENGTH}-byte slots")
    blob = bytes(blob)
    if len(blob) > SLOT_LENGTH:
        if len(blob) < j * SLOT_LENGTH:
            raise GroupError(f"dealer {i}'s shares blob has no slot for recipient {j}")
        blob = blob[(j - 1) * SLOT_LENGTH : j * SLOT_LENGTH]
    K = g1_from_raw(blob[:RAW_LENGTH], what=f"dealer {i}'s ephemeral key for recipient {j}")
    pad = _pad(K * to_scalar(e_j), i, j)
    s = int.from_bytes(bytes(a ^ b for a, b in zip(blob[RAW_LENGTH:], pad, strict=True)), "big")
    if s >= ORDER:
        raise GroupError(f"dealer {i}'s share for recipient {j} does not decrypt to a scalar")
    return s


def parse_commitments(blob: bytes, t: int | None = None) -> list[G1Point]:
    """Dealer commitments from t × 96 raw bytes: A_0 must not be the identity (a later A_k may, as a zero
    coefficient)."""
    if not isinstance(blob, (bytes, bytearray)) or not blob or len(blob) % RAW_LENGTH:
        raise GroupError(f"commitments are a whole, non-zero number of {RAW_LENGTH}-byte points")
    count = len(blob) // RAW_LENGTH
    if t is not None and count != t:
        raise GroupError(f"expected {t} commitments, got {count}")
    check_committee(count, count)
    return [
        g1_from_raw(blob[k * RAW_LENGTH : (k + 1) * RAW_LENGTH], what=f"commitment A_{k}", allow_identity=k > 0)
        for k in range(count)
    ]


def _powers(j: int, count: int) -> list[int]:
    out, p = [], 1
    for _ in range(count):
        out.append(p)
        p = p * j % ORDER
    return out


def verify_share(commitments: Sequence[G1Point], j: int, s: int) -> bool:
    """Feldman's check s·G == Σ_k j^k·A_k; never raises."""
    try:
        if not commitments or not all(isinstance(a, G1Point) for a in commitments):
            return False
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < ORDER:
            return False
        _party(j, "the recipient", 1 << 64)
        return msm([_G, *commitments], [s, *(-p for p in _powers(j, len(commitments)))]) == _IDENTITY
    except (GroupError, ValueError, TypeError, OverflowError):
        return False


def public_key(qual_commitments: Iterable[Sequence[G1Point]]) -> G1Point:
    """Y = Σ_{i∈QUAL} A_i0."""
    heads = [commitments[0] for commitments in qual_commitments]
    if not heads:
        raise GroupError("no qualified dealer")
    return msm(heads, [1] * len(heads))


def verification_key(qual_commitments: Iterable[Sequence[G1Point]], j: int) -> G1Point:
    """Y_j = Σ_{i∈QUAL} Σ_k j^k·A_ik = x_j·G."""
    j = _party(j, "a supervisor")
    points: list[G1Point] = []
    scalars: list[int] = []
    for commitments in qual_commitments:
        points.extend(commitments)
        scalars.extend(_powers(j, len(commitments)))
    if not points:
        raise GroupError("no qualified dealer")
    return msm(points, scalars)


def secret_share(shares_received_from_qual: Iterable[int]) -> int:
    """x_j = Σ_{i∈QUAL} s_ij mod r."""
    return sum(shares_received_from_qual) % ORDER


def run_local(n: int, t: int) -> tuple[G1Point, list[int]]:
    """Every step of the DKG among n honest parties in one process (benchmark, tests): (Y, [x_1..x_n]).

    The same encodings as on chain: raw keys and commitments, encrypted share blobs; every
    recipient decrypts and Feldman-checks every share it gets.
    """
    check_committee(n, t)
    keys = [EncryptionKey.new() for _ in range(n)]
    posted_keys = [g1_from_raw(k.raw(), what="E") for k in keys]
    dealers = [Dealer.new(t) for _ in range(n)]
    deals = [(d.commitments_raw(), d.deal(i, posted_keys)) for i, d in enumerate(dealers, 1)]
    commitments = [parse_commitments(c, t) for c, _ in deals]
    xs = []
    for j, key in enumerate(keys, 1):
        received = []
        for i, (_, blob) in enumerate(deals, 1):
            s = decrypt_share(key.e, blob, i, j)
            if not verify_share(commitments[i - 1], j, s):
                raise GroupError(f"dealer {i}'s share for {j} fails the Feldman check")
            received.append(s)
        xs.append(secret_share(received))
    return public_key(commitments), xs
