"""Stock reservations of the products service: the stock an order in the monolith takes over
HTTP, held under a lease until the order confirms it, given back on release, handed over to
the caller while the monolith takes the writes, and swept back when the lease ends.

Apart from the product use cases (service.py) because they are a protocol of their own with
the monolith's orders (reserve, confirm, release, hand back, sweep), built on them: every
stock change is a product write, with its version, barrier and change event
(`service.emit_change`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from extracted.products_service.models import (
    CONFIRMED,
    EXPIRED,
    HANDED_BACK,
    HOLDING,
    RELEASED,
    RESERVED,
    Product,
    Reservation,
)
from extracted.products_service.service import (
    WritesElsewhere,
    emit_change,
    session_phase,
    snapshots,
    writes_here_by_phase,
)
from strangler.db import Sessions
from strangler.phases import Side, routing_of

log = logging.getLogger("extracted.products_service")


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
    emit_change(session, product_id)
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
        if hand_back and not writes_here_by_phase(session_phase(session)):
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
    if routing_of(session_phase(session)).writes is not Side.SERVICE:
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
