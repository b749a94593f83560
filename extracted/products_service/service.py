"""Use cases of the products service: the monolith's, moved, writing the reverse outbox."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from extracted.products_service.models import DATA_COLUMNS, SYNC_TABLES, Product
from extracted.products_service.schemas import ProductCreate, ProductPatch
from strangler.phases import Phase, PhaseFile, SyncDirection, routing_of
from strangler.sync.barrier import WritesRefused, require_writes_here, transaction_phase
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


def session_phase(session: Session) -> Phase:
    phase_file = session.info.get(CHANGE_FEED)
    return transaction_phase(session, phase_file if isinstance(phase_file, PhaseFile) else None)


def writes_here_by_phase(phase: Phase) -> bool:
    """While the phase syncs monolith -> service, the monolith takes the writes; in every
    other phase (the service alone, in tests, included) this side may."""
    return routing_of(phase).sync is not SyncDirection.FORWARD


def _ensure_writes_here(session: Session) -> None:
    """Refuse (rolling back) a write the phase already gives to the monolith: checked before
    the row is looked up too, so a product the copy has not received yet is refused as a
    write that belongs elsewhere (503), not reported missing (404). The barrier decides for
    good at the end of the write (`emit_change`)."""
    phase = session_phase(session)
    if not writes_here_by_phase(phase):
        session.rollback()
        raise WritesElsewhere(phase.value)


def emit_change(session: Session, product_id: int, *, deleted_version: int | None = None) -> None:
    """Let the write commit only if this side may take product writes now, and record its
    change event in the reverse outbox while the phase syncs.

    Called inside the write's transaction, after the change: the barrier row is read after
    the change (see strangler.sync.barrier), and the change and its event commit together or
    not at all. The phase is the one the transaction read first, never read again.
    """
    phase = session_phase(session)
    try:
        require_writes_here(session, SYNC_TABLES, by_phase=writes_here_by_phase(phase))
    except WritesRefused as exc:
        session.rollback()
        raise WritesElsewhere(str(exc)) from exc
    if routing_of(phase).sync is None:
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
    emit_change(session, product.id)
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
    emit_change(session, product.id)
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
    emit_change(session, product_id, deleted_version=deleted_version)
    session.commit()


def snapshots(session: Session, product_ids: Sequence[int]) -> list[Product]:
    """The products with these ids (those that exist), as the monolith prices an order."""
    return list(session.scalars(select(Product).where(Product.id.in_(set(product_ids)))))
