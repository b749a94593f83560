"""Use cases of the products capability."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from legacy_monolith.products.models import DATA_COLUMNS, SYNC_TABLES, Product
from legacy_monolith.products.schemas import ProductCreate, ProductPatch
from strangler.phases import Phase, PhaseFile, Side, routing_of
from strangler.sync.barrier import WritesRefused, require_writes_here, transaction_phase
from strangler.sync.events import ChangeEvent
from strangler.sync.outbox import record_change

CHANGE_FEED = "products.phase_file"
"""Key of `session.info` under which the composition root puts the PhaseFile that says whether
product writes go to the outbox (see `sessions_info`)."""


def sessions_info(phase_file: PhaseFile) -> dict[str, object]:
    """What the composition root adds to every session's info so writes can follow the phase."""
    return {CHANGE_FEED: phase_file}


class WritesMoved(Exception):
    """The products service takes product writes now (the phase says so, or the write barrier
    of this database is closed): a write here would be neither kept on the way back nor seen
    by the service."""


def _phase(session: Session) -> Phase:
    phase_file = session.info.get(CHANGE_FEED)
    return transaction_phase(session, phase_file if isinstance(phase_file, PhaseFile) else None)


def _ensure_writes_here(session: Session) -> None:
    """Refuse early, before any work, when the phase already says writes are elsewhere; the
    barrier decides for good at the end of the write (`_emit`)."""
    phase = _phase(session)
    if routing_of(phase).writes is Side.SERVICE:
        session.rollback()
        raise WritesMoved(phase.value)


def _emit(
    session: Session,
    product_id: int,
    *,
    deleted_version: int | None = None,
    product: Product | None = None,
) -> None:
    """Let the write commit only if this side may take product writes now, and record its
    change event in the outbox while the phase syncs.

    Called inside the write's transaction, after the change: the barrier row is read after
    the change (see strangler.sync.barrier), and the change and its event commit together or
    not at all. The phase is the one the transaction read first, never read again.
    """
    phase = _phase(session)
    try:
        require_writes_here(
            session, SYNC_TABLES, by_phase=routing_of(phase).writes is Side.MONOLITH
        )
    except WritesRefused as exc:
        session.rollback()
        raise WritesMoved(str(exc)) from exc
    if routing_of(phase).sync is None:
        return
    if deleted_version is not None:
        event = ChangeEvent(entity="products", key=product_id, version=deleted_version, op="delete")
    elif product is not None:
        # Flushed by the caller, the object holds what was written (an attribute changed by a
        # SQL expression would be expired and loaded here): no need to read the row back.
        event = ChangeEvent(
            entity="products",
            key=product_id,
            version=product.version,
            op="upsert",
            data={column: getattr(product, column) for column in DATA_COLUMNS},
        )
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


@dataclass
class InsufficientStock(Exception):
    """A product has fewer units than asked for; nothing was reserved."""

    product_id: int
    requested: int
    available: int


@dataclass(frozen=True)
class ProductSnapshot:
    """What another capability may know about a product at one moment."""

    id: int
    name: str
    price_cents: int
    stock: int


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
    _emit(session, product.id, product=product)
    _commit_or_sku_taken(session, new.sku)
    return product


def add_missing_products(session: Session, products: Sequence[ProductCreate]) -> int:
    """Insert those of `products` whose SKU is not taken yet, in one transaction; return how
    many were added. Re-running it adds nothing, which is what makes seeding idempotent.

    Works in chunks: PostgreSQL takes at most 65,535 parameters in one statement.
    """
    added = 0
    for start in range(0, len(products), _CHUNK):
        chunk = products[start : start + _CHUNK]
        taken = set(
            session.scalars(select(Product.sku).where(Product.sku.in_([p.sku for p in chunk])))
        )
        fresh = [
            Product(
                sku=p.sku,
                name=p.name,
                description=p.description,
                price_cents=p.price,
                stock=p.stock,
                version=1,
            )
            for p in chunk
            if p.sku not in taken
        ]
        session.add_all(fresh)
        session.flush()
        for product in fresh:
            _emit(session, product.id, product=product)
        added += len(fresh)
    session.commit()
    return added


_CHUNK = 5000


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
    _emit(session, product.id, product=product)
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


def snapshot_products(session: Session, product_ids: Sequence[int]) -> dict[int, ProductSnapshot]:
    """The current name, price and stock of each product that exists among `product_ids`."""
    rows = session.scalars(select(Product).where(Product.id.in_(set(product_ids))))
    return {
        p.id: ProductSnapshot(id=p.id, name=p.name, price_cents=p.price_cents, stock=p.stock)
        for p in rows
    }


def reserve_stock(session: Session, quantities: Mapping[int, int]) -> None:
    """Take stock for an order inside the caller's transaction; the caller commits.

    Each decrement is one conditional UPDATE (`stock >= wanted`), so two orders racing for the
    last unit cannot both win, on SQLite or PostgreSQL. Rows are touched in id order so two
    orders locking the same products cannot deadlock. On InsufficientStock the caller must roll
    back: earlier decrements of the same order are undone with it.
    """
    for product_id in sorted(quantities):
        wanted = quantities[product_id]
        result = session.execute(
            update(Product)
            .where(Product.id == product_id, Product.stock >= wanted)
            .values(stock=Product.stock - wanted, version=Product.version + 1)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            available = session.scalar(select(Product.stock).where(Product.id == product_id))
            raise InsufficientStock(product_id, wanted, available or 0)
        _emit(session, product_id)
