"""routing.toml as the nginx export reads it: the proxy's model, and what nginx cannot take.

The file is parsed with strangler.routing_file, the model the proxy reads it with, so the export
refuses every file the proxy refuses, with the proxy's message. The fields only the Python proxy
acts on (breaker, shadow queue, read-your-writes bounds...) are validated too and then left
unused. On top, this reader refuses what nginx cannot be given as is: names that cannot be part
of an nginx variable or string, TLS upstreams, a cookie name nginx would read as a variable,
prefixes that no normalised request path can hold.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NewType

from strangler.routing_file import (
    ConfigError,
    RoutingConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)

__all__ = ["EdgeRouting", "RoutingFileError", "address", "load_routing", "parse_routing"]

EdgeRouting = NewType("EdgeRouting", RoutingConfig)
"""A routing config that passed the export's checks too: only this module makes one."""

# Names end up inside nginx variable names, upstream names and quoted strings.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# A cookie name is an RFC 6265 token; `$` would start an nginx variable in the Set-Cookie value.
_COOKIE = re.compile(r"^[A-Za-z0-9!#%&'*+.^_`|~-]+$")
# What a normalised request path holds: RFC 3986 pchar, unreserved and sub-delims, and `/`.
_PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$")


class RoutingFileError(ConfigError):
    """routing.toml cannot be exported: the proxy refuses it, or nginx cannot be given it.

    The message names the field and what is wrong.
    """


def address(upstream: UpstreamConfig) -> str:
    """host:port as an nginx `server` line and a Host header take it (plain HTTP: port 80)."""
    host = upstream.url.host or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{upstream.url.port or 80}"


def _unexportable(routing: RoutingConfig) -> list[str]:
    """What nginx cannot be given as is, each naming its field; the proxy accepts all of it."""
    named = [("upstreams", name) for name in routing.upstreams]
    named += [("capabilities", name) for name in routing.capabilities]
    problems = [
        f"{table}.{name}: the name cannot be part of an nginx variable or upstream name;"
        " use letters, digits, '_', '.' or '-'"
        for table, name in named
        if not _NAME.match(name)
    ]
    problems += [
        f"upstreams.{name}.url: the nginx export writes plain-HTTP upstreams only; put the TLS "
        "settings (proxy_ssl_*) in by hand for an https upstream"
        for name, upstream in routing.upstreams.items()
        if upstream.url.scheme != "http"
    ]
    cookie = routing.proxy.sticky_cookie
    if not _COOKIE.match(cookie):
        problems.append(
            f"proxy.sticky_cookie: {cookie!r} is not a cookie name nginx can set"
            " (an RFC 6265 token, without '$')"
        )
    problems += [
        f"capabilities.{name}.prefixes: prefix {prefix!r} holds characters a normalised request"
        " path never holds (the proxy never matches it; nginx, which decodes paths, would)"
        for name, capability in routing.capabilities.items()
        for prefix in capability.prefixes
        if not _PATH.match(prefix)
    ]
    return problems


def _exportable(routing: RoutingConfig, source: str) -> EdgeRouting:
    problems = _unexportable(routing)
    if problems:
        raise RoutingFileError(f"{source} cannot be exported to nginx: {'; '.join(problems)}")
    return EdgeRouting(routing)


def parse_routing(text: str, source: str = "routing.toml") -> EdgeRouting:
    """Parse routing TOML for the export; raise RoutingFileError naming every bad field."""
    try:
        routing = parse_config(text, source)
    except ConfigError as exc:
        raise RoutingFileError(str(exc)) from exc
    return _exportable(routing, source)


def load_routing(path: Path) -> EdgeRouting:
    try:
        routing = load_config(path)
    except ConfigError as exc:
        raise RoutingFileError(str(exc)) from exc
    return _exportable(routing, str(path))
