"""Backfill: stream the source's rows, in key order and in chunks, through the target's apply
path as upsert events carrying each row's version.

Because the events carry the versions read, a snapshot row that is older than what dual-write
already delivered is a duplicate at the target, never an overwrite. The position is
checkpointed to a file after every chunk, so a crashed backfill resumes where it stopped.
Memory holds one chunk, whatever the size of the table.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.events import ApplyOutcome, ChangeEvent

__all__ = ["Backfill", "BackfillCheckpoint", "BackfillReport"]

_START = 0  # keys are positive integers


@dataclass
class BackfillCheckpoint:
    source: str
    target: str
    after: int = _START
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    finished: bool = False

    @classmethod
    def load(cls, path: Path, source: str, target: str) -> BackfillCheckpoint:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(source=source, target=target)
        checkpoint = cls(**data)
        if (checkpoint.source, checkpoint.target) != (source, target):
            raise ValueError(
                f"{path} belongs to a backfill from {checkpoint.source} to {checkpoint.target}; "
                "pass --restart to start over for this pair"
            )
        return checkpoint

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.tmp")
        scratch.write_text(json.dumps(asdict(self)))
        os.replace(scratch, path)


@dataclass(frozen=True)
class BackfillReport:
    rows: int
    applied: int
    duplicates: int
    rejected: int
    seconds: float
    resumed_from: int | None


class Backfill:
    def __init__(
        self,
        source: SyncClient,
        target: SyncClient,
        checkpoint_file: Path,
        *,
        chunk_size: int = 1000,
        dry_run: bool = False,
    ) -> None:
        self._source = source
        self._target = target
        self._file = checkpoint_file
        self._chunk = chunk_size
        self._dry_run = dry_run

    def _apply_with_retries(self, events: list[ChangeEvent]) -> list[ApplyOutcome]:
        """Retry a chunk the target could not take for a transient reason (applying the same
        chunk twice is harmless: the apply path is idempotent)."""
        for attempt in range(5):
            try:
                return self._target.apply(events)
            except SyncApiError as exc:
                if not exc.retryable or attempt == 4:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def total_rows(self) -> int:
        return int(self._source.bounds()["count"] or 0)

    def run(self, on_chunk: Callable[[int], None] = lambda n: None) -> BackfillReport:
        """Copy every remaining row; `on_chunk(rows)` is called after each chunk lands."""
        state = BackfillCheckpoint.load(self._file, self._source.base_url, self._target.base_url)
        resumed = state.after if state.after != _START and not state.finished else None
        if state.finished:
            state = BackfillCheckpoint(source=state.source, target=state.target)
        started = time.monotonic()
        while True:
            rows = self._source.page(state.after, self._chunk)
            if not rows:
                break
            events = [
                ChangeEvent(
                    entity=self._source.entity,
                    key=r["key"],
                    version=r["version"],
                    op="upsert",
                    data=r["data"],
                )
                for r in rows
            ]
            if not self._dry_run:
                for outcome in self._apply_with_retries(events):
                    if outcome.outcome == "applied":
                        state.applied += 1
                    elif outcome.outcome == "duplicate":
                        state.duplicates += 1
                    else:
                        state.rejected += 1
            state.after = rows[-1]["key"]
            state.rows += len(rows)
            if not self._dry_run:
                state.save(self._file)
            on_chunk(len(rows))
        state.finished = True
        if not self._dry_run:
            state.save(self._file)
        return BackfillReport(
            rows=state.rows,
            applied=state.applied,
            duplicates=state.duplicates,
            rejected=state.rejected,
            seconds=time.monotonic() - started,
            resumed_from=resumed,
        )
