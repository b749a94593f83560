"""The schema comes from alembic migrations, and they match the models exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from legacy_monolith.migrate import alembic_config, upgrade_to_head
from legacy_monolith.schema import CAPABILITY_METADATA, combined_metadata
from strangler.db import create_db_engine
from tests.support.databases import BACKENDS, database


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    with database(request.param, tmp_path) as url:
        yield url


def _differences(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, combined_metadata()))
    finally:
        engine.dispose()


def test_migrations_at_head_match_the_models(empty_database: str) -> None:
    upgrade_to_head(empty_database)
    assert _differences(empty_database) == []


def test_the_check_sees_a_model_change_no_migration_has(empty_database: str) -> None:
    """Plant the fault: a migration stopping short of head leaves a difference to find."""
    command.upgrade(alembic_config(empty_database), "head")
    command.downgrade(alembic_config(empty_database), "base")
    differences = _differences(empty_database)
    added = {d[1].name for d in differences if d[0] == "add_table"}  # type: ignore[index,attr-defined]
    assert added == set(combined_metadata().tables)


def test_downgrade_to_base_and_back_up_works(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = create_db_engine(empty_database)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(config, "head")
    assert _differences(empty_database) == []


def test_no_foreign_key_crosses_a_capability() -> None:
    owner = {t.name: cap for cap, md in CAPABILITY_METADATA.items() for t in md.tables.values()}
    for table in combined_metadata().tables.values():
        for fk in table.foreign_keys:
            assert owner[fk.column.table.name] == owner[table.name], (
                table.name,
                fk.target_fullname,
            )


def test_the_products_service_migrations_at_head_match_its_models(empty_database: str) -> None:
    from extracted.products_service.migrate import upgrade_to_head as upgrade_service
    from extracted.products_service.models import ServiceBase

    upgrade_service(empty_database)
    engine = create_db_engine(empty_database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert list(compare_metadata(context, ServiceBase.metadata)) == []
    finally:
        engine.dispose()
