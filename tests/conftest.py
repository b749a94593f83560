"""Fixtures shared by the whole suite: real databases and real app processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.databases import BACKENDS, database
from tests.support.factories import Account, new_account
from tests.support.processes import (
    RunningApp,
    monolith_env,
    run_monolith_command,
    serve_monolith,
)


@dataclass(frozen=True)
class Monolith:
    """A monolith process serving a freshly migrated database of one backend."""

    backend: str
    database_url: str
    app: RunningApp
    workdir: Path

    @property
    def base_url(self) -> str:
        return self.app.base_url


@pytest.fixture(scope="session", params=BACKENDS)
def monolith(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monolith]:
    backend: str = request.param
    workdir = tmp_path_factory.mktemp(f"monolith-{backend}")
    with database(backend, workdir) as url:
        env = monolith_env(url, workdir)
        run_monolith_command(env, "migrate")
        with serve_monolith(env, workdir) as app:
            yield Monolith(backend, url, app, workdir)


@pytest.fixture
def client(monolith: Monolith) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=monolith.base_url, timeout=30) as http:
        yield http


@pytest.fixture
def account(client: httpx.Client) -> Account:
    return new_account(client)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
