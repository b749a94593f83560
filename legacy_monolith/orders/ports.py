"""What the orders capability needs from the rest of the shop, in its own terms.

Orders never import another capability's internals: they talk to these ports. The in-process
adapters (adapters.py) call the users and products public interfaces inside the same
transaction; when products move to their own service, an HTTP adapter implements the same
`ProductCatalog` and the order use case does not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogItem:
    """A product as an order sees it: what it is called and costs now."""

    product_id: int
    name: str
    unit_price_cents: int


@dataclass
class OutOfStock(Exception):
    """The catalogue cannot supply `requested` units of a product; nothing was reserved."""

    product_id: int
    requested: int
    available: int


class CatalogUnavailable(Exception):
    """The catalogue could not be reached in time; nothing may be assumed about stock."""


class CatalogMoved(CatalogUnavailable):
    """The side asked refused because product writes belong to the other side now.

    The monolith and the service each follow routing.toml on their own; for a moment around
    a phase change one may have read it and the other not yet. Nothing was reserved: the
    order is retried with the adapter the phase calls for once read afresh.
    """


class ProductCatalog(ABC):
    """Prices products and takes their stock for an order.

    `remote` says whether calls leave the process: the use case then holds no database
    transaction open across them.
    """

    remote: bool = False

    @abstractmethod
    def price_list(self, product_ids: Collection[int]) -> Mapping[int, CatalogItem]:
        """The products among `product_ids` that exist; missing ids are simply absent."""

    @abstractmethod
    def reserve(self, quantities: Mapping[int, int]) -> None:
        """Take the stock, all or nothing; raise OutOfStock when one product falls short,
        CatalogUnavailable when the catalogue cannot be reached."""

    def confirm(self) -> None:  # noqa: B027 (a default: most catalogues have nothing to do)
        """Make what `reserve` took final, just before the order is recorded; raise
        CatalogUnavailable when it can no longer be (the order must then not be recorded).

        A remote catalogue gives back a reservation nobody confirmed within its lease (its
        caller may have crashed before recording the order), so an order may be recorded
        only on a confirmed one. In-process there is nothing to do: the stock change commits
        with the order, or rolls back with it.
        """

    @abstractmethod
    def release(self) -> None:
        """Give back what `reserve` took, when the order could not be recorded after all,
        where product writes are taken now (after a rollback, no longer where it was taken)."""


class Customers(ABC):
    """Tells whether a user may place orders."""

    @abstractmethod
    def exists(self, user_id: int) -> bool:
        """Whether an account with this id exists."""
