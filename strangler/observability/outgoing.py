"""Trace context and request id on the calls a process makes (an httpx request hook)."""

from __future__ import annotations

import httpx

from strangler.observability.context import request_id
from strangler.observability.tracing import current_traceparent

__all__ = ["propagate_context"]


def propagate_context(request: httpx.Request) -> None:
    """Carry the current trace (W3C `traceparent`) and request id to the called side."""
    traceparent = current_traceparent()
    if traceparent is not None:
        request.headers["traceparent"] = traceparent
    rid = request_id.get()
    if rid is not None and "x-request-id" not in request.headers:
        request.headers["x-request-id"] = rid
