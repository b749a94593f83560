"""The request id and trace id of the work in progress, for log lines.

Context variables, set once per request by the HTTP middleware (or the proxy's request path)
and per event by the relay, read only when a line is logged, so an unlogged request pays one
`ContextVar.set` for each.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

__all__ = [
    "REQUEST_ID_PATTERN",
    "new_request_id",
    "request_id",
    "trace_ids",
    "valid_request_id",
    "wire_ids",
]

request_id: ContextVar[str | None] = ContextVar("strangler_request_id", default=None)
trace_ids: ContextVar[tuple[str, str] | None] = ContextVar("strangler_trace_ids", default=None)
"""(trace id, span id) in lower-case hex, as W3C trace context writes them."""
wire_ids: ContextVar[tuple[bytes, bytes] | None] = ContextVar("strangler_wire_ids", default=None)
"""(request id, traceparent) as the proxy forwards them, undecoded: its request path pays one
`set`, and a log line decodes them only when one is written."""

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return os.urandom(16).hex()


def valid_request_id(value: str | None) -> str | None:
    """The caller's request id if it is safe to log and echo back, else None."""
    if value is not None and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return None
