"""Runs the system's processes as children: prefixed, coloured logs, readiness, clean stops.

`strangler up` hands it the processes to start; it waits for each to answer its readiness URL,
and stops every child (SIGINT, then SIGKILL after a grace period) on Ctrl-C or as soon as one
of them dies, saying which one and with what exit code.
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

__all__ = ["ChildDied", "ChildSpec", "Supervisor", "die_with_parent"]

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


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[str]
    colour: str


class Supervisor:
    def __init__(self, console: Console, *, grace_seconds: float = 10) -> None:
        self._console = console
        self._grace = grace_seconds
        self._children: list[_Child] = []

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
        threading.Thread(target=self._pump, args=(child,), daemon=True).start()

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until every child answers its readiness URL; raise ChildDied if one exits."""
        deadline = time.monotonic() + timeout
        pending = [c for c in self._children if c.spec.ready_url is not None]
        while pending:
            self.check_alive()
            for child in list(pending):
                try:
                    if httpx.get(str(child.spec.ready_url), timeout=1).status_code == 200:
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
        """Block until a child dies (raises ChildDied) or Ctrl-C (KeyboardInterrupt)."""
        while True:
            self.check_alive()
            time.sleep(0.3)

    def stop_all(self) -> None:
        for child in reversed(self._children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self._grace
        for child in reversed(self._children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
