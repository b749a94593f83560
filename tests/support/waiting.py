"""Waiting for a condition in a test: poll it until it holds or a deadline passes, and say what
was waited for when it never came. Not a fixed sleep, which is too short on a loaded machine
and wasted time on a quiet one.

The one place for waiting in tests:

- `wait_until(condition, what)` polls a predicate that returns a bool;
- `eventually(check, what)` polls a check that *asserts* (so the poll waits for exactly what is
  asserted) and returns what the check returned;
- `eventually_async(check, what)` is the same for a check that must be awaited (in-process
  asyncio tests, where a blocking sleep would stall the loop under test).

A check may fail with AssertionError or with the ValueError, KeyError or IndexError that
unpacking a not-yet-complete result raises (`(span,) = [...]`); any other exception is a bug
and is raised at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

NOT_YET = (AssertionError, ValueError, KeyError, IndexError)
"""What a check raises while the thing it waits for has not happened yet."""


def wait_until(
    condition: Callable[[], bool], what: str, *, timeout: float = 30, interval: float = 0.05
) -> None:
    """Return as soon as `condition()` is true; fail after `timeout` seconds naming `what`
    (written to complete "waited N s for ...")."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; it did not happen")
        time.sleep(interval)


def eventually(
    check: Callable[[], T], what: str, *, timeout: float = 30, interval: float = 0.05
) -> T:
    """Call `check()` until it stops failing and return its result; after `timeout` seconds
    raise an AssertionError saying "waited N s for `what`" with the last failure's message
    (and the failure chained as its cause)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except NOT_YET as failure:
            if time.monotonic() > deadline:
                raise _gave_up(what, timeout, failure) from failure
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T]], what: str, *, timeout: float = 30, interval: float = 0.05
) -> T:
    """`eventually` for a check that is awaited; sleeps with asyncio so the loop goes on."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except NOT_YET as failure:
            if time.monotonic() > deadline:
                raise _gave_up(what, timeout, failure) from failure
        await asyncio.sleep(interval)


def _gave_up(what: str, timeout: float, failure: BaseException) -> AssertionError:
    last = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
    return AssertionError(f"waited {timeout:g} s for {what}; last failure: {last}")
