"""The service's tables: products, and the sync bookkeeping for them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, MetaData, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from strangler.db import NAMING_CONVENTION
from strangler.sync.apply import EntitySpec
from strangler.sync.tables import sync_tables


class ServiceBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Product(ServiceBase):
    """The same row as the monolith's: keys and versions arrive with the change events."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price_cents >= 0", name="price_not_negative"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price_cents: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


SYNC_TABLES = sync_tables(ServiceBase.metadata, "products")
DATA_COLUMNS = ("sku", "name", "description", "price_cents", "stock")
SYNC_SPEC = EntitySpec(
    name="products",
    table=Product.__table__,  # type: ignore[arg-type]
    tombstones=SYNC_TABLES.tombstones,
    data_columns=DATA_COLUMNS,
)


class Reservation(ServiceBase):
    """Stock taken for an order that the orders capability is placing over HTTP.

    Keyed by the caller's reservation id, so a retried reserve takes stock once; a release
    of an id never reserved is remembered (status "released"), so a reserve that arrives after
    its own timeout-and-release takes nothing.
    """

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    items: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
