"""Structured log lines: every line carries the process's service name, the request id and the
trace id of the work it was logged for.

`configure_logging` replaces the root logger's handlers (uvicorn is started with
`log_config=None`, so its lines come here too). JSON lines are for machines (one object per
line, the fields below plus anything passed with `extra=`); text lines are for a terminal and
end with the same ids, so a trace id read in either leads to the same spans.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from opentelemetry import trace

from strangler.observability.context import request_id, trace_ids, wire_ids
from strangler.observability.settings import ObservabilitySettings

__all__ = ["ContextFilter", "JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has: whatever else a record holds came in through `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "service", "request_id", "trace_id", "span_id", "color_message"}
)


class ContextFilter(logging.Filter):
    """Stamps each record with the service name and the ids of the work in progress."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        rid, ids = request_id.get(), trace_ids.get()
        if rid is None and ids is None:
            wire = wire_ids.get()
            if wire is not None:
                rid, traceparent = wire[0].decode("latin-1"), wire[1]
                ids = (traceparent[3:35].decode(), traceparent[36:52].decode())
        record.request_id = rid
        if getattr(record, "trace_id", None) is not None:
            return True  # logged for a unit of work other than the request's (a change event)
        if ids is None:
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                ids = (f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}")
        record.trace_id, record.span_id = ids if ids is not None else (None, None)
        return True


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": getattr(record, "service", None),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
        }
        line.update(_extra(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


# Line breaks and other control characters in a text line, written as escapes: a value from
# a request (a path, a header) must not be able to start a line that looks like another one.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)} | {
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(service)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        # An access line's message already says what its `http` fields hold.
        extra = {k: v for k, v in _extra(record).items() if k != "http"}
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        rid, tid = getattr(record, "request_id", None), getattr(record, "trace_id", None)
        if rid or tid:
            text += f" [request_id={rid or '-'} trace_id={tid or '-'}]"
        text = text.translate(_ESCAPES)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)  # the one multi-line part
        return text


def configure_logging(
    service: str, settings: ObservabilitySettings, stream: TextIO | None = None
) -> None:
    """Send every logger's lines through one handler with the context filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter(service))
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # The access line comes from strangler.observability.http, with the ids; uvicorn's would not.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO; the access lines of the called side already say it.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
