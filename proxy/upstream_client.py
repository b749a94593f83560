"""The proxy's client for forwarding to one upstream: keep-alive HTTP/1.1 on aiohttp.

Why not httpx here: building an `httpx.Request` (its URL model alone) and going through
`AsyncClient.send` cost more per request than the rest of the proxy together, and httpcore's
pool polls every idle socket on each acquire (bench/README.md has the profile). This client
does the one thing the forwarding path needs: send a prepared method, target and header list
to a fixed origin and hand back the status, the raw headers and the body as it arrives.
Everything else in the code base (the CLI, the sync client, the shadow reads) keeps httpx.

Failures are raised as httpx's exception types, so what counts as what (a connect error, a
timeout, the proxy's own pool exhausted) is decided in one place, `proxy.exchange`, whatever
client produced it. The pool is bounded here by a semaphore held from the request until the
answer is closed: waiting past `pool_timeout` for a slot is `httpx.PoolTimeout`, the proxy's
own saturation, not the upstream's fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

__all__ = ["UpstreamAnswer", "UpstreamPool"]

_CHUNK = 64 * 1024
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class UpstreamAnswer:
    """One upstream response: status and raw headers at once, the body as it arrives.

    Closing it (always, in a `finally`) gives the connection back to the pool when the body
    was read to the end, and drops it otherwise.
    """

    __slots__ = ("_pool", "_response", "_released", "raw_headers", "status_code")

    def __init__(self, pool: UpstreamPool, response: aiohttp.ClientResponse) -> None:
        self._pool = pool
        self._response = response
        self._released = False
        self.status_code: int = response.status
        self.raw_headers: list[tuple[bytes, bytes]] = [
            (name.lower(), value) for name, value in response.raw_headers
        ]

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, by its lower-case name."""
        for key, value in self.raw_headers:
            if key == name:
                return value
        return None

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, undecoded (the proxy forwards content-encoding as is)."""
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(f"body stalled: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(f"body cut: {exc!r}") from exc

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        self._response.release()
        self._pool.release()


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
        keepalive_seconds: float = 30.0,
    ) -> None:
        self._origin = origin.rstrip("/")
        self._host_header = URL(self._origin).raw_authority
        self._slots = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop the proxy serves on.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            use_dns_cache=True,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            trust_env=False,
            read_bufsize=_CHUNK,
        )
        return self._session

    def release(self) -> None:
        self._slots.release()

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
        session = self._session or self._open()
        sent = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
        )
        sent["Host"] = self._host_header
        body_failure: list[BaseException] = []
        data = content if not isinstance(content, AsyncIterator) else _noting(content, body_failure)
        try:
            response = await session.request(
                method,
                URL(self._origin + target.decode("latin-1"), encoded=True),
                headers=sent,
                data=data,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._slots.release()
            if body_failure:  # the client's body failed (too large, client gone): say that
                raise body_failure[0] from exc
            raise _as_httpx(exc) from exc
        except BaseException:  # cancelled (the client went away), or a body read error
            self._slots.release()
            raise
        return UpstreamAnswer(self, response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _noting(
    body: AsyncIterator[bytes], failures: list[BaseException]
) -> AsyncIterator[bytes]:
    """The request body as given, noting why it failed: aiohttp reports a body that raised
    as a connection error, and the proxy must answer 413 or stop, not blame the upstream."""
    try:
        async for chunk in body:
            yield chunk
    except Exception as exc:
        failures.append(exc)
        raise


def _as_httpx(exc: Exception) -> httpx.TransportError:
    """The httpx exception `proxy.exchange` knows for an aiohttp one."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(repr(exc))
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(repr(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(repr(exc))
    return httpx.RemoteProtocolError(repr(exc))
