"""Waiting for a condition in the dashboard's in-process tests, the way tests/support waits
for a process: ask again and again until the deadline, never sleep a fixed time.

`until` returns what the condition found, so the test asserts on exactly what it waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    what: str,
    found: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 15.0,
    every: float = 0.05,
) -> T:
    """Await `found()` until it returns something other than None; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while (result := await found()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what} within {timeout:g} s")
        await asyncio.sleep(every)
    return result
