"""What the database already holds for recently seen (month, IMEI key, IMSI) pairs, so that a
pair seen again within the resolution (default an hour) on a day already recorded costs no
write: at steady state almost every attach is such a repeat.

A batch is looked up and remembered whole: each generation is an open-addressing hash table
in numpy arrays (linear probing, at most half full), probed for every row at once, one probe
step per round. Two generations keep memory bounded: when the young table is full it becomes
the old one, so recent pairs stay remembered and the oldest are forgotten (a forgotten pair
costs one more write, never a lost one).
"""

from __future__ import annotations

import numpy as np

from enforcer.engine.history import SlotUsageRows

# Multiplicative hashing (Fibonacci and two of xxHash's primes); the table uses the top bits.
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
        np.uint64(0x165667B19E3779F9))
LOAD_DIVISOR = 2  # slots per remembered pair, at the most: probes stay short
NEVER_MS = np.iinfo(np.int64).max  # the first sighting of a pair not remembered


class _Table:
    def __init__(self, bits: int) -> None:
        size = 1 << bits
        self.shift = np.uint64(64 - bits)
        self.mask = size - 1
        self.count = 0
        self.used = np.zeros(size, dtype=bool)
        self.month = np.zeros(size, dtype=np.int32)
        self.imei_key = np.zeros(size, dtype=np.uint64)
        self.imsi = np.zeros(size, dtype=np.uint64)
        self.bucket = np.zeros(size, dtype=np.int64)
        self.first_ms = np.zeros(size, dtype=np.int64)
        self.days = np.zeros(size, dtype=np.int32)
        self.msisdn = np.zeros(size, dtype=np.uint64)

    def home(self, rows: SlotUsageRows) -> np.ndarray:
        mixed = (rows.imei_key * _MIX[0]) ^ (rows.imsi * _MIX[1]) ^ \
            (rows.month.astype(np.uint64) * _MIX[2])
        return (mixed >> self.shift).astype(np.int64)

    def find(self, rows: SlotUsageRows) -> np.ndarray:
        """Each row's slot, or -1 when the pair is not here."""
        found = np.full(len(rows), -1, dtype=np.int64)
        todo = np.arange(len(rows))
        slot = self.home(rows)
        while len(todo):
            used = self.used[slot]
            hit = used & (self.imei_key[slot] == rows.imei_key[todo]) \
                & (self.imsi[slot] == rows.imsi[todo]) & (self.month[slot] == rows.month[todo])
            found[todo[hit]] = slot[hit]
            go_on = used & ~hit
            todo, slot = todo[go_on], (slot[go_on] + 1) & self.mask
        return found

    def place(self, rows: SlotUsageRows) -> np.ndarray:
        """Free slots for pairs that are not here (unique within `rows`)."""
        placed = np.empty(len(rows), dtype=np.int64)
        todo = np.arange(len(rows))
        slot = self.home(rows)
        while len(todo):
            free = ~self.used[slot]
            # Of the rows that reach one free slot together, the first takes it.
            _, first = np.unique(np.where(free, slot, -1), return_index=True)
            takes = np.zeros(len(todo), dtype=bool)
            takes[first] = free[first]
            placed[todo[takes]] = slot[takes]
            self.used[slot[takes]] = True
            todo, slot = todo[~takes], (slot[~takes] + 1) & self.mask
        self.count += len(rows)
        return placed


class UsageCache:
    def __init__(self, capacity: int, resolution_ms: int) -> None:
        self._per_generation = max(capacity // 2, 1)
        self._bits = max(int(self._per_generation * LOAD_DIVISOR - 1).bit_length(), 1)
        self._resolution_ms = resolution_ms
        self._young = _Table(self._bits)
        self._old = _Table(self._bits)

    def __len__(self) -> int:
        return self._young.count + self._old.count

    def _known(self, rows: SlotUsageRows) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, np.ndarray]:
        """For each row: whether either generation knows the pair, and what it holds."""
        bucket = np.full(len(rows), -1, dtype=np.int64)
        first = np.full(len(rows), NEVER_MS, dtype=np.int64)
        days = np.zeros(len(rows), dtype=np.int32)
        msisdn = np.zeros(len(rows), dtype=np.uint64)
        known = np.zeros(len(rows), dtype=bool)
        for table in (self._old, self._young):  # young last: it is the newer word
            at = table.find(rows)
            hit = at >= 0
            known |= hit
            bucket[hit] = np.maximum(bucket[hit], table.bucket[at[hit]])
            first[hit] = np.minimum(first[hit], table.first_ms[at[hit]])
            days[hit] |= table.days[at[hit]]
            msisdn[hit] = table.msisdn[at[hit]]
        return known, bucket, first, days, msisdn

    def needed(self, rows: SlotUsageRows) -> np.ndarray:
        """Which rows would change what the database holds, beyond the resolution. A
        sighting earlier than the first one held (partitions are read in no common order)
        moves first_seen: that is a write too."""
        known, bucket, first, days, msisdn = self._known(rows)
        return (~known | (rows.last_seen_ms // self._resolution_ms > bucket)
                | (rows.first_seen_ms < first)
                | (rows.days & ~days != 0) | (rows.msisdn != msisdn))

    def remember(self, rows: SlotUsageRows) -> None:
        """After the database committed `rows` (unique pairs, as aggregated)."""
        if not len(rows):
            return
        if len(rows) > self._per_generation:
            # More than a generation holds: remembering only some would leave what the
            # others replace standing, so forget everything instead.
            self._old, self._young = _Table(self._bits), _Table(self._bits)
            return
        known, bucket, first, days, _ = self._known(rows)
        bucket = np.where(known, np.maximum(bucket, rows.last_seen_ms // self._resolution_ms),
                          rows.last_seen_ms // self._resolution_ms)
        first = np.where(known, np.minimum(first, rows.first_seen_ms), rows.first_seen_ms)
        days = np.where(known, days | rows.days, rows.days)
        if self._young.count + len(rows) > self._per_generation:
            self._old, self._young = self._young, _Table(self._bits)
        at = self._young.find(rows)
        new = at < 0
        at[new] = self._young.place(rows.take(np.flatnonzero(new)))
        young = self._young
        young.month[at], young.imei_key[at], young.imsi[at] = rows.month, rows.imei_key, \
            rows.imsi
        young.bucket[at], young.days[at], young.msisdn[at] = bucket, days, rows.msisdn
        young.first_ms[at] = first
