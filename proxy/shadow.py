"""Shadow reads: mirror a sampled read to the other side after the client has its answer,
compare the two, and keep counts and a bounded sample of mismatches.

The work is bounded: a fixed-size queue that drops (and counts) when full, a fixed number of
workers, and a client of its own per upstream, so timed-out or cancelled shadow requests can
never starve the primary connection pool. Nothing here can delay or fail a client's response.

A mismatch is asked again once, `recheck_seconds` later, before it counts: a product created
a moment ago is found on the side that took the write and not yet on the other (the relay
lags by tens of milliseconds), and that is lag, not a disagreement. If the shadow side then
agrees with the first answer (or is further ahead), the read counts as stale; if it still
disagrees, it counts as a mismatch with the later diff. Rechecks wait as timers, not in the
workers, and at most `queue_size` of them at once; beyond that a mismatch counts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import httpx

from proxy.compare import Comparison, compare_responses
from proxy.metrics import ProxyMetrics
from proxy.upstream_client import UpstreamPool

__all__ = ["ShadowJob", "ShadowRecorder", "ShadowStats"]

log = logging.getLogger("strangler.proxy.shadow")


@dataclass(frozen=True)
class ShadowJob:
    capability: str
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    primary_side: str
    primary_status: int
    primary_body: bytes
    shadow_side: str
    shadow_pool: UpstreamPool
    timeout: float
    ignore_fields: Collection[str]
    version_field: str | None = None


@dataclass(frozen=True)
class _ShadowAnswer:
    status_code: int
    content: bytes


@dataclass
class ShadowStats:
    compared: int = 0
    matched: int = 0
    mismatched: int = 0
    errors: int = 0
    dropped: int = 0
    skipped: int = 0
    stale: int = 0
    samples: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=50))

    def snapshot(self) -> dict[str, object]:
        rate = self.mismatched / self.compared if self.compared else 0.0
        return {
            "compared": self.compared,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "mismatch_rate": round(rate, 6),
            "errors": self.errors,
            "dropped": self.dropped,
            "skipped_too_large": self.skipped,
            "stale": self.stale,
        }


class ShadowRecorder:
    """Owns the shadow queue, its workers and the per-capability results."""

    def __init__(
        self,
        metrics: ProxyMetrics,
        *,
        queue_size: int,
        workers: int,
        samples: int,
        recheck_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._recheck_seconds = recheck_seconds
        self._rechecks: set[asyncio.Task[None]] = set()
        self._recheck_limit = queue_size
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=queue_size)
        self._worker_count = workers
        self._samples = samples
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self.stats: dict[str, ShadowStats] = {}

    def _stats(self, capability: str) -> ShadowStats:
        stats = self.stats.get(capability)
        if stats is None:
            stats = ShadowStats(samples=deque(maxlen=self._samples))
            self.stats[capability] = stats
        return stats

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._worker_count)]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._rechecks]:
            task.cancel()
        for task in [*self._tasks, *self._rechecks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._rechecks = set()

    def submit(self, job: ShadowJob) -> None:
        """Queue a comparison; when the queue is full, drop it and count the drop."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._stats(job.capability).dropped += 1
            self._metrics.shadow_dropped.labels(job.capability).inc()

    def skip_too_large(self, capability: str) -> None:
        self._stats(capability).skipped += 1
        self._metrics.shadow.labels(capability, "skipped").inc()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            except Exception:  # a worker must survive any single job
                log.exception("shadow comparison failed")
            finally:
                self._queue.task_done()

    async def _fetch(self, job: ShadowJob) -> _ShadowAnswer | None:
        try:
            async with asyncio.timeout(job.timeout):
                answer = await job.shadow_pool.request(job.method, job.target, job.headers, None)
                try:
                    return _ShadowAnswer(answer.status_code, await answer.aread())
                finally:
                    await answer.aclose()
        except (httpx.HTTPError, TimeoutError) as exc:
            self._stats(job.capability).errors += 1
            self._metrics.shadow.labels(job.capability, "error").inc()
            log.info("shadow %s %s failed: %r", job.method, job.target, exc)
            return None

    def _compare(self, job: ShadowJob, response: _ShadowAnswer) -> Comparison:
        return compare_responses(
            job.primary_status,
            job.primary_body,
            response.status_code,
            response.content,
            job.ignore_fields,
            labels=(job.primary_side, job.shadow_side),
            version_field=job.version_field,
        )

    async def _run(self, job: ShadowJob) -> None:
        response = await self._fetch(job)
        if response is None:
            return
        result = self._compare(job, response)
        if not result.matched and not result.stale and self._recheck_seconds > 0:
            if len(self._rechecks) < self._recheck_limit:
                task = asyncio.create_task(self._recheck(job))
                self._rechecks.add(task)
                task.add_done_callback(self._rechecks.discard)
                return
        self._count(job, response, result)

    async def _recheck(self, job: ShadowJob) -> None:
        await asyncio.sleep(self._recheck_seconds)
        try:
            response = await self._fetch(job)
            if response is None:
                return
            result = self._compare(job, response)
            if result.matched:  # the other side caught up with the first answer: lag
                result = Comparison(matched=False, diff="", stale=True)
            self._count(job, response, result)
        except Exception:
            log.exception("shadow recheck failed")

    def _count(self, job: ShadowJob, response: _ShadowAnswer, result: Comparison) -> None:
        stats = self._stats(job.capability)
        if result.stale:
            stats.stale += 1
            self._metrics.shadow.labels(job.capability, "stale").inc()
            return
        stats.compared += 1
        if result.matched:
            stats.matched += 1
            self._metrics.shadow.labels(job.capability, "match").inc()
            return
        stats.mismatched += 1
        self._metrics.shadow.labels(job.capability, "mismatch").inc()
        stats.samples.append(
            {
                "at": self._clock(),
                "request": f"{job.method} {job.target.decode('latin-1')}",
                "primary": {
                    "side": job.primary_side,
                    "status": job.primary_status,
                    "body": job.primary_body.decode("utf-8", errors="replace"),
                },
                "shadow": {
                    "side": job.shadow_side,
                    "status": response.status_code,
                    "body": response.content.decode("utf-8", errors="replace"),
                },
                "diff": result.diff,
            }
        )
