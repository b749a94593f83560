"""Real processes for the proxy tests: echo upstreams, the real monolith and the real products
service (its copy of the products backfilled from the monolith, so that shadow reads compare
like with like), and the proxy itself, configured per test through a routing.toml it watches."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit

from tests.support.processes import (
    RunningApp,
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_echo,
    serve_monolith,
    serve_process,
    serve_products_service,
    service_env,
)
from tests.support.up import STRANGLER

ADMIN_TOKEN = "test-admin-token"
SYNC_TOKEN = "proxy-tests-sync-token"
SEEDED_PRODUCTS = 20


@pytest.fixture(scope="session")
def echo_monolith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    with serve_echo(tmp_path_factory.mktemp("echo-m"), "monolith") as app:
        yield app


@pytest.fixture(scope="session")
def echo_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    with serve_echo(tmp_path_factory.mktemp("echo-s"), "service") as app:
        yield app


@dataclass(frozen=True)
class RealApps:
    monolith: RunningApp
    service: RunningApp


def _write_phase(path: Path, phase: str) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(tomlkit.dumps({"capabilities": {"products": {"phase": phase}}}))
    os.replace(scratch, path)


def _backfill(workdir: Path, apps: RealApps, monolith_db: str, service_db: str) -> None:
    """`strangler backfill products`, as an operator runs it in dual_write."""
    result = subprocess.run(
        [*STRANGLER, "backfill", "products"],
        env={
            **os.environ,
            "STRANGLER_MONOLITH_URL": apps.monolith.base_url,
            "STRANGLER_SERVICE_URL": apps.service.base_url,
            "STRANGLER_MONOLITH_DATABASE_URL": monolith_db,
            "STRANGLER_SERVICE_DATABASE_URL": service_db,
            "STRANGLER_SYNC_TOKEN": SYNC_TOKEN,
            "STRANGLER_ROUTING_FILE": str(workdir / "routing.toml"),
            "STRANGLER_STATE_DIR": str(workdir / "state"),
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def real_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApps]:
    """The real monolith and products service over SQLite, reading one phase file: demo
    products seeded in the monolith, copied to the service by the backfill in dual_write, the
    phase then moved to shadow. No relay runs: a product created later is the monolith's alone,
    a copy the relay has not reached."""
    workdir = tmp_path_factory.mktemp("real-apps")
    (workdir / "m").mkdir()
    (workdir / "s").mkdir()
    phase_file = workdir / "routing.toml"
    _write_phase(phase_file, "monolith")
    monolith_db = f"sqlite:///{workdir / 'm' / 'shop.db'}"
    service_db = f"sqlite:///{workdir / 's' / 'products.db'}"
    menv = {
        **monolith_env(monolith_db, workdir / "m"),
        "MONOLITH_ROUTING_FILE": str(phase_file),
        "MONOLITH_SYNC_TOKEN": SYNC_TOKEN,
    }
    run_monolith_command(menv, "migrate")
    run_monolith_command(menv, "seed", "--products", str(SEEDED_PRODUCTS))
    senv = {
        **service_env(service_db, workdir / "s", workdir / "m" / "jwt-public.pem"),
        "PRODUCTS_SERVICE_ROUTING_FILE": str(phase_file),
        "PRODUCTS_SERVICE_SYNC_TOKEN": SYNC_TOKEN,
    }
    run_service_command(senv, "migrate")
    with (
        serve_monolith(menv, workdir / "m") as monolith,  # publishes the token public key
        serve_products_service(senv, workdir / "s") as service,
    ):
        apps = RealApps(monolith, service)
        _write_phase(phase_file, "dual_write")
        _backfill(workdir, apps, monolith_db, service_db)
        for phase in ("backfilled", "shadow"):
            _write_phase(phase_file, phase)
        copied = httpx.get(f"{service.base_url}/products", params={"limit": SEEDED_PRODUCTS})
        assert len(copied.json()["items"]) == SEEDED_PRODUCTS, copied.text
        yield apps


@pytest.fixture(scope="session")
def real_monolith(real_apps: RealApps) -> RunningApp:
    return real_apps.monolith


@pytest.fixture(scope="session")
def real_service(real_apps: RealApps) -> RunningApp:
    """The real products service, holding the same products as `real_monolith`."""
    return real_apps.service


def routing_document(
    monolith_url: str,
    service_url: str,
    *,
    capability: dict[str, Any] | None = None,
    proxy: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "proxy": {"default_upstream": "monolith", **(proxy or {})},
        "breaker": {"failure_threshold": 3, "cooldown_seconds": 1.0, **(breaker or {})},
        "upstreams": {
            "monolith": {
                "url": monolith_url,
                "connect_timeout": 1.0,
                "read_timeout": 5.0,
                "total_timeout": 10.0,
            },
            "service": {
                "url": service_url,
                "connect_timeout": 0.5,
                "read_timeout": 1.0,
                "total_timeout": 2.0,
                **(service or {}),
            },
        },
        "capabilities": {
            "products": {
                "prefixes": ["/products"],
                "monolith": "monolith",
                "service": "service",
                "phase": "monolith",
                **(capability or {}),
            }
        },
    }


@dataclass
class Proxy:
    app: RunningApp
    routing_file: Path
    audit_log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.app.base_url, timeout=30)

    @property
    def base_url(self) -> str:
        return self.app.base_url

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **kwargs.pop("headers", {})}
        return self.client.request(method, f"/_strangler{path}", headers=headers, **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.admin("GET", "/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def set(self, **changes: Any) -> dict[str, Any]:
        """Change products; a phase change that moves writes goes behind the write fence,
        as `strangler advance` does it (there is no relay to drain here). A gated step is
        forced: these tests set the proxy up, they check no gates."""
        from strangler.phases import Phase, routing_of

        changes = {"gates": "forced", "reason": "test setup", **changes}
        fence_id = None
        if "phase" in changes:
            current = Phase(self.status()["capabilities"]["products"]["phase"])
            if routing_of(current).writes is not routing_of(Phase(changes["phase"])).writes:
                closed = self.admin("POST", "/capabilities/products/fence", json={})
                assert closed.status_code == 200, closed.text
                fence_id = closed.json()["fence_id"]
                changes = {**changes, "fence": fence_id}
        response = self.admin("PATCH", "/capabilities/products", json=changes)
        if fence_id is not None:
            opened = self.admin("DELETE", f"/capabilities/products/fence/{fence_id}")
            assert opened.status_code == 200, opened.text
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def walk_to(self, phase: str, **extra: Any) -> None:
        """Advance products one phase at a time up to `phase`, as an operator would."""
        from strangler.phases import PHASES, Phase

        current = Phase(self.status()["capabilities"]["products"]["phase"])
        target = Phase(phase)
        for step in PHASES[current.position + 1 : target.position + 1]:
            self.set(phase=step.value)
        if extra:
            self.set(**extra)

    def write_routing(self, document: dict[str, Any]) -> None:
        scratch = self.routing_file.with_suffix(".tmp")
        scratch.write_text(tomlkit.dumps(document))
        os.replace(scratch, self.routing_file)

    def wait_for_version(self, version: int, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status()["config_version"] >= version:
                return
            time.sleep(0.05)
        raise AssertionError(f"config version {version} not reached: {self.status()}")


ProxyFactory = Callable[..., Proxy]


@contextmanager
def run_proxy(workdir: Path, document: dict[str, Any], **env_extra: str) -> Iterator[Proxy]:
    routing = workdir / "routing.toml"
    routing.write_text(tomlkit.dumps(document))
    audit = workdir / "audit.jsonl"
    env = {
        **os.environ,
        "PROXY_ROUTING_FILE": str(routing),
        "PROXY_AUDIT_LOG": str(audit),
        "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROXY_RELOAD_INTERVAL_SECONDS": "0.1",
        **env_extra,
    }
    with serve_process(
        ["-m", "proxy", "serve", "--port", "{port}"],
        env,
        workdir,
        name="proxy",
        port_env="PROXY_PORT",
        health="/_strangler/health",
    ) as app:
        proxy = Proxy(app, routing, audit)
        try:
            yield proxy
        finally:
            proxy.client.close()


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Start proxies for one test; all are stopped at its end."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        counter = iter(range(100))

        def make(document: dict[str, Any], **env_extra: str) -> Proxy:
            workdir = tmp_path / f"proxy-{next(counter)}"
            workdir.mkdir()
            return stack.enter_context(run_proxy(workdir, document, **env_extra))

        yield make


@pytest.fixture
def echo_proxy(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> Proxy:
    """A proxy in front of the two echo upstreams, products in phase monolith."""
    return proxy_factory(routing_document(echo_monolith.base_url, echo_service.base_url))
