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
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import msgspec
import psycopg

from enforcer.config import Config
from enforcer.engine.fold import fold
from enforcer.engine.imei import imei_rules
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import (SnapshotConflict, SnapshotDraft, load_snapshot,
                                      save_snapshot)
from enforcer.follow.layover import lay_over_stored
from enforcer.jobs.reconcile import adopt_newer
from enforcer.logs import describe, logging_now, setup_logging
from rules.policy import load_policy

log = logging.getLogger("eir.fold")

CHILD = "enforcer.jobs.fold"
EXIT_CONFLICT = 3  # the child's exit status for SnapshotConflict (1 is any other fault)


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
    # A fresh interpreter, not a fork: the worker's threads (Kafka clients, the scheduler)
    # may hold locks a forked child would inherit held. A worker killed meanwhile leaves
    # the child to finish and end: it waits for nothing of the worker's.
    level, form, path = logging_now()
    child = subprocess.run([sys.executable, "-m", CHILD, level, form, path or ""],  # noqa: S603
                           input=msgspec.json.encode(config), stdout=subprocess.PIPE,
                           check=False)
    if child.returncode == EXIT_CONFLICT:
        raise SnapshotConflict("another process saved the generation the fold was saving")
    if child.returncode:
        raise FoldFailed(f"the fold's process ended with status {child.returncode}")
    report = msgspec.json.decode(child.stdout, type=dict[str, int])
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
    """The child: logging as argv says (setup_logging's level, form and file, "" for
    stderr), the configuration as JSON on stdin; the report as JSON on stdout."""
    level, form, path = sys.argv[1:]
    setup_logging(level, form, path or None)
    try:
        report = fold_stored(msgspec.json.decode(sys.stdin.buffer.read(), type=Config))
    except SnapshotConflict as exc:
        log.warning("fold not saved", extra={"error": describe(exc)})
        return EXIT_CONFLICT
    except Exception as exc:  # noqa: BLE001 - one log line for the worker's log, not a traceback
        log.error("fold failed", extra={"error": describe(exc),
                                        "file": getattr(exc, "filename", None)})
        return 1
    sys.stdout.buffer.write(msgspec.json.encode(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
