"""Fixtures shared by the whole suite: real databases and real app processes; and where the
suite's randomness comes from (the `rng` fixture, the hypothesis profiles)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _pytest.mark.expression import Expression
from hypothesis import settings

from tests.support.databases import BACKENDS, database
from tests.support.factories import Account, new_account
from tests.support.processes import (
    RunningApp,
    monolith_env,
    run_monolith_command,
    serve_monolith,
)

pytest_plugins = ["tests.support.randomness"]  # the seed, the `rng` fixture, the replay line

HYPOTHESIS_PROFILE_VARIABLE = "STRANGLER_HYPOTHESIS_PROFILE"

# Everyday runs draw the same examples every time, so a red run is a change, not a roll of the
# dice; no deadline, which on a loaded 2-core machine is a timing assertion about the machine.
settings.register_profile("everyday", derandomize=True, deadline=None, print_blob=True)
# The chaos run searches: new examples each run (print_blob replays a failure), more of them.
settings.register_profile(
    "chaos", derandomize=False, deadline=None, print_blob=True, max_examples=500
)


def _selects_chaos(markexpr: str) -> bool:
    """Whether `-m` keeps a test marked chaos (pytest's own reading of the expression)."""
    return bool(markexpr) and Expression.compile(markexpr).evaluate(
        lambda name, **_: name == "chaos"
    )


def pytest_configure(config: pytest.Config) -> None:
    """Load the hypothesis profile before test modules are imported: `@settings(...)` takes
    the profile's values for what it leaves out when it is built, at import."""
    chosen = os.environ.get(HYPOTHESIS_PROFILE_VARIABLE)
    if chosen is None:
        chosen = "chaos" if _selects_chaos(config.getoption("markexpr")) else "everyday"
    settings.load_profile(chosen)


def pytest_report_header(config: pytest.Config) -> str:
    return f"hypothesis profile: {settings.get_current_profile_name()}"


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
