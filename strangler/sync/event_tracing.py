"""Change events in traces: the relay's publish and the other side's apply join the trace of
the write that made the event (its traceparent is kept in the outbox beside it).

Per event work happens only when it is wanted: spans when tracing is on, a DEBUG line per event
when that level is enabled. Otherwise the stored trace context is passed on untouched, so a
later hop with tracing on still joins the right trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind

from strangler.observability.tracing import (
    format_traceparent,
    parse_traceparent,
    start_span,
    tracing_enabled,
)
from strangler.sync.events import ApplyOutcome, ChangeEvent

__all__ = ["publishing", "record_applied"]

log = logging.getLogger("strangler.sync.events")


def _event_log(verb: str, event: ChangeEvent, outcome: str | None = None) -> None:
    parent = parse_traceparent(event.trace_context)
    extra: dict[str, object] = {
        "event": {
            "entity": event.entity,
            "key": event.key,
            "version": event.version,
            "op": event.op,
            "event_id": str(event.event_id),
            "outcome": outcome,
        }
    }
    if parent is not None:
        extra["trace_id"] = f"{parent.trace_id:032x}"
        extra["span_id"] = f"{parent.span_id:016x}"
    log.debug("%s %s:%s v%s", verb, event.entity, event.key, event.version, extra=extra)


@contextmanager
def publishing(entity: str, events: list[ChangeEvent]) -> Iterator[list[ChangeEvent]]:
    """Around one relay batch: the events to send, each carrying its publish span's context.

    With tracing on, the batch gets a span of its own (linked to every event's trace), current
    while the batch is sent, and each event a `relay.publish` span under its write's trace.
    """
    if log.isEnabledFor(logging.DEBUG):
        for event in events:
            _event_log("relaying", event)
    if not tracing_enabled():
        yield events
        return
    parents = [parse_traceparent(e.trace_context) for e in events]
    batch = start_span(
        f"relay.deliver {entity}",
        parent=None,
        kind=SpanKind.PRODUCER,
        attributes={"messaging.batch.message_count": len(events)},
        links=[p for p in parents if p is not None],
    )
    spans: list[Span] = []
    sent: list[ChangeEvent] = []
    for event, parent in zip(events, parents, strict=True):
        if parent is None:
            sent.append(event)
            continue
        span = start_span(
            f"relay.publish {entity}",
            parent=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "entity.key": event.key,
                "entity.version": event.version,
                "change.op": event.op,
            },
            links=[batch.get_span_context()],
        )
        spans.append(span)
        sent.append(
            event.model_copy(update={"trace_context": format_traceparent(span.get_span_context())})
        )
    token = context.attach(trace.set_span_in_context(batch))
    try:
        yield sent
    finally:
        context.detach(token)
        for span in spans:
            span.end()
        batch.end()


def record_applied(
    entity: str,
    events: Sequence[ChangeEvent],
    outcomes: Sequence[ApplyOutcome],
    started_ns: int,
) -> None:
    """After a batch committed on this side: one `sync.apply` span per traced event, under the
    trace of the write that made it (and linked to the batch's request)."""
    debug = log.isEnabledFor(logging.DEBUG)
    if not debug and not tracing_enabled():
        return
    by_id = {o.event_id: o for o in outcomes}
    batch = trace.get_current_span().get_span_context()
    ended = time.time_ns()
    for event in events:
        outcome = by_id.get(event.event_id)
        verdict = outcome.outcome if outcome is not None else "unanswered"
        if debug:
            _event_log("applied" if verdict == "applied" else verdict, event, verdict)
        parent = parse_traceparent(event.trace_context)
        if parent is None or not tracing_enabled():
            continue
        span = start_span(
            f"sync.apply {entity}",
            parent=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "entity.key": event.key,
                "entity.version": event.version,
                "change.op": event.op,
                "sync.outcome": verdict,
            },
            links=[batch] if batch.is_valid else [],
            start_time=started_ns,
        )
        span.end(end_time=ended)
