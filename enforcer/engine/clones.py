"""Clone detection in the stream: which attaches show an IMEI in use by more SIMs, or in more
places, than one device can be.

`CloneWindow` keeps, for every white-listed IMEI (by its row in the generation's white
list), the last `distinct_imsis - 1` SIMs seen with it within `window_days` (a 16-bit
fingerprint of the IMSI and the day it was last seen, modulo 256 with the default policy),
its last sighting (minute, operator, cell), and how many of its attaches came on a radio its
model lacks (a count, the day it began, the minute of the last one counted). A SIM whose day
left the window is forgotten: its slot is free again. Most IMEIs are only ever seen with one
SIM: a row holds that one (3 bytes), and the other slots live in `MoreSims`, only for the
IMEIs seen with more (issue 21 part 2); the sightings and radio counts are columns allocated
untouched and written only by the attaches that carry an operator or a cell, or come on a
radio the model lacks, so the memory is what the traffic has touched, never more than the
white list's size.

An attach flags its IMEI `misused` when it brings the `distinct_imsis`-th SIM within the
window, or comes through another operator (MCC-MNC) or from a cell `far_cells_km` away
within minutes of the last sighting, or is the `rat_inconsistent_attaches`-th within the
window on a radio the TAC database says its model lacks (a GSM-only model on LTE carries a
cloned IMEI: DIRBS's `inconsistent_rat`). Observing is idempotent: a batch observed twice (a
replay) flags what it flagged the first time and nothing more. No I/O."""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from enforcer.clock import MS_PER_DAY
from enforcer.engine.events import AttachBatch
from enforcer.heap import let_go
from enforcer.engine.keyindex import ABSENT, KeyIndex, rows_in
from enforcer.engine.subscriber import MCC_DIGITS
from enforcer.engine.tacs import TacDatabase

MS_PER_MINUTE = 60_000
EARTH_RADIUS_KM = 6371.0
EMPTY = 0  # no SIM in the slot; fingerprints are never 0
FINGERPRINT_BITS = 16
NOWHERE = 0  # no operator or cell known


class CloneReason(StrEnum):
    IMSIS = "imsis"  # too many distinct SIMs within the window
    OPERATORS = "operators"  # two operators within minutes
    CELLS = "cells"  # two far-apart cells within minutes
    RAT = "rat"  # attaches on a radio the model lacks (the condition rat_inconsistent)


REASONS: tuple[CloneReason, ...] = tuple(CloneReason)


@dataclass(frozen=True)
class CloneRules:
    """The policy's [clones] thresholds; a `*_minutes` or `rat_inconsistent_attaches` of 0
    turns that test off."""

    distinct_imsis: int
    window_days: int
    operators_within_minutes: int
    far_cells_km: float
    far_cells_within_minutes: int
    # Attaches (in distinct minutes, within window_days of the first) on a radio the IMEI's
    # model lacks that flag it; at most MAX_RAT_ATTACHES, the counter being a uint8.
    rat_inconsistent_attaches: int
    # Days a flag lasts from the attach that raised it (0: for ever); then the IMEI is judged
    # afresh, and flagged again if the window still sees it misused.
    flag_days: int = 0

    @property
    def flag_ms(self) -> int:
        """A flag's life in ms; 0 for ever."""
        return self.flag_days * MS_PER_DAY

    def told_days(self, history_days: int) -> int:
        """Days from a flag that the status query still counts it, and its row is kept (0:
        for ever): its life, or the slot-usage history's (`history_days`) if longer, for a
        SIM seen before the flag ended may be the cloner's while the history shows it."""
        return max(self.flag_days, history_days) if self.flag_days else 0


MAX_RAT_ATTACHES = int(np.iinfo(np.uint8).max)


@dataclass(frozen=True)
class CellSites:
    """Cell coordinates, by a cell's code (its position in `cells`, from 1)."""

    codes: dict[str, int]
    lat: np.ndarray  # float64 radians, index 0 unused
    lon: np.ndarray

    @classmethod
    def of(cls, sites: dict[str, tuple[float, float]]) -> CellSites:
        names = sorted(sites)
        lat = np.radians([0.0] + [sites[n][0] for n in names])
        lon = np.radians([0.0] + [sites[n][1] for n in names])
        return cls({n: i + 1 for i, n in enumerate(names)}, lat, lon)

    def distance_km(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Great-circle distance between cells coded a and b (haversine)."""
        dlat = self.lat[b] - self.lat[a]
        dlon = self.lon[b] - self.lon[a]
        h = (np.sin(dlat / 2) ** 2
             + np.cos(self.lat[a]) * np.cos(self.lat[b]) * np.sin(dlon / 2) ** 2)
        return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))


NO_CELLS = CellSites.of({})


@dataclass(frozen=True, eq=False)
class WindowSightings:
    """The batch's attaches the window looks at, as columns."""

    row: np.ndarray  # int64, the IMEI's white-list row (ABSENT: not looked at)
    imsi: np.ndarray  # uint64
    ts_ms: np.ndarray  # int64
    operator: np.ndarray  # uint32 MCC-MNC, NOWHERE if not carried
    cell: np.ndarray  # uint32, NOWHERE if not carried or not a known cell
    # bool: the attach's radio is one the IMEI's model lacks (TacDatabase.inconsistent);
    # all False when not given
    off_radio: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.off_radio is None:
            object.__setattr__(self, "off_radio", np.zeros(len(self.row), dtype=bool))


@dataclass(frozen=True, eq=False)
class Flags:
    """Attaches that flagged their IMEI, one per IMEI (the first in time)."""

    event: np.ndarray  # int64, index into the batch
    reason: np.ndarray  # uint8, index into REASONS

    def __len__(self) -> int:
        return len(self.event)


@dataclass(frozen=True, eq=False)
class Misused:
    """IMEIs flagged misused, with the time of each flag; PostgreSQL (clone_flags) is the
    record. A flag holds from its attach for the policy's `flag_days` (`life_ms`, 0: for
    ever), so every process that holds it judges its end alike, by the events' clock."""

    keys: np.ndarray  # uint64, ascending, distinct
    flagged_ms: np.ndarray  # int64, the attach that raised each key's flag

    def __len__(self) -> int:
        return len(self.keys)

    def holds(self, keys: np.ndarray, ts_ms: np.ndarray, life_ms: int) -> np.ndarray:
        """bool per key: flagged, by a flag not ended at its ts_ms (an attach before the flag
        is judged by it too, as a late one was before flags ended)."""
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        held = self.keys[at] == keys
        if life_ms:
            held &= np.asarray(ts_ms, dtype=np.int64) < self.flagged_ms[at] + life_ms
        return held

    def with_flags(self, keys: np.ndarray | list[int], flagged_ms: np.ndarray | list[int],
                   life_ms: int) -> Misused:
        """These flags laid over (the later time where a key has two), and every flag that
        ended a life or more before the latest one began dropped: what is held follows the
        flags raised. A worker refuses to start where an attach late enough to meet a dropped
        flag would be accepted (clones.flag_days against worker.max_event_age_days).

        Costs O(n) only when a flag is new or later than the one held: the followers read
        their last minute of flags again at every look."""
        added = np.asarray(keys, dtype=np.uint64)
        added_ms = np.asarray(flagged_ms, dtype=np.int64)
        if not len(added):
            return self
        if len(self.keys):
            at = np.minimum(np.searchsorted(self.keys, added), len(self.keys) - 1)
            newer = (self.keys[at] != added) | (self.flagged_ms[at] < added_ms)
            if not newer.any():
                return self
            added, added_ms = added[newer], added_ms[newer]
        order = np.lexsort((-added_ms, added))  # by key, the latest flag first
        added, added_ms = added[order], added_ms[order]
        first = np.ones(len(added), dtype=bool)
        first[1:] = added[1:] != added[:-1]
        added, added_ms = added[first], added_ms[first]
        at = np.searchsorted(self.keys, added)
        present = np.zeros(len(added), dtype=bool)
        inside = at < len(self.keys)
        present[inside] = self.keys[at[inside]] == added[inside]
        flagged_ms_all = self.flagged_ms.copy()
        flagged_ms_all[at[present]] = added_ms[present]
        keys_all = np.insert(self.keys, at[~present], added[~present])
        flagged_ms_all = np.insert(flagged_ms_all, at[~present], added_ms[~present])
        if life_ms:
            live = flagged_ms_all + life_ms > int(flagged_ms_all.max()) - life_ms
            if not live.all():
                keys_all, flagged_ms_all = keys_all[live], flagged_ms_all[live]
        return Misused(keys_all, flagged_ms_all)


NOT_MISUSED = Misused(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64))


def fingerprint(imsi: np.ndarray) -> np.ndarray:
    """uint16 per IMSI: the top 16 bits of the IMSI mixed (splitmix64's finaliser), never 0.
    Two SIMs of one IMEI sharing one (one pair in 65,535) count once: the window mostly
    flags less for it. Two bytes, not four, are what keep a row at 3 bytes and the window
    of 300 M IMEIs under a GiB (issue 21 part 2)."""
    x = imsi.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    fp = (x >> np.uint64(64 - FINGERPRINT_BITS)).astype(np.uint16)
    return fp + (fp == 0).astype(np.uint16)


@dataclass(frozen=True)
class DayCodes:
    """A slot's day kept modulo `span` (a byte where it can be): a day is read back as the
    one at or before the window's reference day with that code, right while every slot
    held is less than `span` days older than the reference. The window keeps it so by
    clearing, before the reference gets that far, the slots no attach to come can see
    (`CloneWindow._sweep`). A slot is live `reach` days at most (window_days + late_days);
    `span` is at least twice that, so a sweep is needed once every `span - reach` days or
    more seldom."""

    reach: int

    @property
    def dtype(self) -> type:
        return next(t for t in (np.uint8, np.uint16, np.uint32)
                    if 2 * self.reach <= 1 << (8 * np.dtype(t).itemsize))

    @property
    def span(self) -> int:
        return 1 << (8 * np.dtype(self.dtype).itemsize)

    def encode(self, day: np.ndarray) -> np.ndarray:
        return (np.asarray(day, dtype=np.int64) & (self.span - 1)).astype(self.dtype)

    def decode(self, code: np.ndarray, reference: int) -> np.ndarray:
        """int64 days: for each code, the latest day at or before `reference` with it."""
        return reference - ((reference - code.astype(np.int64)) & (self.span - 1))

    def aged(self, code: np.ndarray, reference: int, days: int) -> np.ndarray:
        """bool per code: its day, read at `reference`, is `days` or more before it. In the
        codes' own width (a byte a code, where `decode` takes eight)."""
        if days <= 0:
            return np.ones(code.shape, dtype=bool)
        if days >= self.span:
            return np.zeros(code.shape, dtype=bool)
        age = np.subtract(self.dtype(reference & (self.span - 1)), code, dtype=self.dtype)
        return age >= days


@dataclass(frozen=True, eq=False)
class MoreSims:
    """The window's slots beyond the first, for the IMEIs seen with more than one SIM: one
    entry a row, the rows held as the keys of an index (2 bytes an entry, where an array of
    them took 4), entry i the row of rank i; a row absent has those slots empty."""

    rows: KeyIndex  # the white-list rows held
    fp: np.ndarray  # uint16 (entries, distinct_imsis - 2), EMPTY where no SIM
    day: np.ndarray  # DayCodes.dtype (entries, distinct_imsis - 2), the day's code

    @classmethod
    def empty(cls, slots: int, codes: DayCodes) -> MoreSims:
        return cls(KeyIndex.from_sorted_keys(np.zeros(0, dtype=np.uint64)),
                   np.zeros((0, slots), dtype=np.uint16), np.zeros((0, slots), dtype=codes.dtype))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.fp.nbytes + self.day.nbytes

    def find(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, held) of each row (ascending); position is meaningful where held."""
        at = self.rows.rows(row.astype(np.uint64))
        held = at != ABSENT
        return np.where(held, at, 0), held

    def with_rows(self, row: np.ndarray, fp: np.ndarray, day: np.ndarray) -> MoreSims:
        """These rows (ascending, none held) added."""
        if not len(row):
            return self
        row = row.astype(np.uint64)
        at = self.rows.ranks(row)
        return MoreSims(self.rows.with_keys(row), np.insert(self.fp, at, fp, axis=0),
                        np.insert(self.day, at, day, axis=0))

    def live_after(self, dead_day: int, codes: DayCodes, reference: int) -> MoreSims:
        """The SIMs last seen on dead_day or before emptied (in place), and without the
        entries left empty. Days are read at `reference`."""
        dead = (self.fp != EMPTY) & codes.aged(self.day, reference, reference - dead_day)
        self.fp[dead] = EMPTY
        self.day[dead] = 0
        keep = (self.fp != EMPTY).any(axis=1)
        if keep.all():
            return self
        return MoreSims(self.rows.compress(keep), self.fp[keep], self.day[keep])

    def moved(self, old: KeyIndex, new: KeyIndex) -> MoreSims:
        """On another white list: each row's IMEI at its row in `new` (gone when absent).
        Rows ascend with keys in both, so the entries stay in order. Looked up
        REBASE_CHUNK_ROWS entries at a time: a lookup's transients are some 100 bytes an
        entry, a few GB for the 24 M entries of a national window at once. Consumes this
        one: the entries kept are written over its own arrays, each no further on than it
        was (two sets of them were 116 MB at once at 300 M IMEIs, issue 21 part 4)."""
        fp, day, low = self.fp, self.day, self.rows.low
        high, count, written = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], 0
        for start in range(0, len(self.rows), REBASE_CHUNK_ROWS):
            # Read before anything is written at or past `start`: this chunk's own entries.
            to = new.rows_sorted(old.keys_at(
                self.rows.keys_between(start, start + REBASE_CHUNK_ROWS)))
            kept = to != ABSENT
            piece = KeyIndex.from_sorted_keys(to[kept].astype(np.uint64))
            end = written + len(piece)
            fp[written:end] = fp[start:start + len(to)][kept]
            day[written:end] = day[start:start + len(to)][kept]
            low[written:end] = piece.low
            high.append(piece.chunk_high)
            count.append(np.diff(piece.chunk_start))
            written = end
        rows = KeyIndex.from_chunks(np.concatenate(high), np.concatenate(count), low[:written])
        return MoreSims(rows, fp[:written], day[:written])


Found = tuple[np.ndarray, np.ndarray]  # MoreSims.find's (position, held)
# The lately added entries of MoreSims join the others once they are this share of them:
# a batch copies at most 1/MERGE_SHARE of the entries, and every entry is copied into the
# others about MERGE_SHARE times as they grow.
MERGE_SHARE = 16


class CloneWindow:
    """The window over a generation's white list. Most IMEIs are only ever seen with one
    SIM, so a row holds one SIM (its fingerprint and day's code: 3 bytes); the other
    `distinct_imsis - 2` slots an IMEI needs live in `MoreSims`, only for the IMEIs seen
    with more than one SIM, and an entry goes once all its SIMs are out of reach of any
    attach still to come (last seen `window_days + late_days` days before the newest attach
    observed). An attach's last place (minute, operator, cell) is kept only when it carries
    an operator or a known cell, the only ones a later attach is compared with, and the
    radio counts only for IMEIs seen on a radio their model lacks: pages never written cost
    no memory.

    It flags exactly what the window before it did (tests/harness/clonewindow.py, the
    reference, held to it by tests/test_clonewindow.py) for every attach at most `late_days`
    older than the newest it has observed, in batches whose attaches lie less than
    `DayCodes.span - window_days` days apart (232 with the defaults), but for the SIMs of one
    IMEI that share a fingerprint (one pair in 65,535): those count once, which mostly
    flags less, and now and then flags a later attach than the reference would. The worker
    passes how far behind the decoder lets an attach be (worker.max_event_age_days and
    max_event_future_s, in whole days), which bounds its batches too. An older attach finds
    fewer SIMs (it errs towards not flagging). `late_days` defaults to `window_days`."""

    def __init__(self, index: KeyIndex, rules: CloneRules, cells: CellSites = NO_CELLS,
                 late_days: int | None = None) -> None:
        if rules.distinct_imsis < 2:
            raise ValueError("clones.distinct_imsis must be at least 2")
        self.index = index  # the white list the rows belong to
        self.rules = rules
        self.cells = cells
        self.late_days = rules.window_days if late_days is None else late_days
        rows = len(index)
        self._codes = DayCodes(rules.window_days + self.late_days)
        self._fp = _zeros(rows, np.uint16)  # the first SIM's slot
        self._day = _zeros(rows, self._codes.dtype)
        # Two levels, so that a batch adding entries copies the small one: the IMEIs that
        # took a second SIM lately join the others once they are a MERGE_SHARE of them.
        self._more = MoreSims.empty(rules.distinct_imsis - 2, self._codes)
        self._lately = MoreSims.empty(rules.distinct_imsis - 2, self._codes)
        self._newest_day = 0  # of the attaches observed, for forgetting MoreSims' entries
        # The day the slots' codes are read at (the newest attach of the batch observed or
        # of those before it), and the earliest day a slot may hold (None: none written).
        self._reference = 0
        self._low: int | None = None
        self._minute = _zeros(rows, np.uint32)
        self._operator = _zeros(rows, np.uint32)
        self._cell = _zeros(rows, np.uint32)
        self._rat_count = _zeros(rows, np.uint8)
        self._rat_day = _zeros(rows, np.uint16)  # when the count began
        self._rat_minute = _zeros(rows, np.uint32)  # the last attach counted
        # Which groups of columns an attach has written: a rebase reads no other.
        self._written = {group: False for group in _GROUPS}

    @property
    def nbytes(self) -> int:
        """Bytes allocated (pages never written are not resident)."""
        return (sum(getattr(self, name).nbytes for name in _COLUMNS) + self._more.nbytes
                + self._lately.nbytes)

    @property
    def imeis_with_more_sims(self) -> int:
        return len(self._more) + len(self._lately)

    def rebase(self, index: KeyIndex) -> CloneWindow:
        """The same memory of each IMEI, on another generation's white list. Consumes this
        window: its pages are given back as their rows move, REBASE_CHUNK_ROWS at a time, so
        that the two windows together hold about one window and a chunk (issue 21 part 4),
        and only rows an attach has written are looked up and copied."""
        if index is self.index:
            return self
        moved = CloneWindow(index, self.rules, self.cells, self.late_days)
        groups = [columns for group, columns in _GROUPS.items() if self._written[group]]
        for start in range(0, len(self.index), REBASE_CHUNK_ROWS):
            end = min(start + REBASE_CHUNK_ROWS, len(self.index))
            to = None
            for columns in groups:
                sources = [getattr(self, name)[start:end] for name in columns]
                held = np.flatnonzero(np.logical_or.reduce([s != 0 for s in sources]))
                if len(held):
                    to = rows_in(self.index, index, start, end) if to is None else to
                    held = held[to[held] != ABSENT]
                    for name, source in zip(columns, sources):
                        getattr(moved, name)[to[held]] = source[held]
                for name in columns:
                    _release(getattr(self, name), start, end)
            if not end % INDEX_LET_GO_ROWS:
                # The old generation's white list, mapped from its files, is read by this
                # rebase alone now: its pages behind go back as they are read, so that the
                # two generations' keys are never resident whole together (issue 21 part 1).
                let_go(self.index.low)
        moved._written = dict(self._written)
        moved._more = self._more.moved(self.index, index)
        moved._lately = self._lately.moved(self.index, index)
        moved._newest_day = self._newest_day
        moved._reference, moved._low = self._reference, self._low
        return moved

    def observe(self, seen: WindowSightings) -> Flags:
        at = np.flatnonzero(seen.row != ABSENT)
        order = at[np.lexsort((seen.ts_ms[at], seen.row[at]))]
        flagged_at = np.full(len(seen.row), -1, dtype=np.int8)
        if len(order):
            days = seen.ts_ms[order] // MS_PER_DAY
            self._advance(int(days.min()), int(days.max()))
        self._imsis(seen, order, flagged_at)
        self._places(seen, order, flagged_at)
        self._radios(seen, order, flagged_at)
        self._forget(seen, order)
        return self._first_per_imei(seen, flagged_at)

    # -- days kept as codes -----------------------------------------------------------------

    def _advance(self, oldest: int, top: int) -> None:
        """The reference day for a batch whose attaches are on days oldest..top, swept first
        where some slot's day could be read back wrong at it."""
        reference = max(self._newest_day, top)
        if self._low is None:
            # The batch's SIMs, and those of attaches late_days behind it, are kept; the
            # first sweep comes no sooner than it must.
            self._low = max(reference - self._codes.span + 1, min(oldest, top - self.late_days))
        elif reference - self._low >= self._codes.span:
            self._sweep(reference)
        self._reference = reference

    def _sweep(self, reference: int) -> None:
        """Every slot no attach to come can see emptied, and every slot that would read back
        wrong at `reference` (only after a jump of more than `span - reach` days, such as a
        worker idle for months), REBASE_CHUNK_ROWS rows at a time. Days are read at the
        newest day observed, where they still read right; an attach to come is at most
        late_days older than it, so one last seen reach days before it is out of the
        window for all of them."""
        codes, newest = self._codes, self._newest_day
        dead_day = max(newest - codes.reach, reference - codes.span)
        for start in range(0, len(self._fp), REBASE_CHUNK_ROWS):
            fp = self._fp[start:start + REBASE_CHUNK_ROWS]
            day = self._day[start:start + REBASE_CHUNK_ROWS]
            dead = np.flatnonzero((fp != EMPTY) & codes.aged(day, newest, newest - dead_day))
            fp[dead], day[dead] = EMPTY, 0
        self._more = self._more.live_after(dead_day, codes, newest)
        self._lately = self._lately.live_after(dead_day, codes, newest)
        self._low = dead_day + 1

    # -- too many SIMs ----------------------------------------------------------------------

    def _imsis(self, seen: WindowSightings, order: np.ndarray, flagged_at: np.ndarray) -> None:
        if not len(order):
            return
        row, fp = seen.row[order], fingerprint(seen.imsi[order])
        day = (seen.ts_ms[order] // MS_PER_DAY).astype(np.int64)
        # One SIM on one IMEI counts once a batch, on its latest day.
        pair = np.lexsort((-day, fp, row))
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
        """Rows distinct and ascending, one SIM each."""
        slots_fp, slots_day, found = self._slots(row)
        live = (slots_fp != EMPTY) & (day[:, None] - slots_day < self.rules.window_days)
        match = live & (slots_fp == fp[:, None])
        known = match.any(axis=1)
        slot = np.argmax(match, axis=1)
        again = np.flatnonzero(known)
        newer = again[day[again] > slots_day[again, slot[again]]]
        slots_day[newer, slot[newer]] = day[newer]
        new = np.flatnonzero(~known)
        full = live[new].all(axis=1)
        flagged_at[event[new[full]]] = REASONS.index(CloneReason.IMSIS)
        # Kept out of the window once it flags, so a replay of the batch flags it again; and
        # one seen before the earliest day a slot may hold is out of every window to come.
        take = new[~full]
        take = take[day[take] >= self._low]
        free = np.argmin(live[take], axis=1)
        slots_fp[take, free] = fp[take]
        slots_day[take, free] = day[take]
        self._store(row, slots_fp, slots_day, found)

    def _slots(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Found]]:
        """Each row's slots (fingerprints, and days as int64: copies), and where each level
        of MoreSims holds it."""
        more = self.rules.distinct_imsis - 2
        slots_fp = np.zeros((len(row), 1 + more), dtype=np.uint16)
        codes = np.zeros((len(row), 1 + more), dtype=self._codes.dtype)
        slots_fp[:, 0], codes[:, 0] = self._fp[row], self._day[row]
        found = []
        for level in (self._more, self._lately):
            at, held = level.find(row)
            slots_fp[held, 1:] = level.fp[at[held]]
            codes[held, 1:] = level.day[at[held]]
            found.append((at, held))
        return slots_fp, self._codes.decode(codes, self._reference), found

    def _store(self, row: np.ndarray, slots_fp: np.ndarray, slots_day: np.ndarray,
               found: list[Found]) -> None:
        self._written[SIMS] |= bool(len(row))
        codes = np.where(slots_fp != EMPTY, self._codes.encode(slots_day), 0).astype(
            self._codes.dtype)
        self._fp[row], self._day[row] = slots_fp[:, 0], codes[:, 0]
        if slots_fp.shape[1] == 1:
            return
        for level, (at, held) in zip((self._more, self._lately), found):
            level.fp[at[held]] = slots_fp[held, 1:]
            level.day[at[held]] = codes[held, 1:]
        anywhere = found[0][1] | found[1][1]
        grown = np.flatnonzero(~anywhere & (slots_fp[:, 1:] != EMPTY).any(axis=1))
        self._lately = self._lately.with_rows(row[grown], slots_fp[grown, 1:],
                                              codes[grown, 1:])
        if len(self._lately) * MERGE_SHARE > len(self._more):
            self._more = self._more.with_rows(self._lately.rows.keys(), self._lately.fp,
                                              self._lately.day)
            self._lately = MoreSims.empty(slots_fp.shape[1] - 1, self._codes)

    def _forget(self, seen: WindowSightings, order: np.ndarray) -> None:
        """MoreSims' entries out of reach: a slot is live for an attach on day d when it was
        last seen after d - window_days, and no attach to come is older than the newest
        day less late_days."""
        if not len(order):
            return
        newest = int(seen.ts_ms[order].max() // MS_PER_DAY)
        if newest <= self._newest_day:
            return
        self._newest_day = newest
        dead_day = newest - self._codes.reach
        self._more = self._more.live_after(dead_day, self._codes, newest)
        self._lately = self._lately.live_after(dead_day, self._codes, newest)

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
        # An attach carrying neither an operator nor a cell is compared with nothing after
        # it (both tests want the earlier attach's), so it is kept as no attach at all: a
        # row written only when it carries one, or to forget the one it held.
        last = np.flatnonzero(np.r_[row[1:] != row[:-1], True])
        carries = (operator[last] != NOWHERE) | (cell[last] != NOWHERE)
        held = (self._operator[row[last]] != NOWHERE) | (self._cell[row[last]] != NOWHERE)
        write = last[carries | held]
        self._written[PLACES] |= bool(len(write))
        self._minute[row[write]] = np.where(carries[carries | held], minute[write], 0)
        self._operator[row[write]] = operator[write]
        self._cell[row[write]] = cell[write]

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
        self._written[RADIOS] = True
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


SIMS, PLACES, RADIOS = "sims", "places", "radios"
# A row's columns by what writes them: a group no attach has written is all zeros.
_GROUPS = {SIMS: ("_fp", "_day"), PLACES: ("_minute", "_operator", "_cell"),
           RADIOS: ("_rat_count", "_rat_day", "_rat_minute")}
_COLUMNS = tuple(name for columns in _GROUPS.values() for name in columns)
# Rows (or MoreSims entries) a rebase or a sweep moves at a time: the transients are some 40
# bytes a row for the columns and 100 an entry for MoreSims' lookups, about 13 MB a chunk
# whatever the white list's size (issue 21 part 4: 5 % of the state; chunks of 2^21 held
# 634 MB beyond the window at 300 M IMEIs, and were no faster).
REBASE_CHUNK_ROWS = 1 << 17
# Old white-list rows a rebase reads between two let-gos of their keys' pages (64 MB of them,
# at 2 bytes a row): a let-go walks the whole mapping's page table, so not every chunk.
INDEX_LET_GO_ROWS = REBASE_CHUNK_ROWS << 8
PAGE = mmap.PAGESIZE


def _zeros(count: int, dtype: type) -> np.ndarray:
    """A column of zeros on anonymous pages of its own: untouched pages cost no memory, and
    `_release` can give pages back (numpy's own allocations cannot)."""
    size = count * np.dtype(dtype).itemsize
    # Private: a shared anonymous mapping gives a page to every read as well as every write.
    pages = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, dtype=dtype, count=count)


def _release(column: np.ndarray, start: int, end: int) -> None:
    """The whole pages under column[start:end] given back to the kernel (they read as zeros
    again). Only for a column made by `_zeros`."""
    pages = column.base.obj  # frombuffer's memoryview of the mapping
    size = column.itemsize
    first = -(-start * size // PAGE) * PAGE  # the part-pages at the ends are kept
    last = end * size // PAGE * PAGE if end < len(column) else len(pages)
    if last > first:
        pages.madvise(mmap.MADV_DONTNEED, first, last - first)


def _flag(flagged_at: np.ndarray, events: np.ndarray, reason: CloneReason) -> None:
    unflagged = events[flagged_at[events] < 0]
    flagged_at[unflagged] = REASONS.index(reason)


def cells_from_csv(text: str) -> CellSites:
    """`cell,lat,lon` lines (a header line is skipped) as cell sites."""
    sites: dict[str, tuple[float, float]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = [p.strip() for p in line.split(",")]
        if not line.strip() or (number == 1 and parts[0].lower() == "cell"):
            continue
        if len(parts) != 3:
            raise ValueError(f"cell sites line {number}: expected cell,lat,lon")
        lat, lon = float(parts[1]), float(parts[2])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or math.isnan(lat + lon):
            raise ValueError(f"cell sites line {number}: latitude or longitude out of range")
        sites[parts[0]] = (lat, lon)
    return CellSites.of(sites)


def sightings_of(batch: AttachBatch, index: KeyIndex, cells: CellSites,
                 tacs: TacDatabase | None = None) -> WindowSightings:
    """The batch as the window sees it: white-listed, well-formed IMEIs only (a placeholder
    or test IMEI is shared by design: the malformed rule's, not a clone); each attach's
    radio against its model's in `tacs`, when given."""
    row = index.rows(batch.imei_key)
    row[batch.malformed] = ABSENT
    cell = np.zeros(len(batch), dtype=np.uint32)
    if cells.codes:
        carried = np.flatnonzero(batch.cell != None)  # noqa: E711 - elementwise, object array
        cell[carried] = [cells.codes.get(c, NOWHERE) for c in batch.cell[carried].tolist()]
    off_radio = None
    if tacs is not None:
        off_radio = tacs.inconsistent(tacs.rows(batch.imei_key), batch.rat)
    return WindowSightings(row, batch.imsi, batch.ts_ms, batch.operator, cell, off_radio)


def window_start_ms(flag_ms: int, rules: CloneRules) -> int:
    return (flag_ms // MS_PER_DAY - rules.window_days + 1) * MS_PER_DAY


def sims_batch(sims: list[tuple[int, int, int, int]], flag_ms: dict[int, int]) -> AttachBatch:
    """The SIMs seen with newly flagged IMEIs, as attaches at the moment of the flag: decided
    like the batch's own, the owner's pass and every other gets its misuse notice, counted
    from now rather than from when that SIM was last seen."""
    keys = np.array([k for k, _, _, _ in sims], dtype=np.uint64)
    imsi = np.array([i for _, i, _, _ in sims], dtype=np.uint64)
    return AttachBatch(
        imei_key=keys, malformed=np.zeros(len(sims), dtype=bool), imsi=imsi,
        mcc=np.array([int(str(i)[:MCC_DIGITS]) for _, i, _, _ in sims], dtype=np.uint16),
        msisdn=np.array([m for _, _, m, _ in sims], dtype=np.uint64),
        ts_ms=np.array([flag_ms[k] for k, _, _, _ in sims], dtype=np.int64),
        emergency=np.zeros(len(sims), dtype=bool))
