"""Real processes for the proxy tests: echo upstreams, the real monolith, a stand-in service
(a second monolith process over its own database: the real service arrives in step 3), and
the proxy itself, configured per test through a routing.toml it watches."""

from __future__ import annotations

import os
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
    serve_echo,
    serve_monolith,
    serve_process,
)

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def echo_monolith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    with serve_echo(tmp_path_factory.mktemp("echo-m"), "monolith") as app:
        yield app


@pytest.fixture(scope="session")
def echo_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    with serve_echo(tmp_path_factory.mktemp("echo-s"), "service") as app:
        yield app


def _monolith_process(workdir: Path) -> Iterator[RunningApp]:
    env = monolith_env(f"sqlite:///{workdir / 'shop.db'}", workdir)
    env["MONOLITH_JWT_PRIVATE_KEY_FILE"] = str(workdir.parent / "shared-jwt.pem")
    run_monolith_command(env, "migrate")
    with serve_monolith(env, workdir) as app:
        yield app


@pytest.fixture(scope="session")
def real_monolith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    yield from _monolith_process(tmp_path_factory.mktemp("real-monolith"))


@pytest.fixture(scope="session")
def standin_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The monolith's code over a database of its own, answering as "the service"."""
    yield from _monolith_process(tmp_path_factory.mktemp("standin-service"))


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
