"""The proxy's client for forwarding to one upstream: keep-alive HTTP/1.1 on asyncio + httptools.

Why not httpx here: building an `httpx.Request` (its URL model alone) and going through
`AsyncClient.send` cost more per request than the rest of the proxy together; aiohttp's
request machinery (URL objects, cookies, tracing hooks, auto headers) was still a third of
the proxy's CPU (bench/README.md has both profiles). The forwarding path needs one thing:
send a prepared method, target and header list to a fixed origin, and hand back the status,
the raw headers and the body as it arrives. This does that on the event loop's own transports
with the same C parser uvicorn uses (httptools/llhttp), which is strict about what it
accepts. Everything else in the code base (the CLI, the sync client) keeps httpx.

Failures are raised as httpx's exception types, so what counts as what (a connect error, a
timeout, the proxy's own pool exhausted) is decided in one place, `proxy.exchange`. The pool
is bounded by a semaphore held from the request until the answer is closed: waiting past
`pool_timeout` for a slot is `httpx.PoolTimeout`, the proxy's own saturation. A connection
goes back to the pool only when its answer was read to the end and both sides keep it alive;
an idle one the upstream closed is dropped when it closes. A request that finds its reused
connection closed before any answer arrived is sent once more on a new connection when it is
safe to repeat (idempotent method, body held in memory).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools
import httpx

__all__ = ["UpstreamAnswer", "UpstreamPool"]

_HIGH_WATER = 256 * 1024  # buffered body bytes before the upstream socket stops being read
_REPEATABLE = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_SAFE_IDLE_SECONDS = 1.0


class _Closed(Exception):
    """The connection closed before the answer's first byte (it may be repeated)."""


class _Connection(asyncio.Protocol):
    """One upstream connection and the one exchange on it at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        count: Callable[[int], None] | None = None,
    ) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._count = count  # told +1 when the connection is made, -1 when it is lost
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._delimited_by_close = False
        self._reusable = False
        self._error: BaseException | None = None
        self._head: asyncio.Future[None] | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False
        self._head_only = False
        self._got_bytes = False
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        if self._count is not None:
            self._count(1)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the upstream answered badly: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._count is not None:
            self._count(-1)
        if self._delimited_by_close and self._head is not None and self._head.done():
            self._finish()  # an answer with neither length nor chunks ends when the line closes
        if not self.complete:
            if self._got_bytes:
                self._fail(
                    httpx.RemoteProtocolError("the upstream closed the connection mid-answer")
                )
            else:
                self._fail(_Closed())
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(httpx.WriteError("the upstream closed while being sent to"))

    def pause_writing(self) -> None:
        self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # -- httptools callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue): the real one follows
        self._status = status
        self._delimited_by_close = (
            status not in (204, 304)
            and not self._head_only
            and not any(n in (b"content-length", b"transfer-encoding") for n, _ in self._headers)
        )
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        if self._head_only:
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and self.transport is not None and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101 or self._status == 0:
            return  # the end of an interim answer
        self._reusable = self._parser.should_keep_alive()  # only meaningful inside a callback
        self._finish()

    # -- the exchange -----------------------------------------------------------------
    def _finish(self) -> None:
        self.complete = True
        self._cancel_timer()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._cancel_timer()
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_idle(self) -> None:
        """A read deadline, re-armed lazily: one timer per exchange, not one per read."""
        left = self._last_read + self._read_timeout - self._loop.time()
        if self._paused_reading:  # we stopped reading (a slow client): not the upstream's stall
            self._last_read = self._loop.time()
            left = self._read_timeout
        if left > 0:
            self._timer = self._loop.call_later(left, self._check_idle)
            return
        self._timer = None
        self._fail(httpx.ReadTimeout(f"the upstream sent nothing for {self._read_timeout} s"))
        self.close()

    def start(self, head_only: bool) -> None:
        self._error = None
        self._status = 0
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self.complete = False
        self._head_only = head_only
        self._reusable = False
        self._delimited_by_close = False
        self._got_bytes = False
        self._last_read = self._loop.time()
        self._head = self._loop.create_future()
        self._timer = self._loop.call_later(self._read_timeout, self._check_idle)

    async def send_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        assert self.transport is not None
        async for chunk in body:
            if chunk:
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if self._drain is not None:
                    await self._drain
            if self._error is not None:
                raise self._error
        if chunked:
            self.transport.write(b"0\r\n\r\n")

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        await self._head
        return self._status, self._headers

    async def next_chunk(self) -> bytes:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused_reading and self._buffered <= _HIGH_WATER // 2:
                    self._paused_reading = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def keep_alive(self) -> bool:
        return (
            self.complete
            and not self.closed
            and not self._head_only  # llhttp cannot be told a HEAD answer has no body
            and not self._delimited_by_close
            and self._reusable
        )

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


class UpstreamAnswer:
    """One upstream response: status and raw headers at once, the body as it arrives.

    Closing it (always, in a `finally`) gives the connection back to the pool when the body
    was read to the end, and drops it otherwise.
    """

    __slots__ = ("_connection", "_pool", "_released", "raw_headers", "status_code")

    def __init__(
        self,
        pool: UpstreamPool,
        connection: _Connection,
        status: int,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._released = False
        self.status_code = status
        self.raw_headers = headers  # names lower-cased

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, by its lower-case name."""
        for key, value in self.raw_headers:
            if key == name:
                return value
        return None

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, undecoded (the proxy forwards content-encoding as is)."""
        while True:
            chunk = await self._connection.next_chunk()
            if not chunk:
                return
            yield chunk

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        self._pool.give_back(self._connection)


class UpstreamPool:
    """Keep-alive connections to one origin, at most `max_connections` of them in use."""

    def __init__(
        self,
        origin: str,
        *,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        pool_timeout: float,
    ) -> None:
        url = httpx.URL(origin)
        self._host = url.host
        self._tls = ssl.create_default_context() if url.scheme == "https" else None
        self._port = url.port or (443 if self._tls else 80)
        self._host_header = url.netloc
        self._slots = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[_Connection] = []
        # Read by the metrics scrape (never on the request path): slots held by requests,
        # and connections opened and not yet lost (in use or idle).
        self.in_use = 0
        self.open_connections = 0

    def _count_connections(self, delta: int) -> None:
        self.open_connections += delta

    def give_back(self, connection: _Connection) -> None:
        if connection.keep_alive():
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        self.in_use -= 1
        self._slots.release()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout, self._count_connections),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection within {self._connect_timeout} s") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return protocol

    def _idle_connection(self, repeatable: bool) -> _Connection | None:
        """The most recently used live idle connection. A request that cannot be sent twice
        takes only one idle for less than `_SAFE_IDLE_SECONDS`: upstreams close idle
        connections on their own schedule (uvicorn after 5 s, gunicorn after 2 s), and one
        closed just as the request goes out cannot be told from a failed request."""
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:
                continue
            if not repeatable and time.monotonic() - connection.idle_since > _SAFE_IDLE_SECONDS:
                connection.close()
                continue
            return connection
        return None

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamAnswer:
        """Send one request; the answer once its status line and headers have arrived."""
        if self._slots.locked():  # only a full pool needs a deadline on the wait
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("no free connection to the upstream in time") from exc
        else:
            await self._slots.acquire()
        self.in_use += 1
        try:
            head, chunked = self._head(method, target, headers, content)
            repeatable = method in _REPEATABLE and not isinstance(content, AsyncIterator)
            connection = self._idle_connection(repeatable)
            if connection is not None:
                try:
                    return await self._exchange(connection, method, head, content, chunked)
                except _Closed:
                    if not repeatable:
                        raise httpx.RemoteProtocolError(
                            "the upstream closed a kept-alive connection as the request went out"
                        ) from None
            try:
                connection = await self._connect()
                return await self._exchange(connection, method, head, content, chunked)
            except _Closed:
                raise httpx.RemoteProtocolError("the upstream closed without answering") from None
        except BaseException:
            self.in_use -= 1
            self._slots.release()
            raise

    def _head(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterator[bytes] | None,
    ) -> tuple[bytes, bool]:
        """The request line and headers, and whether a streamed body goes chunked."""
        chunked = False
        lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), target, self._host_header)]
        declared: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                declared = value
            elif name != b"host":
                lines.append(b"%s: %s\r\n" % (name, value))
        if isinstance(content, bytes):
            lines.append(b"content-length: %d\r\n" % len(content))
        elif content is not None:
            # A streamed body keeps the length the client declared (the body reader holds the
            # client to it); without one it goes chunked.
            if declared is not None:
                lines.append(b"content-length: %s\r\n" % declared)
            else:
                lines.append(b"transfer-encoding: chunked\r\n")
                chunked = True
        elif method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: 0\r\n")
        lines.append(b"\r\n")
        return b"".join(lines), chunked

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        head: bytes,
        content: bytes | AsyncIterator[bytes] | None,
        chunked: bool,
    ) -> UpstreamAnswer:
        assert connection.transport is not None
        connection.start(head_only=method == "HEAD")
        try:
            if isinstance(content, bytes):
                connection.transport.write(head + content)
            else:
                connection.transport.write(head)
                if content is not None:
                    await connection.send_body(content, chunked)
            status, headers = await connection.head()
        except BaseException:
            connection.close()
            raise
        return UpstreamAnswer(self, connection, status, headers)

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
