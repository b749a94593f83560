"""Boundary lint at scale: `lint-imports` on a generated modular monolith of 2,000 modules.

The project's architecture is enforced by import-linter (`boundaries.toml`) in the test command
and in CI, so its cost is paid on every run by every developer. The real monolith is small
(under a hundred modules), which says nothing about whether the approach holds for the
monoliths this toolkit is meant for. This benchmark generates, in a temporary directory, a
package shaped like `legacy_monolith` but 2,000 modules large: capability packages, each with
`api`, `adapters`, `service`, `ports`, `schemas` and `models` subpackages importing one another
only downwards, a shared `platform` layer under them, and entry points (`__main__`, `app`,
`seed`) over everything. Its config has the contract kinds `boundaries.toml` uses: capability
independence, the layers inside each capability, the monolith's own layers, and one
"internals are private" protected contract per capability.

Measured, each as the wall time of `lint-imports` as a subprocess (interpreter start-up
included, since that is what a developer waits for):

- cold: import-linter's cache directory removed before each run (median of 3);
- warm: the cache written by the cold run present, nothing changed (median of 3; best too).

A lint that cannot fail measures nothing, so before timing anything a copy of the tree gets one
forbidden import planted (a capability's `models` importing its own `api`), and the run on it
must exit non-zero *and* report that contract broken; otherwise RuntimeError.

    python bench/lint_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Measurement, print_measurements

__all__ = ["run"]

PACKAGE = "synthmono"
# Inside a capability, top to bottom; a module may import only from layers below its own.
# schemas and models are independent siblings, as in boundaries.toml's capability-layers.
CAPABILITY_LAYERS = ("api", "adapters", "service", "ports", "schemas", "models")
_BELOW: dict[str, tuple[str, ...]] = {
    "api": ("adapters", "service", "ports", "schemas", "models"),
    "adapters": ("service", "ports", "schemas", "models"),
    "service": ("ports", "schemas", "models"),
    "ports": ("schemas", "models"),
    "schemas": (),
    "models": (),
}
LAYERS_CONTRACT = "capability-layers"
ROUNDS = 3
# Outside the package: parsed like any import, left out of the graph (no external packages).
_EXTERNAL = (
    "from collections.abc import Mapping, Sequence",
    "import logging",
    "from typing import Protocol",
    "from sqlalchemy import select",
    "from pydantic import BaseModel",
)


@dataclass
class Shape:
    """How big the generated monolith is: capabilities, modules per layer, platform modules."""

    capabilities: int
    per_layer: int
    platform: int

    @property
    def modules(self) -> int:
        # root __init__, __main__, app, seed; platform package; per capability: its package,
        # six layer packages and their modules.
        per_capability = 1 + len(CAPABILITY_LAYERS) * (1 + self.per_layer)
        return 4 + 1 + self.platform + self.capabilities * per_capability


def shape_for(target: int) -> Shape:
    """20 capabilities (4 when small) and layer sizes that put the total exactly on `target`."""
    capabilities = 20 if target >= 1000 else 4
    platform_min = max(4, target // 50)
    per_capability_fixed = 1 + len(CAPABILITY_LAYERS)
    spare = target - 5 - platform_min - capabilities * per_capability_fixed
    per_layer = max(1, spare // (capabilities * len(CAPABILITY_LAYERS)))
    shape = Shape(capabilities, per_layer, platform_min)
    shape.platform += target - shape.modules
    return shape


@dataclass
class Generated:
    root: Path  # the directory to put on PYTHONPATH
    config: Path
    shape: Shape
    imports: int = 0  # import statements naming a module of the package
    contracts: int = 0
    planted_in: Path | None = None
    capability_names: list[str] = field(default_factory=list)


def _capability(index: int) -> str:
    return f"cap{index:02d}"


def _module_body(
    dotted: str, imports: list[str], local_names: list[str], rng: random.Random
) -> tuple[str, int]:
    """A plausible module (docstring, imports, a dataclass, a few functions using the imports)
    and how many imports of the package it holds."""
    tail = dotted.rsplit(".", 1)[-1]
    title = tail.capitalize()
    externals = ["from dataclasses import dataclass", *rng.sample(_EXTERNAL, 2)]
    lines = [f'"""{dotted}: generated for the boundary-lint benchmark."""', ""]
    lines += ["from __future__ import annotations", ""]
    lines += sorted(externals) + [""]
    lines += imports + [""]
    lines += ["", "@dataclass(frozen=True)"]
    lines += [f"class {title}Record:", f'    """One {tail} record."""', ""]
    lines += ["    id: int", "    name: str", "    version: int = 1", ""]
    lines += ["", f"def make_{tail}(name: str) -> {title}Record:"]
    lines += [f"    return {title}Record(id=len(name), name=name)", ""]
    lines += ["", f"def describe_{tail}(record: {title}Record) -> str:"]
    uses = " + ".join(f"repr({name})" for name in local_names[:3]) or "''"
    lines += [f"    return f'{{record.name}}@{{record.version}}' + {uses}", ""]
    lazy = dotted != "platform.m00" and rng.random() < 0.3
    if lazy:  # a function-level import, which the lint must see too
        lines += ["", f"def lazy_{tail}() -> object:"]
        lines += [f"    from {PACKAGE}.platform import m00", ""]
        lines += ["    return m00", ""]
    return "\n".join(lines), len(imports) + lazy


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def generate(workdir: Path, target_modules: int, seed: int = 20261125) -> Generated:
    """Write the package under workdir/src and its import-linter config beside it."""
    rng = random.Random(seed)
    shape = shape_for(target_modules)
    src = workdir / "src"
    generated = Generated(root=src, config=workdir / "boundaries.toml", shape=shape)
    imports = 0
    written = 0

    def module(dotted: str, made: tuple[str, int]) -> None:
        nonlocal written, imports
        parts = dotted.split(".")
        _write(src.joinpath(*parts[:-1], parts[-1] + ".py"), made[0])
        written += 1
        imports += made[1]

    def package(dotted: str, body: str) -> None:
        nonlocal written
        _write(src.joinpath(*dotted.split("."), "__init__.py"), body)
        written += 1

    # The platform kernel: each module imports a couple of lower-numbered ones.
    package(f"{PACKAGE}.platform", '"""The shared platform kernel."""\n')
    for j in range(shape.platform):
        lines = []
        for k in sorted(rng.sample(range(j), min(j, 2))):
            lines.append(f"from {PACKAGE}.platform import m{k:02d}")
        names = [line.rsplit(" ", 1)[-1] for line in lines]
        tail = f"platform.m{j:02d}"
        module(f"{PACKAGE}.{tail}", _module_body(tail, lines, names, rng))

    for c in range(shape.capabilities):
        cap = _capability(c)
        generated.capability_names.append(cap)
        base = f"{PACKAGE}.{cap}"
        # The public interface: what app and seed may import.
        init = [
            f'"""Capability {cap}: its public interface."""',
            "",
            f"from {base}.api.m00 import make_m00 as make_record",
            f"from {base}.service.m00 import describe_m00 as describe_record",
            "",
            '__all__ = ["describe_record", "make_record"]',
            "",
        ]
        imports += 2
        package(base, "\n".join(init))
        for layer in CAPABILITY_LAYERS:
            package(f"{base}.{layer}", f'"""{cap} {layer}."""\n')
            for j in range(shape.per_layer):
                lines = []
                # A few siblings in the same layer package (lower-numbered: no cycles).
                for k in sorted(rng.sample(range(j), min(j, rng.randint(1, 2)))):
                    lines.append(f"from {base}.{layer} import m{k:02d}")
                # A few modules of the layers below, in the two import styles.
                below = list(_BELOW[layer])
                if layer == "api" and rng.random() < 0.5:
                    below.remove("adapters")  # half the routes call the service directly
                for lower in rng.sample(below, min(len(below), rng.randint(1, 3))):
                    k = rng.randrange(shape.per_layer)
                    if rng.random() < 0.5:
                        lines.append(f"from {base}.{lower} import m{k:02d} as {lower}_m{k:02d}")
                    else:
                        name = f"make_m{k:02d} as {lower}_make_m{k:02d}"
                        lines.append(f"from {base}.{lower}.m{k:02d} import {name}")
                # The platform, from anywhere.
                k = rng.randrange(shape.platform)
                lines.append(f"import {PACKAGE}.platform.m{k:02d} as platform_m{k:02d}")
                names = [line.rsplit(" ", 1)[-1] for line in lines]
                dotted = f"{base}.{layer}.m{j:02d}"
                module(dotted, _module_body(f"{cap}.{layer}.m{j:02d}", lines, names, rng))

    caps = generated.capability_names
    entry = [f"from {PACKAGE} import {cap}" for cap in caps] + [
        f"from {PACKAGE}.platform import m00"
    ]
    package(PACKAGE, '"""A generated modular monolith."""\n')
    module(f"{PACKAGE}.app", _module_body("app", entry, caps, rng))
    module(f"{PACKAGE}.seed", _module_body("seed", entry, caps, rng))
    module(f"{PACKAGE}.__main__", (f"from {PACKAGE} import app\n\nprint(app)\n", 1))
    if written != shape.modules:
        raise RuntimeError(f"generated {written} modules, the shape says {shape.modules}")
    generated.imports = imports

    contracts = _contracts(caps)
    generated.contracts = len(contracts)
    generated.config.write_text(_config_text(contracts))
    return generated


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def _contracts(caps: list[str]) -> list[dict[str, str]]:
    """The contracts, as TOML fragments keyed by field, in boundaries.toml's style."""
    contracts = [
        {
            "id": '"capabilities-independent"',
            "name": '"Capabilities never import each other"',
            "type": '"independence"',
            "modules": _toml_list([f"{PACKAGE}.{cap}" for cap in caps]),
        },
        {
            "id": f'"{LAYERS_CONTRACT}"',
            "name": '"Inside a capability: api over adapters over service over ports over '
            'schemas and models"',
            "type": '"layers"',
            "containers": _toml_list([f"{PACKAGE}.{cap}" for cap in caps]),
            "layers": _toml_list(["api", "(adapters)", "service", "(ports)", "schemas | models"]),
            "exhaustive": "true",
        },
        {
            "id": '"monolith-layers"',
            "name": '"Monolith: entry points over the capabilities over the platform"',
            "type": '"layers"',
            "containers": _toml_list([PACKAGE]),
            # ':' siblings: their independence is the contract above, not checked twice.
            "layers": _toml_list(["__main__", "app | seed", " : ".join(caps), "platform"]),
            "exhaustive": "true",
        },
    ]
    for cap in caps:
        contracts.append(
            {
                "id": f'"{cap}-internals-private"',
                "name": f'"Only the {cap} capability imports its internals"',
                "type": '"protected"',
                "protected_modules": _toml_list([f"{PACKAGE}.{cap}.*"]),
                "allowed_importers": _toml_list([f"{PACKAGE}.{cap}"]),
            }
        )
    return contracts


def _config_text(contracts: list[dict[str, str]]) -> str:
    out = [
        "# Generated by bench/lint_scale.py, in the style of boundaries.toml.",
        "",
        "[tool.importlinter]",
        f'root_packages = ["{PACKAGE}"]',
        "include_external_packages = false",
    ]
    for contract in contracts:
        out += ["", "[[tool.importlinter.contracts]]"]
        out += [f"{key} = {value}" for key, value in contract.items()]
    return "\n".join(out) + "\n"


def plant_violation(generated: Generated, into: Path) -> Path:
    """Copy the tree to `into` and add one forbidden import: cap01 models importing its api."""
    shutil.copytree(generated.root, into / "src")
    shutil.copy2(generated.config, into / "boundaries.toml")
    cap = generated.capability_names[min(1, len(generated.capability_names) - 1)]
    target = into / "src" / PACKAGE / cap / "models" / "m00.py"
    future = "from __future__ import annotations\n"
    planted = f"from {PACKAGE}.{cap}.api import m00 as planted  # the forbidden import\n"
    text = target.read_text()
    if future not in text:
        raise RuntimeError(f"{target} does not look generated")
    target.write_text(text.replace(future, future + planted, 1))
    return target


def _lint_imports() -> str:
    beside = Path(sys.executable).parent / "lint-imports"
    if beside.exists():
        return str(beside)
    found = shutil.which("lint-imports")
    if found is None:
        raise RuntimeError("lint-imports is not installed (pip install import-linter)")
    return found


@dataclass
class LintRun:
    seconds: float
    returncode: int
    output: str

    def figure(self, pattern: str) -> int:
        found = re.search(pattern, self.output)
        return int(found.group(1)) if found else -1


def lint(config: Path, root: Path, cache: Path | None) -> LintRun:
    """One `lint-imports` run in its own process, from the config's directory."""
    argv = [_lint_imports(), str(config), "--no-logo", "--show-timings"]
    argv += ["--no-cache"] if cache is None else ["--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1", "COLUMNS": "200"}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=config.parent, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return LintRun(seconds, done.returncode, done.stdout + done.stderr)


def _graph_seconds(run: LintRun) -> float:
    found = re.search(r"(\d+\.\d+)s\s*│", run.output)
    return float(found.group(1)) if found else -1.0


def run(quick: bool) -> list[Measurement]:
    target = 100 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="lint-scale-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        generated = generate(workdir / "clean", target)
        generate_seconds = time.perf_counter() - started

        # The lint must be able to fail, and pass on the clean tree, before it is worth timing.
        planted_dir = workdir / "planted"
        planted = plant_violation(generated, planted_dir)
        failing = lint(planted_dir / "boundaries.toml", planted_dir / "src", cache=None)
        broken = failing.figure(r"(\d+) broken")
        cap = planted.parent.parent.name
        edge = f"{PACKAGE}.{cap}.models.m00 -> {PACKAGE}.{cap}.api.m00"
        if failing.returncode == 0 or broken != 1 or edge not in failing.output:
            raise RuntimeError(
                f"lint-imports did not report the forbidden import planted in {planted} "
                f"({edge}): exit {failing.returncode}\n{failing.output[-3000:]}"
            )
        passing = lint(generated.config, generated.root, cache=None)
        if passing.returncode != 0:
            raise RuntimeError(f"lint-imports failed on the clean tree:\n{passing.output[-3000:]}")

        cache = workdir / "cache"
        cold: list[LintRun] = []
        warm: list[LintRun] = []
        for _ in range(ROUNDS):
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(lint(generated.config, generated.root, cache))
        # The last cold run left its cache: every warm run finds it.
        for _ in range(ROUNDS):
            warm.append(lint(generated.config, generated.root, cache))
        for each in cold + warm:
            if each.returncode != 0:
                raise RuntimeError(f"lint-imports failed on the clean tree:\n{each.output[-3000:]}")

    cold_s = [r.seconds for r in cold]
    warm_s = [r.seconds for r in warm]
    shape = generated.shape
    context: dict[str, object] = {
        "modules": shape.modules,
        "capabilities": shape.capabilities,
        "modules_per_capability_layer": shape.per_layer,
        "platform_modules": shape.platform,
        "import_statements_generated": generated.imports,
        "files_analysed": passing.figure(r"Analyzed (\d+) files"),
        "dependencies_analysed": passing.figure(r"Analyzed \d+ files, (\d+) dependencies"),
        "contracts": generated.contracts,
        "contracts_kept": passing.figure(r"Contracts: (\d+) kept"),
        "planted_violation": f"{planted.relative_to(planted_dir / 'src')} imports its own api",
        "planted_run": f"exit {failing.returncode}, {broken} contract broken ({LAYERS_CONTRACT})",
        "no_cache_s": round(passing.seconds, 3),
        "generate_s": round(generate_seconds, 3),
    }
    cold_context = {
        **context,
        "runs_s": [round(s, 3) for s in cold_s],
        "graph_build_s": [_graph_seconds(r) for r in cold],
    }
    warm_context = {
        **context,
        "runs_s": [round(s, 3) for s in warm_s],
        "best_s": round(min(warm_s), 3),
        "graph_build_s": [_graph_seconds(r) for r in warm],
    }
    measured_as = f"lint-imports on a generated monolith of {shape.modules:,} modules"
    return [
        Measurement(
            name="boundary lint, cold",
            measured_as=measured_as,
            value=round(statistics.median(cold_s), 3),
            unit="s",
            target="<= 10",
            context=cold_context,
            note=f"median of {ROUNDS}, cache directory removed before each run",
        ),
        Measurement(
            name="boundary lint, warm",
            measured_as=measured_as,
            value=round(statistics.median(warm_s), 3),
            unit="s",
            target="<= 2",
            context=warm_context,
            note=f"median of {ROUNDS}, cache from the previous run present, nothing changed",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke-test size (~100 modules)")
    args = parser.parse_args()
    print_measurements(run(quick=args.quick))


if __name__ == "__main__":
    main()
