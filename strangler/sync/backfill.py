"""Backfill: copy the source's rows, in key order and in chunks, to the target, where each row
lands only if its version is newer than what the target holds.

Because rows carry the versions read, a snapshot row that is older than what dual-write
already delivered is a duplicate at the target, never an overwrite. Chunks move in bulk
(strangler.sync.bulk: the source exports lines, the target imports them by the apply path's
rule), and the next chunk is read while the last one is applied. After the rows, the source's
deletes (its tombstones) go through the target's apply path, so a row deleted while no change
events were recorded does not stay behind on the target. The position is checkpointed
to a file after every chunk, so a crashed backfill resumes where it stopped. Memory holds two
chunks, whatever the size of the table.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.events import ChangeEvent
from strangler.sync.wire import JSON_LINES, ImportReport

__all__ = ["Backfill", "BackfillCheckpoint", "BackfillReport"]

_START = 0  # keys are positive integers
_T = TypeVar("_T")


@dataclass
class BackfillCheckpoint:
    source: str
    target: str
    after: int = _START
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    tombstones_after: int = _START  # the deletes pass, after the rows
    deletes: int = 0  # deletes the target did not have yet
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
    deletes: int
    seconds: float
    resumed_from: int | None


class Backfill:
    def __init__(
        self,
        source: SyncClient,
        target: SyncClient,
        checkpoint_file: Path,
        *,
        chunk_size: int = 50_000,
        dry_run: bool = False,
    ) -> None:
        self._source = source
        self._target = target
        self._file = checkpoint_file
        self._chunk = chunk_size
        self._dry_run = dry_run

    @staticmethod
    def _with_retries(call: Callable[[], _T]) -> _T:
        """Retry a call a side could not answer for a transient reason (importing the same
        chunk twice is harmless: a row already there at its version is a duplicate)."""
        for attempt in range(5):
            try:
                return call()
            except SyncApiError as exc:
                if not exc.retryable or attempt == 4:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _import(self, chunk: bytes, fmt: str) -> ImportReport:
        return self._with_retries(lambda: self._target.import_(chunk, fmt))

    def _export(self, after: int, fmt: str) -> tuple[bytes, int, int | None]:
        return self._with_retries(lambda: self._source.export(after, self._chunk, fmt))

    def total_rows(self) -> int:
        return int(self._source.bounds()["count"] or 0)

    def chunk_format(self) -> str:
        """The best bulk format both sides offer (json-lines, which every side offers, if a
        dry run never asks the target)."""
        offered = self._source.bounds()["bulk_formats"]
        if self._dry_run:
            return JSON_LINES if JSON_LINES in offered else str(offered[0])
        taken = set(self._target.bounds()["bulk_formats"])
        return next((f for f in offered if f in taken), JSON_LINES)

    def _carry_deletes(self, state: BackfillCheckpoint) -> None:
        """Send the source's deletes as delete events through the target's apply path.

        An export holds only live rows, so a row deleted on the source while no change events
        were recorded (the phase rolled back to `monolith`, say) would stay on the target.
        The apply path's versions make this safe under live writes: a delete at or below the
        version the target holds is a duplicate."""
        batch = min(self._chunk, 1000)
        while True:
            stones = self._with_retries(
                functools.partial(self._source.tombstones, state.tombstones_after, batch)
            )
            if not stones:
                return
            events = [
                ChangeEvent(entity=self._source.entity, key=key, version=version, op="delete")
                for key, version in stones
            ]
            outcomes = self._with_retries(functools.partial(self._target.apply, events))
            state.deletes += sum(1 for o in outcomes if o.outcome == "applied")
            state.rejected += sum(1 for o in outcomes if o.outcome == "rejected")
            state.tombstones_after = stones[-1][0]
            state.save(self._file)

    def run(self, on_chunk: Callable[[int], None] = lambda n: None) -> BackfillReport:
        """Copy every remaining row; `on_chunk(rows)` is called after each chunk lands."""
        state = BackfillCheckpoint.load(self._file, self._source.base_url, self._target.base_url)
        resumed = state.after if state.after != _START and not state.finished else None
        if state.finished:
            state = BackfillCheckpoint(source=state.source, target=state.target)
        started = time.monotonic()
        fmt = self.chunk_format()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-read") as reader:
            pending = reader.submit(self._export, state.after, fmt)
            while True:
                chunk, rows, last_key = pending.result()
                if rows == 0 or last_key is None:
                    break
                pending = reader.submit(self._export, last_key, fmt)
                if not self._dry_run:
                    result = self._import(chunk, fmt)
                    state.applied += result.applied
                    state.duplicates += result.duplicates
                    state.rejected += result.rejected
                state.after = last_key
                state.rows += rows
                if not self._dry_run:
                    state.save(self._file)
                on_chunk(rows)
                # httpx requests and responses sit in reference cycles, so a chunk's bytes
                # (held by both) would wait for a full cyclic collection: memory would grow
                # with the table instead of staying at two chunks. The young generations
                # hold them and are cheap to collect.
                del chunk
                gc.collect(1)
        if not self._dry_run:
            self._carry_deletes(state)
        state.finished = True
        if not self._dry_run:
            state.save(self._file)
        return BackfillReport(
            rows=state.rows,
            applied=state.applied,
            duplicates=state.duplicates,
            rejected=state.rejected,
            deletes=state.deletes,
            seconds=time.monotonic() - started,
            resumed_from=resumed,
        )
