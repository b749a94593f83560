"""A product change and its outbox event commit together or not at all, on every database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, func, select, text

from legacy_monolith import products
from legacy_monolith.migrate import upgrade_to_head
from legacy_monolith.products.schemas import ProductPatch
from legacy_monolith.products.service import get_product, update_product
from strangler.db import Sessions, create_db_engine
from strangler.phases import PhaseFile
from strangler.sync.tables import sync_tables
from tests.support.databases import BACKENDS, database

OUTBOX = sync_tables(MetaData(), "products").outbox


@pytest.fixture(params=BACKENDS)
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sessions]:
    routing = tmp_path / "routing.toml"
    routing.write_text('[capabilities.products]\nphase = "dual_write"\n')
    with database(request.param, tmp_path) as url:
        upgrade_to_head(url)
        engine = create_db_engine(url)
        made = Sessions(engine, info=products.sessions_info(PhaseFile(routing, "products")))
        with made.write() as session:
            products.add_missing_products(
                session, [products.ProductCreate(sku="A-1", name="Kettle", price="10.00", stock=1)]
            )  # type: ignore[arg-type]
        yield made
        engine.dispose()


def _events(sessions: Sessions) -> list[tuple[int, int, str]]:
    with sessions.read() as session:
        rows = session.execute(
            select(OUTBOX.c.entity_key, OUTBOX.c.version, OUTBOX.c.op).order_by(OUTBOX.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_each_write_records_its_event_with_its_version(sessions: Sessions) -> None:
    with sessions.write() as session:
        update_product(session, 1, ProductPatch(name="Kettle 2"))
    with sessions.write() as session:
        products.reserve_stock(session, {1: 1})
        session.commit()
    assert _events(sessions) == [(1, 1, "upsert"), (1, 2, "upsert"), (1, 3, "upsert")]


def test_a_refused_write_records_nothing(sessions: Sessions) -> None:
    with sessions.write() as session:
        with pytest.raises(products.InsufficientStock):
            products.reserve_stock(session, {1: 5})
        session.rollback()
    assert _events(sessions) == [(1, 1, "upsert")]


def test_when_the_event_cannot_be_recorded_the_change_does_not_happen(sessions: Sessions) -> None:
    """Plant the fault: the outbox table is gone, so recording the event fails."""
    with sessions.write() as session:
        session.execute(text("ALTER TABLE products_outbox RENAME TO products_outbox_gone"))
        session.commit()
    with sessions.write() as session, pytest.raises(Exception, match="products_outbox"):
        update_product(session, 1, ProductPatch(name="never"))
    with sessions.read() as session:
        product = get_product(session, 1)
        assert (product.name, product.version) == ("Kettle", 1)
        assert session.scalar(select(func.count()).select_from(text("products_outbox_gone"))) == 1


def test_after_writes_cut_over_the_monolith_refuses_product_writes(
    sessions: Sessions, tmp_path: Path
) -> None:
    (tmp_path / "routing.toml").write_text('[capabilities.products]\nphase = "writes_cutover"\n')
    with sessions.write() as session, pytest.raises(products.WritesMoved):
        update_product(session, 1, ProductPatch(name="lost?"))
    with sessions.write() as session, pytest.raises(products.WritesMoved):
        products.reserve_stock(session, {1: 1})
    with sessions.read() as session:
        product = get_product(session, 1)
        assert (product.name, product.stock, product.version) == ("Kettle", 1, 1)
    assert _events(sessions) == [(1, 1, "upsert")]
