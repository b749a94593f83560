"""The shop the hostile tests attack: the real monolith and the real products service as
processes on loopback, over a fresh database of one backend each, with an account whose
bearer token gets the attacks past authentication, and the service-to-service token the
internal APIs want.

The service runs in phase `writes_cutover` (its own routing file) so that its product writes
are served rather than refused with 503; the monolith has no routing file, so it is in phase
`monolith` and serves its own product writes. The proxy, started on demand, routes per its
own routing file (see `proxy_in_front`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import tomlkit

from tests.support.databases import BACKENDS, database
from tests.support.factories import Account, new_account
from tests.support.processes import (
    RunningApp,
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)

SYNC_TOKEN = "attack-suite-sync-token"


@dataclass(frozen=True)
class Shop:
    backend: str
    monolith: RunningApp
    service: RunningApp
    monolith_db: str
    service_db: str
    account: Account

    def headers_for(self, path: str) -> dict[str, str]:
        """The credentials a caller of `path` holds: the sync token for the internal APIs,
        the user's bearer token for everything else."""
        token = SYNC_TOKEN if path.startswith("/internal/") else self.account.token
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(
    scope="session",
    # The PostgreSQL runs are in `dev.py chaos` (CI runs both): the everyday suite's budget.
    params=[
        pytest.param(b, marks=[pytest.mark.slow] if b == "postgresql" else []) for b in BACKENDS
    ],
)
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    backend: str = request.param
    mdir = tmp_path_factory.mktemp(f"attack-monolith-{backend}")
    sdir = tmp_path_factory.mktemp(f"attack-service-{backend}")
    with database(backend, mdir) as murl, database(backend, sdir) as surl:
        menv = {**monolith_env(murl, mdir), "MONOLITH_SYNC_TOKEN": SYNC_TOKEN}
        run_monolith_command(menv, "migrate")
        senv = {
            **service_env(surl, sdir, mdir / "jwt-public.pem"),
            "PRODUCTS_SERVICE_SYNC_TOKEN": SYNC_TOKEN,
        }
        (sdir / "routing.toml").write_text(
            tomlkit.dumps({"capabilities": {"products": {"phase": "writes_cutover"}}})
        )
        run_service_command(senv, "migrate")
        with serve_monolith(menv, mdir) as monolith:
            with httpx.Client(base_url=monolith.base_url, timeout=30) as client:
                account = new_account(client)
            with serve_products_service(senv, sdir) as service:
                yield Shop(backend, monolith, service, murl, surl, account)


@contextmanager
def proxy_in_front(shop: Shop, workdir: Path, phase: str = "reads_cutover") -> Iterator[str]:
    """The routing proxy in front of `shop`'s monolith and service, products in `phase`
    (by default reads go to the service and writes to the monolith, so both are reached);
    yields its base URL."""
    from tests.proxy.conftest import routing_document, run_proxy

    document = routing_document(
        shop.monolith.base_url,
        shop.service.base_url,
        capability={"phase": phase},
        service={"read_timeout": 10.0, "total_timeout": 20.0},
    )
    with run_proxy(workdir, document, PROXY_SYNC_TOKEN=SYNC_TOKEN) as proxy:
        yield proxy.base_url
