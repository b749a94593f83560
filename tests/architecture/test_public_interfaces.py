"""Each capability's public interface is exactly what its docstring promises.

Adding a name here is a decision: every name is something the extracted service or an HTTP
adapter may one day have to provide over the network.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "legacy_monolith.users": {
        "EmailTaken",
        "Registration",
        "UserSummary",
        "find_user",
        "metadata",
        "register",
        "router",
    },
    "legacy_monolith.products": {
        "SYNC_SPEC",
        "SYNC_TABLES",
        "InsufficientStock",
        "WritesMoved",
        "ProductCreate",
        "ProductSnapshot",
        "add_missing_products",
        "metadata",
        "reserve_stock",
        "router",
        "sessions_info",
        "snapshot_products",
    },
    "legacy_monolith.orders": {"catalog_factory", "metadata", "router"},
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_the_public_interface_is_pinned_and_every_name_exists(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == PUBLIC[package]
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert name in (module.__doc__ or ""), f"{package} docstring does not mention {name}"
