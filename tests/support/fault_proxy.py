"""A TCP fault proxy for tests: sits between a client and a real server on loopback and plants
faults in the bytes between them (toxiproxy's toxics, which cannot be installed here). Runs its
own event loop in a thread; every setting can change while it runs and applies from the next
chunk of bytes on, on connections already open as on new ones.

- `delay_seconds`: wait this long before passing on each chunk the server sends back
  (toxiproxy's "latency").
- `mode`:
  - `"pass"` (default): bytes go through (after `delay_seconds`);
  - `"stall"`: what the client sends is read and swallowed, never reaching the server, so
    nothing ever comes back (a server that accepts and hangs);
  - `"trickle"`: what the server sends back goes out one byte every `trickle_interval`
    seconds, so a client's per-read timeout never trips; with `trickle_skip_head`, a chunk
    that starts an HTTP response passes its status line and headers at once and only the body
    trickles;
  - `"reset"`: new connections, and open ones as soon as the client sends anything, are
    aborted with a TCP reset.
- Counters: `connections_accepted`, `connections_open` (client connections not yet closed),
  `bytes_swallowed` (stall), `resets`.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

MODES = ("pass", "stall", "trickle", "reset")


@dataclass
class FaultProxy:
    port: int
    delay_seconds: float = 0.0
    mode: str = "pass"
    trickle_interval: float = 0.05
    trickle_skip_head: bool = False
    connections_accepted: int = 0
    connections_open: int = 0
    bytes_swallowed: int = 0
    resets: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r} (known: {', '.join(MODES)})")
        self.mode = mode


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _trickle(data: bytes, writer: asyncio.StreamWriter, proxy: FaultProxy) -> None:
    start = 0
    if proxy.trickle_skip_head and data.startswith(b"HTTP/1."):
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            start = end + 4
            writer.write(data[:start])
            await writer.drain()
    for index in range(start, len(data)):
        await asyncio.sleep(proxy.trickle_interval)
        writer.write(data[index : index + 1])
        await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: FaultProxy,
    delayed: bool,
    peers: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
) -> None:
    """Copy reader to writer; `delayed` marks the server-to-client direction."""
    try:
        while data := await reader.read(65536):
            if not delayed:  # client -> server
                if proxy.mode == "reset":
                    proxy.resets += 1
                    for peer in peers:
                        _reset(peer)
                    return
                if proxy.mode == "stall":
                    proxy.bytes_swallowed += len(data)
                    continue
            else:
                if proxy.delay_seconds:
                    await asyncio.sleep(proxy.delay_seconds)
                if proxy.mode == "trickle":
                    await _trickle(data, writer, proxy)
                    continue
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
        proxy.connections_accepted += 1
        proxy.connections_open += 1
        try:
            if proxy.mode == "reset":
                proxy.resets += 1
                _reset(client_w)
                return
            try:
                server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
            except OSError:
                _reset(client_w)  # as the server itself would: refused
                return
            peers = (client_w, server_w)
            await asyncio.gather(
                _pipe(client_r, server_w, proxy, False, peers),
                _pipe(server_r, client_w, proxy, True, peers),
            )
        except asyncio.CancelledError:
            pass  # shutting down (Python 3.11's streams log a cancelled handler as an error)
        finally:
            proxy.connections_open -= 1

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
