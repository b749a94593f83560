"""The README's run path: `strangler seed` and `strangler up`, as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from legacy_monolith.platform.db import create_db_engine
from tests.support.databases import BACKENDS, database
from tests.support.processes import free_port, monolith_env, wait_until_healthy

STRANGLER = [sys.executable, "-c", "from strangler.cli import main; main()"]


def _count(url: str, table: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(text(table))) or 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_loads_demo_data_once_however_often_it_runs(backend: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url:
        env = monolith_env(url, tmp_path)
        for _ in range(2):
            result = subprocess.run(
                [*STRANGLER, "seed"], env=env, capture_output=True, text=True, timeout=180
            )
            assert result.returncode == 0, result.stderr
        assert "seeded 0 users and 0 products" in result.stdout
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


def test_up_serves_the_seeded_monolith_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**monolith_env(f"sqlite:///{tmp_path / 'up.db'}", tmp_path), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*STRANGLER, "up", "--products", "1000", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, log)
        page = httpx.get(f"{base}/products", params={"limit": 200}).json()
        assert len(page["items"]) == 200 and page["next_cursor"]
        login = httpx.post(
            f"{base}/users/login",
            json={"email": "alice@example.com", "password": "demo-password"},
        )
        assert login.status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()
    assert f"http://127.0.0.1:{port}" in log.read_text()


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
