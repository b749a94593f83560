"""One real system for the dashboard tests: `strangler up` on free ports, as a newcomer runs it.

Started once for the package (about ten seconds): the monolith, the products service, the proxy
(which serves the dashboard) and the relay, over two SQLite files, every file inside a temporary
directory. Each test first puts the capability in the phase it needs through the admin API.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from strangler.phases import PHASES, Phase, routing_of
from tests.support.processes import monolith_env, service_env, wait_until_healthy
from tests.support.up import (
    ROOT,
    free_up_ports,
    routing_for,
    start_up,
    stop_up,
    up_argv,
    wait_for_banner,
)

ADMIN_TOKEN = "dashboard-test-admin-token"
CAPABILITY = "products"


@dataclass(frozen=True)
class System:
    process: subprocess.Popen[bytes]
    log: Path
    proxy: str
    dashboard_url: str
    audit_log: Path
    state_dir: Path

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.proxy}/_strangler{path}", headers=headers, timeout=30, **kwargs
        )

    def phase(self) -> Phase:
        status = self.admin("GET", "/status")
        assert status.status_code == 200, status.text
        return Phase(status.json()["capabilities"][CAPABILITY]["phase"])

    def set_phase(self, phase: Phase, pause: float = 0.0) -> None:
        """Walk the capability to `phase` one step at a time through the admin API, behind the
        write fence where writes move (nothing writes here, so there is nothing to drain)."""
        current = self.phase()
        while current is not phase:
            step = PHASES[current.position + (1 if phase.position > current.position else -1)]
            changes: dict[str, object] = {
                "phase": step.value,
                "reason": "test setup",
                "gates": "forced",  # setting the scene: no gates are checked here
            }
            fence_id = None
            if routing_of(current).writes is not routing_of(step).writes:
                closed = self.admin("POST", f"/capabilities/{CAPABILITY}/fence", json={})
                assert closed.status_code == 200, closed.text
                fence_id = closed.json()["fence_id"]
                changes["fence"] = fence_id
            changed = self.admin("PATCH", f"/capabilities/{CAPABILITY}", json=changes)
            if fence_id is not None:
                self.admin("DELETE", f"/capabilities/{CAPABILITY}/fence/{fence_id}")
            assert changed.status_code == 200, changed.text
            current = step
            time.sleep(pause)

    def audit(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.admin("GET", "/audit").json()["entries"]
        return entries


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("dashboard-system")
    ports = free_up_ports()
    routing = routing_for(ports, tmp)
    env = {
        **monolith_env(f"sqlite:///{tmp / 'monolith.db'}", tmp),
        **{
            k: v
            for k, v in service_env(
                f"sqlite:///{tmp / 'service.db'}", tmp, tmp / "jwt-public.pem"
            ).items()
            if k.startswith("PRODUCTS_SERVICE_")
        },
        "STRANGLER_SYNC_TOKEN_FILE": str(tmp / "sync-token"),
        "STRANGLER_STATE_DIR": str(tmp / "state"),
        "STRANGLER_ROUTING_FILE": str(routing),
        "STRANGLER_ADMIN_TOKEN": ADMIN_TOKEN,
        **ports.cli_env(),
        "PROXY_AUDIT_LOG": str(tmp / "audit.jsonl"),
        "PROXY_RELOAD_INTERVAL_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    log = tmp / "up.log"
    # as a newcomer runs it, from the repository: the gates scan this source tree
    process = start_up(up_argv(ports, routing, products=40), env, log, cwd=ROOT)
    try:
        proxy = ports.proxy_url
        wait_until_healthy(proxy, process, log, "/_strangler/health")
        dashboard_url = wait_for_banner(process, log, ports.proxy, timeout=60)
        yield System(
            process=process,
            log=log,
            proxy=proxy,
            dashboard_url=dashboard_url,
            audit_log=tmp / "audit.jsonl",
            state_dir=tmp / "state",
        )
    finally:
        stop_up(process)
