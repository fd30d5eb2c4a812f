"""What every benchmark needs: one core, resident memory, timing, the closing JSON line."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from enforcer.embedded.services import EmbeddedServices, ServicePorts, free_port

# The harnesses the benchmarks share with the tests (tests/harness/) are imported from the
# project's root, which a script run as `python bench/x.py` does not have on its path.
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
if PROJECT_ROOT not in sys.path:
    sys.path.insert(1, PROJECT_ROOT)  # before site-packages, where a stray `tests` may lie

KIB_PER_MIB = 1024


def pin_to_one_core() -> int:
    """Run on a single core, as the figures claim; returns the core."""
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb() -> float:
    return _status_kib("VmRSS") / KIB_PER_MIB


def peak_rss_mb() -> float:
    return _status_kib("VmHWM") / KIB_PER_MIB


def best_of(runs: int, work: Callable[[], object]) -> tuple[float, object]:
    """Fastest wall time of `runs` runs, and the last run's result."""
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def counter(worker, name: str) -> float:
    """A metric of an in-process worker, summed over its labels."""
    return sum(s.value for f in worker.metrics.collectors.collect() for s in f.samples
               if s.name == name)


def say(text: str) -> None:
    print(text, flush=True)


def emit(figures: dict[str, object]) -> None:
    """The last line of every benchmark: its figures as one JSON object."""
    print(json.dumps(figures), flush=True)


@contextmanager
def embedded_services(prefix: str) -> Iterator[tuple[EmbeddedServices, Path]]:
    """A broker and a PostgreSQL of the benchmark's own, in a scratch directory removed
    afterwards: (the services, the directory)."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    services = EmbeddedServices.at(scratch / "services", ServicePorts(free_port(), free_port()),
                                   "eir")
    try:
        services.up()
        yield services, scratch
    finally:
        services.down()
        shutil.rmtree(scratch, ignore_errors=True)
