"""A job's heavy work in a process of its own: the fold of the registry's changes
(`enforcer.jobs.fold`) and the import of a national delivery (`enforcer.jobs.reconcile`).

The child is a fresh interpreter, not a fork: the worker's threads (Kafka clients, the
scheduler) may hold locks a forked child would inherit held. It loads the snapshot from disk,
builds and saves the next generation, and ends; the worker then adopts what it saved. Its
seconds of numpy work never hold the worker's interpreter lock, which the registry thread
needs to apply a change within a second, and the memory it builds with (the next generation
beside the one it read) is given back when it ends, never held by the worker.

The protocol: `python -m MODULE LEVEL FORM LOGFILE ARGS...` (setup_logging's arguments, ""
for stderr), the worker's configuration as JSON on stdin, a report as a JSON object on
stdout; exit 0 with the report, EXIT_CONFLICT when another process saved the generation it
was saving (SnapshotConflict), 1 on any other fault, after one log line saying why. A worker
killed meanwhile leaves the child to finish and end: it waits for nothing of the worker's.

The child runs `jobs.child_nice` nicer than the worker: on a worker host's few cores its
seconds of work would otherwise delay the registry thread's changes past the second they may
take (and, where they share the worker's cgroup, the database's and the broker's work).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any, Callable, Sequence

import msgspec

from enforcer.config import Config
from enforcer.files.snapshots import SnapshotConflict
from enforcer.logs import describe, logging_now, setup_logging

EXIT_CONFLICT = 3  # 1 is any other fault

Report = dict[str, Any]  # the JSON object a child prints


def run_child(module: str, config: Config, args: Sequence[str],
              failed: Callable[[str], Exception], pass_fds: Sequence[int] = ()) -> Report:
    """The child's report; `pass_fds` are files it inherits (their numbers among `args`).
    Raises SnapshotConflict when it met one, `failed(why)` when it ended otherwise without a
    report (its own log line says why, unless it was killed) or printed something else."""
    level, form, path = logging_now()
    child = subprocess.run([sys.executable, "-m", module, level, form, path or "", *args],  # noqa: S603
                           input=msgspec.json.encode(config), stdout=subprocess.PIPE,
                           check=False, pass_fds=tuple(pass_fds))
    if child.returncode == EXIT_CONFLICT:
        raise SnapshotConflict("another process saved the generation the job was saving")
    if child.returncode:
        raise failed(f"the job's process ended with status {child.returncode}")
    try:
        return msgspec.json.decode(child.stdout, type=Report)
    except msgspec.DecodeError as exc:
        raise failed(f"the job's process printed no report: {exc}") from exc


def _nicer(increment: int, log: logging.Logger) -> None:
    """Lower this process's priority; where that is refused (a sandbox's policy), the job
    runs at the worker's, which is slower for the worker, not wrong."""
    try:
        os.nice(increment)
    except OSError as exc:
        log.warning("job's process runs at its worker's priority",
                    extra={"error": describe(exc)})


def child_main(work: Callable[[Config, Sequence[str]], Report], log: logging.Logger,
               failure: str) -> int:
    """The child's side: logging and arguments from argv, the configuration from stdin,
    `work`'s report to stdout; a fault is one line (`failure`, with the error and the file
    it names) in the worker's log, never a traceback. Returns the exit status."""
    level, form, path, *args = sys.argv[1:]
    setup_logging(level, form, path or None)
    try:
        config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
        _nicer(config.jobs.child_nice, log)
        report = work(config, args)
    except SnapshotConflict as exc:
        log.warning("generation not saved", extra={"error": describe(exc)})
        return EXIT_CONFLICT
    except Exception as exc:  # noqa: BLE001 - one log line for the worker's log
        log.error(failure, extra={"error": describe(exc),
                                  "file": getattr(exc, "filename", None)})
        return 1
    try:
        sys.stdout.buffer.write(msgspec.json.encode(report))
        sys.stdout.flush()
    except BrokenPipeError:  # the worker that asked was killed meanwhile: nobody to tell
        log.info("job's process outlived its worker", extra={"report": report})
        # Python flushes stdout again as it exits: into nothing, not a second traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
