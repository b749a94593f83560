"""A monolith and a products service as real processes, each on its own database of one
backend, sharing a routing file and a sync token; and the `strangler` CLI pointed at them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit
from sqlalchemy import Engine, MetaData, select

from strangler.db import create_db_engine
from strangler.supervisor import die_with_parent
from strangler.sync.tables import SyncTables, sync_tables
from tests.support.databases import BACKENDS, database
from tests.support.fault_proxy import FaultProxy, fault_proxy
from tests.support.processes import (
    RunningApp,
    free_port,
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)

SYNC_TOKEN = "test-sync-token"
STRANGLER = [sys.executable, "-c", "from strangler.cli import main; main()"]


@dataclass
class SyncSystem:
    fault: FaultProxy
    backend: str
    workdir: Path
    monolith: RunningApp
    service: RunningApp
    monolith_db: str
    service_db: str
    routing_file: Path

    def set_phase(self, phase: str) -> None:
        document = {"capabilities": {"products": {"phase": phase}}}
        scratch = self.routing_file.with_suffix(".tmp")
        scratch.write_text(tomlkit.dumps(document))
        os.replace(scratch, self.routing_file)

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "STRANGLER_MONOLITH_URL": self.monolith.base_url,
            "STRANGLER_SERVICE_URL": self.service.base_url,
            "STRANGLER_MONOLITH_DATABASE_URL": self.monolith_db,
            "STRANGLER_SERVICE_DATABASE_URL": self.service_db,
            "STRANGLER_SYNC_TOKEN": SYNC_TOKEN,
            "STRANGLER_ROUTING_FILE": str(self.routing_file),
            "STRANGLER_STATE_DIR": str(self.workdir / "state"),
            "COLUMNS": "200",
        }

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*STRANGLER, *args],
            env=self.cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_process(self, *args: str, log: str = "cli.log") -> subprocess.Popen[bytes]:
        """Start a long-running CLI command; its output goes to `log` in the workdir."""
        with (self.workdir / log).open("ab") as sink:
            return subprocess.Popen(
                [*STRANGLER, *args],
                env=self.cli_env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def reconcile(self) -> dict[str, Any]:
        result = self.cli("reconcile", "products", "--json")
        assert result.returncode in (0, 1), result.stderr
        body: dict[str, Any] = __import__("json").loads(result.stdout)
        return body

    def monolith_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.monolith.base_url, timeout=30)

    def service_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.service.base_url, timeout=30)


def outbox_rows(database_url: str) -> list[dict[str, Any]]:
    tables: SyncTables = sync_tables(MetaData(), "products")
    engine: Engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return [
                dict(r)
                for r in connection.execute(
                    select(tables.outbox).order_by(tables.outbox.c.id)
                ).mappings()
            ]
    finally:
        engine.dispose()


@contextmanager
def sync_system(
    backend: str, workdir: Path, monolith_db: str, service_db: str
) -> Iterator[SyncSystem]:
    """A monolith and a products service serving the two (empty) databases given."""
    routing = workdir / "routing.toml"
    with ExitStack() as stack:
        (workdir / "m").mkdir(exist_ok=True)
        (workdir / "s").mkdir(exist_ok=True)
        service_port = free_port()
        # The monolith's orders reach the service through a fault proxy tests can slow down.
        fault = stack.enter_context(fault_proxy(service_port))
        menv = {
            **monolith_env(monolith_db, workdir / "m"),
            "MONOLITH_ROUTING_FILE": str(routing),
            "MONOLITH_SYNC_TOKEN": SYNC_TOKEN,
            "MONOLITH_PRODUCTS_SERVICE_URL": fault.url,
            "MONOLITH_PRODUCTS_SERVICE_TIMEOUT_SECONDS": "1.0",
            # the chaos backfill test reads the exports the backfill asked for from here
            "STRANGLER_ACCESS_LOG_INTERNAL": "true",
        }
        run_monolith_command(menv, "migrate")
        monolith = stack.enter_context(serve_monolith(menv, workdir / "m"))
        senv = {
            **service_env(service_db, workdir / "s", workdir / "m" / "jwt-public.pem"),
            "PRODUCTS_SERVICE_ROUTING_FILE": str(routing),
            "PRODUCTS_SERVICE_SYNC_TOKEN": SYNC_TOKEN,
        }
        run_service_command(senv, "migrate")
        service = stack.enter_context(serve_products_service(senv, workdir / "s", service_port))
        yield SyncSystem(
            fault, backend, workdir, monolith, service, monolith_db, service_db, routing
        )


SQLITE_EVERYDAY = pytest.mark.parametrize(
    "system", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)], indirect=True
)
"""For a test whose PostgreSQL run goes with `dev.py chaos` (CI runs both): the everyday
suite's 15 minutes on two cores cannot hold every new system test twice."""


@pytest.fixture(params=BACKENDS)
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncSystem]:
    backend: str = request.param
    with (
        database(backend, tmp_path / "m") as monolith_db,
        database(backend, tmp_path / "s") as service_db,
        sync_system(backend, tmp_path, monolith_db, service_db) as running,
    ):
        yield running
