"""Composition root of the products service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from extracted.products_service import api, internal_api, reservations, service
from extracted.products_service.models import SYNC_SPEC, SYNC_TABLES
from extracted.products_service.settings import ProductsServiceSettings
from strangler.db import Sessions, create_db_engine, install_database_problem_handler
from strangler.health import install_health_routes
from strangler.observability.http import install_observability
from strangler.phases import PhaseFile, Side
from strangler.problems import install_problem_handlers, problem_response
from strangler.sync.api import sync_router
from strangler.tokens import TokenPolicy, TokenVerifier


def create_app(settings: ProductsServiceSettings | None = None) -> FastAPI:
    """Build the service; it refuses to start without the token public key (say where)."""
    settings = settings or ProductsServiceSettings()
    try:
        public_pem = settings.jwt_public_key_file.read_bytes()
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the token public key {settings.jwt_public_key_file}: {exc.strerror}. "
            "Start the monolith once (it publishes it) or set PRODUCTS_SERVICE_JWT_PUBLIC_KEY_FILE."
        ) from exc
    engine = create_db_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweep.start()
        yield
        sweep.stop()
        engine.dispose()

    app = FastAPI(title="Products service", version="1.0.0", lifespan=lifespan)
    app.state.settings = settings
    phase_file = PhaseFile(settings.routing_file, "products")
    app.state.sessions = Sessions(engine, info=service.sessions_info(phase_file))
    # Gives back the stock of reservations whose order never confirmed them within the lease.
    sweep = reservations.ReservationSweep(
        app.state.sessions, interval_seconds=settings.reservation_sweep_seconds
    )
    app.state.token_verifier = TokenVerifier(
        public_pem, TokenPolicy(issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    )
    app.state.sync_specs = {"products": SYNC_SPEC}
    app.state.sync_tables = {"products": SYNC_TABLES}
    app.state.sync_token = settings.sync_token.get_secret_value() if settings.sync_token else None
    install_problem_handlers(app)
    install_database_problem_handler(app)

    @app.exception_handler(service.WritesElsewhere)
    async def writes_elsewhere(_request: Request, exc: service.WritesElsewhere) -> Response:
        return problem_response(
            503,
            f"Products are written by the monolith in phase {exc}; this copy only follows it. "
            "Send the write through the proxy again.",
            headers={"Retry-After": "1"},
            code="writes_elsewhere",
        )

    app.include_router(api.router)
    app.include_router(internal_api.router)
    phases = {"products": phase_file}  # read afresh: a re-emit is refused if not the writer
    app.include_router(
        sync_router(side=Side.SERVICE, phase_of=lambda entity: phases[entity].reread())
    )

    install_health_routes(app)
    install_observability(
        app,
        app.state.sessions,
        app.state.sync_tables,
        metrics_token=(
            settings.metrics_token.get_secret_value() if settings.metrics_token else None
        ),
        sync_token=app.state.sync_token,
    )

    return app
