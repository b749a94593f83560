"""Products capability: the catalogue and its stock. The first capability to be extracted.

Public interface (nothing else of this package may be imported from outside it):
- `router`: the `/products` HTTP routes;
- `metadata`: the tables this capability owns;
- `ProductSnapshot`, `snapshot_products`, `reserve_stock`, `InsufficientStock`,
  `WritesMoved`: what the
  orders capability's in-process adapter calls (the seam its HTTP adapter replaces later);
- `ProductCreate`, `add_missing_products`: for seeding;
- `SYNC_SPEC`, `SYNC_TABLES`, `sessions_info`: for the composition root to serve the sync API
  and to let product writes follow the migration phase (outbox while dual-writing).
"""

from legacy_monolith.products.api import router
from legacy_monolith.products.models import SYNC_SPEC, SYNC_TABLES, ProductsBase
from legacy_monolith.products.schemas import ProductCreate
from legacy_monolith.products.service import (
    InsufficientStock,
    ProductSnapshot,
    WritesMoved,
    add_missing_products,
    reserve_stock,
    sessions_info,
    snapshot_products,
)

metadata = ProductsBase.metadata

__all__ = [
    "SYNC_SPEC",
    "SYNC_TABLES",
    "InsufficientStock",
    "ProductCreate",
    "ProductSnapshot",
    "add_missing_products",
    "metadata",
    "reserve_stock",
    "WritesMoved",
    "router",
    "sessions_info",
    "snapshot_products",
]
