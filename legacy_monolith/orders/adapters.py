"""In-process adapters of the orders ports: calls into the users and products public
interfaces, sharing the caller's session so an order and its stock change commit together."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy.orm import Session

from legacy_monolith import products, users
from legacy_monolith.orders import ports


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


class InProcessCustomers(ports.Customers):
    def __init__(self, session: Session) -> None:
        self._session = session

    def exists(self, user_id: int) -> bool:
        return users.find_user(self._session, user_id) is not None
