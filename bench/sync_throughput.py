"""Backfill rows/s and relay events/s, on SQLite and PostgreSQL, through the real processes.

For each backend: a monolith database seeded with N products and two empty products-service
databases. Backfill copies the N rows into the first service through `strangler backfill`;
the relay then drains N outbox events (one upsert per product, written straight into the
monolith's outbox) into the second service through `strangler relay --until-drained`. Both
are timed end to end, CLI start-up included. Writes bench/results/sync_throughput.json.

    python bench/sync_throughput.py [--rows 20000] [--backends sqlite postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import MetaData, insert, select  # noqa: E402

from strangler.db import create_db_engine  # noqa: E402
from strangler.sync.tables import sync_tables  # noqa: E402
from tests.support.databases import database  # noqa: E402
from tests.support.processes import (  # noqa: E402
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)

TOKEN = "bench-sync-token"
CLI = [sys.executable, "-c", "from strangler.cli import main; main()"]
# Runs a command and prints its peak resident memory (KiB), so the CLI's own footprint is
# measured in its own process.
PEAK = [
    sys.executable,
    "-c",
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
]


def fill_outbox(database_url: str) -> int:
    tables = sync_tables(MetaData(), "products")
    engine = create_db_engine(database_url)
    columns = "id, version, sku, name, description, price_cents, stock"
    with engine.begin() as connection:
        rows = connection.exec_driver_sql(f"SELECT {columns} FROM products").all()
        now = time.time()
        connection.execute(
            insert(tables.outbox),
            [
                {
                    "event_id": str(uuid.uuid4()),
                    "entity_key": r[0],
                    "version": r[1],
                    "op": "upsert",
                    "data": json.dumps(
                        dict(
                            zip(
                                ("sku", "name", "description", "price_cents", "stock"),
                                r[2:],
                                strict=True,
                            )
                        )
                    ),
                    "created_at": now,
                }
                for r in rows
            ],
        )
        count = connection.execute(select(tables.outbox.c.id)).all()
    engine.dispose()
    return len(count)


def measure(backend: str, rows: int) -> dict[str, float]:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sync-")))
        for name in ("m", "s1", "s2"):
            (work / name).mkdir()
        mdb = stack.enter_context(database(backend, work / "m"))
        menv = {**monolith_env(mdb, work / "m"), "MONOLITH_SYNC_TOKEN": TOKEN}
        run_monolith_command(menv, "migrate")
        run_monolith_command(menv, "seed", "--products", str(rows))
        monolith = stack.enter_context(serve_monolith(menv, work / "m"))
        services = []
        for name in ("s1", "s2"):
            sdb = stack.enter_context(database(backend, work / name))
            senv = {
                **service_env(sdb, work / name, work / "m" / "jwt-public.pem"),
                "PRODUCTS_SERVICE_SYNC_TOKEN": TOKEN,
            }
            run_service_command(senv, "migrate")
            services.append(stack.enter_context(serve_products_service(senv, work / name)))

        peaks: list[int] = []

        def cli(service_url: str, *args: str) -> float:
            env = {
                **os.environ,
                "STRANGLER_MONOLITH_URL": monolith.base_url,
                "STRANGLER_SERVICE_URL": service_url,
                "STRANGLER_SYNC_TOKEN": TOKEN,
                "STRANGLER_MONOLITH_DATABASE_URL": mdb,
                "STRANGLER_STATE_DIR": str(work / "state"),
                "STRANGLER_ROUTING_FILE": str(work / "none.toml"),
            }
            started = time.monotonic()
            out = subprocess.run(
                [*PEAK, *CLI, *args], env=env, check=True, capture_output=True, text=True
            ).stdout
            peaks.append(int(out.strip().splitlines()[-1]))
            return time.monotonic() - started

        backfill_s = cli(services[0].base_url, "backfill", "products", "--chunk-size", "1000")
        events = fill_outbox(mdb)
        relay_s = cli(
            services[1].base_url,
            "relay",
            "products",
            "--until-drained",
            "--direction",
            "forward",
            "--batch-size",
            "1000",
        )
        return {
            "rows": rows,
            "backfill_seconds": backfill_s,
            "backfill_rows_per_s": rows / backfill_s,
            "backfill_peak_rss_mib": peaks[0] / 1024,
            "relay_peak_rss_mib": peaks[1] / 1024,
            "relay_events": events,
            "relay_seconds": relay_s,
            "relay_events_per_s": events / relay_s,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[20_000],
        help="one or more table sizes; backfill peak memory is compared across them",
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    results = {
        f"{backend}@{rows}": measure(backend, rows)
        for rows in args.rows
        for backend in args.backends
    }
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    machine = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for backend, r in results.items():
        print(
            f"{backend:<18} backfill {r['backfill_rows_per_s']:>8,.0f} rows/s "
            f"(peak {r['backfill_peak_rss_mib']:.0f} MiB)   relay "
            f"{r['relay_events_per_s']:>8,.0f} events/s (peak {r['relay_peak_rss_mib']:.0f} MiB)"
        )
    out = ROOT / "bench/results/sync_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
