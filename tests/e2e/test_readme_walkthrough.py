"""The README's walkthrough, run as written: its blocks are read from README.md itself, so the
text a newcomer follows and this test cannot drift apart.

The walkthrough is run in a fresh directory shaped like a clone (the sources and the virtual
environment linked in, the committed routing template copied), against `strangler up` (what
`python3 dev.py up` ends in) on free ports: the README's `localhost:8000`, `:8001` and `:8002`
are moved to them, and the CLI is told where they are. Each block runs in bash with `set -eu
-o pipefail`, so a command that fails fails the test; every `# → text` in a block must appear
in that block's output, in order. A block that opens with "# Ctrl-C" runs after `up` was
stopped the way Ctrl-C stops it, and that stop must be clean.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.databases import BACKENDS, database
from tests.support.up import (
    ROOT,
    UpPorts,
    free_up_ports,
    routing_for,
    start_up,
    stop_up,
    wait_for_banner,
)

README = ROOT / "README.md"
LINKED = (
    ".venv",
    "legacy_monolith",
    "extracted",
    "strangler",
    "proxy",
    "migrations",
    "boundaries.toml",
    "pyproject.toml",
)
"""What a clone holds that the walkthrough uses (the coupling gate scans the sources)."""
_EXPECT = re.compile(r"#\s*→\s*(.+?)\s*$")
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    number: int
    script: str
    expected: tuple[str, ...]
    after_stop: bool


def walkthrough_blocks(readme: str) -> list[Block]:
    """The ```sh blocks of the README's "Walkthrough" section, in order."""
    start = readme.index("\n## Walkthrough")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else None]
    blocks = []
    for number, script in enumerate(_BLOCK.findall(section)):
        lines = script.splitlines()
        expected = tuple(m.group(1) for line in lines if (m := _EXPECT.search(line)))
        after_stop = bool(lines) and lines[0].lstrip().startswith("# Ctrl-C")
        blocks.append(Block(number, script, expected, after_stop))
    return blocks


def test_the_walkthrough_is_read_from_the_readme_with_its_outcomes() -> None:
    """The parser finds what the README holds: a walkthrough that reaches writes_cutover and
    back, with an outcome to check on every step, and one stop at the end."""
    blocks = walkthrough_blocks(README.read_text())
    text = "\n".join(b.script for b in blocks)
    assert len(blocks) >= 8
    for needed in ("strangler advance products", "strangler rollback products", "reset"):
        assert needed in text
    assert any("reads_cutover -> writes_cutover" in e for b in blocks for e in b.expected)
    assert [b.after_stop for b in blocks].count(True) == 1 and blocks[-1].after_stop
    advances = [line for line in text.splitlines() if line.startswith("strangler advance")]
    assert all("# →" in line for line in advances), "every advance states what it does"


def _localized(script: str, ports: UpPorts) -> str:
    for default, port in ((8000, ports.proxy), (8001, ports.monolith), (8002, ports.service)):
        script = re.sub(rf"\b(localhost|127\.0\.0\.1):{default}\b", rf"\g<1>:{port}", script)
    return script


def _clone(directory: Path, ports: UpPorts) -> Path:
    directory.mkdir()
    for name in LINKED:
        (directory / name).symlink_to(ROOT / name)
    routing_for(ports, directory)  # the committed template, its upstreams on these ports
    return directory


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _run_block(block: Block, ports: UpPorts, clone: Path, env: dict[str, str]) -> str:
    """Run one block in bash, carrying variables from the blocks before it (as one terminal
    would), and return what it printed."""
    state = clone / ".walkthrough-state.sh"
    script = "\n".join(
        [
            "set -eu -o pipefail",
            "set -a",  # what a block assigns is there for the next one, as in a terminal
            f'[ -f "{state}" ] && . "{state}"',
            _localized(block.script, ports),
            f'export -p > "{state}"',
        ]
    )
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    output = result.stdout
    assert result.returncode == 0, (
        f"README walkthrough block {block.number} failed (exit {result.returncode}):\n"
        f"{block.script}\n--- output ---\n{output[-6000:]}"
    )
    return output


def _assert_outcomes(block: Block, output: str) -> None:
    seen = _normalized(output)
    position = 0
    for expected in block.expected:
        found = seen.find(_normalized(expected), position)
        assert found != -1, (
            f"README walkthrough block {block.number}: {expected!r} not in its output "
            f"(after what was already matched):\n{block.script}\n--- output ---\n{output[-6000:]}"
        )
        position = found + len(_normalized(expected))


@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=[pytest.mark.slow] if b == "postgresql" else []) for b in BACKENDS],
)
def test_the_readme_walkthrough_runs_as_written(backend: str, tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README.read_text())
    ports = free_up_ports()
    clone = _clone(tmp_path / "clone", ports)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONOLITH_", "PRODUCTS_SERVICE_", "PROXY_", "STRANGLER_"))
    }
    env.update(ports.cli_env())
    env.update({"COLUMNS": "100", "PYTHONUNBUFFERED": "1"})
    with (
        database(backend, tmp_path / "monolith-db") as monolith_db,
        database(backend, tmp_path / "service-db") as service_db,
    ):
        if backend == "postgresql":  # as the README's "Against PostgreSQL" runs it
            env["MONOLITH_DATABASE_URL"] = monolith_db
            env["PRODUCTS_SERVICE_DATABASE_URL"] = service_db
        log = tmp_path / "up.log"
        argv = [
            str(clone / ".venv" / "bin" / "strangler"),
            "up",
            "--monolith-port",
            str(ports.monolith),
            "--service-port",
            str(ports.service),
            "--proxy-port",
            str(ports.proxy),
        ]
        process = start_up(argv, env, log, cwd=clone)
        try:
            wait_for_banner(process, log, ports.proxy, timeout=180)
            for block in blocks:
                if block.after_stop:
                    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in up's terminal
                    assert process.wait(timeout=60) == 0, log.read_text()[-4000:]
                    stopped = log.read_text()
                    assert "Traceback" not in stopped, stopped[-4000:]
                output = _run_block(block, ports, clone, env)
                _assert_outcomes(block, output)
        finally:
            stop_up(process)
    assert not (clone / "var" / "routing.toml").exists()  # the reset took the live state
    assert (clone / "routing.toml").read_text() == routing_for(ports, tmp_path).read_text()
