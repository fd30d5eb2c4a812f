"""The fold job: the registry's changes this worker holds are laid into the next snapshot
generation (enforcer/engine/fold.py), which every worker and `serve` then adopt as they
adopt a reconcile's. A restart loads it and lays over it only the events stored after its
watermark, and the stored events below the watermark of the oldest generation kept on disk
can go (the retention job prunes them).

One worker folds at a time (the job's lock). A fold and a national import racing for the
same generation: the snapshot file lock lets one save it, the other fails with
SnapshotConflict and its retry starts from the generation that won, so neither loses the
other's changes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from enforcer.config import Config
from enforcer.engine.fold import fold
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import next_generation, save_snapshot
from enforcer.jobs.reconcile import adopt_newer

log = logging.getLogger("eir.fold")


def fold_changes(holder: StateHolder, config: Config,
                 reloaded: Callable[[float], None] = lambda seconds: None) -> dict[str, int]:
    """Adopt a newer generation on disk first, then fold what the overlay holds into the
    next one, save it and swap it in. Raises SnapshotConflict when another process saved
    that generation meanwhile (the job's retry folds over it)."""
    directory = Path(config.state.dir)
    adopted, stale = adopt_newer(holder, directory, reloaded)
    counts = {"adopted": adopted, "folded": 0, "events": 0, "entries": 0, "stale_events": stale}
    state = holder.current
    if not len(state.overlay):
        return counts
    began = time.perf_counter()
    folded, report = fold(state, max(next_generation(directory), state.generation + 1))
    save_snapshot(folded, directory)
    counts["stale_events"] += holder.swap(folded)
    reloaded(time.perf_counter() - began)
    counts.update(folded=1, events=report.events, entries=report.entries)
    log.info("registry changes folded", extra={**report.as_json(),
                                               "seconds": round(time.perf_counter() - began, 3)})
    return counts
