"""Real app processes on loopback ports, for integration tests.

Our own apps bind port 0 and say which port they got: nothing can take the port between the
choice and the bind, and readiness asks the process that was started, at the port its own log
line names, never whoever happens to hold a port chosen in advance (`serve_process`).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from strangler.supervisor import die_with_parent

# uvicorn's own start lines, in every log format our apps use (text, JSON, uvicorn's default).
_STARTED = re.compile(r"Started server process \[(\d+)\]")
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    """A port free at the moment of asking, for programs that cannot bind port 0 and report
    what they got (nginx, PostgreSQL) and for "a port nobody listens on". Another process can
    take it before the program binds it: start our own apps with `serve_process` instead."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound, so no other
    program can take it, and never listening. (A `free_port()` is only unanswered until
    someone starts listening on it.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        """The port the process bound (and named in its own log)."""
        return int(self.base_url.rsplit(":", 1)[1])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def monolith_env(database_url: str, workdir: Path) -> dict[str, str]:
    """Environment of a monolith process whose every file lives in `workdir`."""
    return {
        **os.environ,
        "MONOLITH_DATABASE_URL": database_url,
        "MONOLITH_JWT_PRIVATE_KEY_FILE": str(workdir / "jwt-private.pem"),
        "MONOLITH_JWT_PUBLIC_KEY_FILE": str(workdir / "jwt-public.pem"),
        "MONOLITH_ROUTING_FILE": str(workdir / "routing.toml"),
    }


def service_env(database_url: str, workdir: Path, public_key: Path) -> dict[str, str]:
    """Environment of a products service process trusting the monolith's `public_key`."""
    return {
        **os.environ,
        "PRODUCTS_SERVICE_DATABASE_URL": database_url,
        "PRODUCTS_SERVICE_JWT_PUBLIC_KEY_FILE": str(public_key),
        "PRODUCTS_SERVICE_ROUTING_FILE": str(workdir / "routing.toml"),
    }


def run_service_command(env: Mapping[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "extracted.products_service", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"products_service {' '.join(args)} failed:\n{result.stderr}")


def run_monolith_command(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m legacy_monolith ARGS`; raise with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "legacy_monolith", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"legacy_monolith {' '.join(args)} failed:\n{result.stderr}")
    return result


def wait_until_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path, health: str = "/health"
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}{health}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not become healthy in 30 s:\n{log.read_text()}")


def wait_until_listening(
    process: subprocess.Popen[bytes], log: Path, port: int | None = None, timeout: float = 30
) -> int:
    """The port `process` listens on, read from its own log: uvicorn's "Started server process
    [PID]" (which must be this child's pid) and "Uvicorn running on http://127.0.0.1:PORT"
    (which must be `port`, when one was asked for). uvicorn logs that line once its socket
    listens, so the port is this child's until it exits; a port another program holds makes
    the child fail to bind and exit, which raises here with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        started, listening = _STARTED.search(text), _LISTENING.search(text)
        if started and listening:
            if int(started[1]) != process.pid:
                raise RuntimeError(
                    f"{log} names server process {started[1]}, not the child {process.pid}:\n{text}"
                )
            bound = int(listening[1])
            if port is not None and bound != port:
                raise RuntimeError(f"asked for port {port}, the child bound {bound}:\n{text}")
            return bound
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{text}")
        time.sleep(0.05)
    raise RuntimeError(
        f"process {process.pid} did not log the port it listens on in {timeout:g} s "
        f"(is STRANGLER_LOG_LEVEL above INFO?):\n{log.read_text(errors='replace')}"
    )


def _new_log(workdir: Path, name: str) -> Path:
    """`workdir/NAME-N.log` for the first N not taken: a restarted process keeps the old log."""
    for n in itertools.count():
        log = workdir / f"{name}-{n}.log"
        try:
            log.open("xb").close()
        except FileExistsError:
            continue
        return log
    raise AssertionError("unreachable")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve_process(
    argv: list[str],
    env: Mapping[str, str],
    workdir: Path,
    *,
    name: str,
    port: int | None = None,
    port_env: str | None = None,
    health: str = "/health",
) -> Iterator[RunningApp]:
    """Start `python ARGV`, a uvicorn app, with "{port}" in ARGV replaced by `port`, or by 0 so
    that the child binds a port of its own choosing; learn the port from the child's log
    (`wait_until_listening`) and wait until `health` answers 200 there.

    `port_env` names the settings variable the app also reads its port from: the apps' `serve`
    commands take `--port 0` for "no port given" (`port or settings.port`) and would bind their
    default port, so the 0 goes there too. A given `port` (a restart where clients already
    point, a port a fault proxy was built for) is still checked to be the child's own."""
    log = _new_log(workdir, name)
    child_env = dict(env)
    if port is None and port_env is not None:
        child_env[port_env] = "0"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *[a.replace("{port}", str(port or 0)) for a in argv]],
            env=child_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a killed test run leaves no servers behind
        )
    try:
        base_url = f"http://127.0.0.1:{wait_until_listening(process, log, port)}"
        wait_until_healthy(base_url, process, log, health)
        yield RunningApp(base_url=base_url, process=process, log=log)
    finally:
        stop(process)


@contextmanager
def serve_monolith(env: Mapping[str, str], workdir: Path) -> Iterator[RunningApp]:
    """Start `python -m legacy_monolith serve` on a port it binds and wait until it answers."""
    with serve_process(
        ["-m", "legacy_monolith", "serve", "--port", "{port}"],
        env,
        workdir,
        name="monolith",
        port_env="MONOLITH_PORT",
    ) as app:
        yield app


@contextmanager
def serve_products_service(
    env: Mapping[str, str], workdir: Path, port: int | None = None
) -> Iterator[RunningApp]:
    """Start `python -m extracted.products_service serve` on `port` (default: one it binds)."""
    with serve_process(
        ["-m", "extracted.products_service", "serve", "--port", "{port}"],
        env,
        workdir,
        name="products-service",
        port=port,
        port_env="PRODUCTS_SERVICE_PORT",
    ) as app:
        yield app


@contextmanager
def serve_echo(workdir: Path, name: str) -> Iterator[RunningApp]:
    """Start the echo upstream of tests/support/echo_app.py."""
    with serve_process(
        ["-m", "tests.support.echo_app", "{port}", name],
        os.environ,
        workdir,
        name=f"echo-{name}",
        health="/_echo/stats",
    ) as app:
        yield app
