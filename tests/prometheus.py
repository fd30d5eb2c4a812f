"""Prometheus and promtool for the tests: from PATH, else Debian's `prometheus` package
unpacked (not installed: no root, no service started) into a cache beside the venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CACHE = Path(sys.prefix) / "prometheus"
PACKAGE = "prometheus"


def _unpack() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=scratch, check=True,  # noqa: S603, S607
                       capture_output=True, timeout=300)
        (deb,) = Path(scratch).glob(f"{PACKAGE}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(scratch) / "x")],  # noqa: S603, S607
                       check=True, capture_output=True, timeout=120)
        CACHE.mkdir(parents=True, exist_ok=True)
        for name in ("prometheus", "promtool"):
            shutil.copy2(Path(scratch) / "x" / "usr" / "bin" / name, CACHE / name)


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; the test is skipped, saying why, where
    neither PATH nor Debian's package archive has it."""
    found = shutil.which(name) or (str(CACHE / name) if (CACHE / name).exists() else None)
    if found:
        return found
    try:
        _unpack()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        pytest.skip(f"{name} is not on PATH and Debian's '{PACKAGE}' package could not be "
                    f"fetched with apt-get download ({type(exc).__name__}); install it to run "
                    "this test")
    return str(CACHE / name)
