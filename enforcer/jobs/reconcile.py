"""The snapshot reconcile job: national snapshots delivered to the drop directory are
imported, saved as the next generation and swapped into this worker; a generation another
worker (or `eir-enforcer registry import`) saved is adopted.

A white list or an owners file is imported in a process of its own (`enforcer.jobs.child`),
as `registry import` does it: the snapshot on disk mapped, the next generation's registry
written into the files it is saved as. A national white list's import then takes its memory
(3.2 GB at 300 M IMEIs, docs/benchmarks.md) and its two minutes of numpy beside the worker,
not in it; the worker adopts the generation saved. A black list or a TAC file is imported in
the worker: its next generation shares the registry the worker holds. A delivery and a fold
racing for the same generation: one saves, the other's job fails with SnapshotConflict and
its retry starts from the winner.

Crash-safe by order: the snapshot is saved (atomic rename) before the file moves to done/, so
a crash in between imports the file again at the next run, which changes nothing.

A file that cannot be read to its end (truncated or corrupt gzip, no permission, gone since
it was listed) is refused like any other failing delivery, so the deliveries after it are
still taken: one bad file must not hold back the drop directory for ever. Nor must one whose
import process keeps failing (killed for its memory, say): it fails the job, and stays for
the next attempt, `jobs.import_failures` times in all; then it is refused with why.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
import time
from contextlib import suppress
from typing import Callable, Sequence
from pathlib import Path

import msgspec

from enforcer.heap import give_back
from enforcer.clock import MS_PER_S, Clock
from enforcer.config import Config
from enforcer.files.importing import Kind, import_file
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import (SnapshotDraft, load_snapshot, save_snapshot,
                                      snapshot_generation)
from enforcer.jobs.child import Report, child_main, run_child
from rules.policy import load_policy

log = logging.getLogger("eir.reconcile")

CHILD = "enforcer.jobs.reconcile"
# Imported in a process of their own: a white list's realign of the registry and an owners
# file's rebuild of it take GBs and minutes at national scale. A black list or a TAC file
# is built beside the registry the worker holds, which the next generation shares.
IN_A_PROCESS = frozenset({Kind.WHITE, Kind.OWNERS})
DONE = "done"
REFUSED = "refused"
SUFFIXES = (".csv", ".csv.gz")


class ImportFailed(RuntimeError):
    """A delivery's import process ended without a report: its own log line says why."""


_ADOPTING = threading.Lock()


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
    """A generation on disk newer than the holder's (another worker's import or fold, or this
    worker's import process) swapped in; (1 if one was, how many of the registry's changes
    in memory no longer apply). The generation is mapped (`load_snapshot`): its pages come
    from the page cache as decisions read them, the old one's go back as it is let go of.
    One adoption at a time: the fold and reconcile jobs run on threads of their own, and
    two loads of one generation would do the work twice."""
    with _ADOPTING:
        on_disk = snapshot_generation(directory)
        if on_disk is None or on_disk <= holder.current.generation:
            return 0, 0
        began = time.perf_counter()
        new = load_snapshot(directory, holder.current.policy)
        loaded = time.perf_counter()
        rebased = holder.rebased(new)
        laid = time.perf_counter()
        put = holder.put(rebased)
        swapped = time.perf_counter()
        changes_laid = len(rebased.overlay.events)
        del new, rebased  # `rebased.base`, the generation before: gone before the trim
        give_back()  # the load's transients and the generation before
        reloaded(time.perf_counter() - began)
    # Where an adoption's time goes: the load, the registry's changes laid over the new
    # generation (the registry thread goes on meanwhile), and the swap, under the lock the
    # registry thread waits for (all the changes again, `whole_rebase`, when another
    # generation or a repair came in meanwhile).
    log.info("snapshot adopted", extra={
        "generation": on_disk, "changes_laid": changes_laid, "stale": put.stale,
        "whole_rebase": put.whole, "load_s": round(loaded - began, 3),
        "lay_s": round(laid - loaded, 3), "swap_s": round(swapped - laid, 3)})
    return 1, put.stale


def reconcile(holder: StateHolder, config: Config, clock: Clock,
              reloaded: Callable[[float], None] = lambda seconds: None) -> dict[str, int]:
    """`reloaded` is told how long each adoption took, or each import with its swap.
    Raises SnapshotConflict when another process saved the generation an import was saving
    (the delivery stays: the job's retry imports it over the winner), ImportFailed when an
    import's process failed otherwise or was killed (for its memory, say) fewer than
    `jobs.import_failures` times for that delivery."""
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
        try:
            report, stale = _import(holder, kind, path, config)
        except ImportFailed as exc:
            failures = _failed_again(path)
            if failures < config.jobs.import_failures:
                raise
            report, stale = {"refused": f"its import's process failed {failures} times, "
                                        f"the last: {exc}"}, 0
        _failures(path).unlink(missing_ok=True)
        if report["refused"] is not None:
            counts["refused"] += 1
            _set_aside(path, REFUSED, report)
            log.warning("snapshot refused",
                        extra={"delivery": path.name, "why": report["refused"]})
            continue
        counts["stale_events"] += stale
        reloaded(time.perf_counter() - began)
        counts["imported"] += 1
        _set_aside(path, DONE, report)
        log.info("snapshot imported", extra={"delivery": path.name, "report": report})
    return counts


def _import(holder: StateHolder, kind: Kind, path: Path,
            config: Config) -> tuple[Report, int]:
    """The delivery imported and swapped in, or refused: (its ImportReport as JSON, the
    registry's changes in memory that no longer apply)."""
    directory = Path(config.state.dir)
    if kind in IN_A_PROCESS:
        report = run_child(CHILD, config, (kind.value, str(path)), ImportFailed)
        if report["refused"] is not None:
            return report, 0
        return report, adopt_newer(holder, directory, lambda seconds: None)[1]
    new, imported = import_file(holder.current, kind, path, config)
    if new is None:
        return imported.as_json(), 0
    save_snapshot(new, directory)
    with _ADOPTING:  # unless a newer one (a fold's) was adopted since it was saved
        stale = holder.swap(new) if new.generation > holder.current.generation else 0
    give_back()  # the import's transients and the generation before
    return imported.as_json(), stale


def _failures(path: Path) -> Path:
    """How many times the delivery's import process failed: a hidden file beside it, which
    no run takes as a delivery."""
    return path.with_name(f".{path.name}.failures")


def _failed_again(path: Path) -> int:
    counter = _failures(path)
    try:
        failures = int(counter.read_text()) + 1
    except (FileNotFoundError, ValueError):
        failures = 1
    counter.write_text(str(failures))
    return failures


def import_delivery(config: Config, args: Sequence[str]) -> Report:
    """In the child, with the delivery's kind and path as arguments: the snapshot on disk
    with the file imported into it (enforcer.files.importing), saved as the next generation
    unless refused. Returns the ImportReport as JSON (`refused` None when saved). Raises
    SnapshotConflict, OSError (the state directory's)."""
    kind, path = Kind(args[0]), Path(args[1])
    directory = Path(config.state.dir)
    state = load_snapshot(directory, load_policy(config.policy.file or None))
    with SnapshotDraft(directory, state.generation + 1) as draft:
        new, report = import_file(state, kind, path, config, draft.column)
        if new is not None:
            save_snapshot(new, directory, draft)
    return report.as_json()


def main() -> int:
    """The child: see enforcer.jobs.child."""
    return child_main(import_delivery, log, "import failed")


if __name__ == "__main__":
    sys.exit(main())
