"""Debian's nginx as a real process for the export's tests: checked, started, stopped.

The export needs the njs module (package libnginx-mod-http-js) besides nginx itself
(nginx-light). Without either, these tests skip naming the package; with CI=true they fail,
as tests/support/programs.py does for programs.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from strangler.nginx_export import NJS_MODULE
from strangler.supervisor import die_with_parent
from tests.support.programs import require_programs
from tests.support.waiting import eventually


def require_nginx() -> None:
    """nginx and its njs module, or skip (fail under CI=true) naming what to install."""
    require_programs("nginx")
    if Path(NJS_MODULE).exists():
        return
    reason = f"the njs module {NJS_MODULE} is missing (apt-get install libnginx-mod-http-js)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: these tests must run", pytrace=False)
    pytest.skip(reason)


def nginx_check(prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of a configuration: exit code and what nginx said."""
    return subprocess.run(
        ["nginx", "-t", "-q", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass(frozen=True)
class RunningNginx:
    base_url: str
    process: subprocess.Popen[bytes]
    output: Path

    def output_text(self) -> str:
        return self.output.read_text(errors="replace")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def running_nginx(prefix: Path, conf: Path, port: int) -> Iterator[RunningNginx]:
    """nginx in the foreground with `conf`, its paths relative to `prefix`, listening on
    127.0.0.1:`port`; stopped (fast shutdown) on exit."""
    output = prefix / f"nginx-{port}.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a killed test run leaves no nginx behind
        )
    running = RunningNginx(f"http://127.0.0.1:{port}", process, output)
    try:

        def listening() -> None:
            if process.poll() is not None:  # not retried: nginx is gone
                raise RuntimeError(
                    f"nginx exited with {process.returncode}:\n{running.output_text()}"
                )
            assert _accepts(port), running.output_text()

        eventually(listening, f"nginx to listen on {port}", timeout=15, interval=0.02)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
