"""routing.toml: the live migration state, validated in full before anything uses it.

One model of the file for every reader of it: the proxy (proxy/config.py, which adds the rule
that depends on the running config) and the nginx export (strangler/nginx_routing.py, which
adds what nginx cannot be given). It lives in the toolkit because the toolkit may not import
the proxy; two readers with their own rules would drift, and the export could accept a file
the proxy refuses.

A config that fails validation is refused with a message naming the field, and whatever was
serving keeps serving.
"""

from __future__ import annotations

import ipaddress
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
    "BreakerOptions",
    "CapabilityConfig",
    "ConfigError",
    "ProxyOptions",
    "RoutingConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]

Percent = Annotated[float, Field(ge=0, le=100)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class ConfigError(ValueError):
    """routing.toml cannot be used; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamConfig(_Strict):
    url: AnyHttpUrl
    connect_timeout: Seconds = 1.0
    read_timeout: Seconds = 10.0
    total_timeout: Seconds = 30.0
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 200

    @field_validator("url")
    @classmethod
    def _origin_only(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.query or url.fragment or (url.path not in (None, "", "/")):
            raise ValueError("must be an origin like http://127.0.0.1:8001, without path or query")
        return url

    @property
    def origin(self) -> str:
        return str(self.url).rstrip("/")


class CapabilityConfig(_Strict):
    prefixes: Annotated[list[str], Field(min_length=1)]
    monolith: str = "monolith"
    service: str
    phase: Phase = Phase.MONOLITH
    canary_percent: Percent = 0
    shadow_percent: Percent = 100
    shadow_during_canary: bool = False
    ignore_fields: list[str] = []
    # The row version field: shadow answers at different versions are sync lag, not mismatch.
    version_field: str | None = "version"
    sticky_key: Literal["subject", "cookie"] = "subject"
    # Paths outside the capability whose writes change its data (orders take stock): the
    # write fence holds them too, and they pin their user for read-your-writes.
    related_write_prefixes: list[str] = []

    @field_validator("prefixes", "related_write_prefixes")
    @classmethod
    def _normalised_prefixes(cls, prefixes: list[str]) -> list[str]:
        cleaned: list[str] = []
        for prefix in prefixes:
            if not prefix.startswith("/") or "//" in prefix or "/." in prefix or "%" in prefix:
                raise ValueError(f"prefix {prefix!r} must be a plain absolute path like /products")
            normalised = prefix.rstrip("/") or "/"
            if normalised not in cleaned:  # "/a" and "/a/" are one prefix (one nginx location)
                cleaned.append(normalised)
        return cleaned


class BreakerOptions(_Strict):
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    cooldown_seconds: Seconds = 5.0


class ProxyOptions(_Strict):
    default_upstream: str = "monolith"
    body_limit_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    trusted_proxies: list[str] = []
    shadow_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    shadow_workers: Annotated[int, Field(ge=1, le=64)] = 4
    shadow_body_cap_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    mismatch_samples: Annotated[int, Field(ge=1, le=1000)] = 50
    # A shadow mismatch is asked again this much later before it counts (0: never): a row
    # written a moment ago is not yet on the other side, and that is relay lag.
    shadow_recheck_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    sticky_cookie: str = "strangler_sticky"
    # A write held by the write fence longer than this is answered 503 with Retry-After.
    write_hold_seconds: Seconds = 5.0
    # Read-your-writes: how often the write side's outbox is polled while users are pinned,
    # the longest a pin lasts (relay stopped), and how many pins are kept per capability.
    ryw_poll_interval_seconds: Annotated[float, Field(ge=0.005, le=5)] = 0.05
    ryw_max_pin_seconds: Seconds = 30.0
    ryw_max_pins: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address or network") from exc
        return values


class RoutingConfig(_Strict):
    proxy: ProxyOptions = ProxyOptions()
    breaker: BreakerOptions = BreakerOptions()
    upstreams: Annotated[dict[str, UpstreamConfig], Field(min_length=1)]
    capabilities: dict[str, CapabilityConfig] = {}

    @model_validator(mode="after")
    def _references_and_prefixes(self) -> RoutingConfig:
        if self.proxy.default_upstream not in self.upstreams:
            raise ValueError(
                f"proxy.default_upstream: unknown upstream {self.proxy.default_upstream!r}"
                f" (known: {', '.join(sorted(self.upstreams))})"
            )
        owner: dict[str, str] = {}
        for name, capability in self.capabilities.items():
            for role in ("monolith", "service"):
                upstream = getattr(capability, role)
                if upstream not in self.upstreams:
                    raise ValueError(
                        f"capabilities.{name}.{role}: unknown upstream {upstream!r}"
                        f" (known: {', '.join(sorted(self.upstreams))})"
                    )
            for prefix in capability.prefixes:
                if prefix in owner and owner[prefix] != name:
                    raise ValueError(
                        f"capabilities.{name}.prefixes: {prefix!r} overlaps the same prefix "
                        f"of capabilities.{owner[prefix]}"
                    )
                owner[prefix] = name
        related: dict[str, str] = {}
        for name, capability in self.capabilities.items():
            for prefix in capability.related_write_prefixes:
                if prefix in owner:
                    raise ValueError(
                        f"capabilities.{name}.related_write_prefixes: {prefix!r} is a prefix "
                        f"of capabilities.{owner[prefix]} itself"
                    )
                if prefix in related and related[prefix] != name:
                    raise ValueError(
                        f"capabilities.{name}.related_write_prefixes: {prefix!r} is already "
                        f"related to capabilities.{related[prefix]}"
                    )
                related[prefix] = name
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_config(text: str, source: str = "routing.toml") -> RoutingConfig:
    """Parse and validate routing TOML; raise ConfigError naming every bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} refused: {_describe(exc)}") from exc


def load_config(path: Path) -> RoutingConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_config(text, str(path))
