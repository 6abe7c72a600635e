"""Limits on what a request may be, checked before anything parses its body.

The head (target and headers) is bounded because the HTTP parser takes any length,
and a URL the gateway builds (a redirect's Location) carries the request's Host
and path: a front reads its back's answers (gateway.api.fronts), and is never
handed one too long for it to read.

The body, for two reasons. A body is read whole into memory before validation,
so without a size limit one client could make a gateway hold gigabytes. And JSON
nested a few ten thousand levels deep overflows the C stack of the JSON parser in a
server thread (py_ecc and py-evm raise Python's recursion limit to 100,000 and
12,288, so the parser's own guard comes too late): the whole gateway process
dies with a segmentation fault. No body of this API is nested more than a few
levels, so anything deeper is refused unparsed (`ledger.primitives.bounded`,
which the clients of a gateway use for its answers too).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ledger.primitives.bounded import json_depth

MAX_BODY_BYTES = 1 << 20
"""The largest request body a gateway reads (a presentation is a few KiB, a job far less)."""

MAX_HEAD_BYTES = 64 * 1024
"""The largest request head a gateway serves: target, header names and values (a sign-on's are under 2 KiB)."""

PASSED_ON_SLACK = 1024
"""What a front may add to a head it passes on to its back (its Host, the client and scheme, Content-Length)."""

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a body may have (the API needs fewer than 8)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestLimits:
    """ASGI middleware: refuse a head over `max_head` (431), a body over `max_bytes` (413) or nested over
    `max_depth` (400).

    The body is read here, within the limit, and handed on unchanged; refusals
    have the gateway's error shape, `{"error", "reasons"}`.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        max_bytes: int = MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
        max_head: int = MAX_HEAD_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_head = max_head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _head_size(scope) > self.max_head:
            await _refuse(send, 431, f"request head too large: at most {self.max_head} bytes of target and headers")
            return
        too_large = f"request body too large: at most {self.max_bytes} bytes"
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, too_large)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _refuse(send, 413, too_large)
                return
            if not message.get("more_body", False):
                break
        if json_depth(bytes(body)) > self.max_depth:
            await _refuse(send, 400, f"request body is nested more than {self.max_depth} levels deep")
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _head_size(scope: Scope) -> int:
    """The bytes of a request's target and headers, as the client sent them (near enough: separators counted)."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
    return target + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


async def _refuse(send: Send, status: int, error: str) -> None:
    payload = json.dumps({"error": error, "reasons": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
