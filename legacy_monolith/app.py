"""Composition root of the monolith: builds the app from settings, wiring every dependency.

Nothing is created at import time; `create_app` is what uvicorn's factory mode and the tests
call, each with the settings they want.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from legacy_monolith import orders, products, users
from legacy_monolith.platform.settings import MonolithSettings
from strangler.db import Sessions, create_db_engine, install_database_problem_handler
from strangler.health import install_health_routes
from strangler.observability.http import install_observability
from strangler.observability.outgoing import propagate_context
from strangler.phases import PhaseFile, Side
from strangler.problems import install_problem_handlers
from strangler.sync.api import sync_router
from strangler.tokens import (
    TokenIssuer,
    TokenPolicy,
    TokenVerifier,
    load_or_create_keypair,
    publish_public_key,
)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def create_app(settings: MonolithSettings | None = None) -> FastAPI:
    """Build the monolith app; `settings` defaults to the environment's."""
    settings = settings or MonolithSettings()
    keys = load_or_create_keypair(settings.jwt_private_key_file)
    publish_public_key(keys, settings.jwt_public_key_file)
    policy = TokenPolicy(issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    engine = create_db_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service_client.close()
        engine.dispose()

    app = FastAPI(title="Legacy monolith", version="1.0.0", lifespan=lifespan)
    app.state.settings = settings
    phase_file = PhaseFile(settings.routing_file, "products")
    app.state.sessions = Sessions(engine, info=products.sessions_info(phase_file))
    app.state.sync_specs = {"products": products.SYNC_SPEC}
    app.state.sync_tables = {"products": products.SYNC_TABLES}
    sync_token = settings.sync_token.get_secret_value() if settings.sync_token else None
    app.state.sync_token = sync_token
    service_client = httpx.Client(
        base_url=settings.products_service_url,
        headers={"Authorization": f"Bearer {sync_token or ''}"},
        timeout=httpx.Timeout(settings.products_service_timeout_seconds, connect=1.0),
        event_hooks={"request": [propagate_context]},
    )
    app.state.product_catalog = orders.catalog_factory(phase_file, service_client)
    app.state.token_issuer = TokenIssuer(
        keys.private_pem, policy, ttl_seconds=settings.access_token_ttl_seconds
    )
    app.state.token_verifier = TokenVerifier(keys.public_pem, policy)
    install_problem_handlers(app)
    install_database_problem_handler(app)
    # The sync API re-emits (reconcile's repair) only while the phase gives this side the
    # writes: it asks the routing file afresh each time.
    phases = {"products": phase_file}
    synced = sync_router(side=Side.MONOLITH, phase_of=lambda entity: phases[entity].reread())
    for router in (users.router, products.router, orders.router, synced):
        app.include_router(router)

    install_health_routes(app)
    install_observability(
        app,
        app.state.sessions,
        app.state.sync_tables,
        metrics_token=_secret(settings.metrics_token),
        sync_token=sync_token,
    )

    return app
