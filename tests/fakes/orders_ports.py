"""In-memory fakes of the orders ports, for unit tests of the order use case.

Inject data through the constructors: `FakeProductCatalog({id: (price_cents, stock)})`,
`FakeCustomers({user_id, ...})`. The catalog records every reservation it holds and counts releases.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from legacy_monolith.orders.ports import CatalogItem, Customers, OutOfStock, ProductCatalog


class FakeProductCatalog(ProductCatalog):
    def __init__(self, products: Mapping[int, tuple[int, int]]) -> None:
        self.stock = {pid: stock for pid, (_, stock) in products.items()}
        self.prices = {pid: price for pid, (price, _) in products.items()}
        self.reservations: list[dict[int, int]] = []
        self.released = 0

    def price_list(self, product_ids: Collection[int]) -> Mapping[int, CatalogItem]:
        return {
            pid: CatalogItem(
                product_id=pid, name=f"product {pid}", unit_price_cents=self.prices[pid]
            )
            for pid in product_ids
            if pid in self.prices
        }

    def reserve(self, quantities: Mapping[int, int]) -> None:
        for pid, wanted in sorted(quantities.items()):
            if self.stock[pid] < wanted:
                raise OutOfStock(pid, wanted, self.stock[pid])
        for pid, wanted in quantities.items():
            self.stock[pid] -= wanted
        self.reservations.append(dict(quantities))

    def release(self) -> None:
        for pid, wanted in self.reservations.pop().items():
            self.stock[pid] += wanted
        self.released += 1


class FakeCustomers(Customers):
    def __init__(self, known: Collection[int]) -> None:
        self.known = set(known)

    def exists(self, user_id: int) -> bool:
        return user_id in self.known
