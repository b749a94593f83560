"""Settings of the monolith, read from `MONOLITH_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonolithSettings(BaseSettings):
    """Everything the monolith can be told from outside.

    The defaults run it on a SQLite file under `var/` with no server to install;
    `MONOLITH_DATABASE_URL=postgresql+psycopg://...` points it at PostgreSQL. The public half
    of the token key is written to `jwt_public_key_file` for services that verify tokens;
    `routing_file` is where the migration phase is read; `sync_token` enables the internal
    sync API (service to service).
    """

    model_config = SettingsConfigDict(env_prefix="MONOLITH_", extra="ignore")

    database_url: str = "sqlite:///var/monolith.db"
    jwt_private_key_file: Path = Path("var/jwt-private.pem")
    jwt_public_key_file: Path = Path("var/jwt-public.pem")
    routing_file: Path | None = Path("var/routing.toml")  # the live state `up` keeps
    sync_token: SecretStr | None = None
    metrics_token: SecretStr | None = None  # reads /internal/metrics only (the sync token too)
    products_service_url: str = "http://127.0.0.1:8002"
    products_service_timeout_seconds: float = 2.0
    jwt_issuer: str = "strangler-monolith"
    jwt_audience: str = "strangler-shop"
    access_token_ttl_seconds: int = 3600
    host: str = "127.0.0.1"
    port: int = 8001
