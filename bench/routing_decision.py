"""Routing decision per request with 200 capabilities, measured with pytest-benchmark.

Every request through the proxy pays for the routing decision before any byte goes upstream,
and a migration adds capabilities over its life: the decision must stay a few dictionary
lookups however many capabilities the routing config holds. This benchmark compiles a
`RoutingConfig` of 200 capabilities (228 prefixes, some nested inside others, every phase
including canary with a rollout percentage and shadow) with `RoutingState.apply`, and times
the decision part of `Forwarder._handle` / `_route` on a seeded mix of 1,000 requests: 80 %
reads, deep paths under capability prefixes (query strings, trailing slashes, dot segments,
percent-encoding), 20 % paths that fall to the default upstream, users carrying a bearer
token, a sticky cookie or nothing. Per request: `normalise_path`, `write_scope` for a write,
`match` (longest prefix), the sticky key of a split read, the read-your-writes lookup and
`decide`. The timing itself is `bench/test_routing_decision_bench.py` under pytest-benchmark,
run here as a subprocess; this module reads its JSON. The figure is the median round's time
divided by the requests in it. Breakdowns (deep matched paths only, canary reads only,
unmatched only) are in the context.

    python bench/routing_decision.py [--quick]

Needs pytest-benchmark in the virtualenv.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, Measurement, print_measurements

__all__ = ["run"]

TEST_FILE = Path(__file__).resolve().with_name("test_routing_decision_bench.py")
KINDS = ("mix", "matched", "canary-read", "unmatched")


@dataclass(frozen=True)
class Result:
    """One benchmark of the JSON: its round statistics (seconds) and its extra_info."""

    stats: dict[str, float]
    extra: dict[str, object]

    def per_request_us(self, stat: str) -> float:
        requests = self.extra["requests_per_call"]
        if not isinstance(requests, int) or requests < 1:
            raise RuntimeError(f"no requests_per_call in the benchmark's extra_info: {requests}")
        return self.stats[stat] * 1e6 / requests


def _pytest_benchmark(json_path: Path, quick: bool) -> dict[str, Result]:
    """Run the pytest-benchmark file in its own process; its benchmarks by parameter."""
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise RuntimeError(
            "pytest-benchmark is not installed in this environment (pip install pytest-benchmark)"
        )
    argv = [sys.executable, "-m", "pytest", str(TEST_FILE), "-q"]
    argv += ["-p", "no:cacheprovider", "-o", "addopts=", f"--benchmark-json={json_path}"]
    if quick:
        argv += ["--benchmark-max-time=0.02", "--benchmark-min-rounds=2", "--benchmark-warmup=off"]
    else:
        argv += ["--benchmark-max-time=2", "--benchmark-min-rounds=25"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 or not json_path.exists():
        raise RuntimeError(
            f"pytest-benchmark run failed (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-4000:]}"
        )
    data = json.loads(json_path.read_text())
    found: dict[str, Result] = {}
    for bench in data["benchmarks"]:
        stats = {k: float(v) for k, v in bench["stats"].items() if isinstance(v, int | float)}
        found[str(bench["param"])] = Result(stats, dict(bench["extra_info"]))
    missing = [kind for kind in KINDS if kind not in found]
    if missing:
        raise RuntimeError(f"pytest-benchmark wrote no result for {missing}")
    return found


def run(quick: bool) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="routing-decision-") as tmp:
        found = _pytest_benchmark(Path(tmp) / "benchmark.json", quick)
    mix = found["mix"]
    stats, extra = mix.stats, mix.extra
    context: dict[str, object] = {
        "capabilities": extra["capabilities"],
        "prefixes": extra["prefixes"],
        "requests_per_round": extra["requests_per_call"],
        "mix": {key: extra[key] for key in ("reads", "default_route", "to_service", "shadowed")},
        "rounds": int(stats["rounds"]),
        "median_round_ms": round(stats["median"] * 1e3, 3),
        "mean_us": round(mix.per_request_us("mean"), 3),
        "min_us": round(mix.per_request_us("min"), 3),
        "stddev_us": round(mix.per_request_us("stddev"), 3),
        "median_us_by_kind": {
            kind: round(found[kind].per_request_us("median"), 3) for kind in KINDS[1:]
        },
        "pytest_benchmark": version("pytest-benchmark"),
    }
    return [
        Measurement(
            name="routing decision",
            measured_as=(
                "normalise + match + decide per request, 200 capabilities (pytest-benchmark)"
            ),
            value=round(mix.per_request_us("median"), 3),
            unit="us",
            target="<= 10",
            context=context,
            note="median round of a seeded mix of requests, divided by the requests in it",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke-test size (a few rounds)")
    args = parser.parse_args()
    print_measurements(run(quick=args.quick))


if __name__ == "__main__":
    main()
