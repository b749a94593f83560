"""The monolith's whole schema: every capability's tables, gathered for alembic.

Each capability keeps its own MetaData (so none can hold a foreign key into another's tables);
migrations need them as one.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from legacy_monolith import orders, products, users
from strangler.db import NAMING_CONVENTION

CAPABILITY_METADATA = {
    "users": users.metadata,
    "products": products.metadata,
    "orders": orders.metadata,
}


def combined_metadata() -> MetaData:
    """A MetaData holding a copy of every capability's tables."""
    combined = MetaData(naming_convention=NAMING_CONVENTION)
    for metadata in CAPABILITY_METADATA.values():
        for table in metadata.sorted_tables:
            table.to_metadata(combined)
    return combined
