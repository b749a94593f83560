"""routing.toml on disk: noticing hand edits, writing admin changes, keeping the audit log.

Admin changes edit the document with tomlkit, so the comments and layout a person wrote
survive, validate the result exactly as a hand edit would be validated, and replace the file
atomically (temporary file, fsync, rename): a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from proxy.config import RoutingConfig, parse_config

__all__ = ["AuditEntry", "RoutingFile"]


@dataclass(frozen=True)
class AuditEntry:
    who: str
    what: str
    capability: str
    old: dict[str, Any]
    new: dict[str, Any]
    reason: str | None = None


class RoutingFile:
    def __init__(self, path: Path, audit_log: Path) -> None:
        self.path = path
        self.audit_log = audit_log

    def signature(self) -> tuple[int, int, int] | None:
        """What changes when the file does (inode, size, mtime); None when it is missing."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def read(self) -> str:
        return self.path.read_text()

    def render_change(self, capability: str, changes: dict[str, Any]) -> tuple[str, RoutingConfig]:
        """The file's text with `changes` applied to one capability, and its parsed config.

        Raises ConfigError, exactly as a hand edit with the same content would.
        """
        document = tomlkit.parse(self.read())
        table = document["capabilities"][capability]
        for key, value in changes.items():
            table[key] = value
        text = tomlkit.dumps(document)
        return text, parse_config(text, str(self.path))

    def write(self, text: str) -> None:
        directory = self.path.parent
        fd, scratch = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(scratch, self.path)
        except BaseException:
            Path(scratch).unlink(missing_ok=True)
            raise

    def audit(self, entry: AuditEntry) -> None:
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": entry.who,
            "what": entry.what,
            "capability": entry.capability,
            "old": entry.old,
            "new": entry.new,
        }
        if entry.reason:
            record["reason"] = entry.reason
        with self.audit_log.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` entries, oldest first, read from the end of the log (which only
        grows): enough blocks for `limit` whole lines, not the whole file. A line that does not
        parse (half written by an append in progress, or damaged) is skipped, not fatal."""
        if limit <= 0:
            return []
        try:
            handle = self.audit_log.open("rb")
        except FileNotFoundError:
            return []
        with handle:
            start = handle.seek(0, os.SEEK_END)
            tail = b""
            # limit + 1 line ends: the last line may be unfinished, the first one cut.
            while start > 0 and tail.count(b"\n") <= limit:
                size = min(_TAIL_BLOCK, start)
                start -= size
                handle.seek(start)
                tail = handle.read(size) + tail
        lines = tail.split(b"\n")
        if start > 0:
            lines = lines[1:]  # began mid-line
        entries = [entry for entry in map(_audit_entry, lines) if entry is not None]
        return entries[-limit:]


_TAIL_BLOCK = 16 * 1024


def _audit_entry(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except ValueError:  # also a line cut inside a UTF-8 sequence
        return None
    return entry if isinstance(entry, dict) else None
