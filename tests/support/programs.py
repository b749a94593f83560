"""Programs from Debian's packages that some tests need (nginx, wrk, chromium).

`.ci/run` installs them. On a machine without one, its tests skip and say which package to
install; with CI=true a missing one fails the run, so CI cannot pass without running them.
"""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {
    "nginx": "nginx-light",
    "wrk": "wrk",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}


def require_programs(*programs: str) -> None:
    missing = [program for program in programs if shutil.which(program) is None]
    if not missing:
        return
    install = " ".join(PACKAGES.get(p, p) for p in missing)
    reason = f"{', '.join(missing)} not installed (apt-get install {install})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: these tests must run", pytrace=False)
    pytest.skip(reason)
