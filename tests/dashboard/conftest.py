"""One real system for the dashboard tests: `strangler up` on free ports, as a newcomer runs it.

Started once for the package (about ten seconds): the monolith, the products service, the proxy
(which serves the dashboard) and the relay, over two SQLite files, every file inside a temporary
directory. Each test first puts the capability in the phase it needs through the admin API.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from strangler.phases import PHASES, Phase, routing_of
from strangler.supervisor import die_with_parent
from tests.support.processes import free_port, monolith_env, service_env, wait_until_healthy

STRANGLER = [sys.executable, "-c", "from strangler.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[2]
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
            changes: dict[str, object] = {"phase": step.value, "reason": "test setup"}
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


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C the process group (`up` stops its children in order), then kill what is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("dashboard-system")
    monolith_port, service_port, proxy_port = free_port(), free_port(), free_port()
    routing = tmp / "routing.toml"
    routing.write_text(
        (ROOT / "routing.toml")
        .read_text()
        .replace("127.0.0.1:8001", f"127.0.0.1:{monolith_port}")
        .replace("127.0.0.1:8002", f"127.0.0.1:{service_port}")
    )
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
        "STRANGLER_PROXY_URL": f"http://127.0.0.1:{proxy_port}",
        "STRANGLER_MONOLITH_URL": f"http://127.0.0.1:{monolith_port}",
        "STRANGLER_SERVICE_URL": f"http://127.0.0.1:{service_port}",
        "PROXY_AUDIT_LOG": str(tmp / "audit.jsonl"),
        "PROXY_RELOAD_INTERVAL_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    log = tmp / "up.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *STRANGLER,
                "up",
                "--products",
                "40",
                "--monolith-port",
                str(monolith_port),
                "--service-port",
                str(service_port),
                "--proxy-port",
                str(proxy_port),
                "--routing-file",
                str(routing),
            ],
            env=env,
            cwd=ROOT,  # as a newcomer runs it: the gates scan this source tree
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # a killed test run leaves no servers behind
        )
    try:
        proxy = f"http://127.0.0.1:{proxy_port}"
        wait_until_healthy(proxy, process, log, "/_strangler/health")
        banner = re.compile(r"^\s+dashboard\s+(http://\S+)", re.MULTILINE)
        deadline = time.monotonic() + 60
        while not (found := banner.search(log.read_text(errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"strangler up printed no dashboard URL:\n{log.read_text()}")
            time.sleep(0.1)
        yield System(
            process=process,
            log=log,
            proxy=proxy,
            dashboard_url=found.group(1),
            audit_log=tmp / "audit.jsonl",
            state_dir=tmp / "state",
        )
    finally:
        _stop(process)
