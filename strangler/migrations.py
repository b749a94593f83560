"""Running an app's alembic environment through alembic's API, without an alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

__all__ = ["alembic_config", "new_revision", "upgrade_to_head"]


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """A Config pointing alembic at `migrations_dir` and at the database (env.py reads
    `config.attributes["database_url"]`)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(migrations_dir: Path, database_url: str) -> None:
    command.upgrade(alembic_config(migrations_dir, database_url), "head")


def new_revision(migrations_dir: Path, database_url: str, message: str) -> None:
    """Autogenerate a revision from the difference between the models and the database."""
    command.revision(
        alembic_config(migrations_dir, database_url), message=message, autogenerate=True
    )
