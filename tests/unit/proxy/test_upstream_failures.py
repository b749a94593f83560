"""How one upstream call turns real client-side failures into verdicts.

A scripted HTTP server on a loopback port plays each failure for real (refused connection,
silence, garbage, a body cut short), and the proxy's own upstream client meets it. Each
failure must become the right answer for the client and the right signal for the breaker:
connect errors and timeouts count against the upstream, the proxy's own pool exhaustion does
not, and a trickling upstream is cut off by the overall deadline.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from proxy.breaker import BreakerState
from proxy.config import RoutingConfig
from proxy.exchange import UpstreamFailure, call_upstream
from proxy.metrics import ProxyMetrics
from proxy.runtime import RoutingState, Upstream
from proxy.upstream_client import UpstreamAnswer
from tests.support.waiting import eventually_async

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Script:
    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()

    return play


async def _silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()
    writer.close()


async def _cut_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    await writer.drain()
    writer.close()


@asynccontextmanager
async def _server(script: Script) -> AsyncIterator[str]:
    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for task in connections:
            task.cancel()
        server.close()


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _upstream(url: str, **settings: object) -> tuple[ProxyMetrics, Upstream]:
    metrics = ProxyMetrics()
    state = RoutingState(metrics)
    config = RoutingConfig.model_validate(
        {
            "breaker": {"failure_threshold": 2, "cooldown_seconds": 60},
            "upstreams": {"monolith": {"url": url, **settings}},
        }
    )
    return metrics, state.apply(config).upstreams["monolith"]


async def _call(metrics: ProxyMetrics, upstream: Upstream) -> UpstreamAnswer | UpstreamFailure:
    outcome = await call_upstream(metrics, upstream, "GET", b"/x", [], None)
    if isinstance(outcome, UpstreamAnswer):
        await outcome.aread()
        await outcome.aclose()
    return outcome


def test_a_refused_connection_is_a_502_that_counts() -> None:
    async def run() -> None:
        metrics, upstream = _upstream(_closed_port())
        outcome = await _call(metrics, upstream)
        assert isinstance(outcome, UpstreamFailure)
        assert (outcome.reason, outcome.status, outcome.counts_against_breaker) == (
            "connect_error",
            502,
            True,
        )
        assert upstream.breaker.consecutive_failures == 1
        await upstream.aclose()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("script", "reason", "status"),
    [(_silence, "timeout", 504), (_garbage, "connect_error", 502)],
    ids=["silent", "garbage"],
)
def test_an_upstream_failure_becomes_a_verdict_that_counts(
    script: Script, reason: str, status: int
) -> None:
    async def run() -> None:
        async with _server(script) as url:
            metrics, upstream = _upstream(url, read_timeout=0.2)
            outcome = await _call(metrics, upstream)
            assert isinstance(outcome, UpstreamFailure)
            assert (outcome.reason, outcome.status, outcome.counts_against_breaker) == (
                reason,
                status,
                True,
            )
            assert upstream.breaker.consecutive_failures == 1
            await upstream.aclose()

    asyncio.run(run())


async def _slot_taken(upstream: Upstream) -> None:
    """Wait until a call in another task holds the pool's one slot."""

    async def taken() -> None:
        assert upstream.pool.in_use == 1, upstream.pool.in_use

    await eventually_async(taken, "the call to take the pool's slot", timeout=5, interval=0.005)


def test_the_proxys_own_pool_exhaustion_does_not_open_the_breaker() -> None:
    async def run() -> None:
        async with _server(_silence) as url:
            metrics, upstream = _upstream(
                url, max_connections=1, connect_timeout=0.1, total_timeout=5
            )
            holding = asyncio.create_task(call_upstream(metrics, upstream, "GET", b"/x", [], None))
            await _slot_taken(upstream)
            for _ in range(3):
                outcome = await _call(metrics, upstream)
                assert isinstance(outcome, UpstreamFailure) and outcome.reason == "pool_exhausted"
                assert outcome.status == 503
            assert upstream.breaker.state is BreakerState.CLOSED
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            await upstream.aclose()

    asyncio.run(run())


def test_a_cancelled_call_gives_its_connection_slot_back() -> None:
    """A client that goes away cancels the upstream call; its pool slot must come back, or
    a proxy under churn runs out of connections it is not using."""

    async def run() -> None:
        async with _server(_silence) as url:
            metrics, upstream = _upstream(
                url, max_connections=1, connect_timeout=0.2, read_timeout=1.0
            )
            for _ in range(3):
                call = asyncio.create_task(call_upstream(metrics, upstream, "GET", b"/x", [], None))
                await _slot_taken(upstream)
                call.cancel()
                (cancelled,) = await asyncio.gather(call, return_exceptions=True)
                # cancelled while it held the slot (not finished by its own read timeout)
                assert isinstance(cancelled, asyncio.CancelledError), cancelled
                assert upstream.pool.in_use == 0
            after = await _call(metrics, upstream)  # the one slot is free: it gets to wait
            assert isinstance(after, UpstreamFailure) and after.reason == "timeout"
            await upstream.aclose()
        async with _server(_answer(200, body=b"ok")) as url:
            metrics, upstream = _upstream(url, max_connections=1, connect_timeout=0.2)
            for _ in range(3):  # the one slot, reused each time
                outcome = await call_upstream(metrics, upstream, "GET", b"/x", [], None)
                assert isinstance(outcome, UpstreamAnswer)
                assert await outcome.aread() == b"ok"
                await outcome.aclose()
            await upstream.aclose()

    asyncio.run(run())


def test_a_hung_upstream_is_cut_off_by_the_overall_deadline() -> None:
    async def run() -> None:
        async with _server(_silence) as url:
            metrics, upstream = _upstream(url, total_timeout=0.2, read_timeout=10)
            outcome = await _call(metrics, upstream)
            assert isinstance(outcome, UpstreamFailure) and outcome.status == 504
            await upstream.aclose()

    asyncio.run(run())


def test_a_body_cut_short_is_an_error_while_streaming() -> None:
    async def run() -> None:
        async with _server(_cut_mid_body) as url:
            metrics, upstream = _upstream(url)
            outcome = await call_upstream(metrics, upstream, "GET", b"/x", [], None)
            assert isinstance(outcome, UpstreamAnswer) and outcome.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError, match="closed the connection mid-answer"):
                await outcome.aread()
            await outcome.aclose()
            await upstream.aclose()

    asyncio.run(run())


def test_502_503_504_count_as_failures_and_open_the_breaker() -> None:
    async def run() -> None:
        async with _server(_answer(503)) as url:
            metrics, upstream = _upstream(url)
            for _ in range(2):
                outcome = await _call(metrics, upstream)
                assert isinstance(outcome, UpstreamAnswer)
            assert upstream.breaker.state is BreakerState.OPEN
            refused = await _call(metrics, upstream)
            assert isinstance(refused, UpstreamFailure) and refused.reason == "breaker_open"
            await upstream.aclose()

    asyncio.run(run())


def test_a_500_is_the_upstreams_answer_not_a_breaker_failure() -> None:
    async def run() -> None:
        async with _server(_answer(500)) as url:
            metrics, upstream = _upstream(url)
            for _ in range(3):
                outcome = await _call(metrics, upstream)
                assert isinstance(outcome, UpstreamAnswer) and outcome.status_code == 500
            assert upstream.breaker.state is BreakerState.CLOSED
            await upstream.aclose()

    asyncio.run(run())


def test_a_deliberate_503_with_retry_after_does_not_open_the_breaker() -> None:
    deliberate = {"Retry-After": "1", "Content-Type": "application/problem+json"}

    async def run() -> None:
        async with _server(_answer(503, deliberate)) as url:
            metrics, upstream = _upstream(url)
            for _ in range(5):
                outcome = await _call(metrics, upstream)
                assert isinstance(outcome, UpstreamAnswer) and outcome.status_code == 503
            assert upstream.breaker.state is BreakerState.CLOSED
            await upstream.aclose()
        # A balancer's 503 with Retry-After in front of a dead service still counts.
        async with _server(_answer(503, {"Retry-After": "5"})) as url:
            metrics, upstream = _upstream(url)
            for _ in range(2):
                await _call(metrics, upstream)
            assert upstream.breaker.state is BreakerState.OPEN
            await upstream.aclose()

    asyncio.run(run())


async def _one_answer_then_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # says nothing of closing
    await writer.drain()
    writer.close()


async def _close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
    await writer.drain()
    writer.close()


async def _interim_then_final(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    )
    await writer.drain()
    await asyncio.sleep(5)


async def _all_closed(upstream: Upstream) -> None:
    assert upstream.pool.open_connections == 0, upstream.pool.open_connections


def test_a_kept_alive_connection_the_upstream_closed_is_not_reused() -> None:
    """Upstreams close idle keep-alive connections on their own schedule (uvicorn after 5 s);
    the next request must go out on a new connection, not fail on the dead one."""

    async def run() -> None:
        async with _server(_one_answer_then_close) as url:
            metrics, upstream = _upstream(url)
            for _ in range(3):
                outcome = await _call(metrics, upstream)
                assert isinstance(outcome, UpstreamAnswer) and outcome.status_code == 200
                await eventually_async(
                    lambda: _all_closed(upstream), "the upstream's close to reach the pool"
                )
            await upstream.aclose()

    asyncio.run(run())


def test_an_answer_delimited_by_the_close_is_read_to_its_end() -> None:
    async def run() -> None:
        async with _server(_close_delimited) as url:
            metrics, upstream = _upstream(url)
            outcome = await call_upstream(metrics, upstream, "GET", b"/x", [], None)
            assert isinstance(outcome, UpstreamAnswer)
            assert await outcome.aread() == b"until the end"
            await outcome.aclose()
            await upstream.aclose()

    asyncio.run(run())


def test_an_interim_100_continue_is_not_taken_for_the_answer() -> None:
    async def run() -> None:
        async with _server(_interim_then_final) as url:
            metrics, upstream = _upstream(url)
            outcome = await call_upstream(metrics, upstream, "POST", b"/x", [], b"body")
            assert isinstance(outcome, UpstreamAnswer) and outcome.status_code == 201
            assert await outcome.aread() == b"done"
            await outcome.aclose()
            await upstream.aclose()

    asyncio.run(run())


def _big_answer(size: int) -> Script:
    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()
        await asyncio.sleep(5)

    return play


def test_a_client_reading_slowly_is_not_the_upstreams_read_timeout() -> None:
    """The client holds back a large answer (the proxy stops reading the upstream to keep
    its buffer bounded); that pause is not the upstream going silent."""

    async def run() -> None:
        size = 2 * 1024 * 1024
        async with _server(_big_answer(size)) as url:
            metrics, upstream = _upstream(url, read_timeout=0.2)
            outcome = await call_upstream(metrics, upstream, "GET", b"/x", [], None)
            assert isinstance(outcome, UpstreamAnswer)
            received = 0
            async for chunk in outcome.aiter_raw():
                if received == 0:
                    await asyncio.sleep(0.6)  # three read timeouts' worth of a stalled reader
                received += len(chunk)
            assert received == size
            await outcome.aclose()
            await upstream.aclose()

    asyncio.run(run())


def test_a_write_is_not_sent_on_a_connection_that_may_have_idled_out() -> None:
    """A POST cannot be sent twice, so it must not meet a kept-alive connection the upstream
    may be closing right then: after a pause it goes out on a new connection."""
    connections = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _answer(200, body=b"ok")(reader, writer)

    async def run() -> None:
        async with _server(counting) as url:
            metrics, upstream = _upstream(url)
            for method in ("GET", "POST"):  # back to back: the one connection is reused
                outcome = await call_upstream(metrics, upstream, method, b"/x", [], b"")
                assert isinstance(outcome, UpstreamAnswer)
                await outcome.aread()
                await outcome.aclose()
            assert connections == 1
            await asyncio.sleep(1.2)  # idles past the 1 s a write trusts: the subject of the test
            outcome = await call_upstream(metrics, upstream, "POST", b"/x", [], b"")
            assert isinstance(outcome, UpstreamAnswer)
            await outcome.aread()
            await outcome.aclose()
            assert connections == 2
            await upstream.aclose()

    asyncio.run(run())
