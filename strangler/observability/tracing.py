"""OpenTelemetry tracing for every process, and W3C trace context when tracing is off.

With `traces_exporter = "none"` (the default) no span is recorded, but each hop still takes the
caller's trace id (or starts one) and passes it on in `traceparent`, so log lines can be joined
by trace id at no more cost than parsing one header. With "console" each finished span becomes
one log line (logger `strangler.spans`, JSON with the log format set to json); with "otlp" spans
go in batches over OTLP/HTTP to a collector (Jaeger, Tempo, an OpenTelemetry Collector).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
)

from strangler.observability.settings import ObservabilitySettings

__all__ = [
    "LogSpanExporter",
    "configure_tracing",
    "current_traceparent",
    "format_traceparent",
    "parse_traceparent",
    "start_span",
    "tracing_enabled",
]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()


def tracing_enabled() -> bool:
    return _enabled


class LogSpanExporter(SpanExporter):
    """The "console" exporter: one log line per finished span, in the process's log format."""

    def __init__(self) -> None:
        self._log = logging.getLogger("strangler.spans")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            parent = span.parent
            start, end = span.start_time or 0, span.end_time or 0
            self._log.info(
                "span %s",
                span.name,
                extra={
                    "span": {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": f"{ctx.trace_id:032x}",
                        "span_id": f"{ctx.span_id:016x}",
                        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
                        "links": [
                            {"trace_id": f"{link.context.trace_id:032x}"} for link in span.links
                        ],
                        "duration_ms": round((end - start) / 1e6, 3),
                        "status": span.status.status_code.name,
                        "attributes": dict(span.attributes or {}),
                    }
                },
            )
        return SpanExportResult.SUCCESS


def configure_tracing(service: str, settings: ObservabilitySettings) -> None:
    """Install the process's tracer provider; with exporter "none", none (spans stay no-ops)."""
    global _enabled, _tracer
    if settings.traces_exporter == "none":
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "process.pid": os.getpid()})
    )
    if settings.traces_exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(LogSpanExporter()))
    else:
        # Imported only when asked for: it brings protobuf and requests with it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("strangler")
    _enabled = True


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    """A W3C traceparent header as a remote span context; None when absent or malformed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))


def format_traceparent(span_context: SpanContext) -> str:
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def current_traceparent() -> str | None:
    """The traceparent a call made now should carry, or None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    return format_traceparent(span_context) if span_context.is_valid else None


def start_span(
    name: str,
    *,
    parent: SpanContext | None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    links: Sequence[SpanContext] = (),
    start_time: int | None = None,
) -> Span:
    """A span under `parent` (a new trace without one): recorded when tracing is on, else a
    non-recording span that only carries the ids on (the caller ends it either way)."""
    if _enabled:
        parent_context = (
            trace.set_span_in_context(NonRecordingSpan(parent), context.Context())
            if parent is not None
            else context.Context()
        )
        return _tracer.start_span(
            name,
            context=parent_context,
            kind=kind,
            attributes=attributes,
            links=[Link(link) for link in links],
            start_time=start_time,
        )
    return NonRecordingSpan(
        SpanContext(
            parent.trace_id if parent is not None else int.from_bytes(os.urandom(16), "big") or 1,
            int.from_bytes(os.urandom(8), "big") or 1,
            is_remote=False,
            trace_flags=parent.trace_flags if parent is not None else _SAMPLED,
        )
    )
