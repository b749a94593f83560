"""What a process exports and how it logs, from `STRANGLER_*` environment variables.

One set of variables for every process (proxy, monolith, service, relay), so that
`STRANGLER_TRACES_EXPORTER=console strangler up` turns tracing on across the whole system.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ObservabilitySettings"]


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRANGLER_", extra="ignore")

    traces_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="none: spans are not recorded (trace context is still propagated); "
        "console: one JSON span per line on stderr; otlp: OTLP over HTTP to otlp_endpoint",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces; unset, the "
        "exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT or uses its own default",
    )
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = Field(
        default=True,
        description="One line per request answered by the monolith and the service",
    )
    access_log_internal: bool = Field(
        default=False,
        description="Also log, at INFO, the processes' successful calls on each other "
        "(/internal/..., /ready), which are at DEBUG otherwise: an audit of the sync's calls",
    )
