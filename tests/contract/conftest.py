"""Runs the contract suite against each implementation of the products API.

`client` points at the implementation under test; `account` is always a monolith account,
since the users capability stays in the monolith.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.conftest import Monolith
from tests.support.databases import database
from tests.support.factories import Account, new_account
from tests.support.processes import (
    RunningApp,
    run_service_command,
    serve_products_service,
    service_env,
)


class Services:
    """Products service processes, one per database backend, started on first use."""

    def __init__(self, stack: ExitStack, tmp: pytest.TempPathFactory) -> None:
        self._stack = stack
        self._tmp = tmp
        self._running: dict[str, RunningApp] = {}

    def beside(self, monolith: Monolith) -> RunningApp:
        if monolith.backend not in self._running:
            workdir = self._tmp.mktemp(f"service-{monolith.backend}")
            url = self._stack.enter_context(database(monolith.backend, workdir))
            env = service_env(url, workdir, monolith.workdir / "jwt-public.pem")
            run_service_command(env, "migrate")
            self._running[monolith.backend] = self._stack.enter_context(
                serve_products_service(env, workdir)
            )
        return self._running[monolith.backend]


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with ExitStack() as stack:
        yield Services(stack, tmp_path_factory)


@pytest.fixture(scope="session", params=["monolith", "service"])
def implementation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(implementation: str, monolith: Monolith, services: Services) -> Iterator[httpx.Client]:
    base = monolith.base_url if implementation == "monolith" else services.beside(monolith).base_url
    with httpx.Client(base_url=base, timeout=30) as http:
        yield http


@pytest.fixture
def account(monolith: Monolith) -> Account:
    with httpx.Client(base_url=monolith.base_url, timeout=30) as http:
        return new_account(http)
