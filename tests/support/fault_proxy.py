"""A TCP fault proxy for tests: sits between a client and a real server on loopback and
delays what the server sends back (toxiproxy's "latency" toxic, which cannot be installed
here). Runs its own event loop in a thread; `delay_seconds` can change while it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass


@dataclass
class FaultProxy:
    port: int
    delay_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: FaultProxy, delayed: bool
) -> None:
    try:
        while data := await reader.read(65536):
            if delayed and proxy.delay_seconds:
                await asyncio.sleep(proxy.delay_seconds)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with suppress(Exception):
            writer.close()


@contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        proxy = holder["proxy"]
        assert isinstance(proxy, FaultProxy)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(
            _pipe(client_r, server_w, proxy, delayed=False),
            _pipe(server_r, client_w, proxy, delayed=True),
        )

    async def start() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        holder["server"] = server
        holder["proxy"] = FaultProxy(port=server.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(5)
    try:
        yield holder["proxy"]  # type: ignore[misc]
    finally:

        async def shutdown() -> None:
            server = holder["server"]
            server.close()  # type: ignore[attr-defined]
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(5)
        loop.close()
