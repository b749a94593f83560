"""Waiting for a condition in a test: poll it until it holds or a deadline passes, and say what
was waited for when it never came. Not a fixed sleep, which is too short on a loaded machine
and wasted time on a quiet one."""

from __future__ import annotations

import time
from collections.abc import Callable


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
