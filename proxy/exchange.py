"""One call to one upstream, up to its response headers, with a verdict for its breaker.

Client-side failures become an `UpstreamFailure` carrying what the client should get when
nothing can stand in (502 unreachable, 503 breaker open or pool exhausted, 504 too slow) and
whether it counts against the upstream: the proxy's own pool exhaustion does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from proxy.metrics import ProxyMetrics
from proxy.runtime import Upstream
from proxy.upstream_client import UpstreamAnswer

__all__ = ["FAILOVER_STATUSES", "UpstreamFailure", "call_upstream"]

FAILOVER_STATUSES = frozenset({502, 503, 504})
"""Upstream answers that count as failures and let a read fall back to the monolith."""


@dataclass(frozen=True)
class UpstreamFailure:
    """An upstream call that produced no usable response."""

    reason: str
    status: int  # what the client gets when there is no fallback: 502, 503 or 504
    counts_against_breaker: bool


async def call_upstream(
    metrics: ProxyMetrics,
    upstream: Upstream,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    content: bytes | AsyncIterator[bytes] | None,
    body_done: asyncio.Event | None = None,
) -> UpstreamAnswer | UpstreamFailure:
    """One call to `upstream`, up to its response headers; failures become UpstreamFailure.

    `body_done` is set once the client's streamed body has been read: a timeout before that
    is the client's slowness (408), not the upstream's, and does not count against it.
    """
    breaker = upstream.breaker
    if not breaker.allow():
        return UpstreamFailure("breaker_open", 503, counts_against_breaker=False)
    verdict: bool | None = None
    try:
        async with asyncio.timeout(upstream.config.total_timeout):
            response = await upstream.pool.request(method, target, headers, content)
    except httpx.PoolTimeout:
        return UpstreamFailure("pool_exhausted", 503, counts_against_breaker=False)
    except (httpx.TimeoutException, TimeoutError):
        if body_done is not None and not body_done.is_set():
            return UpstreamFailure("client_body_timeout", 408, counts_against_breaker=False)
        verdict = False
        return UpstreamFailure("timeout", 504, counts_against_breaker=True)
    except httpx.TransportError:
        verdict = False
        return UpstreamFailure("connect_error", 502, counts_against_breaker=True)
    else:
        if response.status_code not in FAILOVER_STATUSES:
            verdict = True
        elif (
            response.status_code == 503
            and response.header(b"retry-after") is not None
            and (response.header(b"content-type") or b"").startswith(b"application/problem+json")
        ):
            verdict = None  # a live app refusing on purpose (e.g. writes moved): no verdict
        else:
            verdict = False
        return response
    finally:
        before = breaker.state
        if verdict is True:
            breaker.record_success()
        elif verdict is False:
            breaker.record_failure()
        else:
            breaker.record_abandoned()
        if breaker.state is not before:  # the gauge changes rarely: no label lookup per request
            metrics.set_breaker(upstream.name, breaker.state.value)
