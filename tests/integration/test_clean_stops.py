"""Stopping the system: `strangler up`, alone or under `python3 dev.py up`, stopped by Ctrl-C
(SIGINT to the process group, as a terminal sends it) or by SIGTERM to that one process.

Either way every server stops (none is left holding a port), the stop is quiet (no traceback
from dev.py, from `up` or from a child) and it is not a failure: the exit status is 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.process_tree import ProcessId, descendants
from tests.support.up import (
    ROOT,
    UpPorts,
    free_up_ports,
    routing_for,
    start_up,
    stop_up,
    up_argv,
    up_env,
    wait_for_banner,
)
from tests.support.waiting import wait_until

STOP_SECONDS = 30  # the supervisor's grace is 10 s; a clean stop takes about one


@dataclass(frozen=True)
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    ports: UpPorts
    below: list[ProcessId]  # every process under it once the system is up

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(tmp_path: Path, ports: UpPorts) -> dict[str, str]:
    """Everything `strangler up` writes (databases, keys, tokens, state) kept in tmp_path:
    dev.py runs `up` in the repository."""
    return up_env(
        tmp_path,
        ports,
        tmp_path / "routing.toml",
        f"sqlite:///{tmp_path / 'up.db'}",
        f"sqlite:///{tmp_path / 'svc.db'}",
    )


@contextmanager
def _running(tmp_path: Path, launcher: str) -> Iterator[Running]:
    """The system started by `launcher` ("strangler up" or "dev.py up") and ready; whatever
    a failed test leaves running is killed afterwards."""
    ports = free_up_ports()
    argv = up_argv(ports, routing_for(ports, tmp_path), products=5)
    if launcher == "dev.py up":
        argv = ["python3", str(ROOT / "dev.py"), "up", *argv[argv.index("up") + 1 :]]
    log = tmp_path / "up.log"
    process = start_up(argv, _env(tmp_path, ports), log, cwd=tmp_path)
    below: list[ProcessId] = []
    try:
        wait_for_banner(process, log, ports.proxy, timeout=60)
        below = descendants(process.pid)
        yield Running(process, log, ports, below)
    finally:
        stop_up(process, interrupt=False)
        for left in below:
            if left.is_running():
                with suppress(ProcessLookupError):
                    os.kill(left.pid, signal.SIGKILL)


def _can_listen(port: int) -> bool:
    """Whether a server could listen on the port now (as the apps do, with SO_REUSEADDR: the
    closed connections' TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _exit_status(running: Running) -> int:
    try:
        return running.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_SECONDS} s after the stop:\n{running.output()}")


@pytest.mark.parametrize("launcher", ["strangler up", "dev.py up"])
@pytest.mark.parametrize("stop", ["ctrl-c to the process group", "sigterm to the process"])
def test_a_stop_ends_every_server_frees_the_ports_and_prints_no_traceback(
    launcher: str, stop: str, tmp_path: Path
) -> None:
    with _running(tmp_path, launcher) as running:
        servers = 5 if launcher == "dev.py up" else 4  # dev.py's child is `up` itself
        assert len(running.below) >= servers, running.below
        ports = [running.ports.monolith, running.ports.service, running.ports.proxy]
        assert not any(_can_listen(port) for port in ports)  # the check below can fail

        if stop == "ctrl-c to the process group":
            os.killpg(running.process.pid, signal.SIGINT)
        else:
            os.kill(running.process.pid, signal.SIGTERM)

        assert _exit_status(running) == 0, running.output()
        pids = [p.pid for p in running.below]
        wait_until(
            lambda: not any(p.is_running() for p in running.below),
            f"every process under {launcher} (pids {pids}) to exit",
        )
        assert [port for port in ports if not _can_listen(port)] == []
        output = running.output()
        assert "stopping" in output
        assert "Traceback" not in output, output
        assert "KeyboardInterrupt" not in output, output
