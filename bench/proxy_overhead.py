"""Proxy overhead, measured side by side in one run: direct vs strangler proxy vs nginx.

Starts a trivial upstream, the strangler proxy and nginx (one worker, keep-alive upstream) in
front of it, then runs wrk against each in interleaved rounds: throughput at 32 connections,
latency at 1 connection. Prints ratios and writes bench/results/proxy_overhead.json.

    python bench/proxy_overhead.py [--seconds 8] [--rounds 2]

Needs wrk and nginx (Debian packages `wrk`, `nginx-light`). The load runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def nginx_conf(workdir: Path, port: int, upstream_port: int) -> Path:
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
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


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1" if connections == 1 else "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
        lat[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, **lat, "non_2xx": float(errors.group(1)) if errors else 0.0}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install wrk nginx-light")
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    up_port, proxy_port, nginx_port = free_port(), free_port(), free_port()
    routing = workdir / "routing.toml"
    routing.write_text(f"""
[upstreams.monolith]
url = "http://127.0.0.1:{up_port}"
[upstreams.service]
url = "http://127.0.0.1:{up_port}"
[capabilities.products]
prefixes = ["/products"]
service = "service"
phase = "monolith"
""")
    env = {
        **os.environ,
        "PROXY_ROUTING_FILE": str(routing),
        "PROXY_AUDIT_LOG": str(workdir / "audit.jsonl"),
    }
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "bench/trivial_upstream.py"), str(up_port)]),
        subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--port", str(proxy_port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(["nginx", "-c", str(nginx_conf(workdir, nginx_port, up_port))]),
    ]
    targets = {
        "direct": f"http://127.0.0.1:{up_port}/products/1",
        "strangler": f"http://127.0.0.1:{proxy_port}/products/1",
        "nginx": f"http://127.0.0.1:{nginx_port}/products/1",
    }
    try:
        for proc, url in zip(procs, targets.values(), strict=True):
            wait(url, proc)
        samples: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {"c32": [], "c1": []} for name in targets
        }
        for _ in range(args.rounds):
            for name, url in targets.items():  # interleaved: each round measures all three
                samples[name]["c32"].append(run_wrk(url, 32, args.seconds))
                samples[name]["c1"].append(run_wrk(url, 1, args.seconds))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)

    def median(name: str, load: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name][load])

    result = {
        name: {
            "rps_32": median(name, "c32", "rps"),
            "p50_ms_1": median(name, "c1", "p50_ms"),
            "p99_ms_1": median(name, "c1", "p99_ms"),
            "non_2xx": sum(s["non_2xx"] for load in ("c32", "c1") for s in samples[name][load]),
        }
        for name in targets
    }
    direct = result["direct"]
    for name in ("strangler", "nginx"):
        result[name]["added_p50_ms"] = result[name]["p50_ms_1"] - direct["p50_ms_1"]
        result[name]["added_p99_ms"] = result[name]["p99_ms_1"] - direct["p99_ms_1"]
    ratios = {
        "strangler_rps_over_direct": result["strangler"]["rps_32"] / direct["rps_32"],
        "strangler_rps_over_nginx": result["strangler"]["rps_32"] / result["nginx"]["rps_32"],
        "added_p50_strangler_over_nginx": result["strangler"]["added_p50_ms"]
        / max(result["nginx"]["added_p50_ms"], 1e-3),
    }
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "uvicorn": version("uvicorn"),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        "date": time.strftime("%Y-%m-%d"),
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    print(f"{'target':<10} {'req/s @32':>10} {'p50 @1 ms':>10} {'p99 @1 ms':>10} {'non-2xx':>8}")
    for name, r in result.items():
        print(
            f"{name:<10} {r['rps_32']:>10.0f} {r['p50_ms_1']:>10.3f} {r['p99_ms_1']:>10.3f} "
            f"{r['non_2xx']:>8.0f}"
        )
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    out = ROOT / "bench/results/proxy_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": result, "ratios": ratios}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
