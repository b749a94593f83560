"""One seed for every random choice the suite makes, so a failure that came from a draw can be
replayed, and said how.

A run takes its seed from STRANGLER_TEST_SEED, or makes one up and says which in the report
header. A test that wants randomness asks for the `rng` fixture: a `random.Random` seeded from
the run's seed and the test's node id, so its draws do not depend on which other tests ran or
in what order. When such a test fails, its report gets a "random seed" section with the command
that replays it, and the run's summary lists those commands again.

Loaded as a pytest plugin by tests/conftest.py (`pytest_plugins`), so a test of this module can
load it into a pytest of its own with `-p tests.support.randomness`.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import shlex
from collections.abc import Generator, Iterable, Mapping

import pytest

__all__ = ["SEED_VARIABLE", "replay_command", "rng", "seed_for", "session_seed"]

SEED_VARIABLE = "STRANGLER_TEST_SEED"

_SEED = pytest.StashKey[int]()
_REPLAYS = pytest.StashKey[dict[str, str]]()
# Tests with these markers are left out of `dev.py test` (pyproject's addopts): `dev.py chaos`
# runs them.
_CHAOS_MARKERS = frozenset({"chaos", "slow"})


def session_seed(environ: Mapping[str, str]) -> int:
    """The run's seed: STRANGLER_TEST_SEED when it is set, else a fresh one."""
    given = environ.get(SEED_VARIABLE, "").strip()
    if not given:
        return secrets.randbits(32)
    try:
        return int(given)
    except ValueError:
        raise pytest.UsageError(
            f"{SEED_VARIABLE}={given!r} is not a seed; give the number a failed run printed"
        ) from None


def seed_for(run_seed: int, nodeid: str) -> int:
    """The seed of one test: the run's seed mixed with the test's node id (a stable hash, not
    Python's `hash`, which differs between processes)."""
    digest = hashlib.blake2b(f"{run_seed}:{nodeid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def replay_command(run_seed: int, nodeid: str, markers: Iterable[str] = ()) -> str:
    """The command that runs this one test again with the same draws."""
    command = "chaos" if _CHAOS_MARKERS.intersection(markers) else "test"
    return f"{SEED_VARIABLE}={run_seed} python3 dev.py {command} {shlex.quote(nodeid)}"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SEED] = session_seed(os.environ)
    config.stash[_REPLAYS] = {}


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SEED]
    return f"random seed: {seed} (replay a run's draws with {SEED_VARIABLE}={seed})"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random source: the same draws whenever the run's seed is the same."""
    return random.Random(seed_for(request.config.stash[_SEED], request.node.nodeid))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "rng" in getattr(item, "fixturenames", ()):
        seed = item.config.stash[_SEED]
        command = replay_command(seed, item.nodeid, (m.name for m in item.iter_markers()))
        report.sections.append(("random seed", f"{SEED_VARIABLE}={seed}\nreplay: {command}"))
        item.config.stash[_REPLAYS][item.nodeid] = command
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    replays = terminalreporter.config.stash[_REPLAYS]
    if not replays:
        return
    terminalreporter.section("replay the random draws of what failed")
    for command in replays.values():
        terminalreporter.write_line(command)
