"""Orders capability: placing orders and reading them back.

It reaches users and products only through the ports it owns (ports.py), implemented here by
in-process adapters (adapters.py) over their public interfaces.

Public interface: `router`, `metadata`, and `catalog_factory` (the composition root uses it to
pick the product catalogue adapter by phase: in-process until writes cut over, HTTP after).
"""

from legacy_monolith.orders.adapters import catalog_factory
from legacy_monolith.orders.api import router
from legacy_monolith.orders.models import OrdersBase

metadata = OrdersBase.metadata

__all__ = ["catalog_factory", "metadata", "router"]
