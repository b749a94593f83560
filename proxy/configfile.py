"""routing.toml on disk: noticing hand edits, writing admin changes, keeping the audit log.

Admin changes edit the document with tomlkit, so the comments and layout a person wrote
survive, validate the result exactly as a hand edit would be validated, and replace the file
atomically (temporary file, fsync, rename): a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import stat
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
    config_version: int | None = None
    gates: str | None = None  # a gated step's: "passed" or "forced"


class RoutingFile:
    """The routing file, its audit log, and the config version it last reached.

    The version is kept beside the file (`<name>.version`), so a restarted proxy numbers its
    first config after the last one it applied: the version shown by `strangler proxy status`
    and written into the audit log never goes backwards while the audit log goes on.
    """

    def __init__(self, path: Path, audit_log: Path) -> None:
        self.path = path
        self.audit_log = audit_log
        self.version_path = path.with_name(path.name + ".version")

    def last_version(self) -> int:
        """The version the last run applied; 0 when none was recorded (or it is unreadable,
        which only restarts the count: nothing else depends on the number)."""
        try:
            return max(0, int(self.version_path.read_text().strip()))
        except (OSError, ValueError):
            return 0

    def record_version(self, version: int) -> None:
        _replace_atomically(self.version_path, f"{version}\n")

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
        _replace_atomically(self.path, text)

    def audit(self, entry: AuditEntry) -> None:
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        record: dict[str, object] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": entry.who,
            "what": entry.what,
            "capability": entry.capability,
            "old": entry.old,
            "new": entry.new,
        }
        if entry.reason:
            record["reason"] = entry.reason
        if entry.gates is not None:
            record["gates"] = entry.gates
        if entry.config_version is not None:
            record["config_version"] = entry.config_version
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


def _replace_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it over `path`: a
    reader sees the old file or the new one, never half of one."""
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file 0600: the apps that read the phase from it (under their own
        # users, in a real deployment) would lose it at the first change. Keep the mode.
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def _audit_entry(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except ValueError:  # also a line cut inside a UTF-8 sequence
        return None
    return entry if isinstance(entry, dict) else None
