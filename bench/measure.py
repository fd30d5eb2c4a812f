"""What every benchmark needs: one core, resident memory, timing, the closing JSON line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Callable, Iterator

from enforcer.heap import give_back
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


def status_kib(pid: int | str, field: str) -> int:
    """A figure of a process's /proc status (VmRSS, VmHWM, RssAnon, RssFile...), in KiB.
    Raises OSError when the process is gone, RuntimeError without the field."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def rss_mb() -> float:
    return status_kib("self", "VmRSS") / KIB_PER_MIB


def peak_rss_mb() -> float:
    return status_kib("self", "VmHWM") / KIB_PER_MIB


class MainThreadWatch:
    """A thread that looks at the main thread every `every_s` seconds while the context is
    open (`_look`, which subclasses give), as benchmarks that say where memory goes do."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> MainThreadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self._look()

    def _look(self) -> None:
        raise NotImplementedError

    def _main_frame(self) -> FrameType | None:
        return sys._current_frames().get(self._main)


class PeakWhere(MainThreadWatch):
    """Where this process's resident set peaks: a thread reads VmRSS every `every_s` seconds
    and, at each new most, takes the main thread's stack. `at` is that stack's frames in the
    project (not numpy's or the interpreter's), outermost first, as `file:line function`;
    `most_mb` the most seen (VmHWM may be a little higher: it is not sampled)."""

    def __init__(self, every_s: float = 0.05) -> None:
        super().__init__(every_s)
        self.most_mb, self.at = 0.0, []

    def _look(self) -> None:
        now = rss_mb()
        if now > self.most_mb:
            # No frame held across the wait: a frame keeps its function's locals (the
            # arrays whose peak this measures) alive after the function returns.
            self.most_mb, self.at = now, _project_frames(self._main_frame())


def _project_frames(frame: FrameType | None) -> list[str]:
    frames = []
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(PROJECT_ROOT) and "/.venv/" not in path:
            frames.append(f"{Path(path).name}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return frames[::-1]


def give_back_heap() -> None:
    """Return the heap's free pages to the kernel (glibc malloc_trim(3)): arrays under
    malloc's mmap threshold that a benchmark freed stay resident in its heap otherwise, and
    would be counted in what it measures next."""
    give_back()


def reset_peak_rss() -> None:
    """Start this process's peak resident set (VmHWM) again from its resident set now
    (Linux's /proc/self/clear_refs, proc(5))."""
    Path("/proc/self/clear_refs").write_text("5")


def process_rss_kib(pid: int | None) -> int:
    """Another process's resident set now (Linux /proc); 0 without one."""
    return status_kib(pid, "VmRSS") if pid is not None else 0


def process_peak_kib(pid: int | None) -> int:
    """Another process's largest resident set so far; 0 without one."""
    return status_kib(pid, "VmHWM") if pid is not None else 0


def cpu_seconds(pid: int | None) -> float:
    """User and system CPU seconds of a process so far, all its threads (Linux /proc); 0
    without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime, fields 14 and 15 of proc(5), the 12th and 13th after the name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, timeout_s: float, every_s: float) -> float:
    """Seconds until the process on `port` answers /readyz with 200, asked every `every_s`.
    Raises TimeoutError after `timeout_s`."""
    from tests.harness.faults import HTTP_OK, ready

    started = time.monotonic()
    while ready(port) != HTTP_OK:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not ready after {timeout_s:g} s")
        time.sleep(every_s)
    return time.monotonic() - started


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


def run_stage(script: str, stage: str, *arguments: str) -> dict:
    """A benchmark's stage in a fresh process of this interpreter (`script --stage stage
    ...`), so that its memory is its own: the figures of its last line (JSON). Raises
    CalledProcessError, with the stage's output, when it fails."""
    # This very script, run by this interpreter: no outside input reaches the command.
    done = subprocess.run([sys.executable, script, "--stage", stage, *arguments],  # noqa: S603
                          capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        done.check_returncode()
    return json.loads(done.stdout.strip().splitlines()[-1])


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
