"""`strangler up` as a real process, the way the README runs it, for the tests that need the
whole system (dashboard, integration, end to end).

Each of those tests starts it alike: three free ports, a copy of the repository's routing.toml
pointing at them, the `up` command line, a new session writing to a log, a wait for the ready
banner, and Ctrl-C to stop. What differs (the environment, the databases, how long to wait,
how hard to stop) stays with each test.

`up` passes the ports down to its children (`--monolith-port` and the others), so they cannot
bind port 0 the way `tests.support.processes` starts our apps: a port chosen here can be taken
before the child binds it. The collision is made loud instead: `wait_for_banner` checks that
every port the banner names is listened on by a process of this `up`, not by someone else's
program that answered its readiness URL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from strangler.supervisor import die_with_parent
from tests.support.processes import free_port

STRANGLER = [sys.executable, "-c", "from strangler.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class UpPorts:
    """The loopback ports of one `strangler up`: its monolith, products service and proxy."""

    monolith: int
    service: int
    proxy: int

    @property
    def monolith_url(self) -> str:
        return f"http://127.0.0.1:{self.monolith}"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy}"

    def cli_env(self) -> dict[str, str]:
        """Where the `strangler` CLI finds this system's parts (its defaults are the fixed
        ports of a developer's machine)."""
        return {
            "STRANGLER_PROXY_URL": self.proxy_url,
            "STRANGLER_MONOLITH_URL": self.monolith_url,
            "STRANGLER_SERVICE_URL": self.service_url,
        }


def free_up_ports() -> UpPorts:
    """Three free ports, so several systems (and a developer's own) can run side by side. Free
    when chosen only: `wait_for_banner` fails if another program took one meanwhile."""
    return UpPorts(monolith=free_port(), service=free_port(), proxy=free_port())


def routing_for(ports: UpPorts, directory: Path) -> Path:
    """Write `directory/routing.toml`: the repository's routing file, its upstreams moved from
    the default ports (8001, 8002) to `ports`, so the test runs the routing a newcomer gets."""
    routing = directory / "routing.toml"
    routing.write_text(
        (ROOT / "routing.toml")
        .read_text()
        .replace("127.0.0.1:8001", f"127.0.0.1:{ports.monolith}")
        .replace("127.0.0.1:8002", f"127.0.0.1:{ports.service}")
    )
    return routing


def up_env(
    directory: Path, ports: UpPorts, routing: Path, monolith_db: str, service_db: str
) -> dict[str, str]:
    """The environment of a `strangler up` whose every file (keys, tokens, state, audit log)
    lives in `directory`, on `ports`, following `routing`, over the two databases given; the
    CLI run with it reaches this system."""
    from tests.support.processes import monolith_env, service_env

    return {
        **monolith_env(monolith_db, directory),
        **{
            k: v
            for k, v in service_env(service_db, directory, directory / "jwt-public.pem").items()
            if k.startswith("PRODUCTS_SERVICE_")
        },
        "STRANGLER_SYNC_TOKEN_FILE": str(directory / "sync-token"),
        "STRANGLER_ADMIN_TOKEN_FILE": str(directory / "admin-token"),
        "STRANGLER_STATE_DIR": str(directory / "state"),
        "STRANGLER_ROUTING_FILE": str(routing),
        "PROXY_AUDIT_LOG": str(directory / "audit.jsonl"),
        **ports.cli_env(),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }


def up_argv(ports: UpPorts, routing: Path, products: int) -> list[str]:
    """`strangler up` seeding `products` demo products, on `ports`, following `routing`."""
    return [
        *STRANGLER,
        "up",
        "--products",
        str(products),
        "--monolith-port",
        str(ports.monolith),
        "--service-port",
        str(ports.service),
        "--proxy-port",
        str(ports.proxy),
        "--routing-file",
        str(routing),
    ]


def start_up(
    argv: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output (and its children's) in `log`. In a session of its own, so
    a signal to its process group reaches `up` and every child as Ctrl-C in a terminal does;
    and dying with the test process, so a killed test run leaves no servers behind."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def wait_for_banner(
    process: subprocess.Popen[bytes], log: Path, proxy_port: int, timeout: float
) -> str:
    """Wait for the banner `up` prints once every child answered its readiness URL, and return
    the dashboard URL it names. The banner's own "ready  proxy http://127.0.0.1:PORT" line is
    matched, not "ready" anywhere: the children's access logs of their /ready polls contain
    that too. Its dashboard line is printed in the same write and waited for with it. Then
    each port the banner names must be listened on by `up` or one of its descendants
    (`assert_ports_are_ours`): a readiness answer from another program fails here."""
    banner = re.compile(
        rf"^ready\s+proxy\s+http://127\.0\.0\.1:{proxy_port}\b.*\n\s+dashboard\s+(http://\S+)",
        re.MULTILINE,
    )
    deadline = time.monotonic() + timeout
    while not (found := banner.search(log.read_text(errors="replace"))):
        if process.poll() is not None:
            raise RuntimeError(f"strangler up exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"strangler up not ready after {timeout:g} s:\n{log.read_text()}")
        time.sleep(0.1)
    text = log.read_text(errors="replace")
    named = re.findall(r"^\s+(?:monolith|service)\s+http://127\.0\.0\.1:(\d+)", text, re.MULTILINE)
    assert_ports_are_ours(process, [proxy_port, *map(int, named)], log)
    return found.group(1)


def assert_ports_are_ours(process: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
    """Fail unless each of `ports` is listened on by `process` or a descendant of it (read
    from /proc: Linux only, elsewhere nothing is checked)."""
    if not Path("/proc/net/tcp").exists():
        return
    ours = _descendants(process.pid)
    for port in ports:
        if not _listener_sockets(port) & _sockets_of(ours):
            raise RuntimeError(
                f"port {port}, named in the banner of strangler up (pid {process.pid}), is not "
                "listened on by any of its processes: another program took the port after the "
                "test chose it, and answered the readiness check in place of the child. "
                f"Run the test again.\n{log.read_text(errors='replace')}"
            )


def _descendants(root: int) -> set[int]:
    """`root` and every process below it, from each process's parent in /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [root]
    while pending:
        pid = pending.pop()
        found.add(pid)
        pending.extend(children.get(pid, []))
    return found


def _listener_sockets(port: int) -> set[str]:
    """The inodes of the sockets listening on `port` (TCP state 0A), IPv4 and IPv6."""
    inodes: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _sockets_of(pids: set[int]) -> set[str]:
    """The inodes of the sockets the processes `pids` hold open."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # exited meanwhile, or not ours to read
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    return inodes


def stop_up(process: subprocess.Popen[bytes], *, interrupt: bool = True) -> None:
    """Ctrl-C the process group (`up` stops its children in order), then kill what is left
    after 30 s. With `interrupt=False`, kill the group at once: for a test that has already
    checked how `up` stops and only needs nothing left running."""
    if process.poll() is None:
        try:
            if interrupt:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            else:
                os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
