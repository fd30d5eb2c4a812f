"""A KeyIndex built from keys that come in blocks, in any order and with repeats (a national
white list read from its file), in two passes over the same blocks: a counting sort by
chunk.

Pass one counts the keys of each chunk (`ChunkTally`); pass two writes each key's low bits
into the rows its chunk will hold (`KeyPlacement`), which are then sorted a group of
chunks at a time and their repeats dropped. No set of the keys is held beside the index
they become: a roaring bitmap of a national list is 437 MB at 300 M IMEIs, 20 % of the
state, where issue 21 part 4 allows a transient of 5 %. What either pass holds beyond the
index is a block's keys and the chunks' counts (a chunk's high bits and its count, 16
bytes, as many as the index's own chunk arrays hold).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from enforcer.engine.keyindex import CHUNK_BITS, LOW_BITS_MASK, LOW_MASK, KeyIndex, steps_for
from enforcer.engine.roaringfmt import run_starts

# Chunks' counts held in pieces before they are added together: a block of scattered keys
# (black-listed IMEIs) is a chunk each, and adding every block's to the whole would copy it.
TALLY_PENDING = 1 << 20
# Rows sorted together at the end of pass two, whole chunks at a time: 4 bytes each of
# transient (8 where the chunks are scattered) and as much again to sort, 8 to 16 MB.
SORT_ROWS = 1 << 20
_SHIFT = np.uint64(CHUNK_BITS)

LowMaker = Callable[[int], np.ndarray]  # room for this many uint16 low bits


def in_memory_low(count: int) -> np.ndarray:
    return np.empty(count, dtype=np.uint16)


class ChunkTally:
    """Pass one: how many keys, repeats counted, each chunk (key >> CHUNK_BITS) holds."""

    def __init__(self) -> None:
        self._high = np.zeros(0, dtype=np.uint64)
        self._count = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_chunks = 0
        self.keys = 0

    def add(self, keys: np.ndarray) -> None:
        """Counts a block of keys (uint64, any order)."""
        high = _ascending(np.asarray(keys, dtype=np.uint64) >> _SHIFT)
        if not len(high):
            return
        starts = run_starts(high)
        self._pending.append((high[starts], np.diff(np.r_[starts, len(high)])))
        self._pending_chunks += len(starts)
        self.keys += len(high)
        if self._pending_chunks > max(TALLY_PENDING, len(self._high)):
            self._add_up()

    def _add_up(self) -> None:
        high = np.concatenate([self._high, *(piece for piece, _ in self._pending)])
        count = np.concatenate([self._count, *(count for _, count in self._pending)])
        self._pending, self._pending_chunks = [], 0
        order = np.argsort(high, kind="stable")
        high, count = high[order], count[order]
        starts = run_starts(high)
        self._high = high[starts]
        self._count = np.add.reduceat(count, starts) if len(starts) else count

    def placement(self, make_low: LowMaker = in_memory_low) -> KeyPlacement:
        """Pass two's placement for the keys counted, into room `make_low` makes (uint16, a
        row a key counted: a column mapped from the next snapshot's file, say)."""
        self._add_up()
        return KeyPlacement(self._high, self._count, make_low(self.keys))


class KeyPlacement:
    """Pass two: the same keys, in blocks of any size and order, written into the rows of
    their chunks; then `index`."""

    def __init__(self, chunk_high: np.ndarray, count: np.ndarray, low: np.ndarray) -> None:
        self._high = chunk_high
        self._start = np.r_[0, np.cumsum(count)].astype(np.int64)
        self._next = self._start[:-1].copy()
        self._low = low

    def add(self, keys: np.ndarray) -> None:
        """Writes a block's keys (uint64, any order) into their chunks' rows. Raises
        ValueError for a key of a chunk pass one did not count, or past its count: the
        blocks were not the same in both passes (a file changed while it was read)."""
        keys = _ascending(np.asarray(keys, dtype=np.uint64))
        if not len(keys):
            return
        high = keys >> _SHIFT
        starts = run_starts(high)
        lengths = np.diff(np.r_[starts, len(keys)])
        chunk = np.minimum(np.searchsorted(self._high, high[starts]),
                           max(len(self._high) - 1, 0))
        first = self._next[chunk] if len(self._high) else lengths
        if (not len(self._high) or (self._high[chunk] != high[starts]).any()
                or (first + lengths > self._start[chunk + 1]).any()):
            raise ValueError("keys the first pass did not count: the blocks changed between "
                             "the two passes")
        del high
        self._low[np.repeat(first - starts, lengths) + np.arange(len(keys))] = keys & LOW_MASK
        self._next[chunk] += lengths

    def index(self) -> KeyIndex:
        """The keys placed, as an index: each chunk's rows sorted, repeats dropped, SORT_ROWS
        at a time. Raises ValueError when fewer keys were placed than counted."""
        if (self._next != self._start[1:]).any():
            raise ValueError("fewer keys than the first pass counted: the blocks changed "
                             "between the two passes")
        low, start = self._low, self._start
        count = np.diff(start)
        kept = np.empty(len(count), dtype=np.int64)
        written = 0
        for c0, c1 in _groups(start):
            # Each row as its chunk's place in the group and its low bits, in 32 bits where
            # the group has at most 2^16 chunks (a dense list's always do).
            wide = np.uint64 if c1 - c0 > 1 << (32 - CHUNK_BITS) else np.uint32
            rows = np.repeat(np.arange(c1 - c0, dtype=wide), count[c0:c1])
            rows <<= wide(CHUNK_BITS)
            rows |= low[start[c0]:start[c1]]
            rows.sort()
            rows = rows[np.r_[True, rows[1:] != rows[:-1]]]
            low[written:written + len(rows)] = rows & wide(LOW_BITS_MASK)
            kept[c0:c1] = np.bincount(rows >> wide(CHUNK_BITS), minlength=c1 - c0)
            written += len(rows)
        chunk_start = np.r_[0, np.cumsum(kept)].astype(np.int64)
        # Mostly repeats (a list delivered twice over): copied to its size rather than the
        # room kept for the index's life.
        if written < len(low):
            low = low[:written].copy() if written < len(low) // 2 else low[:written]
        return KeyIndex(self._high, chunk_start, low, steps_for(chunk_start))


def _ascending(values: np.ndarray) -> np.ndarray:
    """`values` sorted: as they are when they are already (a delivery most often is, its
    blocks too: a check costs a tenth of a sort)."""
    return values if (values[1:] >= values[:-1]).all() else np.sort(values)


def _groups(start: np.ndarray) -> list[tuple[int, int]]:
    """Ranges [c0, c1) of chunks, together covering all, each of whole chunks holding about
    SORT_ROWS rows (more where one chunk alone has more)."""
    chunks, rows = len(start) - 1, int(start[-1])
    cuts = np.searchsorted(start[1:], np.arange(SORT_ROWS, rows, SORT_ROWS)) + 1
    bounds = sorted({0, chunks, *cuts.tolist()})
    return [(c0, c1) for c0, c1 in zip(bounds, bounds[1:]) if c0 < c1]
