"""Schema migrations of the monolith database, run through alembic's API.

The alembic environment lives in `migrations/monolith/`; this module points alembic at it and
at the configured database, so `python -m legacy_monolith migrate` needs no alembic.ini.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations" / "monolith"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    """Bring the database to the newest schema revision."""
    command.upgrade(alembic_config(database_url), "head")


def new_revision(database_url: str, message: str) -> None:
    """Autogenerate a revision from the difference between the models and the database."""
    command.revision(alembic_config(database_url), message=message, autogenerate=True)
