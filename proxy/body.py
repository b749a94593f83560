"""Reading a request body from ASGI `receive`, streamed, counted against the body limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyReader", "BodyTooLarge", "ClientGone"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class BodyTooLarge(Exception):
    """The body grew past the limit while streaming."""


class ClientGone(Exception):
    """The client disconnected before its body was read."""


class BodyReader:
    """Reads the request body from ASGI `receive`, counting it against the limit."""

    def __init__(self, receive: Receive, limit: int, done: asyncio.Event) -> None:
        self._receive = receive
        self._limit = limit
        self._done = done
        self.read = 0

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk: bytes = message.get("body", b"")
            self.read += len(chunk)
            if self.read > self._limit:
                raise BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self._done.set()
                return

    async def buffer(self) -> bytes:
        return b"".join([chunk async for chunk in self.stream()])
