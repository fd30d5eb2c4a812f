"""The snapshot reconcile job: national snapshots delivered to the drop directory are
imported, saved as the next generation and swapped into this worker; a generation another
worker (or `eir-enforcer registry import`) saved is adopted.

Crash-safe by order: the snapshot is saved (atomic rename) before the file moves to done/, so
a crash in between imports the file again at the next run, which changes nothing.

A file that cannot be read to its end (truncated or corrupt gzip, no permission, gone since
it was listed) is refused like any other failing delivery, so the deliveries after it are
still taken: one bad file must not hold back the drop directory for ever.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from contextlib import suppress
from typing import Callable
from pathlib import Path

import msgspec

from enforcer.heap import give_back
from enforcer.clock import MS_PER_S, Clock
from enforcer.config import Config
from enforcer.files.importing import Kind, import_file
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import load_snapshot, save_snapshot, snapshot_generation

log = logging.getLogger("eir.reconcile")

DONE = "done"
REFUSED = "refused"
SUFFIXES = (".csv", ".csv.gz")


def kind_of(path: Path) -> Kind | None:
    """The kind a delivery's name begins with (`-` read as `_`), the longest that fits:
    `tac_blocked-…` (or `tac-blocked-…`) is a list of blocked TACs, not a TAC database."""
    if not path.name.endswith(SUFFIXES):
        return None
    name = path.name.replace("-", "_")
    return max((kind for kind in Kind if name.startswith(kind.value)),
               key=lambda kind: len(kind.value), default=None)


def delivered(drop: Path, now_ms: int, settle_s: float) -> list[Path]:
    """Files ready to take, in name order (deliveries are named by date)."""
    if not drop.is_dir():
        return []
    ready = []
    for path in sorted(drop.iterdir()):
        if path.name.startswith(".") or path.name.endswith(".partial"):
            continue
        try:
            status = path.stat()
        except FileNotFoundError:  # taken away since listed: nothing to take
            continue
        if not stat.S_ISREG(status.st_mode) or now_ms / MS_PER_S - status.st_mtime < settle_s:
            continue
        ready.append(path)
    return ready


def _set_aside(path: Path, folder: str, report: dict[str, object] | None = None) -> None:
    target = path.parent / folder
    target.mkdir(exist_ok=True)
    if report is not None:
        (target / f"{path.name}.report.json").write_bytes(msgspec.json.encode(report))
    with suppress(FileNotFoundError):  # gone since it was listed: its report says so
        os.replace(path, target / path.name)


def adopt_newer(holder: StateHolder, directory: Path,
                reloaded: Callable[[float], None]) -> tuple[int, int]:
    """A generation on disk newer than the holder's (another worker's import or fold) swapped
    in; (1 if one was, how many of the registry's changes in memory no longer apply)."""
    on_disk = snapshot_generation(directory)
    if on_disk is None or on_disk <= holder.current.generation:
        return 0, 0
    began = time.perf_counter()
    stale = holder.swap(load_snapshot(directory, holder.current.policy))
    give_back()  # the load's transients and the generation before
    reloaded(time.perf_counter() - began)
    log.info("snapshot adopted", extra={"generation": on_disk})
    return 1, stale


def reconcile(holder: StateHolder, config: Config, clock: Clock,
              reloaded: Callable[[float], None] = lambda seconds: None) -> dict[str, int]:
    """`reloaded` is told how long each load or import took, swap included."""
    directory = Path(config.state.dir)
    adopted, stale = adopt_newer(holder, directory, reloaded)
    counts = {"adopted": adopted, "imported": 0, "refused": 0, "stale_events": stale}
    drop = Path(config.jobs.drop_dir)
    for path in delivered(drop, clock.now_ms(), config.jobs.drop_settle_s):
        kind = kind_of(path)
        if kind is None:
            counts["refused"] += 1
            _set_aside(path, REFUSED, {"refused": "not a white*, black*, owners*, tac* or "
                                                  "tac_blocked* .csv or .csv.gz file"})
            log.warning("snapshot refused", extra={"delivery": path.name, "why": "name"})
            continue
        began = time.perf_counter()
        new, report = import_file(holder.current, kind, path, config)
        if new is None:
            counts["refused"] += 1
            _set_aside(path, REFUSED, report.as_json())
            log.warning("snapshot refused",
                        extra={"delivery": path.name, "why": report.refused})
            continue
        save_snapshot(new, directory)
        counts["stale_events"] += holder.swap(new)
        give_back()  # the import's transients and the generation before
        reloaded(time.perf_counter() - began)
        counts["imported"] += 1
        _set_aside(path, DONE, report.as_json())
        log.info("snapshot imported",
                 extra={"delivery": path.name, "report": report.as_json()})
    return counts
