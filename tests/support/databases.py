"""Real databases for tests: a SQLite file, or a PostgreSQL database made for this run.

PostgreSQL (127.0.0.1:5432, user postgres, trust auth by default; STRANGLER_TEST_PG_URL
overrides) is used whenever it answers. When it does not, its tests are skipped with the
reason, except with CI=true, where that fails the run: CI must prove both databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

PG_ADMIN_URL = os.environ.get(
    "STRANGLER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]


def postgres_unavailable_reason() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}".strip()


def require_postgres() -> None:
    reason = postgres_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def _sqlalchemy_url(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


@contextmanager
def postgres_database(prefix: str = "strangler_test") -> Iterator[str]:
    """Create a fresh PostgreSQL database, yield its SQLAlchemy URL, drop it afterwards."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _sqlalchemy_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def sqlite_database(directory: Path, name: str = "monolith") -> Iterator[str]:
    yield f"sqlite:///{directory / f'{name}.db'}"


@contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    """A fresh, empty database of `backend`, as a SQLAlchemy URL."""
    if backend == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        with sqlite_database(directory) as url:
            yield url


def lock_waiters(engine: Any) -> int:
    """How many sessions of `engine`'s PostgreSQL database wait on a lock now: what a test
    polls for to know a transaction it blocked is really blocked."""
    from sqlalchemy import text

    with engine.connect() as connection:
        waiting = connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
        )
    return int(waiting or 0)
