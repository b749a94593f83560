"""What still couples capabilities through the database: the table-ownership check.

Import contracts (boundaries.toml, import-linter) keep a capability's code private; this keeps
its *data* private. Each capability declares the tables it owns, and the scan reports, with
file and line, every place where a capability's code
- defines a table it does not own (or one nobody declared),
- holds a foreign key into another capability's table, or
- names another capability's table in SQL (FROM, JOIN, INTO, UPDATE, ...).

It reads source files and never imports them, so it works on any monolith, running or not.
The scan is lexical: SQL assembled at run time from fragments escapes it, which is one reason
the import contracts forbid reaching another capability's models in the first place.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Coupling",
    "OwnershipConfigError",
    "TableOwnership",
    "find_couplings",
    "load_table_ownership",
]

_SQL_TABLE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|REFERENCES)\s+[\"`]?(?P<table>[A-Za-z_][\w]*)",
    re.IGNORECASE,
)
_SQL_HINT = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|JOIN|REFERENCES|ALTER|CREATE)\b", re.I)


@dataclass(frozen=True)
class Coupling:
    """One place where a capability reaches into data it does not own."""

    path: Path
    line: int
    capability: str
    table: str
    owner: str | None
    kind: str

    def describe(self) -> str:
        owner = f"owned by {self.owner}" if self.owner else "declared by no capability"
        return f"{self.path}:{self.line}: {self.capability} {self.kind} '{self.table}' ({owner})"


@dataclass(frozen=True)
class TableOwnership:
    """Capability package (dotted name) -> the tables it owns."""

    tables_by_capability: Mapping[str, frozenset[str]]

    def owner_of(self, table: str) -> str | None:
        for capability, tables in self.tables_by_capability.items():
            if table in tables:
                return capability
        return None


class OwnershipConfigError(ValueError):
    """The table-ownership section of the boundaries file is missing or malformed."""


def load_table_ownership(boundaries_file: Path) -> TableOwnership:
    """Read `[tool.strangler.table_ownership]` from the boundaries file."""
    try:
        data = tomllib.loads(boundaries_file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OwnershipConfigError(f"cannot read {boundaries_file}: {exc}") from exc
    section = data.get("tool", {}).get("strangler", {}).get("table_ownership")
    if not isinstance(section, dict) or not section:
        raise OwnershipConfigError(
            f"{boundaries_file} has no [tool.strangler.table_ownership] section: add one "
            'mapping each capability package to its tables, e.g. "shop.orders" = ["orders"]'
        )
    owners: dict[str, frozenset[str]] = {}
    seen: dict[str, str] = {}
    for capability, tables in section.items():
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise OwnershipConfigError(f"{capability}: expected a list of table names")
        for table in tables:
            if table in seen:
                raise OwnershipConfigError(
                    f"table '{table}' is claimed by both {seen[table]} and {capability}"
                )
            seen[table] = capability
        owners[capability] = frozenset(tables)
    return TableOwnership(owners)


def _module_files(root: Path, capability: str) -> Iterator[Path]:
    package_dir = root.joinpath(*capability.split("."))
    yield from sorted(package_dir.rglob("*.py"))


def _string_arg(call: ast.Call, position: int) -> str | None:
    if len(call.args) > position:
        node = call.args[position]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
    return None


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _references(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, table, kind) for every table a module defines or references."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "ForeignKey":
                target = _string_arg(node, 0)
                if target is not None and "." in target:
                    yield node.lineno, target.rsplit(".", 2)[-2], "holds a foreign key into"
            elif name == "ForeignKeyConstraint" and len(node.args) > 1:
                refs = node.args[1]
                if isinstance(refs, ast.List | ast.Tuple):
                    for element in refs.elts:
                        if isinstance(element, ast.Constant) and isinstance(element.value, str):
                            table = element.value.rsplit(".", 2)[-2]
                            yield node.lineno, table, "holds a foreign key into"
            elif name in {"Table", "table"}:
                defined = _string_arg(node, 0)
                if defined is not None:
                    yield node.lineno, defined, "defines table"
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value
            if (
                "__tablename__" in targets
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                yield node.lineno, value.value, "defines table"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _SQL_HINT.search(node.value):
                for match in _SQL_TABLE.finditer(node.value):
                    line = node.lineno + node.value.count("\n", 0, match.start())
                    yield line, match.group("table"), "uses in SQL"


def find_couplings(root: Path, ownership: TableOwnership) -> list[Coupling]:
    """Every place under `root` where a capability touches a table it does not own."""
    known = {t for tables in ownership.tables_by_capability.values() for t in tables}
    found: list[Coupling] = []
    for capability, own in ownership.tables_by_capability.items():
        for path in _module_files(root, capability):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, table, kind in _references(tree):
                if table in own:
                    continue
                if kind != "defines table" and table not in known:
                    continue  # a word in a SQL-looking string that names no table of ours
                found.append(
                    Coupling(
                        path=path.relative_to(root),
                        line=line,
                        capability=capability,
                        table=table,
                        owner=ownership.owner_of(table),
                        kind=kind,
                    )
                )
    return sorted(found, key=lambda c: (str(c.path), c.line, c.table))
