"""Header hygiene at the edge: what goes upstream, what comes back.

The upstream client forwards whatever it is handed, so the proxy builds both header lists
itself: hop-by-hop headers and every header named in Connection are dropped both ways
(RFC 9110 7.6.1), the upstream's Host comes from the configured upstream only,
X-Forwarded-* are rebuilt (extended only for a trusted peer), headers with underscores are
dropped (edge proxies reject them, and some frameworks fold them into their dash-named
twins), and the proxy's own control headers never leave it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HOP_BY_HOP",
    "IncomingHeaders",
    "downstream_headers",
    "is_trusted",
    "upstream_headers",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_REBUILT = frozenset(
    {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
_CONTROL_PREFIX = b"x-strangler-"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


HEADER_BYTES_LIMIT = 32 * 1024
"""Request headers larger than this in all (names and values) are refused with 431: uvicorn
sets no limit, and the upstreams would otherwise receive whatever a client sends (nginx's
default refuses a line over 8 KiB)."""
HEADER_COUNT_LIMIT = 200


@dataclass(frozen=True)
class IncomingHeaders:
    """The few request headers the proxy itself reads, found in one pass."""

    raw: list[tuple[bytes, bytes]]
    size: int  # bytes of names and values, for the 431 limit
    hosts: list[bytes]
    connection_named: frozenset[bytes]
    authorization: str | None
    cookie: str | None
    content_length: bytes | None
    chunked: bool
    forwarded_for: bytes | None
    forwarded_proto: bytes | None
    request_id: bytes | None
    traceparent: bytes | None
    target: bytes | None
    admin_token: bytes | None

    @classmethod
    def parse(cls, raw: list[tuple[bytes, bytes]]) -> IncomingHeaders:
        hosts: list[bytes] = []
        named: set[bytes] = set()
        found: dict[bytes, bytes] = {}
        chunked = False
        size = 0
        for name, value in raw:
            size += len(name) + len(value)
            if name == b"host":
                hosts.append(value)
            elif name == b"connection":
                named.update(t.strip().lower() for t in value.split(b",") if t.strip())
            elif name == b"transfer-encoding":
                chunked = True
            elif name in _WANTED and name not in found:
                found[name] = value
        auth = found.get(b"authorization")
        cookie = found.get(b"cookie")
        return cls(
            raw=raw,
            size=size,
            hosts=hosts,
            connection_named=frozenset(named),
            authorization=auth.decode("latin-1") if auth else None,
            cookie=cookie.decode("latin-1") if cookie else None,
            content_length=found.get(b"content-length"),
            chunked=chunked,
            forwarded_for=found.get(b"x-forwarded-for"),
            forwarded_proto=found.get(b"x-forwarded-proto"),
            request_id=found.get(b"x-request-id"),
            traceparent=found.get(b"traceparent"),
            target=found.get(b"x-strangler-target"),
            admin_token=found.get(b"x-strangler-admin-token"),
        )


_WANTED = frozenset(
    {
        b"authorization",
        b"cookie",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-request-id",
        b"traceparent",
        b"x-strangler-target",
        b"x-strangler-admin-token",
    }
)


def is_trusted(peer: str | None, networks: Networks) -> bool:
    if not peer or not networks:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def request_id_of(incoming: IncomingHeaders) -> bytes:
    value = incoming.request_id
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return os.urandom(16).hex().encode()  # what uuid4().hex is, without building a UUID


def traceparent_of(incoming: IncomingHeaders) -> bytes:
    value = incoming.traceparent
    if value is not None and _TRACEPARENT.fullmatch(value):
        return value
    return b"00-%s-%s-01" % (os.urandom(16).hex().encode(), os.urandom(8).hex().encode())


def _dropped(name: bytes, named: frozenset[bytes]) -> bool:
    return (
        name in HOP_BY_HOP
        or name in named
        or name.startswith(b"proxy-")
        or name.startswith(_CONTROL_PREFIX)
        or b"_" in name
    )


def upstream_headers(
    incoming: IncomingHeaders,
    *,
    peer: str | None,
    scheme: str,
    trusted_peer: bool,
    request_id: bytes,
    traceparent: bytes,
) -> list[tuple[bytes, bytes]]:
    """The header list sent upstream (the upstream client adds Host from the upstream's URL)."""
    named = incoming.connection_named
    headers = [
        (name, value)
        for name, value in incoming.raw
        if not _dropped(name, named)
        and name not in _REBUILT
        and name not in (b"x-request-id", b"traceparent")
    ]
    client = (peer or "unknown").encode()
    if trusted_peer and incoming.forwarded_for:
        forwarded_for = incoming.forwarded_for + b", " + client
    else:
        forwarded_for = client
    proto = (
        incoming.forwarded_proto if trusted_peer and incoming.forwarded_proto else scheme.encode()
    )
    headers.append((b"x-forwarded-for", forwarded_for))
    headers.append((b"x-forwarded-proto", proto))
    if incoming.hosts:
        headers.append((b"x-forwarded-host", incoming.hosts[0]))
    headers.append((b"x-request-id", request_id))
    headers.append((b"traceparent", traceparent))
    return headers


def downstream_headers(
    upstream: Iterable[tuple[bytes, bytes]], extra: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The response header list sent to the client.

    `upstream` names are lower-case already: the upstream client lowers them as it parses.
    """
    pairs = list(upstream)
    named: set[bytes] = set()
    for name, value in pairs:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    frozen_named = frozenset(named)
    kept = [(n, v) for n, v in pairs if not _dropped(n, frozen_named) and n != b"x-request-id"]
    kept.extend(extra)
    return kept
