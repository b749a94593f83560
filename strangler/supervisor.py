"""Runs the system's processes as children: prefixed, coloured logs, readiness, clean stops.

`strangler up` hands it the processes to start; it waits for each to answer its readiness URL,
and stops every child (SIGINT, then SIGKILL after a grace period: `stop_all`) on Ctrl-C, on
SIGTERM, or as soon as one of them dies, saying which one and with what exit code. A stop that
was asked for (Ctrl-C, SIGTERM) is not a failure: `strangler up` exits 0 after it.

The children run in sessions of their own: a Ctrl-C in the terminal reaches the supervisor
only, which passes the stop on to each child once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.markup import escape

__all__ = ["ChildDied", "ChildSpec", "StopRequested", "Supervisor", "die_with_parent"]

_COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red"]


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    ready_url: str | None
    env: Mapping[str, str] = field(default_factory=dict)


def die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the supervisor dies, so a
    `strangler up` killed with SIGKILL leaves no orphaned servers holding the ports."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class ChildDied(Exception):
    def __init__(self, name: str, code: int) -> None:
        super().__init__(f"{name} exited with code {code}")
        self.name = name
        self.code = code


class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM asked the supervisor to stop. A KeyboardInterrupt, so the code that
    stops everything on Ctrl-C stops it alike on SIGTERM (a service manager, `kill`, dev.py
    passing its own stop on)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stop requested by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[str]
    colour: str
    serving: bool = False  # it answered its readiness URL


class Supervisor:
    def __init__(self, console: Console, *, grace_seconds: float = 10) -> None:
        self._console = console
        self._grace = grace_seconds
        self._children: list[_Child] = []
        self._pumps: list[threading.Thread] = []
        self._stop_signal: int | None = None

    def stop_on_signals(self) -> None:
        """From now on SIGINT and SIGTERM ask for a stop: `wait_ready` and `watch` raise
        StopRequested at their next check. The handler only records the signal, so another
        one (Ctrl-C pressed again, a signal to the process group that dev.py passes on too)
        cannot cut `stop_all` short; its grace period bounds how long a stop takes. Main
        thread only."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._record_stop)

    def _record_stop(self, signum: int, frame: object) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def _check_stop(self) -> None:
        if self._stop_signal is not None:
            raise StopRequested(self._stop_signal)

    def _pump(self, child: _Child) -> None:
        assert child.process.stdout is not None
        width = max(len(c.spec.name) for c in self._children) if self._children else 8
        for line in child.process.stdout:
            tag = f"[{child.colour}]{child.spec.name:<{width}} |[/]"
            self._console.print(f"{tag} {escape(line.rstrip())}", highlight=False, soft_wrap=True)

    def start(self, spec: ChildSpec) -> None:
        process = subprocess.Popen(
            list(spec.argv),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
            preexec_fn=die_with_parent,
        )
        child = _Child(spec, process, _COLOURS[len(self._children) % len(_COLOURS)])
        self._children.append(child)
        pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        pump.start()
        self._pumps.append(pump)

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until every child answers its readiness URL; raise ChildDied if one exits,
        StopRequested if a stop was asked for."""
        deadline = time.monotonic() + timeout
        pending = [c for c in self._children if c.spec.ready_url is not None]
        while pending:
            self._check_stop()
            self.check_alive()
            for child in list(pending):
                try:
                    if httpx.get(str(child.spec.ready_url), timeout=1).status_code == 200:
                        child.serving = True
                        pending.remove(child)
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                names = ", ".join(c.spec.name for c in pending)
                raise TimeoutError(f"not ready after {timeout:.0f} s: {names}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        for child in self._children:
            code = child.process.poll()
            if code is not None:
                raise ChildDied(child.spec.name, code)

    def watch(self) -> None:
        """Block until a child dies (raises ChildDied) or a stop is asked for: Ctrl-C or,
        after `stop_on_signals`, SIGTERM (raises StopRequested, a KeyboardInterrupt)."""
        while True:
            self._check_stop()
            self.check_alive()
            time.sleep(0.3)

    def stop_all(self) -> None:
        """Stop the children, the last started first: SIGINT, then SIGKILL to whichever is
        still running when the grace period ends. Returns once all have exited and their last
        lines (their shutdown logs) are printed.

        A child not known to be serving (still starting, or without a readiness URL: the
        relay) gets SIGTERM instead: SIGINT would interrupt a Python process still importing
        its modules with a KeyboardInterrupt traceback, while SIGTERM ends it silently, and
        every child here takes it, once set up, as the same graceful stop."""
        for child in reversed(self._children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT if child.serving else signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for child in reversed(self._children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        for pump in self._pumps:  # a child's output ends when it exits (or its own children do)
            pump.join(timeout=1)
