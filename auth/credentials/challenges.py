"""A verifier's sign-on challenges: sealed, not stored, so asking for one costs the verifier nothing.

A challenge's nonce carries what the verifier asked, sealed with an HMAC under a
key only the verifier holds:

    version (1) | expires_at (8, big-endian) | random (16) | requested attributes (bit i =
    schema attribute i; ceil(n/8) bytes) | HMAC-SHA256(key, context | the bytes before)[:16]

where the context names the verifier and the schema. Issuing a challenge stores
nothing, so a flood of requests costs only the one who sends it; it can never push
a real user's pending challenge out. A presentation brings the nonce back: the
verifier opens it (a seal that does not verify is a challenge it never made), checks
the expiry, verifies the proof, and only then spends the nonce in `UsedNonces`, so
only a presentation that verified takes a slot, and of two racing uses one wins.

The key lives in memory, by choice: the set of used nonces does too, and a key kept
across a restart would make every challenge of the last minute answerable once
more after it. A restart therefore voids every open challenge (its holder asks
again). Each gateway process has its own key: the process that issued a challenge
must be the one that receives its answer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Iterable

from .errors import CredentialError, PresentationError
from .nonces import UsedNonces
from .presentation import NONCE, REQUEST_TTL, PresentationRequest, request_attributes
from .schema import CredentialSchema

VERSION = 1
KEY_BYTES = 32
RANDOM_BYTES = 16
TAG_BYTES = 16
_HEAD = struct.Struct(">BQ")  # version, expires_at
_CONTEXT = b"xcentre-signon-challenge/v1"


class Challenges:
    """The presentation requests of one verifier: `issue` seals one; `open` and `spend` take its answer."""

    def __init__(
        self,
        schema: CredentialSchema,
        verifier: str,
        attributes: Iterable[str],
        *,
        key: bytes | None = None,
        ttl: int = REQUEST_TTL,
        used: UsedNonces | None = None,
    ) -> None:
        """Refuses (CredentialError) a misconfigured verifier: an unknown or never-disclosed attribute, a bad ttl."""
        self.schema = schema
        self.verifier = verifier
        self.attributes = request_attributes(schema, attributes)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise CredentialError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.ttl = ttl
        key = secrets.token_bytes(KEY_BYTES) if key is None else key
        if not isinstance(key, bytes) or len(key) < KEY_BYTES:
            raise CredentialError(f"a challenge key is at least {KEY_BYTES} random bytes")
        self._key = key
        self.used = UsedNonces() if used is None else used
        mask_bytes = (len(schema.attributes) + 7) // 8
        self._mask = sum(1 << schema.index_of(name) for name in self.attributes).to_bytes(mask_bytes, "big")
        self._length = _HEAD.size + RANDOM_BYTES + mask_bytes + TAG_BYTES
        self._context = b"".join(_framed(part) for part in (_CONTEXT, verifier.encode(), schema.header))
        self.issue()  # a verifier name or schema that cannot make a valid request fails here, at start

    def issue(self, *, now: int | None = None) -> PresentationRequest:
        """A fresh challenge for this verifier's attributes, valid for `ttl` seconds; nothing is stored."""
        now = int(time.time()) if now is None else int(now)
        expires_at = now + self.ttl
        body = _HEAD.pack(VERSION, expires_at) + secrets.token_bytes(RANDOM_BYTES) + self._mask
        try:
            return PresentationRequest(
                nonce=(body + self._seal(body)).hex(),
                verifier=self.verifier,
                attributes=self.attributes,
                expires_at=expires_at,
            )
        except PresentationError as exc:
            raise CredentialError(exc.reason) from None

    def open(self, nonce: object, *, now: int) -> PresentationRequest:
        """The request a nonce seals, if this verifier made it, it has not expired and was not answered yet.

        Refuses with PresentationError: "malformed" (not a nonce at all),
        "unknown_request" (not sealed by this verifier: forged, altered, another
        centre's, or made before a restart), "request_expired", "replayed".
        """
        if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
            raise PresentationError("malformed", "the nonce must be lowercase hex, as the sign-on request gave it")
        raw = bytes.fromhex(nonce)
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if len(raw) != self._length or not hmac.compare_digest(tag, self._seal(body)):
            raise PresentationError(
                "unknown_request",
                f"{self.verifier} did not issue this sign-on request (its "
                "seal does not verify: altered, made by another centre, or "
                "before this gateway restarted); ask for a new one",
            )
        version, expires_at = _HEAD.unpack_from(body)
        mask = int.from_bytes(body[_HEAD.size + RANDOM_BYTES :], "big")
        names = self.schema.names
        if version != VERSION or mask >> len(names):  # sealed by us, so only a change of schema gets here
            raise PresentationError(
                "unknown_request",
                "this sign-on request was made under another version of the protocol or schema; ask for a new one",
            )
        if expires_at < now or self.used.forgotten(expires_at):
            raise PresentationError(
                "request_expired", f"the sign-on request expired at {expires_at} (now {now}); ask for a new one"
            )
        if nonce in self.used:  # cheap: a replayed proof costs no verification
            raise PresentationError("replayed", _REPLAYED)
        return PresentationRequest(
            nonce=nonce,
            verifier=self.verifier,
            expires_at=expires_at,
            attributes=tuple(n for i, n in enumerate(names) if mask >> i & 1),
        )

    def spend(self, request: PresentationRequest, *, now: int) -> None:
        """Mark an opened request answered, once its proof verified; "replayed" for every use but the first."""
        self.used.spend(request.nonce, request.expires_at, now=now, replayed=_REPLAYED)

    def _seal(self, body: bytes) -> bytes:
        return hmac.new(self._key, self._context + body, hashlib.sha256).digest()[:TAG_BYTES]


_REPLAYED = "this sign-on request was already answered; a presentation is good for one sign-on only"


def _framed(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part
