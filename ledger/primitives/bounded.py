"""JSON another party sends, read within bounds: so many bytes at most, nested so deep at most.

Whoever sends the bytes chooses how many and how they nest, so neither may decide
what reading them costs. Size: an answer is collected a chunk at a time and
dropped as soon as it is larger than its reader takes. Depth: `json.loads`
recurses in C once per level of nesting, guarded only by Python's recursion
limit, which py_ecc (imported with web3) raises to 100,000 and py-evm to
12,288, past what the C stack holds: 70,000 levels (140 kB) crashed a thread
here with a segmentation fault, the whole process with it, instead of raising. So the nesting is
counted first, without parsing, and anything deeper than the reader expects is
refused unparsed.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
"""The deepest nesting of an answer read: a page of a decision log nests 5 levels (Cedar attributes that are
records, a few more), and a request body, which an answer may echo, at most 32."""

_ESCAPE = re.compile(rb"\\.", re.S)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class OverLimit(ValueError):
    """Bytes refused unparsed: more of them than the reader takes, or nested deeper."""


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in `body` (brackets inside strings do not count).

    Works on any bytes, JSON or not, without parsing them: what a parser would
    have to recurse through, at most.
    """
    # Escapes first, then strings: with no escapes left, each quote's match ends at the next quote, so both
    # passes are linear. (One pattern for strings with escapes rescans to the end from every quote of an
    # unclosed string: 32 kB of `"\\"\\"…` took 7 s.)
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def loads(body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(body)`, or OverLimit (unparsed) when it nests deeper than `max_depth`; ValueError if not JSON."""
    if json_depth(body) > max_depth:
        raise OverLimit(f"the answer is nested more than {max_depth} levels deep")
    return json.loads(body)


class Collected:
    """One answer's body, collected chunk by chunk up to `max_bytes`: OverLimit as soon as it is larger."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._body = bytearray()

    def declared(self, content_length: str | None) -> None:
        """Refuse at once an answer whose Content-Length says it is larger (the count is checked again as it comes)."""
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_bytes:
            raise self._too_large()

    def add(self, chunk: bytes) -> None:
        self._body += chunk
        if len(self._body) > self.max_bytes:
            raise self._too_large()

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    def json(self, max_depth: int = MAX_DEPTH) -> Any:
        """The body parsed (`loads`): OverLimit when nested deeper than `max_depth`, ValueError if it is not JSON."""
        return loads(self.body, max_depth)

    def _too_large(self) -> OverLimit:
        return OverLimit(f"the answer is larger than the {self.max_bytes} bytes read of it")
