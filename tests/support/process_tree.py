"""The processes running under a given one, read from Linux's /proc, for the tests that check
a stop left nothing behind. Read from each process's stat file (its parent, state and start
time), which every Linux has; /proc/PID/task/TID/children needs a kernel option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessId:
    """One process: its pid and its start time (clock ticks after boot), so a pid the kernel
    has handed to a new process is not taken for the one that exited."""

    pid: int
    started: int

    def is_running(self) -> bool:
        """Still there and not a zombie (which has exited and only waits to be reaped)."""
        now = _stat(self.pid)
        return now is not None and now.started == self.started and now.state != "Z"


@dataclass(frozen=True)
class _Stat:
    pid: int
    parent: int
    state: str
    started: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "PID (COMMAND) STATE PPID ...": the command may hold spaces and parentheses
    fields = text[text.rindex(")") + 2 :].split()
    return _Stat(pid=pid, parent=int(fields[1]), state=fields[0], started=int(fields[19]))


def descendants(pid: int) -> list[ProcessId]:
    """Every process below `pid` (children, their children, ...) running now, parents first."""
    by_parent: dict[int, list[_Stat]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            by_parent.setdefault(stat.parent, []).append(stat)
    found: list[ProcessId] = []
    parents = [pid]
    while parents:
        below = [s for parent in parents for s in by_parent.get(parent, []) if s.state != "Z"]
        found.extend(ProcessId(s.pid, s.started) for s in below)
        parents = [s.pid for s in below]
    return found
