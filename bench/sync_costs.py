"""What keeping two databases in sync costs, on PostgreSQL, through the real processes and CLI.

Four questions, each answered against a plain reference measured in the same run:

1. Dual-write: product writes/s through the monolith's HTTP API (wrk in its own process,
   half POST, half PATCH, with a user's token) with products in phase `dual_write` (every
   write also inserts its change event into the outbox, in the same transaction) over the
   same with phase `monolith` (no outbox). The phase is switched in routing.toml between
   interleaved rounds (off, on, off, on, ...); medians. No relay runs meanwhile: this is the
   write path's own cost.
2. Relay: events/s while `strangler relay --until-drained` drains a large outbox (one update
   event per product: every row bumped, as a burst of dual-written updates would leave it),
   and, with `strangler relay` running as a process and a paced load of product writes
   through the monolith's API in `dual_write`, the p99 of each write's lag: when the service
   had applied it minus when the monolith acknowledged it to the client. The apply moment is
   the outbox's own `delivered_at`, which the relay stamps on receiving the service's answer
   to the batch (the service commits before it answers): an upper bound, late by one HTTP
   response. The service row's `updated_at` (its apply transaction's start, so never later
   than its commit) gives a lower bound, for the writes that are the last of their product.
   The load is a separate process sending on a fixed schedule for a fixed window; when the
   machine cannot keep up with the asked rate, the row says so and a second window at half
   the achieved rate shows the lag of a machine that is not overloaded (in its context).
3. Backfill: rows/s of `strangler backfill products` from a seeded monolith into an empty
   service, over a plain `COPY ... TO STDOUT` streamed into `COPY ... FROM STDIN` between the
   same two databases (same columns, same target table and indexes), timed the same way (wall
   clock end to end; the CLI's start-up is included). Copy, backfill, copy: the copy time is
   the mean of the two. Also the backfill process's peak resident memory at the large size
   over a ten-times-smaller one: it should not grow with the table.
4. Reconcile: with both sides equal (the backfill made them so) and 10 scattered rows changed
   on the service side only (the name, nothing else: drift such as a manual fix leaves), the
   time of `strangler reconcile products --confirm-seconds 0` over the time of one full-table
   aggregate checksum query per side (count and sum of `hashtextextended` over the same
   columns reconcile hashes: key, version, data; both sides added). Checksum, reconcile,
   checksum: the mean of the two. Reconcile must report exactly the 10 planted keys.

Sizes: 1,000,000 products for backfill and reconcile, 100,000 for the memory reference and the
relay's outbox, 20 s of 500 writes/s for the lag; `quick` shrinks each so that every path
runs once in seconds. Ratios are the result; absolute figures are in each row's context.

    python bench/sync_costs.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench.harness import (  # noqa: E402
    Measurement,
    cpu_seconds,
    cpu_seconds_named,
    missing_tools,
    print_measurements,
    run_wrk,
)
from tests.support.databases import database, postgres_unavailable_reason  # noqa: E402
from tests.support.processes import (  # noqa: E402
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)

TOKEN = "bench-sync-costs-token"
CLI = [sys.executable, "-c", "from strangler.cli import main; main()"]
RECONCILE_ROUNDS = 3
# Runs a command with its stdout sent to a file (argv[1]), prints the command's peak resident
# memory (KiB; the wrapper's own is not counted) and exits with the command's status.
PEAK = [
    sys.executable,
    "-c",
    "import resource, subprocess, sys\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    code = subprocess.run(sys.argv[2:], stdout=out).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)",
]
COLUMNS = "id, sku, name, description, price_cents, stock, version"
HASHED = "id, version, sku, name, description, price_cents, stock"  # what reconcile hashes
PLANTED = 10


@dataclass(frozen=True)
class Sizes:
    large: int  # backfill and reconcile
    small: int  # memory reference and relay outbox
    dual_write_rounds: int
    dual_write_seconds: int
    lag_rate: float
    lag_seconds: float


FULL = Sizes(1_000_000, 100_000, 6, 5, 500.0, 20.0)
QUICK = Sizes(5_000, 2_000, 1, 1, 100.0, 2.0)


@dataclass(frozen=True)
class Pair:
    """A monolith and a products service, each running on a PostgreSQL database of its own."""

    work: Path
    monolith_db: str
    service_db: str
    monolith_url: str
    service_url: str
    monolith_pid: int

    @property
    def routing(self) -> Path:
        return self.work / "m" / "routing.toml"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STRANGLER_MONOLITH_URL": self.monolith_url,
            "STRANGLER_SERVICE_URL": self.service_url,
            "STRANGLER_SYNC_TOKEN": TOKEN,
            "STRANGLER_MONOLITH_DATABASE_URL": self.monolith_db,
            "STRANGLER_SERVICE_DATABASE_URL": self.service_db,
            "STRANGLER_STATE_DIR": str(self.work / "state"),
            "STRANGLER_ROUTING_FILE": str(self.routing),
        }


@dataclass(frozen=True)
class CliRun:
    seconds: float
    peak_mib: float
    stdout: str
    returncode: int


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _timed_sql(url: str, statement: str) -> float:
    """Seconds one query takes on an open connection (the connect is not counted)."""
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        started = time.monotonic()
        connection.execute(statement).fetchall()
        return time.monotonic() - started


def _set_phase(pair: Pair, phase: str) -> None:
    pair.routing.write_text(f'[capabilities.products]\nphase = "{phase}"\n')


def _seed(url: str, rows: int) -> None:
    """`rows` products at version 1, in one INSERT ... SELECT (ids 1..rows)."""
    _sql(
        url,
        "INSERT INTO products (sku, name, description, price_cents, stock, version) "
        "SELECT 'BENCH-' || lpad(n::text, 7, '0'), 'Bench product ' || n, "
        "'Seeded for the sync cost benchmark, row ' || n || '.', "
        "(n::bigint * 7919) %% 50000 + 100, n %% 200, 1 FROM generate_series(1, %s) AS n",
        (rows,),
    )
    _sql(url, "VACUUM ANALYZE products")


@contextmanager
def _pair(stack: ExitStack, work: Path, seed_rows: int) -> Iterator[Pair]:
    """Fresh monolith and service databases, migrated, the monolith seeded, both serving."""
    for side in ("m", "s"):
        (work / side).mkdir(parents=True)
    mdb = stack.enter_context(database("postgresql", work / "m"))
    sdb = stack.enter_context(database("postgresql", work / "s"))
    menv = {**monolith_env(mdb, work / "m"), "MONOLITH_SYNC_TOKEN": TOKEN}
    senv = {
        **service_env(sdb, work / "s", work / "m" / "jwt-public.pem"),
        "PRODUCTS_SERVICE_SYNC_TOKEN": TOKEN,
    }
    run_monolith_command(menv, "migrate")
    run_service_command(senv, "migrate")
    _seed(mdb, seed_rows)
    with serve_monolith(menv, work / "m") as monolith:
        with serve_products_service(senv, work / "s") as service:
            yield Pair(work, mdb, sdb, monolith.base_url, service.base_url, monolith.process.pid)


def _cli(pair: Pair, *args: str, ok: tuple[int, ...] = (0,)) -> CliRun:
    """Run `strangler ARGS` as its own process: wall time, peak memory, stdout."""
    out = pair.work / f"cli-{uuid.uuid4().hex[:8]}.out"
    started = time.monotonic()
    done = subprocess.run(
        [*PEAK, str(out), *CLI, *args],
        env=pair.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    stdout = out.read_text(errors="replace")
    if done.returncode not in ok:
        raise RuntimeError(
            f"strangler {' '.join(args)} exited {done.returncode}:\n{stdout}\n{done.stderr}"
        )
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return CliRun(seconds, peak_kib / 1024, stdout, done.returncode)


def _pending(pair: Pair) -> int:
    return int(
        _sql(pair.monolith_db, "SELECT count(*) FROM products_outbox WHERE delivered_at IS NULL")[
            0
        ][0]
    )


def _outbox_count(pair: Pair) -> int:
    return int(_sql(pair.monolith_db, "SELECT count(*) FROM products_outbox")[0][0])


def _wait_drained(pair: Pair, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _pending(pair):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay left {_pending(pair)} events pending after {timeout} s")
        time.sleep(0.2)


def _account(pair: Pair) -> str:
    """Register a user on the monolith and log in; return the access token."""
    email, password = f"bench-{uuid.uuid4().hex[:10]}@example.com", "bench-password"
    with httpx.Client(base_url=pair.monolith_url, timeout=10) as client:
        created = client.post(
            "/users/register", json={"email": email, "password": password, "name": "Bench"}
        )
        created.raise_for_status()
        login = client.post("/users/login", json={"email": email, "password": password})
        login.raise_for_status()
        return str(login.json()["access_token"])


# --- 1. dual-write -------------------------------------------------------------------------

_WRK_SCRIPT = """
local headers = {["Authorization"] = "Bearer @TOKEN@", ["Content-Type"] = "application/json"}
local existing = @EXISTING@
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  math.randomseed(os.time() + (tid or 0) * 7919)
end
request = function()
  counter = counter + 1
  if counter % 2 == 0 then
    local body = string.format(
      '{"sku":"@PREFIX@-%d-%d","name":"Bench write","description":"Written under load.",' ..
      '"price":"12.50","stock":5}', tid or 0, counter)
    return wrk.format("POST", "/products", headers, body)
  end
  local body = string.format('{"stock":%d}', math.random(0, 1000))
  return wrk.format("PATCH", "/products/" .. math.random(1, existing), headers, body)
end
"""


def _wrk_round(pair: Pair, token: str, existing: int, seconds: int) -> dict[str, float]:
    script = pair.work / f"writes-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        _WRK_SCRIPT.replace("@TOKEN@", token)
        .replace("@EXISTING@", str(existing))
        .replace("@PREFIX@", f"W{uuid.uuid4().hex[:8]}")
    )
    before = _outbox_count(pair)
    cpu_before = cpu_seconds(pair.monolith_pid), cpu_seconds_named("postgres")
    result = run_wrk(f"{pair.monolith_url}/products", 16, seconds, script)
    cpu_after = cpu_seconds(pair.monolith_pid), cpu_seconds_named("postgres")
    writes = max(result["rps"] * seconds, 1)
    result["monolith_cpu_ms_per_write"] = (cpu_after[0] - cpu_before[0]) * 1000 / writes
    result["postgres_cpu_ms_per_write"] = (cpu_after[1] - cpu_before[1]) * 1000 / writes
    # wrk stops with requests still in flight: let the monolith finish them, so that none
    # is counted in (or commits under the phase of) the next round.
    time.sleep(0.5)
    result["events"] = _outbox_count(pair) - before
    result["events_per_write"] = result["events"] / max(result["rps"] * seconds, 1)
    return result


def _dual_write(pair: Pair, token: str, existing: int, sizes: Sizes) -> Measurement:
    _set_phase(pair, "monolith")
    _wrk_round(pair, token, existing, 1)  # warm-up, not counted
    runs: dict[str, list[dict[str, float]]] = {"monolith": [], "dual_write": []}
    for _ in range(sizes.dual_write_rounds):
        for phase in ("monolith", "dual_write"):
            _set_phase(pair, phase)
            runs[phase].append(_wrk_round(pair, token, existing, sizes.dual_write_seconds))
    _set_phase(pair, "monolith")
    off = statistics.median(r["rps"] for r in runs["monolith"])
    on = statistics.median(r["rps"] for r in runs["dual_write"])
    failures = sum(r["non_2xx"] + r["socket_errors"] for rs in runs.values() for r in rs)
    events_off = sum(r["events"] for r in runs["monolith"])
    events_on = min(r["events_per_write"] for r in runs["dual_write"])
    notes = []
    if failures:
        notes.append(f"{failures:.0f} non-2xx responses or socket errors across the rounds")
    if events_off or events_on < 0.95:
        notes.append(
            f"the outbox did not follow the phase: {events_off:.0f} events written with it "
            f"off, about {events_on:.2f} per write with it on (expected none and 1)"
        )
    return Measurement(
        name="dual-write",
        measured_as=(
            "product writes/s through the monolith's API (half POST, half PATCH, wrk at 16 "
            "connections), phase dual_write (outbox) / phase monolith, median of "
            f"{sizes.dual_write_rounds} interleaved rounds of {sizes.dual_write_seconds} s"
        ),
        value=on / off,
        unit="ratio",
        target=">= 0.85",
        context={
            "outbox_off_writes_per_s": round(off),
            "outbox_on_writes_per_s": round(on),
            "off_rounds_writes_per_s": [round(r["rps"]) for r in runs["monolith"]],
            "on_rounds_writes_per_s": [round(r["rps"]) for r in runs["dual_write"]],
            **{
                f"{who}_cpu_ms_per_write_{label}": round(
                    statistics.median(r[f"{who}_cpu_ms_per_write"] for r in runs[phase]), 3
                )
                for who in ("monolith", "postgres")
                for label, phase in (("off", "monolith"), ("on", "dual_write"))
            },
            "off_p99_ms": round(statistics.median(r["p99_ms"] for r in runs["monolith"]), 2),
            "on_p99_ms": round(statistics.median(r["p99_ms"] for r in runs["dual_write"]), 2),
            "outbox_events_per_write_on_approx": round(events_on, 3),
            "outbox_events_with_outbox_off": events_off,
            "products_in_table": existing,
        },
        note="; ".join(notes),
    )


# --- 2. relay ------------------------------------------------------------------------------


def _relay_throughput(pair: Pair, rows: int) -> Measurement:
    """Every product updated once (version + 1, stock + 1), one outbox event each, drained."""
    _sql(pair.monolith_db, "UPDATE products SET stock = stock + 1, version = version + 1")
    _sql(
        pair.monolith_db,
        "INSERT INTO products_outbox (event_id, entity_key, version, op, data, created_at) "
        "SELECT gen_random_uuid()::text, id, version, 'upsert', json_build_object("
        "'description', description, 'name', name, 'price_cents', price_cents, 'sku', sku, "
        "'stock', stock)::text, extract(epoch from clock_timestamp()) FROM products ORDER BY id",
    )
    _sql(pair.monolith_db, "VACUUM ANALYZE products_outbox")
    events = _pending(pair)
    run = _cli(pair, "relay", "products", "--until-drained", "--direction", "forward")
    if _pending(pair):
        raise RuntimeError(f"relay --until-drained returned with {_pending(pair)} pending")
    batches = _sql(
        pair.monolith_db,
        "SELECT delivered_at, count(*) FROM products_outbox GROUP BY 1 ORDER BY 1",
    )
    first_at, first_count = batches[0]
    steady = (events - first_count) / max(batches[-1][0] - first_at, 1e-9)
    applied = _sql(pair.service_db, "SELECT count(*) FROM products WHERE version = 2")[0][0]
    note = ""
    if applied != rows:
        note = f"only {applied} of {rows} service rows reached version 2 after the drain"
    return Measurement(
        name="relay throughput",
        measured_as=(
            f"events/s draining {events:,} pending update events with `strangler relay "
            "--until-drained` (default batch size), steady state from the outbox's delivered_at "
            "(first batch to last)"
        ),
        value=steady,
        unit="events/s",
        target=">= 2000",
        context={
            "events": events,
            "batches": len(batches),
            "wall_seconds_with_startup": round(run.seconds, 2),
            "events_per_s_with_startup": round(events / run.seconds),
            "relay_peak_rss_mib": round(run.peak_mib, 1),
        },
        note=note,
    )


async def _paced_writes(spec: dict[str, Any]) -> None:
    """The lag test's load, in its own process: product writes at a fixed schedule.

    Write i is sent at start + i / rate (or at once, when the server is behind); even i
    POST a new product, odd i PATCH a random existing one. Nothing is sent after the window
    of `seconds` closes: a server that cannot keep up gets fewer writes, not a longer test.
    Each acknowledged write is recorded with its key, the version the monolith returned and
    the wall-clock time of the answer.
    """
    import aiohttp

    rate, total = float(spec["rate"]), int(spec["rate"] * spec["seconds"])
    rng = random.Random(7)
    prefix = f"L{uuid.uuid4().hex[:8]}"
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    slot = 0
    start = time.monotonic() + 0.2
    headers = {"Authorization": f"Bearer {spec['token']}"}
    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def worker() -> None:
            nonlocal slot
            while slot < total:
                i, slot = slot, slot + 1
                delay = start + i / rate - time.monotonic()
                if time.monotonic() > start + spec["seconds"]:
                    return  # the window is over
                if delay > 0:
                    await asyncio.sleep(delay)
                if i % 2 == 0:
                    method, url = "POST", f"{spec['base']}/products"
                    body: dict[str, Any] = {"sku": f"{prefix}-{i}", "name": "Lag probe"}
                    body.update(description="Written by the lag test.", price="9.99", stock=3)
                else:
                    method = "PATCH"
                    url = f"{spec['base']}/products/{rng.randint(1, spec['existing'])}"
                    body = {"stock": rng.randint(0, 1000)}
                sent = time.time()
                try:
                    async with session.request(method, url, json=body) as response:
                        answer = await response.json(content_type=None)
                        status = response.status
                except aiohttp.ClientError as exc:
                    failures.append(repr(exc))
                    continue
                acked = time.time()
                if status >= 300:
                    failures.append(f"{status}: {answer}")
                    continue
                records.append(
                    {
                        "key": answer["id"],
                        "version": answer["version"],
                        "sent": sent,
                        "acked": acked,
                        "late": max(0.0, -delay),
                    }
                )

        await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    result = {"records": records, "failures": failures, "asked": total}
    Path(spec["out"]).write_text(json.dumps(result))


async def _paced_database_writes(spec: dict[str, Any]) -> None:
    """The lag test's load when the monolith's API cannot reach the rate: the same writes,
    committed straight into the monolith's database on the same schedule, each in one
    transaction that changes a product and records its outbox event (what the monolith's
    own write transaction does), so the relay sees what it would see at that rate."""
    rate, total = float(spec["rate"]), int(spec["rate"] * spec["seconds"])
    rng = random.Random(8)
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    slot = 0
    start = time.monotonic() + 0.2

    async def worker() -> None:
        nonlocal slot
        async with await psycopg.AsyncConnection.connect(spec["dsn"]) as connection:
            while slot < total:
                i, slot = slot, slot + 1
                delay = start + i / rate - time.monotonic()
                if time.monotonic() > start + spec["seconds"]:
                    return
                if delay > 0:
                    await asyncio.sleep(delay)
                key, stock = rng.randint(1, spec["existing"]), rng.randint(0, 1000)
                sent = time.time()
                try:
                    async with connection.transaction():
                        cursor = await connection.execute(
                            "UPDATE products SET stock = %s, version = version + 1, "
                            "updated_at = now() WHERE id = %s RETURNING version, "
                            "json_build_object('description', description, 'name', name, "
                            "'price_cents', price_cents, 'sku', sku, 'stock', stock)::text",
                            (stock, key),
                        )
                        version, data = (await cursor.fetchone()) or (None, None)
                        await connection.execute(
                            "INSERT INTO products_outbox (event_id, entity_key, version, op, "
                            "data, created_at) VALUES (%s, %s, %s, 'upsert', %s, %s)",
                            (str(uuid.uuid4()), key, version, data, time.time()),
                        )
                except psycopg.Error as exc:
                    failures.append(repr(exc))
                    continue
                records.append(
                    {
                        "key": key,
                        "version": version,
                        "sent": sent,
                        "acked": time.time(),
                        "late": max(0.0, -delay),
                    }
                )

    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    result = {"records": records, "failures": failures, "asked": total}
    Path(spec["out"]).write_text(json.dumps(result))


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def _lag_round(
    pair: Pair,
    token: str,
    existing: int,
    rate: float,
    seconds: float,
    *,
    through_database: bool = False,
) -> dict[str, Any]:
    """One paced load while the relay runs; each acknowledged write's lag, and the load's.
    The load goes through the monolith's API, or with `through_database` straight into its
    database (see _paced_database_writes)."""
    out = pair.work / f"lag-load-{uuid.uuid4().hex[:8]}.json"
    spec = {
        "base": pair.monolith_url,
        "dsn": _dsn(pair.monolith_db),
        "token": token,
        "rate": rate,
        "seconds": seconds,
        "existing": existing,
        "concurrency": 8 if through_database else 32,
        "out": str(out),
    }
    mode = "--paced-database-writes" if through_database else "--paced-writes"
    subprocess.run(
        [sys.executable, __file__, mode, json.dumps(spec)],
        check=True,
        timeout=seconds * 10 + 60,
    )
    _wait_drained(pair, 120)
    load = json.loads(out.read_text())
    records: list[dict[str, Any]] = load["records"]
    if not records:
        raise RuntimeError(f"no write was acknowledged: {load['failures'][:5]}")
    first_sent = min(r["sent"] for r in records)
    delivered = {
        (key, version): at
        for key, version, at in _sql(
            pair.monolith_db,
            "SELECT entity_key, version, delivered_at FROM products_outbox WHERE created_at >= %s",
            (first_sent - 1,),
        )
    }
    service_rows = {
        key: (version, at)
        for key, version, at in _sql(
            pair.service_db,
            "SELECT id, version, extract(epoch from updated_at)::float8 FROM products "
            "WHERE updated_at >= to_timestamp(%s)",
            (first_sent - 1,),
        )
    }
    lags: list[float] = []
    lower: list[float] = []
    unmatched: list[tuple[int, int]] = []
    for r in records:
        at = delivered.get((r["key"], r["version"]))
        if at is None:
            unmatched.append((r["key"], r["version"]))
            continue
        lags.append((at - r["acked"]) * 1000)
        held = service_rows.get(r["key"])
        if held is not None and held[0] == r["version"]:
            lower.append((held[1] - r["acked"]) * 1000)
    span = max(r["acked"] for r in records) - first_sent
    return {
        "lags": lags,
        "lower": lower,
        "unmatched": unmatched,
        "failures": load["failures"],
        "acknowledged": len(records),
        "asked": load["asked"],
        "achieved": len(records) / span,
        "behind_p99_ms": _percentile([r["late"] for r in records], 99) * 1000,
        "ack_p99_ms": _percentile([(r["acked"] - r["sent"]) * 1000 for r in records], 99),
    }


def _relay_lag(pair: Pair, token: str, existing: int, sizes: Sizes) -> Measurement:
    """Lag at the asked rate through the monolith's API. When this machine's monolith cannot
    sustain that rate, the same rate is committed straight into its database as well, and
    that round is the result: it is the relay's lag at the rate, apart from the overload of
    a monolith that shares two cores with everything else here."""
    _set_phase(pair, "dual_write")
    log = pair.work / "relay-continuous.log"
    with log.open("wb") as sink:
        relay = subprocess.Popen(
            [*CLI, "relay", "products", "--direction", "forward"],
            env=pair.env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    direct: dict[str, Any] | None = None
    try:
        _wait_drained(pair, 300)  # the dual-write rounds' events go first
        api = _lag_round(pair, token, existing, sizes.lag_rate, sizes.lag_seconds)
        if api["achieved"] < 0.95 * sizes.lag_rate:
            direct = _lag_round(
                pair, token, existing, sizes.lag_rate, sizes.lag_seconds, through_database=True
            )
        if relay.poll() is not None:
            raise RuntimeError(f"the relay exited with {relay.returncode}:\n{log.read_text()}")
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=15)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        _set_phase(pair, "monolith")
    result = direct if direct is not None else api
    notes = []
    context: dict[str, object] = {
        "writes_asked": result["asked"],
        "writes_acknowledged": result["acknowledged"],
        "achieved_writes_per_s": round(result["achieved"], 1),
        "lag_p50_ms": round(_percentile(result["lags"], 50), 1),
        "lag_max_ms": round(max(result["lags"]), 1),
        "lower_bound_p99_ms": round(_percentile(result["lower"], 99), 1)
        if result["lower"]
        else None,
        "send_behind_schedule_p99_ms": round(result["behind_p99_ms"], 1),
    }
    if direct is not None:
        if direct["achieved"] < 0.95 * sizes.lag_rate:
            notes.append(
                f"even committed straight into the database, this machine reached "
                f"{direct['achieved']:.0f} of {sizes.lag_rate:.0f} writes/s"
            )
        notes.append(
            f"the monolith's API reached {api['achieved']:.0f} of {sizes.lag_rate:.0f} "
            f"writes/s here ({api['acknowledged']} of {api['asked']} writes in the window), "
            f"with a lag p99 of {_percentile(api['lags'], 99):.0f} ms (an overloaded "
            f"machine's queue), so the result is the round committed straight into the "
            f"monolith's database at the asked rate"
        )
        context |= {
            "api_achieved_writes_per_s": round(api["achieved"], 1),
            "api_lag_p50_ms": round(_percentile(api["lags"], 50), 1),
            "api_lag_p99_ms": round(_percentile(api["lags"], 99), 1),
            "api_ack_latency_p99_ms": round(api["ack_p99_ms"], 1),
        }
    for name, round_ in (("api", api), ("database", direct)):
        if round_ is None:
            continue
        if round_["unmatched"]:
            notes.append(
                f"{name} round: {len(round_['unmatched'])} acknowledged writes have no "
                f"delivered outbox event: {round_['unmatched'][:10]}"
            )
        if round_["failures"]:
            notes.append(
                f"{name} round: {len(round_['failures'])} writes failed: {round_['failures'][:3]}"
            )
    source = (
        "committed straight into the monolith's database (its API could not reach the rate)"
        if direct is not None
        else "through the monolith's API"
    )
    return Measurement(
        name="relay lag p99",
        measured_as=(
            f"ms from a write's acknowledgement to the relay receiving the service's apply "
            f"answer (outbox delivered_at), `strangler relay` running, {sizes.lag_rate:.0f} "
            f"writes/s for {sizes.lag_seconds:.0f} s in phase dual_write, {source}"
        ),
        value=_percentile(result["lags"], 99),
        unit="ms",
        target="<= 250",
        context=context,
        note="; ".join(notes),
    )


# --- 3. backfill ---------------------------------------------------------------------------


def _plain_copy(source: str, target: str) -> float:
    """Seconds to stream the products' synced columns from `source` into empty `target`."""
    _sql(target, "TRUNCATE products")
    started = time.monotonic()
    with psycopg.connect(_dsn(source)) as src, psycopg.connect(_dsn(target)) as dst:
        with (
            src.cursor().copy(
                f"COPY (SELECT {COLUMNS} FROM products ORDER BY id) TO STDOUT"
            ) as outgoing,
            dst.cursor().copy(f"COPY products ({COLUMNS}) FROM STDIN") as incoming,
        ):
            for block in outgoing:
                incoming.write(block)
        dst.commit()
    return time.monotonic() - started


def _backfill(pair: Pair) -> CliRun:
    run = _cli(pair, "backfill", "products", "--restart", "--direction", "forward")
    return run


# --- 4. reconcile --------------------------------------------------------------------------

_CHECKSUM = f"SELECT count(*), sum(hashtextextended(row({HASHED})::text, 0)) FROM products"
_MD5 = f"SELECT md5(string_agg(md5(row({HASHED})::text), '' ORDER BY id)) FROM products"


def _checksums(pair: Pair, query: str) -> float:
    return _timed_sql(pair.monolith_db, query) + _timed_sql(pair.service_db, query)


def _reconcile(pair: Pair, rows: int) -> tuple[Measurement, Measurement]:
    for url in (pair.monolith_db, pair.service_db):
        _sql(url, "VACUUM ANALYZE products")  # both sides' pages equally settled
    planted = sorted(random.Random(11).sample(range(1, rows + 1), PLANTED))
    _sql(
        pair.service_db,
        "UPDATE products SET name = name || ' (edited by hand)' WHERE id = ANY(%s)",
        (planted,),
    )
    # Interleaved rounds, checksum queries then reconcile, medians: one run of each was
    # within the noise of this shared machine (1.3 to 1.55 s for the same reconcile).
    checksum_s: list[float] = []
    runs: list[CliRun] = []
    for _ in range(RECONCILE_ROUNDS):
        checksum_s.append(_checksums(pair, _CHECKSUM))
        runs.append(
            _cli(
                pair,
                "reconcile",
                "products",
                "--json",
                "--confirm-seconds",
                "0",
                "--direction",
                "forward",
                ok=(0, 1),
            )
        )
    run = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    md5_s = _checksums(pair, _MD5)
    report = json.loads(run.stdout)
    found = [d["key"] for d in report["differences"]]
    if found != planted:
        raise RuntimeError(
            f"reconcile found {len(found)} differences, not the {PLANTED} planted: "
            f"found {report['differences']}, planted {planted}"
        )
    checksum = statistics.median(checksum_s)
    kinds = sorted({d["kind"] for d in report["differences"]})
    timing = Measurement(
        name="reconcile",
        measured_as=(
            f"`strangler reconcile products --confirm-seconds 0` over {rows:,} rows a side with "
            f"{PLANTED} scattered differences / one count-and-sum(hashtextextended) query per "
            f"side (both added), wall clock, CLI start-up included, medians of "
            f"{RECONCILE_ROUNDS} interleaved rounds"
        ),
        value=run.seconds / checksum,
        unit="ratio",
        target="<= 2",
        context={
            "reconcile_seconds": round(run.seconds, 2),
            "reconcile_runs_seconds": [round(r.seconds, 2) for r in runs],
            "checksum_queries_seconds": round(checksum, 3),
            "checksum_runs_seconds": [round(s, 3) for s in checksum_s],
            "md5_string_agg_queries_seconds": round(md5_s, 3),
            "ranges_checked": report["ranges_checked"],
            "reconcile_peak_rss_mib": round(run.peak_mib, 1),
        },
    )
    found_row = Measurement(
        name="reconcile differences found",
        measured_as=f"planted differences reported (exactly the {PLANTED} planted keys, or error)",
        value=float(len(found)),
        unit="differences",
        target=f">= {PLANTED}",
        context={"keys": found, "kinds": kinds},
    )
    return timing, found_row


# --- the run -------------------------------------------------------------------------------


def run(quick: bool) -> list[Measurement]:
    reason = postgres_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    if missing_tools("wrk"):
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    sizes = QUICK if quick else FULL
    measurements: list[Measurement] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-costs-")))

        # The smaller pair: backfill (memory reference), relay throughput, then the same
        # monolith (its products table now synced) takes the dual-write and lag load.
        small = stack.enter_context(_pair(stack, work / "small", sizes.small))
        small_backfill = _backfill(small)
        relay_rate = _relay_throughput(small, sizes.small)
        token = _account(small)
        dual_write = _dual_write(small, token, sizes.small, sizes)
        lag = _relay_lag(small, token, sizes.small, sizes)
        measurements += [dual_write, relay_rate, lag]

        # The large pair: copy, backfill, copy; then reconcile against checksum queries.
        large = stack.enter_context(_pair(stack, work / "large", sizes.large))
        copy_db = stack.enter_context(database("postgresql", work / "large"))
        run_service_command(
            service_env(copy_db, work / "large" / "s", work / "large" / "m" / "jwt-public.pem"),
            "migrate",
        )
        copy_s = [_plain_copy(large.monolith_db, copy_db)]
        large_backfill = _backfill(large)
        copy_s.append(_plain_copy(large.monolith_db, copy_db))
        copied = _sql(copy_db, "SELECT count(*) FROM products")[0][0]
        landed = _sql(large.service_db, "SELECT count(*) FROM products")[0][0]
        if copied != sizes.large or landed != sizes.large:
            raise RuntimeError(f"copied {copied}, backfilled {landed}, of {sizes.large} rows")
        copy_mean = statistics.mean(copy_s)
        measurements.append(
            Measurement(
                name="backfill",
                measured_as=(
                    f"rows/s of `strangler backfill products` ({sizes.large:,} rows into an "
                    "empty service) / a plain COPY TO STDOUT -> COPY FROM STDIN between the same "
                    "databases, wall clock (copy: mean of one run before and one after)"
                ),
                value=copy_mean / large_backfill.seconds,
                unit="ratio",
                target=">= 0.5",
                context={
                    "backfill_rows_per_s": round(sizes.large / large_backfill.seconds),
                    "copy_rows_per_s": round(sizes.large / copy_mean),
                    "backfill_seconds": round(large_backfill.seconds, 2),
                    "copy_seconds": [round(s, 2) for s in copy_s],
                },
            )
        )
        measurements.append(
            Measurement(
                name="backfill peak memory",
                measured_as=(
                    f"peak RSS of the backfill process at {sizes.large:,} rows / at "
                    f"{sizes.small:,} rows"
                ),
                value=large_backfill.peak_mib / small_backfill.peak_mib,
                unit="ratio",
                target="<= 1.2",
                context={
                    "peak_mib_large": round(large_backfill.peak_mib, 1),
                    "peak_mib_small": round(small_backfill.peak_mib, 1),
                    "small_backfill_rows_per_s": round(sizes.small / small_backfill.seconds),
                },
            )
        )
        measurements += _reconcile(large, sizes.large)
    return measurements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes: every path once")
    parser.add_argument("--paced-writes", help=argparse.SUPPRESS)  # the lag test's load process
    parser.add_argument("--paced-database-writes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paced_writes:
        asyncio.run(_paced_writes(json.loads(args.paced_writes)))
        return
    if args.paced_database_writes:
        asyncio.run(_paced_database_writes(json.loads(args.paced_database_writes)))
        return
    started = time.monotonic()
    print_measurements(run(quick=args.quick))
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
