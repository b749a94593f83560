"""The observing middleware of an app: request id, trace ids, metrics and the access line.

With tracing on, the server span is FastAPI's own (its native OpenTelemetry support, which
also traces dependencies, the endpoint and serialization); with tracing off, a non-recording
span carries the caller's trace id (or a new one) so log lines and outgoing calls still share it.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: it wraps `send` only to read the status
and add `X-Request-ID`, so a streamed body is not buffered and the endpoint runs in the same
context (the ids set here are the ones its log lines and outgoing calls carry).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Response
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strangler.db import Sessions
from strangler.observability.context import new_request_id, request_id, trace_ids, valid_request_id
from strangler.observability.metrics import AppMetrics
from strangler.observability.settings import ObservabilitySettings
from strangler.observability.tracing import parse_traceparent, start_span, tracing_enabled
from strangler.problems import Problem, problem_responses
from strangler.sync.tables import SyncTables

__all__ = ["ObservedApp", "install_observability"]

access_log = logging.getLogger("strangler.access")

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_GONE = (asyncio.CancelledError, ClientDisconnect)


class ObservedApp:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: AppMetrics,
        access_log_enabled: bool = True,
        access_log_internal: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log_enabled = access_log_enabled
        self.access_log_internal = access_log_internal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid_header: bytes | None = None
        traceparent: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid_header = value
            elif name == b"traceparent":
                traceparent = value
        rid = valid_request_id(rid_header.decode("latin-1") if rid_header else None)
        rid = rid or new_request_id()
        method: str = scope["method"]
        # With tracing on, FastAPI's own telemetry has started the server span (from the
        # caller's traceparent) before any middleware runs: take its ids, make no second one.
        span = trace.get_current_span()
        owned = not (tracing_enabled() and span.get_span_context().is_valid)
        if owned:
            span = start_span(
                method,
                parent=parse_traceparent(traceparent),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )
        span_context = span.get_span_context()
        ids = (f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}")
        attached = context.attach(trace.set_span_in_context(span))
        rid_token = request_id.set(rid)
        ids_token = trace_ids.set(ids)
        status = 0
        rid_bytes = rid.encode()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid_bytes)]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_observed)
        except BaseException as exc:
            if status == 0:
                # No answer started: a client that went away, or the app failed outright
                # (the server then answers 500 itself).
                status = 499 if isinstance(exc, _GONE) else 500
            if owned:
                span.record_exception(exc)
            raise
        finally:
            try:
                status = status or 499  # returned without answering: the client was gone
                self._finish(scope, span, owned, method, status, time.perf_counter() - started)
            finally:
                trace_ids.reset(ids_token)
                request_id.reset(rid_token)
                context.detach(attached)

    def _finish(
        self, scope: Scope, span: Span, owned: bool, method: str, status: int, elapsed: float
    ) -> None:
        route = scope.get("route")
        template: str = getattr(route, "path", None) or "unmatched"
        if owned:
            span.update_name(f"{method} {template}")
            span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        label = method if method in _KNOWN_METHODS else "other"  # the label set stays bounded
        self.metrics.observe(label, template, status, elapsed)
        if self.access_log_enabled:
            # The target as the client sent it, still percent-encoded: a decoded path could
            # carry a line break into a text log line.
            raw: bytes = scope.get("raw_path") or scope["path"].encode()
            query: bytes = scope.get("query_string", b"")
            target = (raw + (b"?" + query if query else b"")).decode("latin-1")
            access_log.log(
                logging.INFO if self.access_log_internal else _access_level(template, status),
                "%s %s %d %.1f ms",
                method,
                target,
                status,
                elapsed * 1000,
                extra={
                    "http": {
                        "method": method,
                        "target": target,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                },
            )


_MACHINE_ROUTES = ("/internal/", "/ready")
"""Routes that processes call on each other all the time (the relay's outbox polls and
deliveries, the proxy's sync-position polls, metric scrapes, readiness polls)."""


def _access_level(route: str, status: int) -> int:
    """INFO for requests people send; DEBUG for the machines' own calls that went well, which
    would otherwise drown `strangler up`'s terminal (hundreds of lines a minute).
    `STRANGLER_ACCESS_LOG_INTERNAL=true` (or `STRANGLER_LOG_LEVEL=DEBUG`) shows them; a
    failed one is always INFO."""
    if status < 400 and route.startswith(_MACHINE_ROUTES):
        return logging.DEBUG
    return logging.INFO


def _metrics_reader(tokens: tuple[str, ...]) -> Callable[..., None]:
    def require(authorization: Annotated[str | None, Header()] = None) -> None:
        if not tokens:
            raise Problem(
                401, "Metrics are off here: set the metrics token (or the sync token) setting."
            )
        scheme, _, token = (authorization or "").partition(" ")
        given = token.encode()
        # every token compared, in constant time each, whichever matches
        matched = [hmac.compare_digest(given, t.encode()) for t in tokens]
        if scheme.lower() != "bearer" or not any(matched):
            raise Problem(
                401,
                "The metrics need 'Authorization: Bearer <metrics token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require


def install_observability(
    app: FastAPI,
    sessions: Sessions,
    sync_tables: Mapping[str, SyncTables],
    *,
    metrics_token: str | None,
    sync_token: str | None,
    settings: ObservabilitySettings | None = None,
) -> AppMetrics:
    """Observe every request of `app` and serve its metrics at `/internal/metrics`.

    The metrics need a token like the rest of `/internal`: the proxy sends every path no
    capability claims to the monolith, so an open endpoint would be open to the world. The
    metrics token reads metrics only, so a scraper holds no key to the sync API's writes; the
    sync token is accepted too, for tools that hold it anyway.
    """
    settings = settings or ObservabilitySettings()
    metrics = AppMetrics()
    metrics.watch_database(sessions, sync_tables)
    app.add_middleware(
        ObservedApp,
        metrics=metrics,
        access_log_enabled=settings.access_log,
        access_log_internal=settings.access_log_internal,
    )
    reader = _metrics_reader(tuple(t for t in (metrics_token, sync_token) if t))
    router = APIRouter(tags=["observability"], responses=problem_responses(401))

    @router.get(
        "/internal/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        summary="Prometheus metrics of this app (metrics token or sync token)",
        dependencies=[Depends(reader)],
    )
    def app_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.include_router(router)
    return metrics
