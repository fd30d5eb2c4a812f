"""The fold job: the registry's changes stored in PostgreSQL are laid into the next snapshot
generation (enforcer/engine/fold.py), which every worker and `serve` then adopt as they
adopt a reconcile's. A restart loads it and lays over it only the events stored after its
watermark, and the stored events below the watermark of the oldest generation kept on disk
can go (the retention job prunes them).

The fold runs in a process of its own (`enforcer.jobs.child`), started afresh each time: it
loads the snapshot from disk and lays the stored events over it as a restart does, folds and
saves. The worker then adopts the generation it saved.

One worker folds at a time (the job's lock). A fold and a national import racing for the
same generation: the snapshot file lock lets one save it, the other fails with
SnapshotConflict and its retry starts from the generation that won, so neither loses the
other's changes.
"""

from __future__ import annotations

import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import psycopg

from enforcer.config import Config
from enforcer.engine.fold import fold
from enforcer.engine.imei import imei_rules
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import SnapshotDraft, load_snapshot, save_snapshot
from enforcer.follow.layover import lay_over_stored
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
    fold the stored ones into the next generation in a child process and adopt it. Raises
    SnapshotConflict when another process saved that generation meanwhile (the job's retry
    folds over it), FoldFailed when the child failed otherwise or was killed (for its
    memory, say)."""
    directory = Path(config.state.dir)
    adopted, stale = adopt_newer(holder, directory, reloaded)
    counts = {"adopted": adopted, "folded": 0, "events": 0, "entries": 0, "stale_events": stale}
    if not len(holder.current.overlay):
        return counts
    began = time.perf_counter()
    report = run_child(CHILD, config, (), FoldFailed)
    _, stale = adopt_newer(holder, directory, reloaded)
    counts["stale_events"] += stale
    counts.update({key: report[key] for key in ("folded", "events", "entries")})
    log.info("registry changes folded", extra={**report,
                                               "seconds": round(time.perf_counter() - began, 3)})
    return counts


def fold_stored(config: Config, args: Sequence[str] = ()) -> Report:
    """In the child (no arguments): the snapshot on disk with the stored events after its
    watermark laid over it and folded into the next generation, saved. Returns the
    FoldReport's figures, `folded` 0 when there was nothing to fold. Raises
    SnapshotConflict, psycopg.Error, OSError."""
    directory = Path(config.state.dir)
    # Mapped: the realign reads the registry once, front to back, and lets it go as it
    # reads, and writes the new one's columns into the files they are saved as
    # (SnapshotDraft), so that neither generation's registry is resident whole.
    holder = StateHolder(load_snapshot(directory, load_policy(config.policy.file or None),
                                       mapped=True))
    read, inapplicable, _ = lay_over_stored(
        holder, partial(psycopg.connect, config.postgres.dsn, autocommit=True),
        imei_rules(config), config)
    state = holder.current
    if not len(state.overlay):
        return {"folded": 0, "events": 0, "entries": 0, "read": read,
                "inapplicable": inapplicable}
    # The one after what was loaded: if an import saved it meanwhile, the save finds the
    # conflict and the job's retry folds over the import (a later number would drop it).
    generation = state.generation + 1
    with SnapshotDraft(directory, generation) as draft:
        folded, report = fold(state, generation, columns=draft.column)
        save_snapshot(folded, directory, draft)
    return {"folded": 1, **report.as_json(), "read": read, "inapplicable": inapplicable}


def main() -> int:
    """The child: see enforcer.jobs.child."""
    return child_main(fold_stored, log, "fold failed")


if __name__ == "__main__":
    sys.exit(main())
