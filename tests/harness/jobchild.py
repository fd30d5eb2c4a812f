"""A job's process (enforcer/jobs/child.py's protocol) that meets a SnapshotConflict, as an
import's does when another process saved the generation it was saving; with the argument
`nice`, one that reports how nice it runs."""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from enforcer.config import Config
from enforcer.files.snapshots import SnapshotConflict
from enforcer.jobs.child import Report, child_main


def saved_first(config: Config, args: Sequence[str]) -> Report:
    raise SnapshotConflict("generation 2 is not newer than 2, saved meanwhile; run again")


def niceness(config: Config, args: Sequence[str]) -> Report:
    return {"nice": os.nice(0)}


if __name__ == "__main__":
    work = niceness if sys.argv[4:] == ["nice"] else saved_first
    sys.exit(child_main(work, logging.getLogger("eir.reconcile"), "import failed"))
