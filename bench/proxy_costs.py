"""What the routing proxy costs, against nginx in front of the same upstream, in one run.

Two upstreams: a trivial FastAPI app (what a proxy adds shows most) and the real monolith
serving `GET /products/{id}` from its SQLite file. In front of each: the strangler proxy
(products in phase `monolith`, a plain forward) and nginx (one worker, keep-alive upstream,
the reference). A third proxy has products in phase `shadow` at 100 % sampling, mirroring
every read to the real products service (backfilled, so the answers agree) and comparing.

wrk, in its own process, measures every target in interleaved rounds (each round measures
all of them, so drift on this shared machine hits all alike); medians over the rounds.
Reported as ratios: throughput at 32 connections (proxy / nginx), added latency at one
connection (proxy's added p50 and p99 over direct / nginx's), client p50 with shadow / without.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    Measurement,
    free_port,
    missing_tools,
    nginx_conf,
    print_measurements,
    run_wrk,
    run_wrk_with_cpu,
    wait_http,
)
from tests.support.processes import (  # noqa: E402
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)

TOKEN = "bench-proxy-sync-token"


@contextmanager
def _process(
    argv: list[str], url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_http(url, lambda: process.poll() is None)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _routing(workdir: Path, name: str, monolith: str, service: str, phase: str) -> Path:
    path = workdir / f"routing-{name}.toml"
    path.write_text(f"""
[upstreams.monolith]
url = "{monolith}"
[upstreams.service]
url = "{service}"
[capabilities.products]
prefixes = ["/products"]
service = "service"
phase = "{phase}"
shadow_percent = 100
""")
    return path


@contextmanager
def _proxy(workdir: Path, name: str, routing: Path) -> Iterator[tuple[str, int]]:
    """A strangler proxy on `routing`: its URL and its pid."""
    port = free_port()
    env = {
        **os.environ,
        "PROXY_ROUTING_FILE": str(routing),
        "PROXY_AUDIT_LOG": str(workdir / f"audit-{name}.jsonl"),
    }
    argv = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
    health = f"http://127.0.0.1:{port}/_strangler/health"
    with _process(argv, health, workdir / f"{name}.log", env) as process:
        yield f"http://127.0.0.1:{port}", process.pid


@contextmanager
def _nginx(workdir: Path, upstream: str) -> Iterator[str]:
    port = free_port()
    upstream_port = int(upstream.rsplit(":", 1)[1])
    conf = nginx_conf(workdir, port, upstream_port)
    with _process(
        ["nginx", "-c", str(conf)], f"http://127.0.0.1:{port}/", workdir / f"nginx-{port}.log"
    ):
        yield f"http://127.0.0.1:{port}"


def _backfill(monolith: str, service: str, monolith_db: str, workdir: Path) -> None:
    env = {
        **os.environ,
        "STRANGLER_MONOLITH_URL": monolith,
        "STRANGLER_SERVICE_URL": service,
        "STRANGLER_SYNC_TOKEN": TOKEN,
        "STRANGLER_MONOLITH_DATABASE_URL": monolith_db,
        "STRANGLER_STATE_DIR": str(workdir / "state"),
        "STRANGLER_ROUTING_FILE": str(workdir / "none.toml"),
    }
    subprocess.run(
        [sys.executable, "-c", "from strangler.cli import main; main()", "backfill", "products"],
        env=env,
        check=True,
        capture_output=True,
    )


def run(quick: bool) -> list[Measurement]:
    missing = missing_tools("wrk", "nginx")
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not installed: apt-get install wrk nginx-light"
        )
    seconds, rounds = (1, 1) if quick else (8, 3)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-proxy-")))
        (work / "m").mkdir()
        (work / "s").mkdir()
        trivial_port = free_port()
        trivial = f"http://127.0.0.1:{trivial_port}"
        stack.enter_context(
            _process(
                [sys.executable, str(ROOT / "bench/trivial_upstream.py"), str(trivial_port)],
                f"{trivial}/products/1",
                work / "trivial.log",
            )
        )
        monolith_db = f"sqlite:///{work / 'm' / 'monolith.db'}"
        menv = {**monolith_env(monolith_db, work / "m"), "MONOLITH_SYNC_TOKEN": TOKEN}
        run_monolith_command(menv, "migrate")
        run_monolith_command(menv, "seed", "--products", "100")
        monolith_app = stack.enter_context(serve_monolith(menv, work / "m"))
        monolith = monolith_app.base_url
        senv = {
            **service_env(
                f"sqlite:///{work / 's' / 'products.db'}", work / "s", work / "m" / "jwt-public.pem"
            ),
            "PRODUCTS_SERVICE_SYNC_TOKEN": TOKEN,
        }
        run_service_command(senv, "migrate")
        service_app = stack.enter_context(serve_products_service(senv, work / "s"))
        service = service_app.base_url
        _backfill(monolith, service, monolith_db, work)

        plain_trivial = _routing(work, "trivial", trivial, trivial, "monolith")
        plain_monolith = _routing(work, "monolith", monolith, service, "monolith")
        shadowed = _routing(work, "shadow", monolith, service, "shadow")
        proxies = {
            "trivial strangler": stack.enter_context(_proxy(work, "p-trivial", plain_trivial)),
            "monolith strangler": stack.enter_context(_proxy(work, "p-monolith", plain_monolith)),
            "monolith strangler shadow": stack.enter_context(_proxy(work, "p-shadow", shadowed)),
        }
        urls = {
            "trivial direct": f"{trivial}/products/1",
            "trivial strangler": proxies["trivial strangler"][0] + "/products/1",
            "trivial nginx": stack.enter_context(_nginx(work, trivial)) + "/products/1",
            "monolith direct": f"{monolith}/products/1",
            "monolith strangler": proxies["monolith strangler"][0] + "/products/1",
            "monolith nginx": stack.enter_context(_nginx(work, monolith)) + "/products/1",
            "monolith strangler shadow": proxies["monolith strangler shadow"][0] + "/products/1",
        }
        # Where the CPU of a shadowed read goes: the proxy, the monolith, the service.
        apps = {"monolith": monolith_app.process.pid, "service": service_app.process.pid}
        watched = {
            name: {"proxy": proxies[name][1], **apps}
            for name in ("monolith strangler", "monolith strangler shadow")
        }
        throughput_targets = [k for k in urls if not k.endswith("shadow")]
        latency_targets = ["trivial direct", "trivial strangler", "trivial nginx"]
        shadow_targets = ["monolith strangler", "monolith strangler shadow"]
        c32: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
        c1: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
        for _ in range(rounds):
            for name in throughput_targets:
                c32[name].append(run_wrk(urls[name], 32, seconds))
            for name in dict.fromkeys(latency_targets + shadow_targets):
                if name in watched:
                    c1[name].append(run_wrk_with_cpu(urls[name], 1, seconds, watched[name]))
                else:
                    c1[name].append(run_wrk(urls[name], 1, seconds))

    def med(table: dict[str, list[dict[str, float]]], name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in table[name])

    failures = sum(
        s["non_2xx"] + s["socket_errors"] for t in (c32, c1) for v in t.values() for s in v
    )
    measurements: list[Measurement] = []
    labels = {"trivial": "trivial upstream", "monolith": "real monolith GET /products/{id}"}
    for upstream, target in (("trivial", ">= 0.6"), ("monolith", ">= 0.9")):
        proxy_rps = med(c32, f"{upstream} strangler", "rps")
        nginx_rps = med(c32, f"{upstream} nginx", "rps")
        measurements.append(
            Measurement(
                name=f"proxy throughput, {labels[upstream]}",
                measured_as="req/s via strangler / via nginx, same upstream, 32 connections",
                value=proxy_rps / nginx_rps,
                unit="ratio",
                target=target,
                context={
                    "strangler_rps": round(proxy_rps),
                    "nginx_rps": round(nginx_rps),
                    "direct_rps": round(med(c32, f"{upstream} direct", "rps")),
                    "failed_requests_all_runs": failures,
                },
            )
        )
    direct50, direct99 = med(c1, "trivial direct", "p50_ms"), med(c1, "trivial direct", "p99_ms")
    added = {
        who: (
            med(c1, f"trivial {who}", "p50_ms") - direct50,
            med(c1, f"trivial {who}", "p99_ms") - direct99,
        )
        for who in ("strangler", "nginx")
    }
    for index, pct in ((0, "p50"), (1, "p99")):
        ours, theirs = added["strangler"][index], added["nginx"][index]
        measurements.append(
            Measurement(
                name=f"proxy latency at 1 connection, added {pct}",
                measured_as=f"added {pct} over direct: strangler / nginx",
                value=ours / max(theirs, 0.001),
                unit="ratio",
                target="<= 3",
                context={
                    "strangler_added_ms": round(ours, 3),
                    "nginx_added_ms": round(theirs, 3),
                    f"direct_{pct}_ms": round(direct50 if index == 0 else direct99, 3),
                },
            )
        )
    plain = med(c1, "monolith strangler", "p50_ms")
    with_shadow = med(c1, "monolith strangler shadow", "p50_ms")
    measurements.append(
        Measurement(
            name="shadow at 100 % sampling",
            measured_as="client p50 with shadow / without (real monolith and service, 1 conn)",
            value=with_shadow / plain,
            unit="ratio",
            target="<= 1.1",
            context={
                "p50_ms_without": round(plain, 3),
                "p50_ms_with": round(with_shadow, 3),
                **{
                    f"cpu_ms_per_request_{who}_{label}": round(
                        med(c1, name, f"cpu_ms_per_request_{who}"), 3
                    )
                    for label, name in (
                        ("without", "monolith strangler"),
                        ("with", "monolith strangler shadow"),
                    )
                    for who in ("proxy", "monolith", "service")
                },
            },
        )
    )
    return measurements


if __name__ == "__main__":
    print_measurements(run(quick="--quick" in sys.argv))
