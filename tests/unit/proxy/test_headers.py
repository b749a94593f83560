"""Header lists built for the upstream and for the client."""

from __future__ import annotations

import ipaddress

from proxy.headers import IncomingHeaders, downstream_headers, is_trusted, upstream_headers


def _up(raw: list[tuple[bytes, bytes]], trusted: bool = False) -> dict[bytes, list[bytes]]:
    built = upstream_headers(
        IncomingHeaders.parse(raw),
        peer="10.0.0.9",
        scheme="http",
        trusted_peer=trusted,
        request_id=b"rid",
        traceparent=b"tp",
    )
    found: dict[bytes, list[bytes]] = {}
    for name, value in built:
        found.setdefault(name, []).append(value)
    return found


def test_every_header_named_in_connection_is_dropped() -> None:
    sent = _up(
        [
            (b"host", b"h"),
            (b"connection", b"close, X-Secret ,x-other"),
            (b"x-secret", b"1"),
            (b"x-other", b"2"),
            (b"x-fine", b"3"),
        ]
    )
    assert b"x-secret" not in sent and b"x-other" not in sent and b"connection" not in sent
    assert sent[b"x-fine"] == [b"3"]


def test_proxy_star_underscores_and_control_headers_are_dropped() -> None:
    sent = _up(
        [
            (b"proxy-anything", b"1"),
            (b"x_forwarded_for", b"1.2.3.4"),
            (b"x-strangler-target", b"service"),
            (b"x-strangler-admin-token", b"t"),
            (b"forwarded", b"for=1.2.3.4"),
            (b"host", b"h"),
        ]
    )
    assert set(sent) == {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"traceparent",
    }


def test_forwarded_for_is_extended_only_for_a_trusted_peer() -> None:
    raw = [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-proto", b"https")]
    assert _up(raw)[b"x-forwarded-for"] == [b"10.0.0.9"]
    assert _up(raw)[b"x-forwarded-proto"] == [b"http"]
    assert _up(raw, trusted=True)[b"x-forwarded-for"] == [b"1.1.1.1, 10.0.0.9"]
    assert _up(raw, trusted=True)[b"x-forwarded-proto"] == [b"https"]


def test_trust_is_by_network() -> None:
    networks = [ipaddress.ip_network("10.0.0.0/8")]
    assert is_trusted("10.1.2.3", networks)
    assert not is_trusted("11.1.2.3", networks)
    assert not is_trusted("garbage", networks)
    assert not is_trusted("10.1.2.3", [])


def test_response_hop_by_hop_headers_are_dropped_and_extras_added() -> None:
    sent = downstream_headers(
        [
            (b"connection", b"x-a"),
            (b"x-a", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"content-type", b"application/json"),
            (b"x-strangler-upstream", b"forged"),
        ],
        [(b"x-strangler-upstream", b"monolith")],
    )
    assert sent == [(b"content-type", b"application/json"), (b"x-strangler-upstream", b"monolith")]
