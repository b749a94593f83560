"""The import contracts in boundaries.toml hold, and each kind of contract catches a planted
violation: every test copies the packages to a temporary tree, breaks one rule there, and
asserts lint-imports fails naming exactly that contract."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["legacy_monolith", "extracted", "proxy", "strangler"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> tuple[int, dict[str, str]]:
    """Run lint-imports on `tree`; return its exit code and each contract's verdict."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "400", "NO_COLOR": "1"}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", "boundaries.toml", "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    verdicts = dict(re.findall(r"^(.+?) (KEPT|BROKEN)$", result.stdout, flags=re.M))
    assert verdicts, result.stdout + result.stderr
    return result.returncode, verdicts


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "boundaries.toml", tmp_path / "boundaries.toml")
    return tmp_path


def plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    text = path.read_text() if path.exists() else '"""Planted by a test."""\n'
    path.write_text(text + f"\n{line}\n")


def test_the_real_tree_keeps_every_contract() -> None:
    code, verdicts = lint(ROOT)
    assert code == 0
    assert set(verdicts.values()) == {"KEPT"} and len(verdicts) >= 8


PLANTS = {
    "independence: the proxy imports the monolith": (
        "proxy/leak.py",
        "import legacy_monolith.products",
        "The monolith, the extracted services and the proxy never import each other",
    ),
    "forbidden: the toolkit imports an app": (
        "strangler/leak.py",
        "from legacy_monolith import users",
        "The strangler toolkit imports no application",
    ),
    "protected: orders import products' models": (
        "legacy_monolith/orders/adapters.py",
        "from legacy_monolith.products import models",
        "Only the products capability imports its internals",
    ),
    "forbidden: orders' service reaches users without the adapter": (
        "legacy_monolith/orders/service.py",
        "import legacy_monolith.users",
        "Orders reach users and products only through their adapters",
    ),
    "layers: products' models import its service": (
        "legacy_monolith/products/models.py",
        "from legacy_monolith.products import service",
        "Inside a capability: api over adapters over service over ports over schemas and models",
    ),
    "layers, exhaustive: a module placed in no layer": (
        "legacy_monolith/products/helpers.py",
        "X = 1",
        "Inside a capability: api over adapters over service over ports over schemas and models",
    ),
    "layers: the platform kernel imports a capability": (
        "legacy_monolith/platform/db.py",
        "import legacy_monolith.users",
        "Monolith: entry points over orders over users and products over the platform kernel",
    ),
}


@pytest.mark.parametrize("planted", PLANTS.values(), ids=list(PLANTS))
def test_a_planted_violation_breaks_exactly_its_contract(
    tree: Path, planted: tuple[str, str, str]
) -> None:
    module, line, contract = planted
    plant(tree, module, line)
    code, verdicts = lint(tree)
    assert code != 0
    assert {name for name, verdict in verdicts.items() if verdict == "BROKEN"} == {contract}
