"""Orders capability: placing orders and reading them back.

It reaches users and products only through the ports it owns (ports.py), implemented here by
in-process adapters (adapters.py) over their public interfaces.

Public interface: `router` and `metadata`.
"""

from legacy_monolith.orders.api import router
from legacy_monolith.orders.models import OrdersBase

metadata = OrdersBase.metadata

__all__ = ["metadata", "router"]
