"""The per-request path of the proxy: decide, forward, stream back, maybe shadow or fall back.

Kept lean on purpose: everything that can be computed at config load lives in the compiled
config (runtime.py); here it is lookups, one header pass, and streaming. Bodies stream both
ways; only a read that may need to be replayed on the monolith (fallback) is buffered, within
the body limit, and only a shadowed response keeps a capped copy for the comparison.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from proxy.body import BodyReader, BodyTooLarge, ClientGone
from proxy.decision import READ_METHODS, Decision, decide, subject_of
from proxy.exchange import FAILOVER_STATUSES, UpstreamFailure, call_upstream
from proxy.fence import WriteFence, WriteFences
from proxy.headers import (
    HEADER_BYTES_LIMIT,
    HEADER_COUNT_LIMIT,
    IncomingHeaders,
    downstream_headers,
    is_trusted,
    request_id_of,
    traceparent_of,
    upstream_headers,
)
from proxy.metrics import ProxyMetrics
from proxy.paths import BadPath, normalise_path
from proxy.runtime import CapabilityRoute, CompiledConfig, RoutingState, Upstream
from proxy.ryw import ReadYourWrites
from proxy.shadow import ShadowJob, ShadowRecorder
from proxy.upstream_client import UpstreamAnswer
from strangler.observability.context import wire_ids
from strangler.observability.tracing import (
    format_traceparent,
    parse_traceparent,
    start_span,
    tracing_enabled,
)
from strangler.phases import Side
from strangler.problems import problem_response

__all__ = ["Forwarder"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("strangler.proxy")

_DEFAULT_ROUTE = "(default)"


class _CutOff(Exception):
    """The upstream failed after the response had started."""


class _Passage:
    """One write's way through a fence: left once, when the upstream answered or at the end."""

    __slots__ = ("_fence", "_left")

    def __init__(self, fence: WriteFence) -> None:
        self._fence = fence
        self._left = False

    def leave(self) -> None:
        if not self._left:
            self._left = True
            self._fence.leave()


class Forwarder:
    """The ASGI handler for every proxied request."""

    def __init__(
        self,
        state: RoutingState,
        shadow: ShadowRecorder,
        metrics: ProxyMetrics,
        admin_token: str | None,
        fences: WriteFences,
        ryw: ReadYourWrites,
    ) -> None:
        self._state = state
        self._fences = fences
        self._ryw = ryw
        self._shadow = shadow
        self._metrics = metrics
        self._admin_token = admin_token.encode() if admin_token else None
        if not tracing_enabled():  # decided once: the process's tracer is set before the app
            self._route = self._forward  # type: ignore[method-assign]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_done = asyncio.Event()
        task = asyncio.current_task()
        flags = {"finishing": False, "disconnected": False}

        async def watch_disconnect() -> None:
            await body_done.wait()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not flags["finishing"] and task is not None:
                        flags["disconnected"] = True
                        task.cancel()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await self._handle(scope, receive, send, body_done, flags)
        except asyncio.CancelledError:
            if not flags["disconnected"]:
                raise
            if task is not None:
                task.uncancel()
        except ClientGone:
            pass
        finally:
            watcher.cancel()

    def _forced_side(self, incoming: IncomingHeaders) -> Side | None:
        if incoming.target is None or incoming.admin_token is None or self._admin_token is None:
            return None
        if not hmac.compare_digest(incoming.admin_token, self._admin_token):
            return None
        try:
            return Side(incoming.target.decode("ascii").strip().lower())
        except ValueError:
            return None

    @staticmethod
    def _sticky_key(
        route: CapabilityRoute, incoming: IncomingHeaders, cookie_name: str
    ) -> tuple[str, str | None]:
        """The user's stickiness key, and a new cookie value to set when one was made up."""
        known = Forwarder._known_keys(route, incoming, cookie_name)
        if known:
            return known[0], None
        made = uuid.uuid4().hex
        return f"cookie:{made}", made

    @staticmethod
    def _known_keys(
        route: CapabilityRoute, incoming: IncomingHeaders, cookie_name: str
    ) -> list[str]:
        """The keys this user may have been pinned under, without making one up."""
        keys = []
        if route.policy.sticky_key == "subject":
            subject = subject_of(incoming.authorization)
            if subject is not None:
                keys.append(f"sub:{subject}")
        # Both read as an nginx edge's strangler.js reads them (proxy/decision.py): more than
        # 256 bytes, or not readable alike by both edges, is no key.
        cookie = route.policy.sticky_cookie(incoming.cookie, cookie_name)
        if cookie is not None:
            keys.append(f"cookie:{cookie}")
        return keys

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body_done: asyncio.Event,
        flags: dict[str, bool],
    ) -> None:
        compiled = self._state.current
        incoming = IncomingHeaders.parse(scope["headers"])
        if incoming.size > HEADER_BYTES_LIMIT or len(incoming.raw) > HEADER_COUNT_LIMIT:
            body_done.set()
            await self._problem(
                scope,
                receive,
                send,
                431,
                f"The request headers are too large: at most {HEADER_COUNT_LIMIT} fields and "
                f"{HEADER_BYTES_LIMIT // 1024} KiB in all are forwarded.",
            )
            return
        if scope.get("http_version") == "1.1" and len(incoming.hosts) != 1:
            body_done.set()
            await self._problem(
                scope, receive, send, 400, "An HTTP/1.1 request needs exactly one Host header."
            )
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        try:
            path = normalise_path(raw_path.split(b"?", 1)[0])
        except BadPath as exc:
            body_done.set()
            await self._problem(scope, receive, send, 400, f"The request path was refused: {exc}.")
            return
        method: str = scope["method"]
        if method in READ_METHODS:
            await self._route(scope, receive, send, body_done, flags, compiled, path, incoming)
            return
        scoped = compiled.write_scope(path)
        if scoped is None:
            await self._route(scope, receive, send, body_done, flags, compiled, path, incoming)
            return
        fence = self._fences.of(scoped.policy.name)
        if not await fence.admit():
            body_done.set()
            self._metrics.fence_refusals.labels(scoped.policy.name).inc()
            await self._problem(
                scope,
                receive,
                send,
                503,
                f"Writes that change {scoped.policy.name} are held while they move sides, "
                "and this one waited past the bound; retry in a moment.",
                headers={"Retry-After": "1"},
            )
            return
        passage = _Passage(fence)
        try:
            # A held write goes where the config says once the fence opens: re-read it.
            compiled = self._state.current
            scoped = compiled.capabilities.get(scoped.policy.name, scoped)
            await self._route(
                scope, receive, send, body_done, flags, compiled, path, incoming, scoped, passage
            )
        finally:
            passage.leave()

    async def _route(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body_done: asyncio.Event,
        flags: dict[str, bool],
        compiled: CompiledConfig,
        path: str,
        incoming: IncomingHeaders,
        write_scope: CapabilityRoute | None = None,
        passage: _Passage | None = None,
    ) -> None:
        """`_forward` inside a server span (with tracing off, `__init__` binds `_route` to
        `_forward` itself: the request path then makes no span and asks nothing)."""
        span = start_span(
            scope["method"],
            parent=parse_traceparent(incoming.traceparent),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": path},
        )
        try:
            await self._forward(
                scope,
                receive,
                send,
                body_done,
                flags,
                compiled,
                path,
                incoming,
                write_scope,
                passage,
                span,
            )
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end()

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body_done: asyncio.Event,
        flags: dict[str, bool],
        compiled: CompiledConfig,
        path: str,
        incoming: IncomingHeaders,
        write_scope: CapabilityRoute | None = None,
        passage: _Passage | None = None,
        span: Span | None = None,
    ) -> None:
        """Decide the side, forward, stream the answer back; shadow or fall back if due.

        `write_scope` is the capability a write changes; with a sync running, its user is
        pinned to the side that took it (read-your-writes). `span` is the request's when
        tracing is on: the upstreams get its context, so their spans are its children.
        """
        started = time.perf_counter()
        options = compiled.config.proxy
        method: str = scope["method"]
        route = compiled.match(path)
        cookie_to_set: str | None = None
        pin_key: str | None = None
        if write_scope is not None and write_scope.policy.routing.sync is not None:
            pin_key, cookie_to_set = self._sticky_key(write_scope, incoming, options.sticky_cookie)
        if route is None:
            decision = Decision(primary=Side.MONOLITH, shadow=None, fallback_to_monolith=False)
            primary = compiled.default
            label = _DEFAULT_ROUTE
        else:
            forced = self._forced_side(incoming)
            sticky: str | None = None
            is_read = method in READ_METHODS
            name = route.policy.name
            pinned_to: Side | None = None
            if is_read and forced is None:
                if route.policy.splits_reads:
                    sticky, cookie_to_set = self._sticky_key(route, incoming, options.sticky_cookie)
                    pinned_to = self._ryw.side_for(name, sticky)
                elif self._ryw.has_pins(name):
                    for key in self._known_keys(route, incoming, options.sticky_cookie):
                        pinned_to = self._ryw.side_for(name, key)
                        if pinned_to is not None:
                            break
            if pinned_to is not None:
                # The user's last write may not have reached the other side: read it where it
                # was taken, uncompared, and never from a side that may be stale.
                decision = Decision(primary=pinned_to, shadow=None, fallback_to_monolith=False)
                self._metrics.pinned_reads.labels(name, pinned_to.value).inc()
            else:
                decision = decide(route.policy, method, sticky, forced)
            primary = route.upstream(decision.primary)
            label = name

        content_length: int | None = None
        if incoming.content_length is not None:
            try:
                content_length = int(incoming.content_length)
            except ValueError:
                content_length = -1
            if content_length < 0:
                body_done.set()
                await self._problem(scope, receive, send, 400, "Content-Length is not a number.")
                return
            if content_length > options.body_limit_bytes:
                body_done.set()
                await self._problem(
                    scope,
                    receive,
                    send,
                    413,
                    f"The request body is {content_length} bytes; the limit is "
                    f"{options.body_limit_bytes}.",
                )
                return
        has_body = incoming.chunked or bool(content_length)
        reader = BodyReader(receive, options.body_limit_bytes, body_done)

        query: bytes = scope.get("query_string", b"")
        target = path.encode() + (b"?" + query if query else b"")
        peer = scope.get("client")
        peer_host = peer[0] if peer else None
        request_id = request_id_of(incoming)
        if span is None:
            traceparent = traceparent_of(incoming)
        else:
            traceparent = format_traceparent(span.get_span_context()).encode()
            span.update_name(f"{method} {label}")
            span.set_attribute("strangler.upstream", primary.name)
        # For log lines only, decoded when one is written: uvicorn runs each request in a task
        # of its own, so this needs no reset.
        wire_ids.set((request_id, traceparent))
        headers = upstream_headers(
            incoming,
            peer=peer_host,
            scheme=scope.get("scheme", "http"),
            trusted_peer=is_trusted(peer_host, compiled.trusted),
            request_id=request_id,
            traceparent=traceparent,
        )
        fallback = route.monolith if route is not None and decision.fallback_to_monolith else None

        content: bytes | AsyncIterator[bytes] | None
        try:
            if not has_body:
                content = None
                body_done.set()
            elif fallback is not None or method in READ_METHODS:
                content = await reader.buffer()  # replayable on the monolith
            else:
                content = reader.stream()
            # One deadline per upstream call, from its start to the answer's last byte: a
            # trickling upstream must not get total_timeout for its head and again for its body.
            clock = asyncio.get_running_loop().time
            deadline = clock() + primary.config.total_timeout
            outcome = await call_upstream(
                self._metrics, primary, method, target, headers, content, body_done
            )
        except BodyTooLarge:
            await self._problem(
                scope,
                receive,
                send,
                413,
                f"The request body exceeds the limit of {options.body_limit_bytes} bytes.",
            )
            return

        answered_by = primary
        fallback_reason: str | None = None
        if isinstance(outcome, UpstreamFailure) and fallback is not None:
            fallback_reason = outcome.reason
            self._metrics.fallbacks.labels(label, outcome.reason).inc()
            answered_by = fallback
            deadline = clock() + fallback.config.total_timeout
            outcome = await call_upstream(self._metrics, fallback, method, target, headers, content)
        elif (
            isinstance(outcome, UpstreamAnswer)
            and fallback is not None
            and (outcome.status_code in FAILOVER_STATUSES)
        ):
            fallback_reason = f"status_{outcome.status_code}"
            self._metrics.fallbacks.labels(label, fallback_reason).inc()
            await outcome.aclose()
            answered_by = fallback
            deadline = clock() + fallback.config.total_timeout
            outcome = await call_upstream(self._metrics, fallback, method, target, headers, content)

        if isinstance(outcome, UpstreamFailure):
            status = outcome.status
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                span.set_status(Status(StatusCode.ERROR, outcome.reason))
            detail = {
                502: f"The upstream {answered_by.name} could not be reached or answered badly.",
                503: f"The upstream {answered_by.name} is failing; its circuit breaker is open.",
                504: f"The upstream {answered_by.name} did not answer in time.",
                408: "The request body did not arrive in time.",
            }[status]
            retry = {"Retry-After": str(int(compiled.config.breaker.cooldown_seconds) or 1)}
            await self._problem(
                scope,
                receive,
                send,
                status,
                detail,
                headers={
                    "X-Strangler-Upstream": answered_by.name,
                    "X-Request-ID": request_id.decode(),
                    **(retry if status == 503 else {}),
                },
            )
            self._metrics.observe(label, answered_by.name, status, time.perf_counter() - started)
            return

        response = outcome
        if passage is not None:
            # The upstream answered: the write is done there. A slow reader of the answer
            # must not hold up a write switch.
            passage.leave()
        if pin_key is not None and write_scope is not None and response.status_code < 400:
            side = write_scope.policy.routing.writes
            self._ryw.pin(write_scope.policy.name, pin_key, side)
            cookie = write_scope.policy.sticky_cookie(incoming.cookie, options.sticky_cookie)
            if cookie is not None and pin_key != f"cookie:{cookie}":
                # A later read may come without the token (a public page): pin the cookie too.
                self._ryw.pin(write_scope.policy.name, f"cookie:{cookie}", side)
        extra = [
            (b"x-strangler-upstream", answered_by.name.encode()),
            (b"x-request-id", request_id),
        ]
        if fallback_reason is not None:
            extra.append((b"x-strangler-fallback", fallback_reason.encode()))
        if cookie_to_set is not None:
            extra.append(
                (
                    b"set-cookie",
                    f"{options.sticky_cookie}={cookie_to_set}; Path=/; "
                    "Max-Age=31536000; HttpOnly; SameSite=Lax".encode(),
                )
            )
        capture: bytearray | None = bytearray() if decision.shadow is not None else None
        cap = options.shadow_body_cap_bytes
        too_large = False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": downstream_headers(response.raw_headers, extra),
                }
            )
            async with asyncio.timeout_at(deadline):
                async for chunk in self._body_or_cut(response, answered_by, label):
                    if capture is not None:
                        if len(capture) + len(chunk) > cap:
                            capture, too_large = None, True
                        else:
                            capture += chunk
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            flags["finishing"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except _CutOff:
            return  # uvicorn closes a connection whose response did not complete
        except TimeoutError:
            log.warning(
                "%s %s: the answer was not complete within total_timeout (%g s); cut",
                label,
                answered_by.name,
                answered_by.config.total_timeout,
            )
            self._metrics.observe(label, answered_by.name, 504, time.perf_counter() - started)
            return
        finally:
            await response.aclose()
        self._metrics.observe(
            label, answered_by.name, response.status_code, time.perf_counter() - started
        )
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
            if answered_by is not primary:
                span.set_attribute("strangler.fallback", fallback_reason or "")

        if route is not None and decision.shadow is not None and fallback_reason is None:
            if too_large:
                self._shadow.skip_too_large(route.policy.name)
            elif capture is not None and response.header(b"content-encoding") in (
                None,
                b"identity",
            ):
                shadow_upstream = route.upstream(decision.shadow)
                self._shadow.submit(
                    ShadowJob(
                        capability=route.policy.name,
                        method=method,
                        target=target,
                        headers=headers,
                        primary_side=decision.primary.value,
                        primary_status=response.status_code,
                        primary_body=bytes(capture),
                        shadow_side=decision.shadow.value,
                        shadow_pool=shadow_upstream.shadow_pool,
                        timeout=shadow_upstream.config.total_timeout,
                        ignore_fields=frozenset(route.config.ignore_fields),
                        version_field=route.config.version_field,
                    )
                )

    async def _body_or_cut(
        self, response: UpstreamAnswer, upstream: Upstream, label: str
    ) -> AsyncIterator[bytes]:
        """The response body; if the upstream fails mid-body, the status line is already with
        the client, so the only honest signal left is to cut the connection: log and stop."""
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("%s %s failed after the response started: %r", label, upstream.name, exc)
            self._metrics.observe(label, upstream.name, 502, 0.0)
            raise _CutOff() from exc

    @staticmethod
    async def _problem(
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = problem_response(status, detail, headers=headers)
        await response(scope, receive, send)
