"""Settings of the `strangler` CLI, from `STRANGLER_*` environment variables.

Where a value is the same one an app reads (its database URL, the sync token), the app's own
variable is accepted too, so one environment serves both.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CliSettings", "read_or_create_secret"]


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STRANGLER_", extra="ignore", populate_by_name=True
    )

    proxy_url: str = "http://127.0.0.1:8000"
    admin_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRANGLER_ADMIN_TOKEN", "PROXY_ADMIN_TOKEN")
    )
    admin_token_file: Path = Path("var/admin-token")
    monolith_url: str = "http://127.0.0.1:8001"
    service_url: str = "http://127.0.0.1:8002"
    monolith_database_url: str = Field(
        default="sqlite:///var/monolith.db",
        validation_alias=AliasChoices("STRANGLER_MONOLITH_DATABASE_URL", "MONOLITH_DATABASE_URL"),
    )
    service_database_url: str = Field(
        default="sqlite:///var/products_service.db",
        validation_alias=AliasChoices(
            "STRANGLER_SERVICE_DATABASE_URL", "PRODUCTS_SERVICE_DATABASE_URL"
        ),
    )
    sync_token: SecretStr | None = None
    sync_token_file: Path = Path("var/sync-token")
    routing_file: Path = Path("var/routing.toml")
    """The live routing state the proxy serves; `strangler up` makes it from `routing_template`
    on first start, so the committed template stays as it was (git status stays clean)."""
    routing_template: Path = Path("routing.toml")
    state_dir: Path = Path("var")

    def admin_token_value(self) -> str | None:
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        return _read(self.admin_token_file)

    def sync_token_value(self) -> str | None:
        if self.sync_token is not None:
            return self.sync_token.get_secret_value()
        return _read(self.sync_token_file)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def read_or_create_secret(path: Path) -> str:
    """The secret in `path`, creating it (mode 0600) with a fresh random value if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
