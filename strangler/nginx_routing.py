"""routing.toml as the nginx export reads it: the fields an edge needs, checked before use.

The proxy's own reader (proxy/config.py) validates the whole file and is the authority on
it; the toolkit may not import the proxy, so this reader checks again what the export uses
(upstreams, capabilities' prefixes, phase and percentages, the sticky cookie, the body limit,
trusted proxies) with the proxy's rules, and leaves the fields only the Python proxy acts on
(breaker, shadow queue, read-your-writes bounds...) unread. On top, it refuses what nginx
cannot be given as is: names that cannot be part of an nginx variable or string, TLS
upstreams, prefixes that no normalised request path can hold.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from strangler.phases import Phase

__all__ = [
    "EdgeCapability",
    "EdgeOptions",
    "EdgeRouting",
    "EdgeUpstream",
    "RoutingFileError",
    "load_routing",
    "parse_routing",
]

Percent = Annotated[float, Field(ge=0, le=100)]
Seconds = Annotated[float, Field(gt=0, le=3600)]

# Names end up inside nginx variable names, upstream names and quoted strings.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# A cookie name is an RFC 6265 token; `$` would start an nginx variable in the Set-Cookie value.
_COOKIE = re.compile(r"^[A-Za-z0-9!#%&'*+.^_`|~-]+$")
# What a normalised request path holds: RFC 3986 pchar, unreserved and sub-delims, and `/`.
_PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$")


class RoutingFileError(ValueError):
    """routing.toml cannot be exported; the message names the field and what is wrong."""


class _Reading(BaseModel):
    # Unknown keys are the proxy's business (it refuses them); this reader reads only its own.
    model_config = ConfigDict(extra="ignore", frozen=True)


def _checked_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"name {value!r} cannot be exported to nginx: use letters, digits, '_', '.' or '-'"
        )
    return value


class EdgeUpstream(_Reading):
    url: AnyHttpUrl
    connect_timeout: Seconds = 1.0
    read_timeout: Seconds = 10.0
    total_timeout: Seconds = 30.0
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 200

    @field_validator("url")
    @classmethod
    def _plain_http_origin(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.query or url.fragment or (url.path not in (None, "", "/")):
            raise ValueError("must be an origin like http://127.0.0.1:8001, without path or query")
        if url.scheme != "http":
            raise ValueError(
                "the nginx export writes plain-HTTP upstreams only; put the TLS settings "
                "(proxy_ssl_*) in by hand for an https upstream"
            )
        return url

    @property
    def address(self) -> str:
        """host:port as an nginx `server` line and a Host header take it."""
        host = self.url.host or ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.url.port or 80}"


class EdgeCapability(_Reading):
    prefixes: Annotated[list[str], Field(min_length=1)]
    monolith: str = "monolith"
    service: str
    phase: Phase = Phase.MONOLITH
    canary_percent: Percent = 0
    shadow_percent: Percent = 100
    shadow_during_canary: bool = False
    sticky_key: Literal["subject", "cookie"] = "subject"

    @field_validator("prefixes")
    @classmethod
    def _normalised_prefixes(cls, prefixes: list[str]) -> list[str]:
        cleaned = []
        for prefix in prefixes:
            if not prefix.startswith("/") or "//" in prefix or "/." in prefix or "%" in prefix:
                raise ValueError(f"prefix {prefix!r} must be a plain absolute path like /products")
            if not _PATH.match(prefix):
                raise ValueError(
                    f"prefix {prefix!r} holds characters a normalised request path never "
                    "holds (the proxy never matches it; nginx, which decodes paths, would)"
                )
            normalised = prefix.rstrip("/") or "/"
            if normalised not in cleaned:  # "/a" and "/a/" are one prefix: one location
                cleaned.append(normalised)
        return cleaned


class EdgeOptions(_Reading):
    default_upstream: str = "monolith"
    body_limit_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    trusted_proxies: list[str] = []
    sticky_cookie: str = "strangler_sticky"

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address or network") from exc
        return values

    @field_validator("sticky_cookie")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not _COOKIE.match(value):
            raise ValueError(f"{value!r} is not a cookie name (an RFC 6265 token, without '$')")
        return value


class EdgeRouting(_Reading):
    proxy: EdgeOptions = EdgeOptions()
    upstreams: Annotated[dict[str, EdgeUpstream], Field(min_length=1)]
    capabilities: dict[str, EdgeCapability] = {}

    @field_validator("upstreams", "capabilities")
    @classmethod
    def _exportable_names(cls, tables: dict[str, object]) -> dict[str, object]:
        for name in tables:
            _checked_name(name)
        return tables

    @model_validator(mode="after")
    def _references_and_prefixes(self) -> EdgeRouting:
        known = ", ".join(sorted(self.upstreams))
        if self.proxy.default_upstream not in self.upstreams:
            raise ValueError(
                f"proxy.default_upstream: unknown upstream {self.proxy.default_upstream!r}"
                f" (known: {known})"
            )
        owner: dict[str, str] = {}
        for name, capability in self.capabilities.items():
            for role in ("monolith", "service"):
                upstream = getattr(capability, role)
                if upstream not in self.upstreams:
                    raise ValueError(
                        f"capabilities.{name}.{role}: unknown upstream {upstream!r}"
                        f" (known: {known})"
                    )
            for prefix in capability.prefixes:
                if owner.get(prefix, name) != name:
                    raise ValueError(
                        f"capabilities.{name}.prefixes: {prefix!r} is already a prefix of "
                        f"capabilities.{owner[prefix]}"
                    )
                owner[prefix] = name
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_routing(text: str, source: str = "routing.toml") -> EdgeRouting:
    """Parse routing TOML for the export; raise RoutingFileError naming every bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingFileError(f"{source} is not valid TOML: {exc}") from exc
    try:
        return EdgeRouting.model_validate(data)
    except ValidationError as exc:
        raise RoutingFileError(f"{source} refused: {_describe(exc)}") from exc


def load_routing(path: Path) -> EdgeRouting:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RoutingFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RoutingFileError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_routing(text, str(path))
