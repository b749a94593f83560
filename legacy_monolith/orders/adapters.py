"""Adapters of the orders ports.

In-process: calls into the users and products public interfaces, sharing the caller's session
so an order and its stock change commit together (release is the transaction's rollback).
HTTP: the products service's internal API, once writes have cut over to it: snapshots for
prices, a reservation per order under an id that makes retries safe, a release when the order
cannot be recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
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


def _writes_elsewhere(response: httpx.Response) -> bool:
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == WRITES_ELSEWHERE


class HttpProductCatalog(ports.ProductCatalog):
    """The products service, over HTTP, with timeouts and bounded retries.

    Every retry of a reserve carries the same reservation id, so a reserve that timed out
    after the service applied it is not counted twice; the service remembers ids released
    before they were reserved, so a late reserve cannot take stock afterwards.
    """

    remote = True

    def __init__(
        self,
        client: httpx.Client,
        reservation_id: str,
        *,
        attempts: int = 3,
        backoff_seconds: float = 0.1,
    ) -> None:
        self._client = client
        self.reservation_id = reservation_id
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._reserved = False

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
        items = [{"product_id": k, "quantity": v} for k, v in sorted(quantities.items())]
        try:
            response = self._call(
                "POST",
                "/internal/products/reservations",
                json={"reservation_id": self.reservation_id, "items": items},
            )
        except ports.CatalogMoved:
            raise  # refused and rolled back there: nothing to give back
        except ports.CatalogUnavailable:
            self.release()  # it may have been taken before the answer was lost
            raise
        if response.status_code == 409 and "product_id" in response.json():
            body = response.json()
            raise ports.OutOfStock(body["product_id"], body["requested"], body["available"])
        if response.status_code != 201:
            raise ports.CatalogUnavailable(
                f"reservation answered {response.status_code}: {response.text[:200]}"
            )
        self._reserved = True

    def release(self) -> None:
        try:
            self._call("DELETE", f"/internal/products/reservations/{self.reservation_id}")
        except ports.CatalogUnavailable:
            log.error(
                "reservation %s could not be released; release it by hand with "
                "DELETE /internal/products/reservations/%s on the products service",
                self.reservation_id,
                self.reservation_id,
            )
            raise
        self._reserved = False


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
            return HttpProductCatalog(service_client, reservation_id)
        return InProcessProductCatalog(session)

    return make


class InProcessCustomers(ports.Customers):
    def __init__(self, session: Session) -> None:
        self._session = session

    def exists(self, user_id: int) -> bool:
        return users.find_user(self._session, user_id) is not None
