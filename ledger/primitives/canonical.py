"""Canonical JSON: one spelling of a JSON value, for anything hashed, signed, compared or stored.

Keys sorted, no spaces (`,` and `:`), NaN and infinities refused, and every
non-ASCII character escaped (`ensure_ascii`, `"é"` is written `"\\u00e9"`). Escaping
is the choice because the text is then pure ASCII: the same bytes whatever
encoding a transport or a database applies, and any Python string serialises
(a lone surrogate too, which UTF-8 cannot encode). It is also what every signed
or stored spelling already was (session tokens, BBS presentation headers, usage
records, outbox payloads), so adopting it changed no byte already signed or
stored; the store's job requests, once written unescaped, are compared by value.

This is not RFC 8785 (JCS), which writes non-ASCII as UTF-8 and formats
floats differently; nothing here is hashed across implementations as JSON.
"""

from __future__ import annotations

import json
from typing import Any


class CanonicalError(ValueError):
    """A value JSON cannot carry: NaN or an infinity, a key that is not a string, bytes, an object."""


def canonical_json(value: Any) -> str:
    """The canonical JSON text of `value` (ASCII only); CanonicalError if it is not plain JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise CanonicalError(f"not plain JSON: {exc}") from None


def canonical_bytes(value: Any) -> bytes:
    """canonical_json as bytes (ASCII, so also UTF-8): what is hashed or signed."""
    return canonical_json(value).encode("ascii")
