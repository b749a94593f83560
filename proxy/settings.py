"""Settings of the proxy process, read from `PROXY_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProxySettings(BaseSettings):
    """Where the routing file and audit log live, where to listen, the admin token.

    Without `PROXY_ADMIN_TOKEN` the admin API refuses every change and forced-target headers
    are ignored. `PROXY_SYNC_TOKEN` lets it read the sides' outbox positions, which release
    read-your-writes pins as soon as the sync carried a write over; without it a pin lasts
    `ryw_max_pin_seconds`. `PROXY_STATE_DIR` is where the `strangler` CLI keeps its backfill
    checkpoints and reconcile verdicts (its STRANGLER_STATE_DIR): the dashboard shows them and
    its gates read them, as `strangler advance` does.
    """

    model_config = SettingsConfigDict(env_prefix="PROXY_", extra="ignore")

    routing_file: Path = Path("routing.toml")
    audit_log: Path = Path("var/routing-audit.jsonl")
    admin_token: SecretStr | None = None
    sync_token: SecretStr | None = None
    state_dir: Path = Path("var")
    reload_interval_seconds: float = 0.5
    host: str = "127.0.0.1"
    port: int = 8000
