"""Settings of the monolith, read from `MONOLITH_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class MonolithSettings(BaseSettings):
    """Everything the monolith can be told from outside.

    The defaults run it on a SQLite file under `var/` with no server to install;
    `MONOLITH_DATABASE_URL=postgresql+psycopg://...` points it at PostgreSQL.
    """

    model_config = SettingsConfigDict(env_prefix="MONOLITH_", extra="ignore")

    database_url: str = "sqlite:///var/monolith.db"
    jwt_private_key_file: Path = Path("var/jwt-private.pem")
    jwt_issuer: str = "strangler-monolith"
    jwt_audience: str = "strangler-shop"
    access_token_ttl_seconds: int = 3600
    host: str = "127.0.0.1"
    port: int = 8001
