"""The README's run path: `strangler seed` and `strangler up`, as real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from strangler.db import create_db_engine
from tests.support.databases import BACKENDS, database
from tests.support.processes import monolith_env, service_env, wait_until_healthy
from tests.support.up import (
    ROOT,
    STRANGLER,
    free_up_ports,
    routing_for,
    start_up,
    stop_up,
    up_argv,
    wait_for_banner,
)
from tests.support.waiting import eventually


def _count(url: str, table: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(text(table))) or 0)
    finally:
        engine.dispose()


def _system_env(monolith_db: str, service_db: str, tmp_path: Path) -> dict[str, str]:
    """Everything `strangler seed/up` touches, kept inside tmp_path."""
    return {
        **monolith_env(monolith_db, tmp_path),
        **{
            k: v
            for k, v in service_env(service_db, tmp_path, tmp_path / "jwt-public.pem").items()
            if k.startswith("PRODUCTS_SERVICE_")
        },
        "STRANGLER_SYNC_TOKEN_FILE": str(tmp_path / "sync-token"),
        "STRANGLER_ADMIN_TOKEN_FILE": str(tmp_path / "admin-token"),
        "STRANGLER_STATE_DIR": str(tmp_path / "state"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_loads_demo_data_once_however_often_it_runs(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url, database(backend, tmp_path / "svc") as service_url:
        env = _system_env(url, service_url, tmp_path)
        outputs = []
        for _ in range(2):
            result = subprocess.run(
                [*STRANGLER, "seed"], env=env, capture_output=True, text=True, timeout=180
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
        assert "seeded 3 users and 1000 products" in outputs[0]
        assert "demo data already there, nothing to add" in outputs[1]
        assert _count(url, "users") == 3
        assert _count(url, "products") == 1000


def test_seed_against_an_unreachable_database_says_what_to_do(tmp_path: Path) -> None:
    env = monolith_env("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", tmp_path)
    result = subprocess.run(
        [*STRANGLER, "seed"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "migrating the monolith database failed" in result.stderr
    assert "MONOLITH_DATABASE_URL" in result.stderr


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    log: Path
    proxy: str
    monolith: str
    service: str
    env: dict[str, str]


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """`strangler up` on free ports, with a routing file pointing at its monolith."""
    ports = free_up_ports()
    routing = routing_for(ports, tmp_path)
    env = {
        **_system_env(
            f"sqlite:///{tmp_path / 'up.db'}", f"sqlite:///{tmp_path / 'svc.db'}", tmp_path
        ),
        "PYTHONUNBUFFERED": "1",
        "STRANGLER_ADMIN_TOKEN": "up-test-token",
        **ports.cli_env(),
        "PROXY_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "COLUMNS": "200",
    }
    log = tmp_path / "up.log"
    process = start_up(up_argv(ports, routing, products=1000), env, log)
    try:
        wait_until_healthy(ports.proxy_url, process, log, "/_strangler/health")
        wait_for_banner(process, log, ports.proxy, timeout=60)
        yield Up(process, log, ports.proxy_url, ports.monolith_url, ports.service_url, env)
    finally:
        # the tests check how `up` stops (Ctrl-C, a child dying); what is left is killed
        stop_up(process, interrupt=False)


def test_up_serves_the_seeded_system_through_the_proxy_and_stops_on_ctrl_c(up: Up) -> None:
    page = httpx.get(f"{up.proxy}/products", params={"limit": 200})
    assert page.headers["x-strangler-upstream"] == "monolith"
    assert len(page.json()["items"]) == 200 and page.json()["next_cursor"]
    login = httpx.post(
        f"{up.proxy}/users/login", json={"email": "alice@example.com", "password": "demo-password"}
    )
    assert login.status_code == 200
    prefixes = ("monolith |", "proxy    |", "relay    |")

    def every_child_logged() -> str:  # children's lines reach the log as they print them
        text = up.log.read_text()
        assert [p for p in prefixes if p not in text] == []
        return text

    text = eventually(every_child_logged, "a line of each child in the log", timeout=10)
    assert up.proxy in text and up.monolith in text
    assert httpx.get(f"{up.service}/ready").status_code == 200
    os.killpg(up.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert up.process.wait(timeout=30) == 0, up.log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{up.monolith}/health", timeout=2)


def test_the_cli_flips_a_capability_through_the_admin_api(up: Up) -> None:
    cli = [*STRANGLER, "proxy"]
    unchecked = subprocess.run(
        [*cli, "set", "products", "--phase", "dual_write", "--reason", "t"],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unchecked.returncode == 2
    assert "the runbook gates" in unchecked.stderr and "--force" in unchecked.stderr
    flipped = subprocess.run(
        [*cli, "set", "products", "--phase", "dual_write", "--reason", "t", "--force"],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flipped.returncode == 0, flipped.stderr
    assert "products.phase: monolith -> dual_write" in flipped.stdout
    status = subprocess.run(
        [*cli, "status"], env=up.env, capture_output=True, text=True, timeout=60
    )
    assert "dual_write" in status.stdout
    overview = subprocess.run(
        [*STRANGLER, "status"], env=up.env, capture_output=True, text=True, timeout=60
    )
    assert overview.returncode == 0, overview.stderr
    assert "dual_write" in overview.stdout and "monolith_to_service" in overview.stdout
    assert "unreachable" not in overview.stdout and "…" not in overview.stdout
    as_json = subprocess.run(
        [*STRANGLER, "status", "--json"], env=up.env, capture_output=True, text=True, timeout=60
    )
    products = json.loads(as_json.stdout)["capabilities"]["products"]
    assert (products["phase"], products["sync"]) == ("dual_write", "monolith_to_service")
    assert products["relay"]["pending"] == 0
    refused = subprocess.run(
        [*cli, "set", "products", "--phase", "canary", "--force", "--reason", "t"],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "skips backfilled, shadow" in refused.stderr
    wrong = subprocess.run(
        [*cli, "status"],
        env={**up.env, "STRANGLER_ADMIN_TOKEN": "nope"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2 and "refused the admin token" in wrong.stderr


def test_up_stops_everything_and_names_the_child_that_died(up: Up) -> None:
    match = re.search(r"monolith \| .*Started server process \[(\d+)\]", up.log.read_text())
    assert match, up.log.read_text()
    os.kill(int(match.group(1)), signal.SIGKILL)
    assert up.process.wait(timeout=30) == 2
    text = up.log.read_text()
    assert "monolith exited with code -9" in text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{up.proxy}/_strangler/health", timeout=2)


def test_ready_is_503_when_the_database_is_gone(tmp_path: Path) -> None:
    """Plant the fault: a monolith whose PostgreSQL database does not exist."""
    from tests.support.databases import require_postgres
    from tests.support.processes import serve_monolith

    require_postgres()
    env = monolith_env(
        "postgresql+psycopg://postgres@127.0.0.1:5432/strangler_missing_db", tmp_path
    )
    with serve_monolith(env, tmp_path) as app:
        response = httpx.get(f"{app.base_url}/ready")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "not reachable" in response.json()["detail"]
        assert httpx.get(f"{app.base_url}/health").status_code == 200


def test_advance_checks_each_gate_with_evidence_and_rollback_goes_back(up: Up) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*STRANGLER, *args], env=up.env, capture_output=True, text=True, timeout=120, cwd=ROOT
        )

    first = run("advance", "products")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no data coupling" in first.stdout and "/ready answered 200" in first.stdout
    assert "monolith -> dual_write" in first.stdout

    blocked = run("advance", "products")
    assert blocked.returncode == 1
    assert "no backfill has run" in blocked.stdout and "refused" in blocked.stderr

    assert run("backfill", "products").returncode == 0
    backfilled = run("advance", "products")
    assert backfilled.returncode == 0, backfilled.stdout
    assert "1000 rows, 0 rejected" in backfilled.stdout

    shadow = run("advance", "products")
    assert shadow.returncode == 0, shadow.stdout
    assert "0 differences over 1000 / 1000 rows" in shadow.stdout

    no_sample = run("advance", "products")
    assert no_sample.returncode == 1
    assert "0 compared (min 100)" in no_sample.stdout
    assert run("advance", "products", "--force").returncode == 2  # a reason is required
    forced = run("advance", "products", "--force", "--reason", "sample checked by hand")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "shadow -> canary" in forced.stdout

    overview = run("status", "--json")
    assert overview.returncode == 0, overview.stderr
    last = json.loads(overview.stdout)["capabilities"]["products"]["last_reconcile"]
    assert last.startswith("0 differences at 20")  # the reconcile advance ran, with its time

    back = run("rollback", "products")
    assert back.returncode == 0 and "canary -> shadow" in back.stdout
    audit = [json.loads(line) for line in Path(up.env["PROXY_AUDIT_LOG"]).read_text().splitlines()]
    assert [e["new"].get("phase") for e in audit] == [
        "dual_write",
        "backfilled",
        "shadow",
        "canary",
        "shadow",
    ]
    assert audit[3]["reason"].startswith("FORCED past failing gates (shadow reads agree)")
