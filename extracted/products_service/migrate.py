"""Schema migrations of the products service database: migrations/products."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from strangler import migrations

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations" / "products"


def alembic_config(database_url: str) -> Config:
    return migrations.alembic_config(MIGRATIONS_DIR, database_url)


def upgrade_to_head(database_url: str) -> None:
    """Bring the database to the newest schema revision."""
    migrations.upgrade_to_head(MIGRATIONS_DIR, database_url)


def new_revision(database_url: str, message: str) -> None:
    migrations.new_revision(MIGRATIONS_DIR, database_url, message)
