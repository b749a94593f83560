"""Use cases of the products service: the monolith's, moved, writing the reverse outbox."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from extracted.products_service.models import DATA_COLUMNS, SYNC_TABLES, Product, Reservation
from extracted.products_service.schemas import ProductCreate, ProductPatch
from strangler.phases import PhaseFile, SyncDirection
from strangler.sync.events import ChangeEvent
from strangler.sync.outbox import record_change

CHANGE_FEED = "products_service.phase_file"
"""Key of `session.info` under which the composition root puts the PhaseFile that says whether
product writes go to the outbox (see `sessions_info`)."""


def sessions_info(phase_file: PhaseFile) -> dict[str, object]:
    """What the composition root adds to every session's info so writes can follow the phase."""
    return {CHANGE_FEED: phase_file}


class WritesElsewhere(Exception):
    """The phase says the monolith takes product writes and syncs them here: a write taken
    here would be overwritten by the sync, or carried nowhere (e.g. a write that reached the
    service after a rollback flipped writes back to the monolith)."""


def _ensure_writes_here(session: Session) -> None:
    """Refuse (rolling back) a write while the phase syncs monolith -> service: checked
    before the row is looked up too, so a product the copy has not received yet is refused
    as a write that belongs elsewhere (503), not reported missing (404)."""
    phase_file = session.info.get(CHANGE_FEED)
    if isinstance(phase_file, PhaseFile) and phase_file.sync() is SyncDirection.FORWARD:
        session.rollback()
        raise WritesElsewhere(phase_file.current().value)


def _emit(session: Session, product_id: int, *, deleted_version: int | None = None) -> None:
    """Write the product's change event to the outbox when the phase syncs service -> monolith.

    Called inside the write's transaction, after the change: both commit or neither does.
    Refuses (rolling back) while the phase syncs the other way.
    """
    _ensure_writes_here(session)  # checked again at the end: the phase may have just moved
    phase_file = session.info.get(CHANGE_FEED)
    if not isinstance(phase_file, PhaseFile) or phase_file.sync() is not SyncDirection.REVERSE:
        return
    if deleted_version is not None:
        event = ChangeEvent(entity="products", key=product_id, version=deleted_version, op="delete")
    else:
        session.flush()
        row = session.execute(
            select(Product.version, *(getattr(Product, c) for c in DATA_COLUMNS)).where(
                Product.id == product_id
            )
        ).one()
        event = ChangeEvent(
            entity="products",
            key=product_id,
            version=row[0],
            op="upsert",
            data=dict(zip(DATA_COLUMNS, row[1:], strict=True)),
        )
    record_change(session, SYNC_TABLES, event)


_FIELD_COLUMNS = {"price": "price_cents"}


class ProductNotFound(Exception):
    """No product has this id."""


class SkuTaken(Exception):
    """Another product already has this SKU."""


def list_products(
    session: Session, *, limit: int, after_id: int | None
) -> tuple[Sequence[Product], int | None]:
    """One page of products in id order, and the id to continue after (None at the end)."""
    query = select(Product).order_by(Product.id).limit(limit + 1)
    if after_id is not None:
        query = query.where(Product.id > after_id)
    rows = session.scalars(query).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def get_product(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise ProductNotFound(product_id)
    return product


def _commit_or_sku_taken(session: Session, sku: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise SkuTaken(sku) from exc


def create_product(session: Session, new: ProductCreate) -> Product:
    """Add a product at version 1; raise SkuTaken when the SKU is in use."""
    _ensure_writes_here(session)
    if session.scalar(select(Product.id).where(Product.sku == new.sku)) is not None:
        raise SkuTaken(new.sku)
    product = Product(
        sku=new.sku,
        name=new.name,
        description=new.description,
        price_cents=new.price,
        stock=new.stock,
        version=1,
    )
    session.add(product)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise SkuTaken(new.sku) from exc
    _emit(session, product.id)
    _commit_or_sku_taken(session, new.sku)
    return product


def update_product(session: Session, product_id: int, patch: ProductPatch) -> Product:
    """Apply a partial update and bump the version; the row is locked while it changes."""
    _ensure_writes_here(session)
    product = session.get(Product, product_id, with_for_update=True)
    if product is None:
        raise ProductNotFound(product_id)
    changes = patch.changes()
    sku = changes.get("sku")
    if isinstance(sku, str) and sku != product.sku:
        if session.scalar(select(Product.id).where(Product.sku == sku)) is not None:
            raise SkuTaken(sku)
    for field, value in changes.items():
        setattr(product, _FIELD_COLUMNS.get(field, field), value)
    product.version += 1
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise SkuTaken(str(sku)) from exc
    _emit(session, product.id)
    _commit_or_sku_taken(session, str(sku or product.sku))
    return product


def delete_product(session: Session, product_id: int) -> None:
    _ensure_writes_here(session)
    product = session.get(Product, product_id, with_for_update=True)
    if product is None:
        raise ProductNotFound(product_id)
    session.delete(product)
    # The delete is a write too: its version, kept in a tombstone, outranks any late event.
    deleted_version = product.version + 1
    stones = SYNC_TABLES.tombstones
    session.execute(delete(stones).where(stones.c.entity_key == product_id))
    session.execute(insert(stones).values(entity_key=product_id, version=deleted_version))
    _emit(session, product_id, deleted_version=deleted_version)
    session.commit()


class ReservationReleased(Exception):
    """This reservation id was released before it was made: it can no longer take stock."""


class UnknownProducts(Exception):
    def __init__(self, product_ids: list[int]) -> None:
        super().__init__(product_ids)
        self.product_ids = product_ids


class OutOfStock(Exception):
    def __init__(self, product_id: int, requested: int, available: int) -> None:
        super().__init__(product_id)
        self.product_id, self.requested, self.available = product_id, requested, available


def snapshots(session: Session, product_ids: Sequence[int]) -> list[Product]:
    return list(session.scalars(select(Product).where(Product.id.in_(set(product_ids)))))


def _move_stock(session: Session, product_id: int, delta: int) -> bool:
    """Add `delta` (negative: take) to the stock if it stays >= 0; bump the version; emit."""
    condition = [Product.id == product_id]
    if delta < 0:
        condition.append(Product.stock >= -delta)
    result = session.execute(
        update(Product)
        .where(*condition)
        .values(stock=Product.stock + delta, version=Product.version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _emit(session, product_id)
    return True


def reserve(session: Session, reservation_id: str, quantities: dict[int, int]) -> Reservation:
    """Take stock for a reservation, all or nothing, exactly once per reservation id."""
    existing = session.get(Reservation, reservation_id, with_for_update=True)
    if existing is not None:
        if existing.status == "released":
            raise ReservationReleased(reservation_id)
        return existing
    known = {p.id for p in snapshots(session, list(quantities))}
    missing = sorted(set(quantities) - known)
    if missing:
        raise UnknownProducts(missing)
    for product_id in sorted(quantities):
        if not _move_stock(session, product_id, -quantities[product_id]):
            available = session.scalar(select(Product.stock).where(Product.id == product_id))
            session.rollback()
            raise OutOfStock(product_id, quantities[product_id], available or 0)
    reservation = Reservation(
        id=reservation_id,
        status="reserved",
        items=json.dumps(sorted(quantities.items())),
    )
    session.add(reservation)
    try:
        session.commit()
    except IntegrityError:  # the same id reserved concurrently: that one counts, not this
        session.rollback()
        return reserve(session, reservation_id, quantities)
    return reservation


def release(session: Session, reservation_id: str) -> str:
    """Give a reservation's stock back, once; remember ids released before being made."""
    existing = session.get(Reservation, reservation_id, with_for_update=True)
    if existing is None:
        session.add(Reservation(id=reservation_id, status="released", items="[]"))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return release(session, reservation_id)
        return "released"
    if existing.status == "reserved":
        for product_id, quantity in json.loads(existing.items):
            _move_stock(session, product_id, quantity)
        existing.status = "released"
        session.commit()
    return existing.status
