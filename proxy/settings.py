"""Settings of the proxy process, read from `PROXY_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProxySettings(BaseSettings):
    """Where the routing file and audit log live, where to listen, the admin token.

    Without `PROXY_ADMIN_TOKEN` the admin API refuses every change and forced-target headers
    are ignored.
    """

    model_config = SettingsConfigDict(env_prefix="PROXY_", extra="ignore")

    routing_file: Path = Path("routing.toml")
    audit_log: Path = Path("var/routing-audit.jsonl")
    admin_token: SecretStr | None = None
    reload_interval_seconds: float = 0.5
    host: str = "127.0.0.1"
    port: int = 8000
