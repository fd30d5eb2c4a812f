"""Clone detection's part of the attach loop: the window over the stream (`clones.py`), the
flags it raises laid over the state the batch is decided with, and, in the batch's own
transaction, the flags recorded and a misuse notice opened for every SIM the history saw
with the IMEI within the window, and every SIM holding a live notice on it (the decision
tells the owner's apart). The notices those SIMs held are superseded by the sweep, which the
worker asks to look at the flagged IMEIs once the batch is durable."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psycopg

from enforcer.heap import give_back
from enforcer.clock import MS_PER_DAY, MS_PER_S
from enforcer.engine.clones import (NO_CELLS, REASONS, CellSites, CloneWindow, cells_from_csv,
                                    sightings_of, sims_batch, window_start_ms)
from enforcer.config import Config, ConfigError
from enforcer.db.clones import FlagRow, record_flags, sims_within
from enforcer.db.notices import live_sims, see
from enforcer.engine.decide import decide
from enforcer.engine.events import AttachBatch
from enforcer.engine.opening import notice_sightings
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.engine.subscriber import mask
from metrics.worker import WorkerMetrics

log = logging.getLogger("eir.clones")


@dataclass(frozen=True)
class NewFlags:
    """IMEIs this batch flagged that had no flag in force."""

    rows: tuple[FlagRow, ...] = ()

    @property
    def keys(self) -> list[int]:
        return [row[0] for row in self.rows]


NO_FLAGS = NewFlags()


def load_cells(config: Config) -> CellSites:
    if not config.clones.cell_sites:
        return NO_CELLS
    path = Path(config.clones.cell_sites)
    try:
        return cells_from_csv(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"clones.cell_sites: cannot use {path}: {exc}") from exc


class CloneTracker:
    def __init__(self, config: Config, metrics: WorkerMetrics) -> None:
        self._cells = load_cells(config)
        # The decoder dead-letters an attach older than max_event_age_days or later than
        # max_event_future_s, so none it lets through is more days behind the newest than
        # this: the window forgets no SIM such an attach could still find. It bounds how far
        # apart a batch's attaches lie too, as the window asks.
        self._late_days = config.worker.max_event_age_days + math.ceil(
            config.worker.max_event_future_s * MS_PER_S / MS_PER_DAY)
        self._metrics = metrics
        self._window: CloneWindow | None = None

    def observe(self, batch: AttachBatch, state: EnforcementState
                ) -> tuple[EnforcementState, NewFlags]:
        """The state to decide the batch with (its new flags laid over), and those flags."""
        index = state.lists.white_index
        if self._window is None:
            self._window = CloneWindow(index, state.policy.clones, self._cells, self._late_days)
        elif self._window.index is not index:  # a new generation of the white list
            # The rebase gives the old window's pages back as it goes: should it fail
            # half-way, a fresh window (SIMs seen again from now on) is the next batch's,
            # not one with holes.
            old, self._window = self._window, None
            self._window = old.rebase(index)
            give_back()  # the rebase's steps
        # The radios are compared only when the policy counts them: a lookup a batch less.
        tacs = state.tacs if self._window.rules.rat_inconsistent_attaches else None
        flags = self._window.observe(sightings_of(batch, index, self._cells, tacs))
        keys = batch.imei_key[flags.event]
        life_ms = state.policy.clones.flag_ms
        # A flag in its last grace is raised again when the window sees the clone: a misuse
        # notice opened now must find a flag in force at its deadline.
        renew_ms = state.policy.misuse_grace_days * MS_PER_DAY
        fresh = ~state.misused.holds(keys, batch.ts_ms[flags.event] + renew_ms, life_ms)
        if not fresh.any():
            return state, NO_FLAGS
        rows = tuple((int(batch.imei_key[e]), REASONS[r].value, int(batch.ts_ms[e]),
                      int(batch.imsi[e]), int(batch.msisdn[e]))
                     for e, r in zip(flags.event[fresh].tolist(), flags.reason[fresh].tolist()))
        return (replace(state, misused=state.misused.with_flags(
            keys[fresh], batch.ts_ms[flags.event][fresh], life_ms)), NewFlags(rows))

    def record(self, conn: psycopg.Connection, flags: NewFlags,
               state: EnforcementState) -> Counter[str]:
        """In the batch's transaction: the flags, and the notices of the SIMs seen before."""
        if not flags.rows:
            return Counter()
        record_flags(conn, list(flags.rows))
        starts = {key: window_start_ms(ms, state.policy.clones)
                  for key, _, ms, _, _ in flags.rows}
        sims = [s for s in sims_within(conn, flags.keys, min(starts.values()))
                if s[3] >= starts[s[0]]]
        # A notice outlasts the window (30 days against 20): its SIM is on the IMEI all the
        # same, and must not be left with no notice when the flag supersedes the one it holds.
        sims += live_sims(conn, flags.keys)
        if not sims:
            return Counter()
        earlier = sims_batch(sims, {key: ms for key, _, ms, _, _ in flags.rows})
        decisions = decide(earlier, state)
        seen = notice_sightings(earlier, decisions)
        # Each SIM as last seen, not at the flag: one unused since lapses rather than is cut.
        last: dict[tuple[int, int], int] = {}
        for key, imsi, _, ms in sims:
            last[key, imsi] = max(ms, last.get((key, imsi), ms))
        seen = replace(seen, last_ms=np.array(
            [last[pair] for pair in zip(seen.imei_key.tolist(), seen.imsi.tolist())],
            dtype=np.int64))
        return see(conn, seen, decisions.policy.rules)

    def remember(self, holder: StateHolder, flags: NewFlags) -> None:
        """After the batch is durable: the flags into the state every later batch reads."""
        if not flags.rows:
            return
        keys = np.array(flags.keys, dtype=np.uint64)
        flagged_ms = np.array([ms for _, _, ms, _, _ in flags.rows], dtype=np.int64)
        holder.update(lambda s: replace(s, misused=s.misused.with_flags(
            keys, flagged_ms, s.policy.clones.flag_ms)))
        for key, reason, _, imsi, msisdn in flags.rows:
            self._metrics.clone_flags.labels(reason).inc()
            log.warning("IMEI flagged misused", extra={"imei_key": f"{key:014d}",
                                                       "reason": reason, "imsi": mask(imsi),
                                                       "msisdn": mask(msisdn)})
