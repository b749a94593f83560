"""Adapters of the orders ports.

In-process: calls into the users and products public interfaces, sharing the caller's session
so an order and its stock change commit together (release is the transaction's rollback).
HTTP: the products service's internal API, once writes have cut over to it: snapshots for
prices, a reservation per order under an id that makes retries safe, confirmed just before the
order is recorded, a release when the order cannot be recorded. A release after a rollback
(writes back in the monolith) gives the stock back here, in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

import httpx
from sqlalchemy.orm import Session

from legacy_monolith import products, users
from legacy_monolith.orders import ports
from strangler.phases import PhaseFile, Side, routing_of

log = logging.getLogger("legacy_monolith.orders")


class InProcessProductCatalog(ports.ProductCatalog):
    def __init__(self, session: Session) -> None:
        self._session = session

    def price_list(self, product_ids: Collection[int]) -> Mapping[int, ports.CatalogItem]:
        snapshots = products.snapshot_products(self._session, list(product_ids))
        return {
            pid: ports.CatalogItem(product_id=pid, name=s.name, unit_price_cents=s.price_cents)
            for pid, s in snapshots.items()
        }

    def reserve(self, quantities: Mapping[int, int]) -> None:
        try:
            products.reserve_stock(self._session, quantities)
        except products.InsufficientStock as exc:
            raise ports.OutOfStock(exc.product_id, exc.requested, exc.available) from exc
        except products.WritesMoved as exc:  # the phase moved under this order: retry it
            raise ports.CatalogMoved("product writes just moved to the service") from exc

    def release(self) -> None:
        """Nothing to do: the stock change rolls back with the order's transaction."""


_RETRYABLE = (httpx.TimeoutException, httpx.TransportError)

WRITES_ELSEWHERE = "writes_elsewhere"
"""The `code` of the service's problem answer when the phase gives product writes to the
monolith (see extracted/products_service/app.py); contract shared by the two sides."""

HANDED_BACK = "handed_back"
"""The status of a reservation the service released by handing its items over to the caller
(extracted/products_service/models.py): the caller gives them back where the writes are."""


def _writes_elsewhere(response: httpx.Response) -> bool:
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == WRITES_ELSEWHERE


Restock = Callable[[Mapping[int, int]], None]
"""Gives stock back in this process, through the products public interface, in a transaction
of its own (recording the change event like any product write); raises ports.CatalogMoved
when the products service takes product writes (again) and it gave nothing back."""


def restock_in_process(session: Session) -> Restock:
    """A `Restock` over `session`, which holds no transaction of the order's when called (a
    remote catalogue's caller holds none across network calls)."""

    def restock(quantities: Mapping[int, int]) -> None:
        # The products public interface has no give-back of its own: a take of a negative
        # quantity is the same conditional UPDATE (stock >= -n always holds), version bump
        # and change event as any order's, which is what a give-back must be.
        try:
            for product_id, quantity in sorted(quantities.items()):
                try:
                    products.reserve_stock(session, {product_id: -quantity})
                except products.InsufficientStock:  # no such product any more: deleted
                    log.warning("product %s was deleted: its stock is not given back", product_id)
            session.commit()
        except products.WritesMoved as exc:  # it rolled the transaction back
            raise ports.CatalogMoved("product writes moved to the service again") from exc

    return restock


class HttpProductCatalog(ports.ProductCatalog):
    """The products service, over HTTP, with timeouts and bounded retries.

    Every retry of a reserve carries the same reservation id, so a reserve that timed out
    after the service applied it is not counted twice; the service remembers ids released
    before they were reserved, so a late reserve cannot take stock afterwards. The service
    gives back reservations not confirmed within their lease, so the order confirms its own
    just before it is recorded. After a rollback the service can no longer give stock back
    (the monolith takes the writes, and already holds the decrement the reverse sync carried
    there): it hands the reservation's items over, and `restock` gives them back here.
    """

    remote = True

    def __init__(
        self,
        client: httpx.Client,
        reservation_id: str,
        *,
        restock: Restock | None = None,
        attempts: int = 3,
        backoff_seconds: float = 0.1,
    ) -> None:
        self._client = client
        self.reservation_id = reservation_id
        self._restock = restock
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._items: list[dict[str, int]] = []
        self._reserved = False
        self.given_back_here = False
        """Whether `release` gave the stock back in this process (the writes had moved)."""

    def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self._attempts):
            try:
                response = self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
            except _RETRYABLE as exc:
                last = exc
            else:
                if _writes_elsewhere(response):
                    raise ports.CatalogMoved(
                        f"the products service refused {method} {path}: writes went back "
                        "to the monolith"
                    )
                if response.status_code < 500:
                    return response
                last = RuntimeError(f"{method} {path} answered {response.status_code}")
            time.sleep(self._backoff * 2**attempt)
        raise ports.CatalogUnavailable(f"products service: {last}")

    def price_list(self, product_ids: Collection[int]) -> Mapping[int, ports.CatalogItem]:
        response = self._call(
            "POST", "/internal/products/snapshots", json={"ids": sorted(product_ids)}
        )
        if response.status_code != 200:
            raise ports.CatalogUnavailable(f"snapshots answered {response.status_code}")
        return {
            p["id"]: ports.CatalogItem(
                product_id=p["id"], name=p["name"], unit_price_cents=p["price_cents"]
            )
            for p in response.json()["products"]
        }

    def reserve(self, quantities: Mapping[int, int]) -> None:
        self._items = [{"product_id": k, "quantity": v} for k, v in sorted(quantities.items())]
        try:
            response = self._call(
                "POST",
                "/internal/products/reservations",
                json={"reservation_id": self.reservation_id, "items": self._items},
            )
        except ports.CatalogMoved:
            raise  # refused and rolled back there: nothing to give back
        except ports.CatalogUnavailable as exc:
            self.release()  # it may have been taken before the answer was lost
            if self.given_back_here:  # the writes moved back here meanwhile: order here
                raise ports.CatalogMoved(
                    "product writes went back to the monolith while reserving"
                ) from exc
            raise
        if response.status_code == 409 and "product_id" in response.json():
            body = response.json()
            raise ports.OutOfStock(body["product_id"], body["requested"], body["available"])
        if response.status_code != 201:
            raise ports.CatalogUnavailable(
                f"reservation answered {response.status_code}: {response.text[:200]}"
            )
        self._reserved = True

    def confirm(self) -> None:
        """Confirm the reservation (the same request as the reserve, marked final): refused
        once the lease ended and the service gave the stock back, and then nothing may be
        recorded on it."""
        response = self._call(
            "POST",
            "/internal/products/reservations",
            json={"reservation_id": self.reservation_id, "items": self._items, "confirm": True},
        )
        if response.status_code != 201:
            raise ports.CatalogUnavailable(
                f"the reservation could not be confirmed ({response.status_code}: "
                f"{response.text[:200]}); its lease may have ended before the order was recorded"
            )

    def release(self) -> None:
        """Give the reservation's stock back where product writes are taken now.

        Asked with `hand_back`, the service gives it back itself while it takes the writes,
        and otherwise hands the items over to be given back here (exactly once: an answer
        is acted on once, and asking again after a lost answer gets the same items). A
        refusal in between (a write switch holding writes on both sides for a moment, or
        the writes moving once more before the give-back here) is tried again.
        """
        path = f"/internal/products/reservations/{self.reservation_id}"
        for attempt in range(self._attempts):
            try:
                response = self._call("DELETE", path, params={"hand_back": "true"})
            except ports.CatalogMoved:
                time.sleep(self._backoff * 2**attempt)  # a switch holds the writes: wait
                continue
            except ports.CatalogUnavailable:
                self._release_failed("the products service could not be reached")
                raise
            if response.status_code != 200:
                self._release_failed(f"the release answered {response.status_code}")
                raise ports.CatalogUnavailable(f"release answered {response.status_code}")
            body = response.json()
            if body.get("status") != HANDED_BACK:
                self._reserved = False
                return
            items = {i["product_id"]: i["quantity"] for i in body["items"]}
            try:
                self._give_back_here(items)
            except ports.CatalogMoved:
                time.sleep(self._backoff * 2**attempt)  # back to the service: ask it again
                continue
            except Exception:
                self._release_failed(f"its items {items} were handed over, not given back")
                raise
            self._reserved = False
            return
        self._release_failed("product writes kept moving between the two sides")
        raise ports.CatalogUnavailable("the reservation could not be released")

    def _give_back_here(self, quantities: Mapping[int, int]) -> None:
        if self._restock is None:
            raise ports.CatalogUnavailable("nothing here can give stock back in-process")
        if quantities:
            self._restock(quantities)
        self.given_back_here = True

    def _release_failed(self, why: str) -> None:
        log.error(
            "reservation %s could not be released (%s); release it by hand with DELETE "
            "/internal/products/reservations/%s?hand_back=true on the products service, and "
            "give back here the items it answers if its status is handed_back",
            self.reservation_id,
            why,
            self.reservation_id,
        )


class CatalogFactory(Protocol):
    def __call__(
        self, session: Session, reservation_id: str, *, reread: bool = False
    ) -> ports.ProductCatalog:
        """The adapter for one attempt; `reread` reads routing.toml afresh first."""


def catalog_factory(phase: PhaseFile, service_client: httpx.Client) -> CatalogFactory:
    """The adapter the phase calls for: in-process until writes cut over, HTTP after."""

    def make(
        session: Session, reservation_id: str, *, reread: bool = False
    ) -> ports.ProductCatalog:
        if reread:
            phase.reread()
        if routing_of(phase.current()).writes is Side.SERVICE:
            return HttpProductCatalog(
                service_client, reservation_id, restock=restock_in_process(session)
            )
        return InProcessProductCatalog(session)

    return make


class InProcessCustomers(ports.Customers):
    def __init__(self, session: Session) -> None:
        self._session = session

    def exists(self, user_id: int) -> bool:
        return users.find_user(self._session, user_id) is not None
