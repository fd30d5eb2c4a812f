"""Clone detection's window as it was before issue 21 (a row of fixed slots for every IMEI,
SIMs as 32-bit fingerprints: 31 bytes an IMEI with the default policy), kept as the
reference the compact window (enforcer/engine/clones.CloneWindow) is held to:
tests/test_clonewindow.py's differential test feeds both the same traffic and wants the same
flags, and bench/clones.py measures it beside the compact one (`window_gib_before`). Its
text is the engine's at d129bc3, renamed."""

from __future__ import annotations

import numpy as np

from enforcer.clock import MS_PER_DAY
from enforcer.engine.clones import (EMPTY, MAX_RAT_ATTACHES, MS_PER_MINUTE, NO_CELLS, NOWHERE,
                                    REASONS, CellSites, CloneReason, CloneRules, Flags,
                                    WindowSightings)
from enforcer.engine.keyindex import ABSENT, KeyIndex


def fingerprint(imsi: np.ndarray) -> np.ndarray:
    """32 bits of a mixed IMSI (splitmix64's finaliser), never 0: the window's before issue
    21 part 2 took it to 16."""
    x = imsi.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(32)).astype(np.uint32)) | np.uint32(1)


class ReferenceCloneWindow:
    def __init__(self, index: KeyIndex, rules: CloneRules, cells: CellSites = NO_CELLS) -> None:
        if rules.distinct_imsis < 2:
            raise ValueError("clones.distinct_imsis must be at least 2")
        self.index = index  # the white list the rows belong to
        self.rules = rules
        self.cells = cells
        rows, slots = len(index), rules.distinct_imsis - 1
        self._fp = np.zeros((rows, slots), dtype=np.uint32)
        self._day = np.zeros((rows, slots), dtype=np.uint16)
        self._minute = np.zeros(rows, dtype=np.uint32)
        self._operator = np.zeros(rows, dtype=np.uint32)
        self._cell = np.zeros(rows, dtype=np.uint32)
        self._rat_count = np.zeros(rows, dtype=np.uint8)
        self._rat_day = np.zeros(rows, dtype=np.uint16)  # when the count began
        self._rat_minute = np.zeros(rows, dtype=np.uint32)  # the last attach counted

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _COLUMNS)

    def rebase(self, index: KeyIndex) -> ReferenceCloneWindow:
        """The same memory of each IMEI, on another generation's white list."""
        if index is self.index:
            return self
        moved = ReferenceCloneWindow(index, self.rules, self.cells)
        new_rows = index.rows(self.index.keys())
        kept = np.flatnonzero(new_rows != ABSENT)
        to = new_rows[kept]
        for name in _COLUMNS:
            getattr(moved, name)[to] = getattr(self, name)[kept]
        return moved

    def observe(self, seen: WindowSightings) -> Flags:
        at = np.flatnonzero(seen.row != ABSENT)
        order = at[np.lexsort((seen.ts_ms[at], seen.row[at]))]
        flagged_at = np.full(len(seen.row), -1, dtype=np.int8)
        self._imsis(seen, order, flagged_at)
        self._places(seen, order, flagged_at)
        self._radios(seen, order, flagged_at)
        return self._first_per_imei(seen, flagged_at)

    # -- too many SIMs ----------------------------------------------------------------------

    def _imsis(self, seen: WindowSightings, order: np.ndarray, flagged_at: np.ndarray) -> None:
        if not len(order):
            return
        row, fp = seen.row[order], fingerprint(seen.imsi[order])
        day = (seen.ts_ms[order] // MS_PER_DAY).astype(np.uint16)
        # One SIM on one IMEI counts once a batch, on its latest day.
        pair = np.lexsort((-day.astype(np.int64), fp, row))
        row, fp, day, event = row[pair], fp[pair], day[pair], order[pair]
        first = np.r_[True, (row[1:] != row[:-1]) | (fp[1:] != fp[:-1])]
        row, fp, day, event = row[first], fp[first], day[first], event[first]
        # An IMEI with several new SIMs in the batch takes them in rounds, in the order they
        # came: the second may fill the window before the third arrives.
        by_time = np.lexsort((seen.ts_ms[event], row))
        row, fp, day, event = row[by_time], fp[by_time], day[by_time], event[by_time]
        remaining = np.arange(len(row))
        while len(remaining):
            rows = row[remaining]
            head = np.r_[True, rows[1:] != rows[:-1]]
            take = remaining[head]
            self._one_new_sim(row[take], fp[take], day[take], event[take], flagged_at)
            remaining = remaining[~head]

    def _one_new_sim(self, row: np.ndarray, fp: np.ndarray, day: np.ndarray,
                     event: np.ndarray, flagged_at: np.ndarray) -> None:
        """Rows distinct, one SIM each."""
        slots_fp, slots_day = self._fp[row], self._day[row]
        live = (slots_fp != EMPTY) & (
            day[:, None].astype(np.int64) - slots_day < self.rules.window_days)
        match = live & (slots_fp == fp[:, None])
        known = match.any(axis=1)
        slot = np.argmax(match, axis=1)
        again = np.flatnonzero(known)
        newer = day[again] > slots_day[again, slot[again]]
        self._day[row[again[newer]], slot[again[newer]]] = day[again[newer]]
        new = np.flatnonzero(~known)
        full = live[new].all(axis=1)
        flagged_at[event[new[full]]] = REASONS.index(CloneReason.IMSIS)
        # Kept out of the window once it flags, so a replay of the batch flags it again.
        take = new[~full]
        free = np.argmin(live[take], axis=1)
        self._fp[row[take], free] = fp[take]
        self._day[row[take], free] = day[take]

    # -- two places at once -------------------------------------------------------------------

    def _places(self, seen: WindowSightings, order: np.ndarray, flagged_at: np.ndarray) -> None:
        if not len(order):
            return
        row = seen.row[order]
        minute = (seen.ts_ms[order] // MS_PER_MINUTE).astype(np.int64)
        operator, cell = seen.operator[order], seen.cell[order]
        # Each attach against the one before it on the same IMEI: in this batch, or stored.
        first = np.r_[True, row[1:] != row[:-1]]
        prev_minute = np.where(first, self._minute[row].astype(np.int64), np.r_[0, minute[:-1]])
        prev_operator = np.where(first, self._operator[row], np.r_[0, operator[:-1]])
        prev_cell = np.where(first, self._cell[row], np.r_[0, cell[:-1]])
        known = prev_minute > 0
        apart = np.abs(minute - prev_minute)
        rules = self.rules
        if rules.operators_within_minutes:
            hit = (known & (operator != NOWHERE) & (prev_operator != NOWHERE)
                   & (operator != prev_operator) & (apart <= rules.operators_within_minutes))
            _flag(flagged_at, order[hit], CloneReason.OPERATORS)
        if rules.far_cells_within_minutes and len(self.cells.codes):
            both = np.flatnonzero(known & (cell != NOWHERE) & (prev_cell != NOWHERE)
                                  & (apart <= rules.far_cells_within_minutes))
            far = self.cells.distance_km(prev_cell[both], cell[both]) >= rules.far_cells_km
            _flag(flagged_at, order[both[far]], CloneReason.CELLS)
        last = np.r_[row[1:] != row[:-1], True]
        self._minute[row[last]] = minute[last]
        self._operator[row[last]] = operator[last]
        self._cell[row[last]] = cell[last]

    # -- a radio the model lacks ------------------------------------------------------------

    def _radios(self, seen: WindowSightings, order: np.ndarray, flagged_at: np.ndarray) -> None:
        threshold = self.rules.rat_inconsistent_attaches
        at = order[seen.off_radio[order]] if threshold else order[:0]
        if not len(at):
            return
        row = seen.row[at]
        minute = (seen.ts_ms[at] // MS_PER_MINUTE).astype(np.int64)
        day = (seen.ts_ms[at] // MS_PER_DAY).astype(np.int64)
        first = np.r_[True, row[1:] != row[:-1]]
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        # An attach counts when it is later than the last one counted on its IMEI: a replay,
        # or a second attach in the same minute, adds nothing.
        stored = self._rat_minute[row].astype(np.int64)
        new = minute > np.where(first, stored, np.maximum(stored, np.r_[0, minute[:-1]]))
        # A count that began window_days ago begins again.
        group_row = row[starts]
        restart = (day[starts] - self._rat_day[group_row] >= self.rules.window_days) | (
            self._rat_count[group_row] == 0)
        base = np.where(restart, 0, self._rat_count[group_row]).astype(np.int64)
        counted = np.cumsum(new)
        total = base[group] + counted - (counted - new)[starts][group]
        _flag(flagged_at, at[total >= threshold], CloneReason.RAT)
        last = np.r_[starts[1:] - 1, len(row) - 1]
        self._rat_count[group_row] = np.minimum(total[last], MAX_RAT_ATTACHES)
        self._rat_day[group_row] = np.where(restart, day[starts], self._rat_day[group_row])
        self._rat_minute[group_row] = np.maximum(stored[last], minute[last])

    @staticmethod
    def _first_per_imei(seen: WindowSightings, flagged_at: np.ndarray) -> Flags:
        hit = np.flatnonzero(flagged_at >= 0)
        hit = hit[np.lexsort((seen.ts_ms[hit], seen.row[hit]))]
        rows = seen.row[hit]
        event = hit[np.r_[True, rows[1:] != rows[:-1]]] if len(hit) else hit
        return Flags(event.astype(np.int64), flagged_at[event].astype(np.uint8))


_COLUMNS = ("_fp", "_day", "_minute", "_operator", "_cell", "_rat_count", "_rat_day",
            "_rat_minute")



def _flag(flagged_at: np.ndarray, events: np.ndarray, reason: CloneReason) -> None:
    unflagged = events[flagged_at[events] < 0]
    flagged_at[unflagged] = REASONS.index(reason)
