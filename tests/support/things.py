"""A small synced entity ("things": id, unique name, price, version) on a real database, for
tests of the sync toolkit's data paths without either app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.orm import Session

from strangler.db import create_db_engine
from strangler.sync.apply import EntitySpec
from strangler.sync.tables import sync_tables
from tests.support.databases import database

Row = tuple[int, int, str, int]  # key, version, name, price
State = tuple[dict[int, tuple[int, str, int]], dict[int, int]]


def things_spec(metadata: MetaData, name: str = "things") -> EntitySpec:
    table = Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), unique=True, nullable=False),
        Column("price", BigInteger, nullable=False),
        Column("version", Integer, nullable=False),
    )
    stones = sync_tables(metadata, name).tombstones
    return EntitySpec(name, table, stones, ("name", "price"))


@contextmanager
def things_database(backend: str, directory: Path) -> Iterator[tuple[Engine, EntitySpec]]:
    """A fresh database of `backend` with the things tables, dropped afterwards."""
    with database(backend, directory) as url:
        engine = create_db_engine(url)
        metadata = MetaData()
        spec = things_spec(metadata)
        metadata.create_all(engine)
        try:
            yield engine, spec
        finally:
            engine.dispose()


def seed(session: Session, spec: EntitySpec, rows: list[Row], stones: dict[int, int]) -> None:
    session.execute(delete(spec.table))
    session.execute(delete(spec.tombstones))
    if rows:
        session.execute(
            insert(spec.table),
            [{"id": k, "version": v, "name": n, "price": p} for k, v, n, p in rows],
        )
    if stones:
        session.execute(
            insert(spec.tombstones), [{"entity_key": k, "version": v} for k, v in stones.items()]
        )


def state(session: Session, spec: EntitySpec) -> State:
    table = spec.table
    rows = session.execute(select(table.c.id, table.c.version, table.c.name, table.c.price))
    stones = session.execute(select(spec.tombstones.c.entity_key, spec.tombstones.c.version))
    return {r[0]: (r[1], r[2], r[3]) for r in rows}, {s[0]: s[1] for s in stones}
