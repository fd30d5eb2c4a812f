"""The fold job: the registry's changes stored in PostgreSQL are laid into the next snapshot
generation (enforcer/engine/fold.py), which every worker and `serve` then adopt as they
adopt a reconcile's. A restart loads it and lays over it only the events stored after its
watermark, and the stored events below the watermark of the oldest generation kept on disk
can go (the retention job prunes them).

The fold runs in a process of its own, started afresh each time: it loads the snapshot from
disk and lays the stored events over it as a restart does, folds and saves. Its seconds of
numpy work then never hold this process's interpreter lock, which the registry thread needs
to apply a change within a second, and the memory it builds with is given back when it
ends. The worker then adopts the generation it saved.

One worker folds at a time (the job's lock). A fold and a national import racing for the
same generation: the snapshot file lock lets one save it, the other fails with
SnapshotConflict and its retry starts from the generation that won, so neither loses the
other's changes.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable

import psycopg

from enforcer.config import Config
from enforcer.engine.fold import fold
from enforcer.engine.imei import imei_rules
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import load_snapshot, next_generation, save_snapshot
from enforcer.follow.layover import lay_over_stored
from enforcer.jobs.reconcile import adopt_newer
from enforcer.logs import logging_now, setup_logging
from rules.policy import load_policy

log = logging.getLogger("eir.fold")

# A fresh interpreter, not a fork: the worker's threads (Kafka clients, the scheduler) may
# hold locks a forked child would inherit held.
START_METHOD = "spawn"


def fold_changes(holder: StateHolder, config: Config,
                 reloaded: Callable[[float], None] = lambda seconds: None) -> dict[str, int]:
    """Adopt a newer generation on disk first; then, if this worker holds registry changes,
    fold the stored ones into the next generation in a child process and adopt it. Raises
    what the child raised: SnapshotConflict when another process saved that generation
    meanwhile (the job's retry folds over it), psycopg.Error, OSError; BrokenProcessPool
    when the child died (killed for its memory, say)."""
    directory = Path(config.state.dir)
    adopted, stale = adopt_newer(holder, directory, reloaded)
    counts = {"adopted": adopted, "folded": 0, "events": 0, "entries": 0, "stale_events": stale}
    if not len(holder.current.overlay):
        return counts
    began = time.perf_counter()
    context = multiprocessing.get_context(START_METHOD)
    with ProcessPoolExecutor(1, mp_context=context, initializer=setup_logging,
                             initargs=logging_now()) as child:
        report = child.submit(fold_stored, config).result()
    _, stale = adopt_newer(holder, directory, reloaded)
    counts["stale_events"] += stale
    counts.update({key: report[key] for key in ("folded", "events", "entries")})
    log.info("registry changes folded", extra={**report,
                                               "seconds": round(time.perf_counter() - began, 3)})
    return counts


def fold_stored(config: Config) -> dict[str, int]:
    """In the child: the snapshot on disk with the stored events after its watermark laid
    over it and folded into the next generation, saved. Returns the FoldReport's figures,
    `folded` 0 when there was nothing to fold. Raises SnapshotConflict, psycopg.Error,
    OSError."""
    directory = Path(config.state.dir)
    holder = StateHolder(load_snapshot(directory, load_policy(config.policy.file or None)))
    read, inapplicable, _ = lay_over_stored(
        holder, partial(psycopg.connect, config.postgres.dsn, autocommit=True),
        imei_rules(config), config)
    state = holder.current
    if not len(state.overlay):
        return {"folded": 0, "events": 0, "entries": 0, "read": read,
                "inapplicable": inapplicable}
    folded, report = fold(state, max(next_generation(directory), state.generation + 1))
    save_snapshot(folded, directory)
    return {"folded": 1, **report.as_json(), "read": read, "inapplicable": inapplicable}
