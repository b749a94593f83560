"""Request smuggling shapes sent to the proxy on a raw socket: each is refused with 400 and
nothing of it, neither the request nor the one hidden in its body, reaches an upstream."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.proxy.conftest import Proxy
from tests.support.processes import RunningApp

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
SHAPES = {
    # The front end reads 6 bytes by Content-Length, a back end the chunked body, which ends at
    # once and leaves GET /smuggled as the next request on the upstream connection.
    "content-length with transfer-encoding": b"POST /x HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "transfer-encoding with content-length": b"POST /x HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two different content-lengths": b"POST /x HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length: 0\r\nContent-Length: 37\r\n\r\n" + SMUGGLED,
    "an obs-folded header": b"POST /x HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length: 0\r\nX-Folded: a\r\n b\r\n\r\n" + SMUGGLED,
    "a transfer-encoding that is not chunked": b"POST /x HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding: gzip, chunked2\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "a space before the colon": b"POST /x HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length : 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
}


def _send(proxy: Proxy, request: bytes) -> bytes:
    host, port = proxy.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)  # the server closes after a refusal or `Connection: close`
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def _echoed(app: RunningApp) -> int:
    return int(httpx.get(f"{app.base_url}/_echo/stats").json()["requests"])


@pytest.mark.parametrize("shape", SHAPES)
def test_a_smuggling_shape_is_refused_and_reaches_no_upstream(
    echo_proxy: Proxy, echo_monolith: RunningApp, echo_service: RunningApp, shape: str
) -> None:
    before = _echoed(echo_monolith), _echoed(echo_service)
    reply = _send(echo_proxy, SHAPES[shape])
    assert reply.startswith(b"HTTP/1.1 400"), (shape, reply[:300])
    assert b"/smuggled" not in reply and b'"who"' not in reply, reply[:500]
    assert (_echoed(echo_monolith), _echoed(echo_service)) == before


def test_the_same_request_without_the_trick_goes_through(
    echo_proxy: Proxy, echo_monolith: RunningApp
) -> None:
    """The control: a plain POST on the same raw socket is forwarded, so the refusals above
    are about the shapes, not about raw sockets."""
    before = _echoed(echo_monolith)
    reply = _send(
        echo_proxy,
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert _echoed(echo_monolith) == before + 1


OFF_ROUTE = {
    # A forward proxy would open a tunnel or fetch the named host; this one must not.
    "CONNECT to another host": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n"
    b"Connection: close\r\n\r\n",
    "CONNECT to an upstream's own address": b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("shape", OFF_ROUTE)
def test_connect_opens_no_tunnel_and_reaches_no_upstream(
    echo_proxy: Proxy, echo_monolith: RunningApp, echo_service: RunningApp, shape: str
) -> None:
    before = _echoed(echo_monolith), _echoed(echo_service)
    reply = _send(echo_proxy, OFF_ROUTE[shape])
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, (shape, reply[:300])
    assert b"200 Connection established" not in reply
    assert (_echoed(echo_monolith), _echoed(echo_service)) == before


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 70_000 + b"\r\n", b"".join(b"X-%d: v\r\n" % n for n in range(3000))],
    ids=["one 70 kB header", "3000 headers"],
)
def test_oversized_headers_are_refused_before_any_upstream(
    echo_proxy: Proxy, echo_monolith: RunningApp, headers: bytes
) -> None:
    before = _echoed(echo_monolith)
    reply = _send(
        echo_proxy, b"GET /x HTTP/1.1\r\nHost: t\r\n" + headers + b"Connection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 431"), reply[:300]
    assert b"content-type: application/problem+json" in reply.lower(), reply[:300]
    assert _echoed(echo_monolith) == before
