"""What the proxy forwards and what it sends back, seen from real echo upstreams."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from tests.proxy.conftest import ADMIN_TOKEN, Proxy, ProxyFactory, routing_document
from tests.support.problems import assert_problem
from tests.support.processes import RunningApp
from tests.support.waiting import wait_until


def _seen(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["header_map"] = {}
    for name, value in body["headers"]:
        body["header_map"].setdefault(name, []).append(value)
    return body


def _raw(proxy: Proxy, request: bytes) -> bytes:
    host, port = proxy.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" in request:
                continue
        return b"".join(chunks)


def test_hop_by_hop_and_connection_named_headers_are_dropped(echo_proxy: Proxy) -> None:
    seen = _seen(
        echo_proxy.client.get(
            "/anything",
            headers={
                "Connection": "keep-alive, x-secret",
                "X-Secret": "1",
                "TE": "trailers",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic eA==",
                "Upgrade": "h2c",
                "Trailer": "x",
                "X-Kept": "yes",
            },
        )
    )
    names = set(seen["header_map"])
    assert not names & {"x-secret", "te", "keep-alive", "proxy-authorization", "upgrade", "trailer"}
    assert seen["header_map"]["x-kept"] == ["yes"]


def test_hop_by_hop_response_headers_are_dropped_and_cannot_forge_the_upstream(
    echo_proxy: Proxy,
) -> None:
    response = echo_proxy.client.get("/_echo/hop")
    assert response.status_code == 200
    for name in ("x-upstream-secret", "keep-alive", "proxy-authenticate"):
        assert name not in response.headers
    assert response.headers["x-kept"] == "yes"
    assert response.headers.get_list("x-strangler-upstream") == ["monolith"]


def test_forwarded_headers_are_replaced_for_an_untrusted_peer(echo_proxy: Proxy) -> None:
    seen = _seen(
        echo_proxy.client.get(
            "/x",
            headers={
                "X-Forwarded-For": "6.6.6.6",
                "X-Forwarded-Proto": "https",
                "X_Forwarded_For": "7.7.7.7",
            },
        )
    )
    assert seen["header_map"]["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["header_map"]["x-forwarded-proto"] == ["http"]
    assert seen["header_map"]["x-forwarded-host"] == [echo_proxy.base_url.removeprefix("http://")]
    assert "x_forwarded_for" not in seen["header_map"]


def test_forwarded_for_is_extended_for_a_trusted_peer(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            echo_service.base_url,
            proxy={"trusted_proxies": ["127.0.0.0/8"]},
        )
    )
    seen = _seen(proxy.client.get("/x", headers={"X-Forwarded-For": "203.0.113.9"}))
    assert seen["header_map"]["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]


def test_request_id_and_traceparent_pass_through_or_are_created(echo_proxy: Proxy) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    given = _seen(
        echo_proxy.client.get("/x", headers={"X-Request-ID": "abc-123", "traceparent": parent})
    )
    assert given["header_map"]["x-request-id"] == ["abc-123"]
    assert given["header_map"]["traceparent"] == [parent]
    response = echo_proxy.client.get("/x", headers={"traceparent": "garbage"})
    made = _seen(response)
    assert len(made["header_map"]["x-request-id"][0]) == 32
    assert response.headers["x-request-id"] == made["header_map"]["x-request-id"][0]
    assert made["header_map"]["traceparent"][0].startswith("00-")
    assert made["header_map"]["traceparent"][0] != "garbage"


def test_the_upstream_sees_its_own_host_whatever_the_client_says(
    echo_proxy: Proxy, echo_monolith: RunningApp
) -> None:
    seen = _seen(echo_proxy.client.get("/x", headers={"Host": "evil.example"}))
    assert seen["header_map"]["host"] == [echo_monolith.base_url.removeprefix("http://")]
    assert seen["who"] == "monolith"


def test_an_absolute_uri_cannot_send_the_proxy_elsewhere(echo_proxy: Proxy) -> None:
    reply = _raw(
        echo_proxy,
        b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    status_line = reply.split(b"\r\n", 1)[0]
    if b" 200 " in status_line:  # httptools reduces it to the path; it must stay on our upstream
        assert b'"who":"monolith"' in reply and b'"path":"/steal"' in reply
    else:
        assert b" 400 " in status_line


def test_missing_or_repeated_host_is_refused(echo_proxy: Proxy) -> None:
    missing = _raw(echo_proxy, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
    repeated = _raw(
        echo_proxy, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    for reply in (missing, repeated):
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
        assert b"application/problem+json" in reply


def test_dot_segments_and_encodings_cannot_smuggle_a_path_into_a_capability(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = proxy_factory(routing_document(echo_monolith.base_url, echo_service.base_url))
    proxy.walk_to("reads_cutover")
    cases = {
        "/products/../orders": ("monolith", "/orders"),
        "/products/%2e%2e/orders": ("monolith", "/orders"),
        "//products//1": ("service", "/products/1"),
        "/orders/../products/2": ("service", "/products/2"),
        "/productsX": ("monolith", "/productsX"),
    }
    for raw, (who, path) in cases.items():
        reply = _raw(proxy, f"GET {raw} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        assert f'"who":"{who}"'.encode() in reply, (raw, reply[-300:])
        assert f'"path":"{path}"'.encode() in reply, (raw, reply[-300:])
    assert_problem(proxy.client.get("/products%2F..%2Forders"), 400, "encoded slashes")


def test_a_body_over_the_limit_is_413_and_the_upstream_never_gets_it_whole(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url, echo_service.base_url, proxy={"body_limit_bytes": 1000}
        )
    )
    before = httpx.get(f"{echo_monolith.base_url}/_echo/stats").json()["requests"]
    assert_problem(proxy.client.post("/x", content=b"a" * 1001), 413, "1000")

    def chunks() -> Any:
        for _ in range(20):
            yield b"b" * 100

    assert_problem(proxy.client.post("/x", content=chunks()), 413, "limit")
    assert _seen(proxy.client.post("/x", content=b"c" * 1000))["body_length"] == 1000
    after = httpx.get(f"{echo_monolith.base_url}/_echo/stats").json()["requests"]
    assert after - before == 1


def test_large_bodies_stream_through_both_ways(echo_proxy: Proxy) -> None:
    size = 8 * 1024 * 1024
    with echo_proxy.client.stream("GET", "/_echo/big", params={"bytes": size}) as response:
        received = sum(len(chunk) for chunk in response.iter_raw())
    assert received == size
    seen = _seen(echo_proxy.client.post("/upload", content=b"z" * (5 * 1024 * 1024)))
    assert seen["body_length"] == 5 * 1024 * 1024


def test_a_client_that_goes_away_cancels_the_upstream_call(
    echo_proxy: Proxy, echo_monolith: RunningApp
) -> None:
    stats_url = f"{echo_monolith.base_url}/_echo/stats"
    before = httpx.get(stats_url).json()["drips_abandoned"]
    with echo_proxy.client.stream(
        "GET", "/_echo/drip", params={"chunks": 100, "interval": 0.05}
    ) as r:
        next(r.iter_raw())
    wait_until(
        lambda: httpx.get(stats_url).json()["drips_abandoned"] > before,
        "the upstream to stop streaming after the client left",
        timeout=5,
    )


def test_unmatched_paths_go_to_the_default_upstream(echo_proxy: Proxy) -> None:
    response = echo_proxy.client.get("/users/me")
    assert response.headers["x-strangler-upstream"] == "monolith"
    assert _seen(response)["who"] == "monolith"


def test_a_forced_target_needs_the_admin_token(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = proxy_factory(routing_document(echo_monolith.base_url, echo_service.base_url))
    plain = proxy.client.get("/products/1", headers={"X-Strangler-Target": "service"})
    wrong = proxy.client.get(
        "/products/1", headers={"X-Strangler-Target": "service", "X-Strangler-Admin-Token": "guess"}
    )
    right = proxy.client.get(
        "/products/1",
        headers={"X-Strangler-Target": "service", "X-Strangler-Admin-Token": ADMIN_TOKEN},
    )
    assert [r.headers["x-strangler-upstream"] for r in (plain, wrong, right)] == [
        "monolith",
        "monolith",
        "service",
    ]
    assert not any(name.startswith("x-strangler") for name, _ in _seen(right)["headers"])


def _short_deadline_proxy(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> Proxy:
    document = routing_document(echo_monolith.base_url, echo_service.base_url)
    document["upstreams"]["monolith"].update(total_timeout=1.0, read_timeout=1.0)
    return proxy_factory(document)


def test_a_slow_upload_is_the_clients_408_not_a_failure_of_the_upstream(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _short_deadline_proxy(proxy_factory, echo_monolith, echo_service)

    def trickle() -> Any:
        for _ in range(6):
            time.sleep(0.4)  # a client slower than the 1 s deadline: the subject of the test
            yield b"x" * 10

    assert_problem(proxy.client.post("/upload", content=trickle()), 408, "did not arrive")
    breaker = proxy.status()["upstreams"]["monolith"]["breaker"]
    assert breaker["consecutive_failures"] == 0


def test_an_upstream_failing_mid_body_cuts_the_connection_and_the_proxy_carries_on(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _short_deadline_proxy(proxy_factory, echo_monolith, echo_service)
    with pytest.raises(httpx.HTTPError):
        with proxy.client.stream("GET", "/_echo/drip", params={"chunks": 40, "interval": 0.1}) as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                pass
    assert _seen(proxy.client.get("/after"))["path"] == "/after"
    assert "Exception in ASGI application" not in proxy.app.log_text()
