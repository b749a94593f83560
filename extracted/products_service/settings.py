"""Settings of the products service, read from `PRODUCTS_SERVICE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProductsServiceSettings(BaseSettings):
    """Its own database (a SQLite file by default), the token public key the monolith
    publishes, where to read the migration phase, and the service-to-service sync token."""

    model_config = SettingsConfigDict(env_prefix="PRODUCTS_SERVICE_", extra="ignore")

    database_url: str = "sqlite:///var/products_service.db"
    jwt_public_key_file: Path = Path("var/jwt-public.pem")
    jwt_issuer: str = "strangler-monolith"
    jwt_audience: str = "strangler-shop"
    routing_file: Path | None = Path("var/routing.toml")  # the live state `up` keeps
    sync_token: SecretStr | None = None
    metrics_token: SecretStr | None = None  # reads /internal/metrics only (the sync token too)
    host: str = "127.0.0.1"
    port: int = 8002
    # An order has this long from its reservation to confirming it; after that the sweep
    # gives the stock back and a late confirm is refused (the order then fails, unrecorded).
    # Longer than the monolith's slowest order attempt: its retries of reserve and confirm.
    reservation_lease_seconds: float = Field(120.0, gt=0, le=86_400)
    # How often the sweep looks for expired reservations (one indexed read when none are).
    reservation_sweep_seconds: float = Field(5.0, gt=0, le=3_600)
