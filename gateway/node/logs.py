"""A gateway's log lines: plain text for a terminal, or one JSON object per line for a log collector.

JSON lines carry `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `msg` and `centre`,
plus `exc` when an exception is logged, so that every centre's lines can be merged and filtered
by field. Secrets never reach a log line in either format: callers log no secret, nothing
here adds a request's headers or body, and the credentials of a URL (a chain node's
user:password@, named by the errors of a node that is down) are left out of every line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


#: A URL's credentials (scheme://user:password@): a chain node's URL may carry them, and errors name the URL.
#: Up to the last '@' before the host: a password may hold an '@' (URL parsers split at the last one).
_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/?#]*@")


def without_credentials(text: str) -> str:
    """`text` with the user:password@ of every URL in it left out."""
    return _CREDENTIALS.sub(r"\1", text)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, without the credentials of any URL in the line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return without_credentials(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped by JSON)."""

    def __init__(self, centre: str | None = None) -> None:
        super().__init__()
        self.centre = centre

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": without_credentials(record.getMessage()),
            "centre": self.centre,
        }
        if record.exc_info:
            line["exc"] = without_credentials(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(
    log_format: str = "text", *, centre: str | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Route every logger of the process (the gateway's and uvicorn's) to one handler in `log_format`.

    Replaces the root logger's handlers, so a second call (a test, a restart in-process)
    does not print each line twice; returns the handler installed.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(centre) if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # theirs propagate to ours
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return handler
