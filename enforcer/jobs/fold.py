"""The fold job: the registry's changes this worker holds are laid into the next snapshot
generation (enforcer/engine/fold.py), which every worker and `serve` then adopt as they
adopt a reconcile's. A restart loads it and lays over it only the events stored after its
watermark, and the stored events below the watermark of the oldest generation kept on disk
can go (the retention job prunes them).

The fold runs in a process of its own (`enforcer.jobs.child`), started afresh each time. The
worker hands it its changes as columns (`enforcer.files.changes`: the overlay's maps, read
as far as the overlay is), in an unnamed file on the state's disk that nobody has to clean
up; the process loads the snapshot from disk, folds and saves, and the worker adopts the
generation it saved. What is folded is what the worker decides with, to the event: the
consistency job holds that to the database. The changes are not applied again from the
stored events: at a national registry's rate that cost the fold's process a core's seconds
for every six hours (110 µs an event), and every change read meanwhile is laid again over
the new generation at its adoption, with the registry thread waiting.

One worker folds at a time (the job's lock). A fold and a national import racing for the
same generation: the snapshot file lock lets one save it, the other fails with
SnapshotConflict and its retry starts from the generation that won, so neither loses the
other's changes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from enforcer.config import Config
from enforcer.engine.fold import fold
from enforcer.engine.state import StateHolder
from enforcer.files.changes import read_changes, write_changes
from enforcer.files.snapshots import (SnapshotConflict, SnapshotDraft, load_snapshot,
                                      save_snapshot)
from enforcer.jobs.child import Report, child_main, run_child
from enforcer.jobs.reconcile import adopt_newer
from rules.policy import load_policy

log = logging.getLogger("eir.fold")

CHILD = "enforcer.jobs.fold"


class FoldFailed(RuntimeError):
    """The fold's process ended without saving a generation: its own log line says why."""


def fold_changes(holder: StateHolder, config: Config,
                 reloaded: Callable[[float], None] = lambda seconds: None) -> dict[str, int]:
    """Adopt a newer generation on disk first; then, if this worker holds registry changes,
    fold them into the next generation in a child process and adopt it. Raises
    SnapshotConflict when another process saved a generation meanwhile (the job's retry
    adopts it and folds over it), FoldFailed when the child failed otherwise or was killed
    (for its memory, say)."""
    directory = Path(config.state.dir)
    adopted, stale = adopt_newer(holder, directory, reloaded)
    counts = {"adopted": adopted, "folded": 0, "events": 0, "entries": 0, "stale_events": stale}
    state = holder.current
    if not len(state.overlay):
        return counts
    began = time.perf_counter()
    with tempfile.TemporaryFile(dir=directory) as changes:
        write_changes(state.overlay, state.generation, changes)
        changes.flush()
        report = run_child(CHILD, config, (str(changes.fileno()),), FoldFailed,
                           pass_fds=(changes.fileno(),))
    _, stale = adopt_newer(holder, directory, reloaded)
    counts["stale_events"] += stale
    counts.update({key: report[key] for key in ("folded", "events", "entries")})
    log.info("registry changes folded", extra={**report,
                                               "seconds": round(time.perf_counter() - began, 3)})
    return counts


def fold_held(config: Config, args: Sequence[str]) -> Report:
    """In the child, with the file descriptor of the worker's changes as its argument: the
    snapshot on disk with them folded into the next generation, saved. Returns the
    FoldReport's figures. Raises SnapshotConflict (the snapshot on disk is not the one the
    changes lie over, or another process saved the next meanwhile), OSError."""
    with os.fdopen(int(args[0]), "rb") as file:
        held = read_changes(file)
    directory = Path(config.state.dir)
    # Mapped: the realign reads the registry once, front to back, and lets it go as it
    # reads, and writes the new one's columns into the files they are saved as
    # (SnapshotDraft), so that neither generation's registry is resident whole.
    state = load_snapshot(directory, load_policy(config.policy.file or None))
    if state.generation != held.generation:
        raise SnapshotConflict(f"the changes lie over generation {held.generation}, the "
                               f"snapshot in {directory} is generation {state.generation}")
    # The one after what was loaded: if an import saved it meanwhile, the save finds the
    # conflict and the job's retry folds over the import (a later number would drop it).
    generation = state.generation + 1
    with SnapshotDraft(directory, generation) as draft:
        folded, report = fold(replace(state, overlay=held.overlay), generation,
                              columns=draft.column, spill=draft.spill)
        save_snapshot(folded, directory, draft)
    return {"folded": 1, **report.as_json(), "events": held.events}


def main() -> int:
    """The child: see enforcer.jobs.child."""
    return child_main(fold_held, log, "fold failed")


if __name__ == "__main__":
    sys.exit(main())
