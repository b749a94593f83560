"""`/health` (the process is up) and `/ready` (its database answers), the same on every app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from sqlalchemy import text

from strangler.db import Sessions
from strangler.problems import problem_response, problem_responses

__all__ = ["install_health_routes"]


def install_health_routes(app: FastAPI) -> None:
    """Add the two probes; `/ready` uses the app's `state.sessions`."""

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        """The process is up and serving."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], response_model=None, responses=problem_responses(503))
    def ready(request: Request) -> object:
        """The database answers; a load balancer should send traffic here."""
        sessions: Sessions = request.app.state.sessions
        try:
            with sessions.read() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means not ready, and says why
            return problem_response(
                503,
                f"The database is not reachable: {type(exc).__name__}.",
                headers={"Retry-After": "1"},
            )
        return {"status": "ready"}
