"""Following what the workers store in PostgreSQL, into a state held in memory: the
cut-off list and the IMEIs flagged misused (every worker, and `eir-enforcer serve`), and for
`serve`, which reads no topic, the registry changes, the snapshot generation and the
subscribers' numbers by IMSI too."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from enforcer.heap import give_back
from enforcer.follow.layover import lay_over
from enforcer.config import Config
from enforcer.engine.cutoffs import CutOffs
from enforcer.db.clones import flagged_since
from enforcer.db.notices import cut_subjects
from enforcer.db.registry_events import applied_events, applied_seqs_after
from enforcer.db.subscribers import numbers_since
from enforcer.engine.imei import ImeiRules
from enforcer.engine.numbers import MsisdnsByImsi
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import load_snapshot, snapshot_generation
from rules.policy import Scope

log = logging.getLogger("eir.following")

# Changes committed this long before the last look are looked at again: a transaction may
# commit after a later one's timestamp was read.
FOLLOW_OVERLAP = timedelta(seconds=60)
# Registry events are numbered when stored and visible when committed, which two workers
# may do out of order; the last this many numbers are looked at again for late arrivals.
SEQ_OVERLAP = 10_000


class _TableFollower:
    """Follows rows changed since the last look (by the database's clock); None the first
    time, meaning everything."""

    def __init__(self, holder: StateHolder) -> None:
        self._holder = holder
        self._followed_to: datetime | None = None

    def _since(self) -> datetime | None:
        return None if self._followed_to is None else self._followed_to - FOLLOW_OVERLAP


class CutoffFollower(_TableFollower):
    """Cutoffs and restores made by any worker; the whole list the first time."""

    def follow(self, conn: psycopg.Connection) -> int:
        since = self._since()
        rows, self._followed_to = cut_subjects(conn, since)
        cut, restored = [], []
        for scope, imei_key, subject, is_cut in rows:
            item = (imei_key, None if scope == Scope.IMEI.value else subject)
            (cut if is_cut else restored).append(item)
        if since is None:
            whole = CutOffs.of({k for k, i in cut if i is None},
                               {(k, i) for k, i in cut if i is not None})
            self._holder.update(lambda s: replace(s, cutoffs=whole))
        elif cut or restored:
            self._holder.update(
                lambda s: replace(s, cutoffs=s.cutoffs.changed(cut, restored)))
        return len(rows)


class FlagFollower(_TableFollower):
    """IMEIs any worker flagged misused; all of them the first time."""

    def follow(self, conn: psycopg.Connection) -> int:
        rows, self._followed_to = flagged_since(conn, self._since())
        if rows:
            keys = np.array([key for key, _ in rows], dtype=np.uint64)
            flagged_ms = np.array([ms for _, ms in rows], dtype=np.int64)
            self._holder.update(lambda s: replace(s, misused=s.misused.with_flags(
                keys, flagged_ms, s.policy.clones.flag_ms)))
        return len(rows)


class NumberFollower(_TableFollower):
    """The subscribers' numbers the workers learned from the attaches; all of them the first
    time, laid into the frozen columns at once."""

    def follow(self, conn: psycopg.Connection) -> int:
        since = self._since()
        imsis, msisdns, self._followed_to = numbers_since(conn, since)
        if since is None:
            numbers = MsisdnsByImsi.of(imsis, msisdns)
        elif len(imsis):
            numbers = self._holder.current.numbers.with_pairs(imsis, msisdns)
        else:
            return 0
        # Built outside the swap lock (a merge is O(n)): this follower alone sets them.
        self._holder.update(lambda s: replace(s, numbers=numbers))
        return len(imsis)


class StateFollower:
    """For a process that reads no topic: the registry changes the workers stored, the
    cutoffs, the misuse flags, the subscribers' numbers and the newest snapshot generation,
    laid over its state at each `follow`."""

    def __init__(self, config: Config, holder: StateHolder, rules: ImeiRules) -> None:
        self._config = config
        self._holder = holder
        self._rules = rules
        self._cutoffs = CutoffFollower(holder)
        self._flags = FlagFollower(holder)
        self._numbers = NumberFollower(holder)
        self._seen: set[int] = set()  # registry_events.seq already laid over

    def follow(self, conn: psycopg.Connection) -> dict[str, int]:
        swapped = self._newer_snapshot()
        floor = max(self._seen, default=0) - SEQ_OVERLAP
        # Only numbers above the floor are asked for again: what is below is forgotten,
        # so the set stays SEQ_OVERLAP wide, however long serve runs.
        self._seen = {seq for seq in self._seen if seq > floor}
        fresh = [seq for seq in applied_seqs_after(conn, floor) if seq not in self._seen]
        events = applied_events(conn, fresh) if fresh else []
        if events:
            lay_over(self._holder, events, self._rules, self._config)
            self._seen.update(e.seq for e in events)
        return {"generation_swapped": swapped, "registry_events": len(events),
                "cutoffs": self._cutoffs.follow(conn), "flags": self._flags.follow(conn),
                "numbers": self._numbers.follow(conn)}

    def _newer_snapshot(self) -> int:
        directory = Path(self._config.state.dir)
        newest = snapshot_generation(directory)
        if newest is None or newest <= self._holder.current.generation:
            return 0
        self._holder.swap(load_snapshot(directory, self._holder.current.policy))
        give_back()  # the load's transients and the generation before
        log.info("snapshot generation taken in", extra={"generation": newest})
        return 1
