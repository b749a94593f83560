"""The suite's one seed: the same seed gives the same draws, a test's draws are its own, and a
failing test that drew says how to replay it (checked in a pytest run of its own)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.randomness import SEED_VARIABLE, replay_command, seed_for, session_seed

ROOT = Path(__file__).resolve().parents[2]


def _draws(seed: int) -> list[int]:
    source = random.Random(seed)
    return [source.randrange(1_000_000) for _ in range(5)]


def test_the_same_run_seed_gives_a_test_the_same_draws() -> None:
    node = "tests/sync/test_x.py::test_y[sqlite]"
    assert _draws(seed_for(42, node)) == _draws(seed_for(42, node))
    assert _draws(seed_for(42, node)) != _draws(seed_for(43, node))


def test_a_tests_draws_depend_on_its_own_node_id_only() -> None:
    """Which other tests ran, or in what order, cannot move a test's draws: its seed is made
    from the run's seed and its own node id, nothing else."""
    seeds = {seed_for(7, f"tests/t.py::test_{n}") for n in range(100)}
    assert len(seeds) == 100


def test_the_run_seed_comes_from_the_environment_when_set() -> None:
    assert session_seed({SEED_VARIABLE: "1234"}) == 1234
    assert session_seed({SEED_VARIABLE: " 99 "}) == 99
    made_up = session_seed({})
    assert 0 <= made_up < 2**32
    with pytest.raises(pytest.UsageError, match=f"{SEED_VARIABLE}='abc' is not a seed"):
        session_seed({SEED_VARIABLE: "abc"})


def test_the_replay_command_runs_the_test_where_dev_py_runs_it() -> None:
    node = "tests/a.py::test_b[x y]"
    assert replay_command(5, node) == f"{SEED_VARIABLE}=5 python3 dev.py test '{node}'"
    assert replay_command(5, node, ["chaos"]).startswith(f"{SEED_VARIABLE}=5 python3 dev.py chaos")
    assert " dev.py chaos " in replay_command(5, node, ["postgres", "slow"])


DRAWING_TESTS = """
import random


def test_draws_then_fails(rng: random.Random) -> None:
    drawn = [rng.randrange(1_000_000) for _ in range(3)]
    assert drawn == "never", drawn


def test_draws_and_passes(rng: random.Random) -> None:
    rng.random()


def test_fails_without_drawing() -> None:
    assert False
"""


def _pytest(tmp_path: Path, seed: str | None) -> str:
    """Run the drawing tests above in a pytest of their own, with the plugin; its output."""
    (tmp_path / "test_drawing.py").write_text(DRAWING_TESTS)
    env = {k: v for k, v in os.environ.items() if k != SEED_VARIABLE}
    env["PYTHONPATH"] = str(ROOT)
    if seed is not None:
        env[SEED_VARIABLE] = seed
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.randomness", "-p", "no:cacheprovider"]
        + ["--rootdir", str(tmp_path), "test_drawing.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # 1: tests failed, as they must
    return run.stdout


def _drawn(output: str) -> str:
    """The one list the failing test drew. Pytest may print it twice (the failure and, with
    CI set, the untruncated short summary line), but always the same list."""
    [drawn] = set(re.findall(r"AssertionError: (\[\d+, \d+, \d+\])", output))
    return drawn


def test_a_failing_test_that_drew_names_its_seed_and_how_to_replay_it(tmp_path: Path) -> None:
    output = _pytest(tmp_path, "12345")
    replay = f"{SEED_VARIABLE}=12345 python3 dev.py test test_drawing.py::test_draws_then_fails"
    assert "random seed: 12345" in output  # the header
    section = output.split("random seed -", 1)[1]  # the failure's report section
    assert section.lstrip("- \n").startswith(f"{SEED_VARIABLE}=12345\nreplay: {replay}")
    after = output.split("replay the random draws of what failed", 1)[1].split("\n")[1:]
    summary = after[: next(n for n, line in enumerate(after) if line.startswith("==="))]
    # Only the test that drew and failed gets a replay line: the other failure did not draw.
    assert summary == [replay]
    assert output.count("replay: ") == 1


def test_the_printed_seed_replays_the_same_draws(tmp_path: Path) -> None:
    """A run with a seed of its own making, then the replay it printed: the same draws."""
    first = _pytest(tmp_path, None)
    [seed] = re.findall(r"random seed: (\d+)", first)
    again = _pytest(tmp_path, seed)
    assert _drawn(again) == _drawn(first)
    other = _pytest(tmp_path, str(int(seed) + 1))
    assert _drawn(other) != _drawn(first)
