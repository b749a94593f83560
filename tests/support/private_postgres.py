"""A PostgreSQL server of the test's own, so a test can restart it without touching the
machine's shared server (which every other database test is using).

`initdb` and `pg_ctl` come with the PostgreSQL server's package. As root (CI), the cluster runs
as the `postgres` user, since PostgreSQL refuses to run as root. Without the programs, the test
skips with the reason, or fails with CI=true, like the other database tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.processes import free_port


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class PrivatePostgres:
    port: int
    datadir: Path
    pg_ctl: str

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """Create database `name`; return its SQLAlchemy URL."""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no checkpoint, clients cut) and start it."""
        self._ctl("restart", "-m", mode, "-w", "-t", "60", "-l", str(self.datadir / "server.log"))

    def _ctl(self, *args: str) -> None:
        argv = [self.pg_ctl, "-D", str(self.datadir), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # The server inherits pg_ctl's stdout: a pipe would never close, so output goes to -l.
        subprocess.run(
            argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
        )


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a throwaway cluster (in a directory of its own under the system's temp dir, since
    pytest's are private to the user running it, and the server may run as `postgres`)."""
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        reason = "initdb and pg_ctl (the PostgreSQL server package) are not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true: this test must run", pytrace=False)
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="strangler-pg-"))
    datadir = workdir / "pgdata"
    datadir.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(datadir, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, initdb, "-D", str(datadir), "-U", "postgres", "-A", "trust", "-N"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "fsync = off\nfull_page_writes = off\nmax_connections = 100\n"
        )
    server = PrivatePostgres(port=port, datadir=datadir, pg_ctl=pg_ctl)
    server._ctl("start", "-w", "-t", "60", "-l", str(datadir / "server.log"))
    try:
        yield server
    finally:
        server._ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(workdir, ignore_errors=True)
