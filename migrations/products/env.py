"""Alembic environment of the products service database."""

from __future__ import annotations

from alembic import context

from extracted.products_service.models import ServiceBase
from strangler.db import create_db_engine

config = context.config
target_metadata = ServiceBase.metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    if not url:
        from extracted.products_service.settings import ProductsServiceSettings

        url = ProductsServiceSettings().database_url
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_db_engine(_url())
    is_sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=is_sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
