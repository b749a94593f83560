"""Tables owned by the products capability."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, MetaData, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from strangler.db import NAMING_CONVENTION
from strangler.sync.apply import EntitySpec
from strangler.sync.tables import COUNTER, sync_tables


class ProductsBase(DeclarativeBase):
    """Declarative base of this capability alone (see UsersBase for why)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Product(ProductsBase):
    """A product for sale. `version` grows by one on every write, stock changes included:
    it is what lets a copy of this row elsewhere tell a newer state from an older one."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price_cents >= 0", name="price_not_negative"),
        # Never reuse the id of a deleted product: its tombstone on the other side would
        # swallow the new product's events.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price_cents: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(COUNTER, default=1)  # 64-bit on PostgreSQL
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


SYNC_TABLES = sync_tables(ProductsBase.metadata, "products")
"""Outbox, dead letters, tombstones and relay lease of the products sync (owned here)."""

DATA_COLUMNS = ("sku", "name", "description", "price_cents", "stock")

SYNC_SPEC = EntitySpec(
    name="products",
    table=Product.__table__,  # type: ignore[arg-type]
    tombstones=SYNC_TABLES.tombstones,
    data_columns=DATA_COLUMNS,
)
"""How products are stored here, for the toolkit's apply path and checksums."""
