"""The benchmark harness works end to end at its smoke size: every benchmark runs, reports
each of its measurements against its target, and a full run's table lands in the README.

The numbers at this size mean nothing and are not checked; that every benchmark produced its
rows, with the absolute figures behind each ratio, is.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.harness import Measurement
from tests.support.databases import require_postgres
from tests.support.programs import require_programs

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "proxy throughput, trivial upstream",
    "proxy throughput, real monolith GET /products/{id}",
    "proxy latency at 1 connection, added p50",
    "proxy latency at 1 connection, added p99",
    "shadow at 100 % sampling",
    "dual-write",
    "relay throughput",
    "relay lag p99",
    "backfill",
    "backfill peak memory",
    "reconcile",
    "reconcile differences found",
    "boundary lint, cold",
    "boundary lint, warm",
    "routing decision",
}


@pytest.mark.slow  # about a minute of nginx, wrk and both databases: in `dev.py chaos` and CI
def test_every_benchmark_runs_at_smoke_size_and_reports_its_rows(tmp_path: Path) -> None:
    require_programs("nginx", "wrk")
    require_postgres()
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    record = json.loads(out.read_text())
    assert record["failed"] == {}
    assert record["quick"] is True
    assert {"cpu", "cores", "date", "python", "versions"} <= set(record["machine"])
    rows = {m["name"]: m for m in record["measurements"]}
    assert set(rows) == EXPECTED, set(rows) ^ EXPECTED
    for row in rows.values():
        assert math.isfinite(row["value"]), row
        assert row["target"].split(" ")[0] in (">=", "<="), row
        assert row["context"], f"{row['name']} reports no figures behind its value"


def test_a_target_is_judged_by_its_direction() -> None:
    def measured(value: float, target: str) -> Measurement:
        return Measurement("x", "y", value, "ratio", target)

    assert measured(0.6, ">= 0.6").met and not measured(0.59, ">= 0.6").met
    assert measured(250, "<= 250").met and not measured(251, "<= 250").met
    assert measured(2500, ">= 2,000").met


def test_the_table_goes_between_the_readme_markers_and_nowhere_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nbefore\n{bench_run.START}\nold\n{bench_run.END}\nafter\n")
    monkeypatch.setattr(bench_run, "README", readme)
    bench_run._write_readme("| new table |")
    assert readme.read_text() == (
        f"# Benchmarks\n\nbefore\n{bench_run.START}\n| new table |\n{bench_run.END}\nafter\n"
    )
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        bench_run._write_readme("| new table |")
