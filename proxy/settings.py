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
    its gates read them, as `strangler advance` does. `PROXY_SOURCE_ROOT` is the source tree the
    dashboard's "no data coupling" gate scans, and `PROXY_BOUNDARIES_FILE` the table ownership
    it checks against (default: boundaries.toml in that tree); `strangler up` passes the
    directory it runs in, as `strangler advance` scans the directory it runs in.
    """

    model_config = SettingsConfigDict(env_prefix="PROXY_", extra="ignore")

    routing_file: Path = Path("var/routing.toml")
    audit_log: Path = Path("var/routing-audit.jsonl")
    admin_token: SecretStr | None = None
    sync_token: SecretStr | None = None
    state_dir: Path = Path("var")
    source_root: Path = Path(".")
    boundaries_file: Path | None = None
    reload_interval_seconds: float = 0.5
    host: str = "127.0.0.1"
    port: int = 8000

    def boundaries_path(self) -> Path:
        """The boundaries file the gates read: PROXY_BOUNDARIES_FILE, else the source root's."""
        return self.boundaries_file or self.source_root / "boundaries.toml"
