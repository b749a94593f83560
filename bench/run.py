"""Run every benchmark, print the table, record it with the machine it ran on.

    python3 dev.py bench            # everything, full size (under 15 minutes on 2 cores)
    python3 dev.py bench --quick    # the smoke size: every path once, numbers meaningless
    python3 dev.py bench --only proxy_costs lint_scale

A full run writes bench/results.json and the table between the markers in bench/README.md;
a quick run writes neither unless given `--out`. A benchmark that fails is reported as such
and the others still run; the exit code is 1 when one failed (a missed target is not a
failure: it is a finding, shown in the table).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import Measurement, machine  # noqa: E402

BENCHMARKS = ["proxy_costs", "sync_costs", "lint_scale", "routing_decision"]
"""In the order they run; each is a module in bench/ with `run(quick) -> list[Measurement]`."""

README = ROOT / "bench" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _format_value(m: Measurement) -> str:
    if m.unit == "ratio":
        return f"{m.value:.2f}"
    if m.unit in ("events/s", "rows/s"):
        return f"{m.value:,.0f} {m.unit}"
    return f"{m.value:.3g} {m.unit}"


def table(measurements: list[Measurement], info: dict[str, object]) -> str:
    versions = info["versions"]
    assert isinstance(versions, dict)
    lines = [
        f"Measured {info['date']} on {info['cpu']}, {info['cores']} cores; Python "
        f"{info['python']}, " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; "
        f"{info['nginx']}; {info['wrk']}; {info['postgresql']}.",
        "",
        "| benchmark | measured as | result | target | met | behind it |",
        "|---|---|---|---|---|---|",
    ]
    for m in measurements:
        behind = ", ".join(f"{k} {v}" for k, v in m.context.items())
        note = f" {m.note}" if m.note else ""
        lines.append(
            f"| {m.name} | {m.measured_as} | {_format_value(m)} | {m.target} | "
            f"{'yes' if m.met else '**no**'} | {behind}{note} |"
        )
    return "\n".join(lines)


def _write_readme(rendered: str) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README} lacks the {START} / {END} markers the table goes between")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{START}\n{rendered}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke size; records nothing")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write the JSON (default: a full run writes bench/results.json)",
    )
    args = parser.parse_args(argv)
    info = machine()
    measurements: list[Measurement] = []
    failed: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name in args.only:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        started = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            found: list[Measurement] = module.run(args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
            found = []
        timings[name] = round(time.monotonic() - started, 1)
        for m in found:
            verdict = "met" if m.met else "MISSED"
            print(f"   {m.name}: {_format_value(m)} (target {m.target}: {verdict})", flush=True)
        measurements.extend(found)
    rendered = table(measurements, info)
    print()
    print(rendered)
    for name, reason in failed.items():
        print(f"FAILED {name}: {reason}")
    record = {
        "machine": info,
        "quick": args.quick,
        "seconds_per_benchmark": timings,
        "failed": failed,
        "measurements": [m.as_dict() for m in measurements],
    }
    out = args.out or (None if args.quick else ROOT / "bench" / "results.json")
    if out is not None:
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")
    if not args.quick and not failed and args.only == BENCHMARKS:
        _write_readme(rendered)
        print(f"updated the table in {README.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
