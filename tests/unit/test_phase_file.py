"""PhaseFile: what the monolith and the service each call on every write to follow the phase."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from strangler import phases
from strangler.phases import Phase, PhaseFile


def _write(path: Path, phase: str, pad: str = "") -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(f'[capabilities.products]\nphase = "{phase}"\n{pad}')
    os.replace(scratch, path)


def test_a_thread_never_reads_the_old_phase_once_another_saw_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monolith's request threads share one PhaseFile. Planted: one thread is paused
    while it parses the new file; a second thread asking meanwhile must get the new phase,
    not the old one (it did, when the file was marked seen before it was parsed, and an
    order went to a service that already refused it)."""
    path = tmp_path / "routing.toml"
    _write(path, "writes_cutover")
    phase_file = PhaseFile(path, "products")
    assert phase_file.current() is Phase.WRITES_CUTOVER
    _write(path, "reads_cutover")

    parsing = threading.Event()
    resume = threading.Event()
    real_loads = phases.tomllib.loads

    def slow_in_the_first_thread(text: str) -> dict[str, object]:
        if threading.current_thread().name == "first":
            parsing.set()
            assert resume.wait(10)
        return real_loads(text)

    monkeypatch.setattr(phases.tomllib, "loads", slow_in_the_first_thread)
    seen: list[Phase] = []
    first = threading.Thread(target=lambda: seen.append(phase_file.current()), name="first")
    first.start()
    assert parsing.wait(10)
    assert phase_file.current() is Phase.READS_CUTOVER
    resume.set()
    first.join(10)
    assert seen == [Phase.READS_CUTOVER]


def test_reread_sees_an_edit_that_kept_mtime_and_size(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    _write(path, "writes_cutover")
    phase_file = PhaseFile(path, "products")
    assert phase_file.current() is Phase.WRITES_CUTOVER
    before = path.stat()
    _write(path, "reads_cutover", pad="#")  # one byte of comment: the same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert phase_file.current() is Phase.WRITES_CUTOVER  # the planted blind spot
    assert phase_file.reread() is Phase.READS_CUTOVER
