"""Group signatures: sign–encrypt–prove over a BBS group credential.

In the style of Camenisch and Stadler ("Efficient group signature schemes for
large groups", CRYPTO 1997): a signature on a message is (1) a BBS proof of
knowledge of a group credential (draft-irtf-cfrg-bbs-signatures, CoreProofGen)
that discloses the project, the home, the revocation epoch and the expiry and
hides the member's secret sk; (2) an ElGamal encryption (C1, C2) = (r·G,
T + r·Y) of the member's tracing key T = sk·H_sk under the supervisors' joint
key Y; and (3) a proof that the encrypted T is the one in the credential:
R1 = r~·G and R2 = sk~·H_sk + r~·Y, where sk~ is the very blinding the BBS
proof uses for sk, so the BBS response m^_0 = sk~ + c·sk answers both. R1,
R2, C1, C2, Y and the message go into the BBS presentation header, hence into
the one Fiat–Shamir challenge c; the only extra response is r^ = r~ + c·r.
A verifier recomputes R1 = r^·G − c·C1 and R2 = m^_0·H_sk + r^·Y − c·C2
and runs the draft's CoreProofVerify: it learns the disclosed fields and
nothing else, and two signatures by one member share no bytes beyond them.
Only t of the n supervisors together can decrypt T (``opening``), and no
issuer can make a signature that opens to its member: that needs sk.

The signature's bytes (what travels, what its hash names on chain):
``0x01 ‖ key_id (8) ‖ raw C1 (96) ‖ raw C2 (96) ‖ r^ (32) ‖ u16 length ‖
canonical JSON of the disclosed fields ‖ BBS proof``; C1 is at [9, 105) and C2
at [105, 201), where the Supervision contract reads them.

Expiry and revocation are the caller's to check, against its clock and index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from eth_hash.auto import keccak
from py_arkworks_bls12381 import G1Point

from auth.bbs.core import CoreProofGen, CoreProofVerify, msm
from auth.bbs.encoding import (
    OCTET_POINT_LENGTH,
    OCTET_SCALAR_LENGTH,
    octets_to_scalar,
    point_to_octets_E1,
    to_scalar,
)
from auth.bbs.encoding import R as ORDER
from auth.bbs.hashing import i2osp
from auth.bbs.randomness import calculate_random_scalars
from ledger.primitives import bounded
from ledger.primitives.canonical import canonical_bytes

from .credential import (
    API_ID,
    DISCLOSED,
    HEADER,
    SUITE,
    GroupCredential,
    check_count,
    check_home,
    check_project,
    check_secret,
    disclosed_messages,
    h_sk,
    issuer_key_id,
)
from .errors import GroupError
from .points import RAW_LENGTH, g1_from_raw, g1_raw, random_scalar, scalar32

VERSION = 0x01
SIGNATURE_TAG = b"xcentre-group-signature/1"
ORDER_TAG = b"xcentre-order/1"
QUOTE_TAG = b"xcentre-quote/1"
KEY_ID_LENGTH = 8
C1_AT = 1 + KEY_ID_LENGTH  # 9
C2_AT = C1_AT + RAW_LENGTH  # 105
R_HAT_AT = C2_AT + RAW_LENGTH  # 201
LENGTH_AT = R_HAT_AT + OCTET_SCALAR_LENGTH  # 233
JSON_AT = LENGTH_AT + 2  # 235
#: Abar, Bbar, D; e^, r1^, r3^, m^_0 (sk, the one hidden message), c.
PROOF_LENGTH = 3 * OCTET_POINT_LENGTH + 5 * OCTET_SCALAR_LENGTH
MAX_LENGTH = 4096
_FIELDS = {"expires_at", "home", "project", "revocation_epoch"}
_G = G1Point()
_IDENTITY = G1Point.identity()


@dataclass(frozen=True)
class GroupSigned:
    """What a group signature shows: its disclosed fields, its ciphertext of T and its hash."""

    project: str
    home: str
    key_id: str
    revocation_epoch: int
    expires_at: int
    c1: G1Point
    c2: G1Point
    hash: bytes


class _Parsed(NamedTuple):
    signed: GroupSigned
    r_hat: int
    proof: bytes


def signature_hash(sig: bytes) -> bytes:
    """keccak256 of the signature's bytes: the 32 bytes records and openings name it by."""
    return keccak(bytes(sig))


def order_message(digest: bytes) -> bytes:
    """What a group signature over an order signs: its EIP-712 order digest, tagged."""
    return ORDER_TAG + _digest(digest)


def quote_message(digest: bytes) -> bytes:
    """What a group signature over a quote signs: the request digest, tagged."""
    return QUOTE_TAG + _digest(digest)


def _digest(digest: object) -> bytes:
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        raise GroupError("a digest is 32 bytes")
    return bytes(digest)


def _supervision_key(Y: object) -> G1Point:
    if not isinstance(Y, G1Point) or Y == _IDENTITY:
        raise GroupError("the supervision key must be a G1 point other than the identity")
    return Y


def _message(message: object) -> bytes:
    if not isinstance(message, (bytes, bytearray)):
        raise GroupError(f"the signed message must be bytes, got {type(message).__name__}")
    return bytes(message)


def _presentation_header(c1: G1Point, c2: G1Point, r1: G1Point, r2: G1Point, Y: G1Point, message: bytes) -> bytes:
    """The BBS presentation header: binds the ciphertext, the encryption proof's commitments, Y and the message."""
    points = b"".join(point_to_octets_E1(p) for p in (c1, c2, r1, r2, Y))
    return SIGNATURE_TAG + points + i2osp(len(message), 8) + message


def _fields(project: str, home: str, revocation_epoch: int, expires_at: int) -> bytes:
    return canonical_bytes(
        {"expires_at": expires_at, "home": home, "project": project, "revocation_epoch": revocation_epoch}
    )


def sign(cred: GroupCredential, sk: int, issuer_pk: bytes, supervision_key: G1Point, message: bytes) -> bytes:
    """A group signature on `message` by the holder of `cred` and `sk`, its T encrypted to `supervision_key`."""
    if not isinstance(cred, GroupCredential):
        raise GroupError("a GroupCredential is expected")
    sk = check_secret(sk)
    if issuer_key_id(issuer_pk) != cred.key_id:
        raise GroupError(f"the issuer key given is not the credential's key {cred.key_id}")
    Y = _supervision_key(supervision_key)
    message = _message(message)
    messages = cred.messages(sk)
    fields = _fields(cred.project, cred.home, cred.revocation_epoch, cred.expires_at)
    # The BBS proof's random scalars [r1, r2, e~, r1~, r3~, sk~] are drawn here, fresh
    # from the CSPRNG, because the encryption proof reuses sk~.
    blinds = calculate_random_scalars(6)
    sk_tilde = blinds[5]
    r, r_tilde = random_scalar(), random_scalar()
    H = h_sk()
    c1 = _G * to_scalar(r)
    c2 = msm([H, Y], [sk, r])
    r1 = _G * to_scalar(r_tilde)
    r2 = msm([H, Y], [sk_tilde, r_tilde])
    ph = _presentation_header(c1, c2, r1, r2, Y, message)

    def drawn(count: int) -> list[int]:
        if count != len(blinds):
            raise GroupError(f"the BBS proof asked for {count} random scalars, not {len(blinds)}")
        return blinds

    try:
        proof = CoreProofGen(
            SUITE, bytes(issuer_pk), cred.signature, HEADER, ph, messages, list(DISCLOSED), API_ID, drawn
        )
    except (ValueError, TypeError) as exc:
        raise GroupError(f"cannot sign with this credential: {exc}") from None
    c = int.from_bytes(proof[-OCTET_SCALAR_LENGTH:], "big")
    r_hat = (r_tilde + r * c) % ORDER
    sig = b"".join(
        [
            bytes([VERSION]),
            bytes.fromhex(cred.key_id),
            g1_raw(c1),
            g1_raw(c2),
            scalar32(r_hat),
            len(fields).to_bytes(2, "big"),
            fields,
            proof,
        ]
    )
    if len(sig) > MAX_LENGTH:
        raise GroupError(f"a group signature is at most {MAX_LENGTH} bytes")
    return sig


def _parse(sig: object) -> _Parsed:
    """Split a signature into its parts, checking every encoding; nothing is verified."""
    if not isinstance(sig, (bytes, bytearray)):
        raise GroupError(f"malformed group signature: bytes expected, got {type(sig).__name__}")
    sig = bytes(sig)
    if not JSON_AT <= len(sig) <= MAX_LENGTH:
        raise GroupError(f"malformed group signature: {len(sig)} bytes (it is {JSON_AT + PROOF_LENGTH}..{MAX_LENGTH})")
    if sig[0] != VERSION:
        raise GroupError(f"malformed group signature: version {sig[0]} (this is version {VERSION})")
    length = int.from_bytes(sig[LENGTH_AT:JSON_AT], "big")
    if len(sig) != JSON_AT + length + PROOF_LENGTH:
        raise GroupError(
            f"malformed group signature: {len(sig)} bytes, but its fields ({length} bytes) and a proof "
            f"({PROOF_LENGTH} bytes) make {JSON_AT + length + PROOF_LENGTH}"
        )
    text = sig[JSON_AT : JSON_AT + length]
    try:
        data = bounded.loads(text, max_depth=1)  # one flat object; nesting is refused unparsed
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise GroupError(f"the disclosed fields must be exactly {sorted(_FIELDS)}")
        project, home = check_project(data["project"]), check_home(data["home"])
        epoch = check_count(data["revocation_epoch"], "revocation_epoch")
        expires_at = check_count(data["expires_at"], "expires_at")
        if _fields(project, home, epoch, expires_at) != text:
            raise GroupError("the disclosed fields are not in canonical JSON")
        c1 = g1_from_raw(sig[C1_AT:C2_AT], what="C1")
        c2 = g1_from_raw(sig[C2_AT:R_HAT_AT], what="C2")
        r_hat = int.from_bytes(sig[R_HAT_AT:LENGTH_AT], "big")
        if r_hat >= ORDER:
            raise GroupError("r^ is not a scalar")
    except GroupError as exc:
        raise GroupError(f"malformed group signature: {exc}") from None
    except (ValueError, TypeError, RecursionError):
        raise GroupError("malformed group signature: the disclosed fields are not JSON") from None
    signed = GroupSigned(
        project=project,
        home=home,
        key_id=sig[1:C1_AT].hex(),
        revocation_epoch=epoch,
        expires_at=expires_at,
        c1=c1,
        c2=c2,
        hash=signature_hash(sig),
    )
    return _Parsed(signed, r_hat, sig[JSON_AT + length :])


def parse(sig: bytes) -> GroupSigned:
    """What a signature claims, without verifying it (for tools: a supervisor looking at a record)."""
    return _parse(sig).signed


def ciphertext(sig: bytes) -> tuple[G1Point, G1Point]:
    """(C1, C2), the encryption of the signer's tracing key, without verifying the signature."""
    signed = parse(sig)
    return signed.c1, signed.c2


def verify(
    sig: bytes,
    message: bytes,
    *,
    issuer_pk_for: Callable[[str, str], bytes | None],
    supervision_key: G1Point,
) -> GroupSigned:
    """The signature's disclosed fields if it signs `message`; GroupError (only) otherwise.

    ``issuer_pk_for(home, key_id)`` answers the home's issuer public key with
    that 16-hex id, or None when it knows none (what it raises is not caught:
    it is the caller's). Expiry and revocation epoch are not checked here.
    """
    parsed = _parse(sig)
    signed = parsed.signed
    message = _message(message)
    Y = _supervision_key(supervision_key)
    pk = issuer_pk_for(signed.home, signed.key_id)
    if pk is None:
        raise GroupError(f"unknown issuer key {signed.key_id} of {signed.home}")
    if not isinstance(pk, (bytes, bytearray)) or issuer_key_id(pk) != signed.key_id:
        raise GroupError(f"the key found for {signed.key_id} of {signed.home} is not that key")
    proof = parsed.proof
    try:
        # The proof is decoded in full (points checked) by CoreProofVerify; here only the two
        # scalars the encryption proof needs are read, at their fixed places.
        c = octets_to_scalar(proof[-OCTET_SCALAR_LENGTH:])
        m0_hat = octets_to_scalar(proof[-2 * OCTET_SCALAR_LENGTH : -OCTET_SCALAR_LENGTH])
    except ValueError:
        raise GroupError("malformed group signature: a proof scalar is out of range") from None
    r1 = msm([_G, signed.c1], [parsed.r_hat, -c])
    r2 = msm([h_sk(), Y, signed.c2], [m0_hat, parsed.r_hat, -c])
    ph = _presentation_header(signed.c1, signed.c2, r1, r2, Y, message)
    disclosed = disclosed_messages(signed.project, signed.home, signed.revocation_epoch, signed.expires_at)
    try:
        ok = CoreProofVerify(SUITE, bytes(pk), proof, HEADER, ph, disclosed, list(DISCLOSED), API_ID)
    except (ValueError, TypeError, OverflowError) as exc:
        raise GroupError(f"malformed group signature: {exc}") from None
    if not ok:
        raise GroupError("the group signature does not verify for this message")
    return signed
