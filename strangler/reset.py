"""What `strangler reset` removes to start the demo over, decided apart from removing it.

The demo's state is files: the live routing file (and the config version beside it), the
audit log, the CLI's backfill checkpoints and reconcile verdicts, and the SQLite databases.
Secrets (the tokens, the JWT keys) stay: removing them changes nothing about the migration
and would log out whoever holds a token. A database that is not a SQLite file is named, not
touched: dropping a server's database is its owner's call.

`up` records its process id in the state directory; a reset while that process lives is
refused, because the running apps would keep the deleted files open and write them again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from strangler.settings import CliSettings

__all__ = ["ResetPlan", "plan_reset", "running_up", "up_pid_file"]


@dataclass(frozen=True)
class ResetPlan:
    """The files a reset removes (those that exist) and the databases it leaves to you."""

    files: tuple[Path, ...]
    databases_left: tuple[str, ...]


def up_pid_file(settings: CliSettings) -> Path:
    return settings.state_dir / "up.pid"


def running_up(settings: CliSettings) -> int | None:
    """The process id of a `strangler up` still running from this state directory, if any."""
    try:
        pid = int(up_pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale file: `up` was killed without cleaning up
    except PermissionError:
        return pid  # alive, under another user
    return pid


def plan_reset(settings: CliSettings) -> ResetPlan:
    state = settings.state_dir
    candidates = [
        settings.routing_file,
        settings.routing_file.with_name(settings.routing_file.name + ".version"),
        state / "routing-audit.jsonl",
        *sorted(state.glob("backfill-*.json")),
        *sorted(state.glob("reconcile-*.json")),
    ]
    left: list[str] = []
    for url in (settings.monolith_database_url, settings.service_database_url):
        database = _sqlite_file(url)
        if database is None:
            left.append(make_url(url).render_as_string(hide_password=True))
            continue
        candidates += [database, *(database.with_name(database.name + s) for s in _SIDECARS)]
    files = tuple(dict.fromkeys(p for p in candidates if p.exists()))
    return ResetPlan(files, tuple(left))


_SIDECARS = ("-wal", "-shm", "-journal")


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)
