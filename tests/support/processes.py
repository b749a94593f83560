"""Real app processes on loopback ports, for integration tests."""

from __future__ import annotations

import os
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

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
    health: str = "/health",
) -> Iterator[RunningApp]:
    """Start `python ARGV` (which must listen on `port`) and wait until `health` answers 200."""
    port = port or free_port()
    log = workdir / f"{name}-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *[a.replace("{port}", str(port)) for a in argv]],
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a killed test run leaves no servers behind
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log, health)
        yield RunningApp(base_url=base_url, process=process, log=log)
    finally:
        stop(process)


@contextmanager
def serve_monolith(env: Mapping[str, str], workdir: Path) -> Iterator[RunningApp]:
    """Start `python -m legacy_monolith serve` on a free port and wait until it answers."""
    with serve_process(
        ["-m", "legacy_monolith", "serve", "--port", "{port}"], env, workdir, name="monolith"
    ) as app:
        yield app


@contextmanager
def serve_products_service(
    env: Mapping[str, str], workdir: Path, port: int | None = None
) -> Iterator[RunningApp]:
    """Start `python -m extracted.products_service serve` on `port` (default: a free one)."""
    with serve_process(
        ["-m", "extracted.products_service", "serve", "--port", "{port}"],
        env,
        workdir,
        name="products-service",
        port=port,
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
