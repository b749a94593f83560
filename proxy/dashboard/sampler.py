"""The timer that fills the dashboard's history (proxy.dashboard.history).

It reads every `interval` seconds, in the proxy's event loop and off the request path: the
counters the proxy already keeps and each side's outbox lag. It runs only while someone
watches: the first look starts it (taking a sample at once, so that look has figures), and it
stops by itself once nobody has looked for `idle` seconds (the charts' window: by then all it
drew has aged out of the charts anyway). The ring outlives the timer, so a reload finds the
history, and the next look after a quiet spell has a figure (the average since the last
sample). An unwatched proxy does no dashboard work at all, as before the trends: a background
tab that stopped polling costs nothing once `idle` is over.

Started by a look rather than by the proxy's lifespan, it needs no hook in the composition
root, and the proxy's shutdown cancels it with the event loop's other tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from proxy.dashboard.history import INTERVAL_SECONDS, WINDOW_SECONDS, History, Sample

__all__ = ["Sampler"]

log = logging.getLogger("strangler.proxy")

Take = Callable[[], Awaitable[Mapping[str, Sample]]]
"""Reads every configured capability once (its counters and relay lag)."""


class Sampler:
    """Adds what `take` reads to `history` every `interval` seconds while watched.

    `clock` is the one `idle` is measured on (tests move a fake one); the timer itself sleeps
    on the event loop.
    """

    def __init__(
        self,
        take: Take,
        history: History,
        *,
        interval: float = INTERVAL_SECONDS,
        idle: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._history = history
        self._interval = interval
        self._idle = idle
        self._clock = clock
        self._last_look = clock()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def watched(self) -> None:
        """Someone looks: keep sampling. After a quiet spell (or at the first look) one sample
        is taken before this returns, so what they see has current figures."""
        self._last_look = self._clock()
        if not self.running:
            await self._sample()
            # A context of its own: the timer outlives the look that started it, and its
            # log lines and lag calls must not carry that request's id or trace.
            self._task = asyncio.create_task(
                self._run(), name="dashboard sampler", context=contextvars.Context()
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._clock() - self._last_look > self._idle:
                return
            await self._sample()

    async def _sample(self) -> None:
        try:
            self._history.add(await self._take())
        except Exception:  # the next tick tries again; the page shows the last good sample
            log.exception("dashboard: taking a sample failed")
