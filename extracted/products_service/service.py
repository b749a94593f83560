"""Use cases of the products service: the monolith's, moved, writing the reverse outbox."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from extracted.products_service.models import (
    CONFIRMED,
    DATA_COLUMNS,
    EXPIRED,
    HANDED_BACK,
    HOLDING,
    RELEASED,
    RESERVED,
    SYNC_TABLES,
    Product,
    Reservation,
)
from extracted.products_service.schemas import ProductCreate, ProductPatch
from strangler.db import Sessions
from strangler.phases import Phase, PhaseFile, Side, SyncDirection, routing_of
from strangler.sync.barrier import WritesRefused, require_writes_here, transaction_phase
from strangler.sync.events import ChangeEvent
from strangler.sync.outbox import record_change

log = logging.getLogger("extracted.products_service")

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


def _phase(session: Session) -> Phase:
    phase_file = session.info.get(CHANGE_FEED)
    return transaction_phase(session, phase_file if isinstance(phase_file, PhaseFile) else None)


def _writes_here_by_phase(phase: Phase) -> bool:
    """While the phase syncs monolith -> service, the monolith takes the writes; in every
    other phase (the service alone, in tests, included) this side may."""
    return routing_of(phase).sync is not SyncDirection.FORWARD


def _ensure_writes_here(session: Session) -> None:
    """Refuse (rolling back) a write the phase already gives to the monolith: checked before
    the row is looked up too, so a product the copy has not received yet is refused as a
    write that belongs elsewhere (503), not reported missing (404). The barrier decides for
    good at the end of the write (`_emit`)."""
    phase = _phase(session)
    if not _writes_here_by_phase(phase):
        session.rollback()
        raise WritesElsewhere(phase.value)


def _emit(session: Session, product_id: int, *, deleted_version: int | None = None) -> None:
    """Let the write commit only if this side may take product writes now, and record its
    change event in the reverse outbox while the phase syncs.

    Called inside the write's transaction, after the change: the barrier row is read after
    the change (see strangler.sync.barrier), and the change and its event commit together or
    not at all. The phase is the one the transaction read first, never read again.
    """
    phase = _phase(session)
    try:
        require_writes_here(session, SYNC_TABLES, by_phase=_writes_here_by_phase(phase))
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
    """This reservation holds no stock any more (released, expired or handed back), or was
    released before it was made: it can take no stock and cannot be confirmed."""


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


def _items(reservation: Reservation) -> list[tuple[int, int]]:
    return [
        (int(product_id), int(quantity)) for product_id, quantity in json.loads(reservation.items)
    ]


def reserve(
    session: Session,
    reservation_id: str,
    quantities: dict[int, int],
    *,
    expires_at: datetime,
    confirm: bool = False,
) -> Reservation:
    """Take stock for a reservation, all or nothing, exactly once per reservation id.

    The stock is held until `expires_at`, then the sweep gives it back, unless the caller
    confirms first: `confirm` says the order is about to be recorded, and makes the
    reservation final (taking the stock first if this id holds none yet). A reservation that
    holds no stock any more is refused (ReservationReleased), confirm included, so an order
    whose stock the sweep gave back is never recorded on it.
    """
    existing = session.get(Reservation, reservation_id, with_for_update=True)
    if existing is not None:
        if existing.status not in HOLDING:
            raise ReservationReleased(reservation_id)
        if confirm and existing.status != CONFIRMED:
            existing.status = CONFIRMED
            session.commit()
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
        status=CONFIRMED if confirm else RESERVED,
        items=json.dumps(sorted(quantities.items())),
        expires_at=expires_at,
    )
    session.add(reservation)
    try:
        session.commit()
    except IntegrityError:  # the same id reserved concurrently: that one counts, not this
        session.rollback()
        return reserve(session, reservation_id, quantities, expires_at=expires_at, confirm=confirm)
    return reservation


@dataclass(frozen=True)
class Release:
    """What a release did: the reservation's status after it, and the items the caller must
    give back where the writes are (only when `status` is HANDED_BACK; else nothing)."""

    status: str
    hand_over: list[tuple[int, int]]


def release(session: Session, reservation_id: str, *, hand_back: bool = False) -> Release:
    """Give a reservation's stock back, once; remember ids released before being made.

    While the phase gives product writes to the monolith, stock cannot be given back here:
    the write would be refused (WritesElsewhere) like any other, and the decrement, already
    synced to the monolith, would stay there. With `hand_back` the caller takes it over: the
    reservation is marked handed back and its items are answered, for the caller to give
    back where the writes are, once (the same answer again if asked again, for a caller whose
    first answer was lost). A caller that could not give them back there (writes moved once
    more) asks again with `hand_back`: given back here if the writes are here now.
    """
    existing = session.get(Reservation, reservation_id, with_for_update=True)
    if existing is None:
        session.add(Reservation(id=reservation_id, status=RELEASED, items="[]"))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return release(session, reservation_id, hand_back=hand_back)
        return Release(RELEASED, [])
    if existing.status in HOLDING or (hand_back and existing.status == HANDED_BACK):
        if hand_back and not _writes_here_by_phase(_phase(session)):
            existing.status = HANDED_BACK
            session.commit()
            return Release(HANDED_BACK, _items(existing))
        for product_id, quantity in _items(existing):
            _move_stock(session, product_id, quantity)
        existing.status = RELEASED
        session.commit()
    return Release(existing.status, [])


def release_expired(session: Session, now: datetime, *, limit: int = 100) -> int:
    """Give back the stock of up to `limit` reservations whose lease ended before `now`
    unconfirmed (their orders were never recorded); commit; return how many.

    Only while the phase gives this side the writes: otherwise the give-back would be
    refused, and the reservations wait for the writes to come back (or for their callers'
    own release). Rows another sweeper holds are skipped, and the status is checked under
    the row lock, so each reservation is given back once.
    """
    if routing_of(_phase(session)).writes is not Side.SERVICE:
        return 0
    expired = session.scalars(
        select(Reservation)
        .where(Reservation.status == RESERVED, Reservation.expires_at < now)
        .order_by(Reservation.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for reservation in expired:
        for product_id, quantity in _items(reservation):
            _move_stock(session, product_id, quantity)
        reservation.status = EXPIRED
    session.commit()
    return len(expired)


def any_expired(session: Session, now: datetime) -> bool:
    """Whether a reservation's lease ended unconfirmed: one read of an index, no lock."""
    found = session.scalar(
        select(Reservation.id)
        .where(Reservation.status == RESERVED, Reservation.expires_at < now)
        .limit(1)
    )
    return found is not None


class ReservationSweep:
    """Gives back, every `interval_seconds`, the stock of reservations whose lease ended
    before their order confirmed them: the caller crashed between reserve and recording the
    order, or lost every answer and could not release.

    Why a thread of the service: the service holds the reservations and takes the writes that
    give stock back, so nothing else has to know reservations exist (the toolkit's relay and
    CLI know no shop), and a crashed caller cannot be counted on to come back. Why it is
    cheap: a round that finds nothing is one read of the (status, expires_at) index, taking
    no write lock (on SQLite a write transaction locks the whole database); a round that
    finds some gives back at most `batch` of them in one transaction. Several instances of
    the service may sweep at once (see `release_expired`).
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        interval_seconds: float,
        batch: int = 100,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._interval = interval_seconds
        self._batch = batch
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One round: how many reservations it gave back."""
        now = self._clock()
        with self._sessions.read() as session:
            if not any_expired(session, now):
                return 0
        with self._sessions.write() as session:
            try:
                return release_expired(session, now, limit=self._batch)
            except WritesElsewhere:  # the writes left this side mid-round: next time
                return 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                released = self.run_once()
            except Exception:  # a database that is away now may be back next round
                log.exception("the reservation sweep failed; it tries again")
                continue
            if released:
                log.info("gave back the stock of %d expired reservation(s)", released)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reservation-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
