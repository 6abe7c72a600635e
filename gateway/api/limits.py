"""Limits on what a request body may be, checked before anything parses it.

Two reasons. A body is read whole into memory before validation, so without a
size limit one client could make a gateway hold gigabytes. And JSON nested a
few ten thousand levels deep overflows the C stack of the JSON parser in a
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

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a body may have (the API needs fewer than 8)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimits:
    """ASGI middleware: refuse a body over `max_bytes` (413) or nested over `max_depth` (400).

    The body is read here, within the limit, and handed on unchanged; refusals
    have the gateway's error shape, `{"error", "reasons"}`.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        max_bytes: int = MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
