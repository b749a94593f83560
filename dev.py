#!/usr/bin/env python3
"""The two commands of this project: `python3 dev.py up` and `python3 dev.py test`
(and `python3 dev.py bench`, the benchmarks, which are not part of the tests' pass or fail).

Both create (or refresh) the virtual environment in .venv first, so they work on a fresh
machine with nothing but Python 3.11+. Only the standard library is used here, on purpose.

Ctrl-C or SIGTERM while a command runs is passed on to it, and dev.py waits for it to finish
stopping (`up` stops its servers in order) and exits with the command's own status.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".strangler-installed"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

CHECKS = [
    ("ruff (lint)", ["ruff", "check", "."]),
    ("ruff (format)", ["ruff", "format", "--check", "."]),
    ("mypy (strict, packages)", ["mypy"]),
    ("import boundaries", ["lint-imports", "--config", "boundaries.toml"]),
    ("table ownership", ["strangler", "coupling", "--config", "boundaries.toml"]),
]


def say(message: str) -> None:
    print(f"\033[1;36m[dev]\033[0m {message}", flush=True)


def ensure_environment() -> None:
    """Create .venv and install the project with its dev tools when pyproject.toml changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        say(f"creating the virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    say("installing the project and its development tools (first run takes a minute)")
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--editable", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


class Stopped(Exception):
    """A stop (Ctrl-C, SIGTERM) came while a command ran; the command has exited with `code`,
    and nothing after it should run."""

    def __init__(self, code: int) -> None:
        super().__init__(f"stopped (exit {code})")
        self.code = code


def _ctrl_c_reaches_the_command() -> bool:
    """Whether a SIGINT to dev.py is a Ctrl-C its command received as well: dev.py is the
    terminal's foreground job, whose whole process group the terminal signals (as a Windows
    console signals every process attached to it)."""
    if os.name == "nt":
        return True
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:  # stdin is no terminal, or not this session's: nothing sent it to all
        return False


def run(argv: list[str]) -> int:
    """Run `argv` in the repository and return its exit status.

    SIGTERM (a service manager, `kill`), and SIGINT unless it is a terminal's Ctrl-C, are
    passed on to the command instead of ending dev.py, which would leave it running (and
    `strangler up`'s servers holding their ports). Ctrl-C reaches the command directly and is
    not sent twice: `strangler up` would ignore the second, pytest would take it for "stop at
    once". When a stop came, Stopped is raised once the command exited.
    """
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    child = subprocess.Popen(argv, cwd=ROOT, env=env)
    stopped_by: list[int] = []

    def pass_on(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        if signum != signal.SIGINT or not _ctrl_c_reaches_the_command():
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in STOP_SIGNALS}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stopped_by:
        raise Stopped(code if code >= 0 else 128 - code)
    return code


def up(extra: list[str]) -> int:
    return run([str(BIN / "strangler"), "up", *extra])


def test(extra: list[str]) -> int:
    failed = []
    for name, argv in CHECKS:
        say(f"check: {name}")
        if run(argv) != 0:
            failed.append(name)
    if failed:
        say(f"\033[1;31mchecks failed: {', '.join(failed)}\033[0m (pytest runs anyway)")
    say("pytest")
    code = run([str(BIN / "python"), "-m", "pytest", *extra])
    return code or (1 if failed else 0)


def chaos(extra: list[str]) -> int:
    """The long fault runs (pytest marker `chaos`: kills, restarts and floods) and the runs
    marked `slow` (the PostgreSQL runs of the longest tests, whose SQLite runs are in `test`,
    and the benchmark harness's smoke run): what does not fit the everyday suite's budget.
    CI runs them after `test`."""
    say("pytest -m 'chaos or slow'")
    return run([str(BIN / "python"), "-m", "pytest", "-m", "chaos or slow", *extra])


def bench(extra: list[str]) -> int:
    return run([str(BIN / "python"), str(ROOT / "bench" / "run.py"), *extra])


def main() -> int:
    commands = {"up": up, "test": test, "chaos": chaos, "bench": bench}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        print(
            "usage: python3 dev.py up [strangler up options] | test [pytest options] "
            "| chaos [pytest options] | bench [--quick] [--only NAME ...]"
        )
        return 2
    try:
        ensure_environment()
        return commands[sys.argv[1]](sys.argv[2:])
    except Stopped as stop:
        return stop.code
    except KeyboardInterrupt:  # Ctrl-C while dev.py itself worked (creating the environment)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
