"""Engines and sessions for every app here: one engine per app, one session per request.

SQLite needs care to behave like a server database under concurrent writers: WAL so readers do
not block the writer, a busy timeout so writers queue instead of failing, and `BEGIN IMMEDIATE`
for sessions that will write, so two transactions never both read and then both try to upgrade
to a write lock (SQLite answers that with "database is locked" at once, without waiting).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Request, Response
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from strangler.problems import problem_response

_WRITE_OPTION = "strangler_write_transaction"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint naming for every app's MetaData, so migrations are deterministic."""


def create_db_engine(url: str) -> Engine:
    """Create the engine for `url`, with SQLite made safe for concurrent use."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        isolation_level=None,  # the driver's own BEGIN handling is replaced below
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


class Sessions:
    """Session factories over one engine: one for reads, one for transactions that write.

    `info` is copied into every session's `Session.info`: the composition root's way to hand
    request-independent collaborators (such as the phase a capability is in) to code that only
    sees a session.
    """

    def __init__(self, engine: Engine, info: dict[str, object] | None = None) -> None:
        self.engine = engine
        self.read = sessionmaker(engine, expire_on_commit=False, info=dict(info or {}))
        self.write = sessionmaker(
            engine.execution_options(**{_WRITE_OPTION: True}),
            expire_on_commit=False,
            info=dict(info or {}),
        )


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def _read_session(request: Request) -> Iterator[Session]:
    with _sessions(request).read() as session:
        yield session


def _write_session(request: Request) -> Iterator[Session]:
    with _sessions(request).write() as session:
        yield session


ReadSession = Annotated[Session, Depends(_read_session)]
"""A session for handlers that only read."""

WriteSession = Annotated[Session, Depends(_write_session)]
"""A session for handlers that write; the handler commits explicitly."""


_log = logging.getLogger("strangler.db")


def _database_unavailable(request: Request, exc: Exception) -> Response:
    """A database the app cannot reach (restarting, failing over, or a SQLite file locked
    past the busy timeout) is 503 with Retry-After: the request changed nothing and may be
    sent again. Handled here rather than left to the catch-all, which re-raises and makes the
    server close the client's connection. Any other OperationalError (a missing table, say)
    is the server's own fault: 500, with the traceback logged."""
    original = getattr(exc, "orig", None)
    transient = isinstance(original, psycopg.OperationalError) or "database is locked" in str(
        original
    )
    if transient:
        _log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return problem_response(
            503,
            "The database is unavailable for a moment; nothing was changed. Retry shortly.",
            instance=request.url.path,
            headers={"Retry-After": "1"},
        )
    _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500,
        "The server failed to handle this request; it has been logged.",
        instance=request.url.path,
    )


def install_database_problem_handler(app: FastAPI) -> None:
    """Answer database outages as 503 problem+json (see `_database_unavailable`)."""
    app.add_exception_handler(OperationalError, _database_unavailable)
