"""What every benchmark shares: its result record, the machine it ran on, ports, wrk, nginx.

A benchmark module exposes `run(quick: bool) -> list[Measurement]`; `bench/run.py` calls each
in turn and writes the table. `quick` is the smoke test's size: every code path once, in
seconds, numbers meaningless. Nothing here asserts a target: a target missed is reported,
with its evidence, and the suite goes on.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "ROOT",
    "Measurement",
    "cpu_model",
    "free_port",
    "machine",
    "missing_tools",
    "nginx_conf",
    "print_measurements",
    "run_wrk",
    "wait_http",
]


@dataclass
class Measurement:
    """One row of the table: what was compared, the ratio (or figure) and its target."""

    name: str
    measured_as: str
    value: float
    unit: str  # "ratio", "events/s", "ms", "s", "us"
    target: str  # e.g. ">= 0.6"; checked by `met`
    context: dict[str, object] = field(default_factory=dict)  # the absolute numbers behind it
    note: str = ""

    @property
    def met(self) -> bool:
        op, _, bound = self.target.partition(" ")
        limit = float(bound.replace(",", ""))
        return self.value >= limit if op == ">=" else self.value <= limit

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "met": self.met}


def print_measurements(measurements: list[Measurement]) -> None:
    """What a benchmark run on its own prints: each row, its verdict and the figures behind it."""
    for m in measurements:
        verdict = "met" if m.met else "MISSED"
        print(f"{m.name}: {m.value:,.3f} {m.unit} (target {m.target}, {verdict})")
        print(f"    {m.measured_as}")
        for key, value in m.context.items():
            print(f"    {key}: {value}")
        if m.note:
            print(f"    note: {m.note}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, alive: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until `url` answers; stop early, saying so, when the process behind it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process behind {url} exited before it answered")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered within {timeout} s")


def missing_tools(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(
    url: str, connections: int, seconds: float, script: Path | None = None
) -> dict[str, float]:
    """wrk in its own process: requests/s, p50 and p99 latency (ms), non-2xx count."""
    argv = ["wrk", "-t", "1" if connections == 1 else "2", "-c", str(connections)]
    argv += ["-d", f"{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    result = {"rps": float(found.group(1))}
    for pct in ("50", "99"):
        match = re.search(rf"\s{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s)\b", out)
        if match is None:
            raise RuntimeError(f"wrk printed no p{pct}:\n{out}")
        result[f"p{pct}_ms"] = float(match.group(1)) * _UNITS[match.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    result["socket_errors"] = 1.0 if socket_errors else 0.0
    return result


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_named(command: str) -> float:
    """CPU time used so far by every process whose name is `command` (e.g. all PostgreSQL
    backends): the machine-wide share of a server made of many processes."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone since the listing
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name == command:
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_wrk_with_cpu(
    url: str, connections: int, seconds: float, pids: dict[str, int]
) -> dict[str, float]:
    """run_wrk, plus each named process's CPU milliseconds per request during the run: the
    profile that says which process a cost lands on."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = run_wrk(url, connections, seconds)
    requests = max(result["rps"] * max(1, round(seconds)), 1.0)
    for name, pid in pids.items():
        result[f"cpu_ms_per_request_{name}"] = (cpu_seconds(pid) - before[name]) * 1000 / requests
    return result


def nginx_conf(workdir: Path, port: int, upstream_port: int) -> Path:
    """nginx as the reference: one worker, a plain keep-alive reverse proxy."""
    conf = workdir / f"nginx-{port}.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx-{port}.pid;
error_log {workdir}/nginx-{port}-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body-{port};
    proxy_temp_path {workdir}/proxy-{port};
    upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
""")
    return conf


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def machine() -> dict[str, object]:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("httpx", "aiohttp", "uvicorn", "fastapi", "sqlalchemy", "import-linter")
        },
        "nginx": _tool_version(["nginx", "-v"]),
        "wrk": _tool_version(["wrk", "-v"]),
        "postgresql": _tool_version(["psql", "--version"]),
    }
