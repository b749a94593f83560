"""The service's tables: products, and the sync bookkeeping for them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from strangler.db import NAMING_CONVENTION
from strangler.sync.apply import EntitySpec
from strangler.sync.tables import COUNTER, sync_tables


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
    version: Mapped[int] = mapped_column(COUNTER, default=1)  # 64-bit on PostgreSQL
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


RESERVED = "reserved"
"""Stock taken, the order not recorded yet: the sweep releases it once its lease expires."""
CONFIRMED = "confirmed"
"""The order is about to be recorded: the stock stays taken, whatever the lease says."""
RELEASED = "released"
"""Stock given back here (or never taken: a release that arrived before its reserve)."""
EXPIRED = "expired"
"""Stock given back here by the sweep: its order never confirmed it within the lease."""
HANDED_BACK = "handed_back"
"""Stock to be given back where the writes went (the monolith, after a rollback): the caller
that asked for it returns the items there; nothing is given back here."""
HOLDING = (RESERVED, CONFIRMED)
"""The statuses in which a reservation holds stock on this side."""


class Reservation(ServiceBase):
    """Stock taken for an order that the orders capability is placing over HTTP.

    Keyed by the caller's reservation id, so a retried reserve takes stock once; a release
    of an id never reserved is remembered (status "released"), so a reserve that arrives after
    its own timeout-and-release takes nothing. `expires_at` ends the lease of a reservation
    still unconfirmed (its order may never be recorded: the caller crashed); None for those
    made before reservations had leases, which nothing can tell apart from placed orders.
    """

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_status_expires_at", "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    items: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
