"""Each capability keeps to the tables boundaries.toml says it owns, and the scan that holds
that rule catches planted foreign keys, cross-capability SQL and undeclared tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from legacy_monolith.schema import CAPABILITY_METADATA
from strangler.coupling import (
    OwnershipConfigError,
    find_couplings,
    load_table_ownership,
)

ROOT = Path(__file__).resolve().parents[2]
STRANGLER = [sys.executable, "-c", "from strangler.cli import main; main()"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "legacy_monolith",
        tmp_path / "legacy_monolith",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "boundaries.toml", tmp_path / "boundaries.toml")
    return tmp_path


def _append(path: Path, code: str) -> int:
    """Append `code` to the file; return the line number its first line lands on."""
    text = path.read_text()
    path.write_text(text + code)
    return text.count("\n") + 1


def test_declared_ownership_matches_the_tables_each_capability_defines() -> None:
    ownership = load_table_ownership(ROOT / "boundaries.toml")
    defined = {
        f"legacy_monolith.{cap}": frozenset(metadata.tables)
        for cap, metadata in CAPABILITY_METADATA.items()
    }
    assert dict(ownership.tables_by_capability) == defined


def test_the_real_tree_has_no_coupling() -> None:
    assert find_couplings(ROOT, load_table_ownership(ROOT / "boundaries.toml")) == []


def test_a_planted_foreign_key_into_products_is_reported_with_its_line(tree: Path) -> None:
    models = tree / "legacy_monolith/orders/models.py"
    line = _append(
        models,
        '\nclass Audit(OrdersBase):\n    __tablename__ = "orders"\n'
        '    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))\n',
    )
    [found] = find_couplings(tree, load_table_ownership(tree / "boundaries.toml"))
    assert (found.path, found.line, found.table, found.owner) == (
        Path("legacy_monolith/orders/models.py"),
        line + 3,
        "products",
        "legacy_monolith.products",
    )
    assert found.kind == "holds a foreign key into"


def test_a_planted_join_into_another_capabilitys_table_is_reported(tree: Path) -> None:
    service = tree / "legacy_monolith/orders/service.py"
    line = _append(
        service,
        '\nREPORT = text(\n    """SELECT o.id, u.email FROM orders o\n'
        '    JOIN users u ON u.id = o.user_id"""\n)\n',
    )
    [found] = find_couplings(tree, load_table_ownership(tree / "boundaries.toml"))
    assert (found.line, found.table, found.kind) == (line + 3, "users", "uses in SQL")


def test_a_planted_write_to_another_capabilitys_table_is_reported(tree: Path) -> None:
    service = tree / "legacy_monolith/users/service.py"
    _append(service, '\nWIPE = "DELETE FROM order_lines WHERE order_id = :id"\n')
    [found] = find_couplings(tree, load_table_ownership(tree / "boundaries.toml"))
    assert (found.capability, found.table, found.owner) == (
        "legacy_monolith.users",
        "order_lines",
        "legacy_monolith.orders",
    )


def test_a_planted_undeclared_table_is_reported(tree: Path) -> None:
    models = tree / "legacy_monolith/users/models.py"
    _append(models, '\nsessions = Table("user_sessions", UsersBase.metadata)\n')
    [found] = find_couplings(tree, load_table_ownership(tree / "boundaries.toml"))
    assert (found.table, found.owner, found.kind) == ("user_sessions", None, "defines table")


def test_the_cli_fails_and_names_file_and_line(tree: Path) -> None:
    models = tree / "legacy_monolith/orders/models.py"
    line = _append(models, '\nX = ForeignKey("users.id")\n')
    result = subprocess.run(
        [*STRANGLER, "coupling", "--config", str(tree / "boundaries.toml"), "--root", str(tree)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 1
    assert f"legacy_monolith/orders/models.py:{line + 1}" in result.stdout
    assert "1 coupling(s) found" in result.stdout


def test_a_table_claimed_twice_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "boundaries.toml"
    config.write_text('[tool.strangler.table_ownership]\n"a" = ["t"]\n"b" = ["t"]\n')
    with pytest.raises(OwnershipConfigError, match="claimed by both a and b"):
        load_table_ownership(config)


def test_a_missing_ownership_section_says_how_to_add_one(tmp_path: Path) -> None:
    config = tmp_path / "boundaries.toml"
    config.write_text("[tool.importlinter]\nroot_packages = ['x']\n")
    result = subprocess.run(
        [*STRANGLER, "coupling", "--config", str(config), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "[tool.strangler.table_ownership]" in result.stderr
