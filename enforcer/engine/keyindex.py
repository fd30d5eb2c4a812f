"""Vectorized membership and rank over a set of 14-digit IMEI keys.

pyroaring answers one key at a time from Python (about 0.8 µs per `in`, and BitMap64.rank
costs over 100 µs), far too slow for a million decisions a second. This index keeps the
same layout as roaring's array containers, the keys grouped by their high bits with the low
16 bits stored as sorted uint16, and answers a whole batch with a handful of numpy passes.
The position it returns (the key's rank) lets other columns be aligned to the set.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice

import numpy as np
from pyroaring import BitMap64

from enforcer.heap import let_go
from enforcer.engine.steps import in_steps
from enforcer.engine.roaringfmt import (CONTAINER_BITS, Buffer, index_arrays, run_starts,
                                       serialize_chunks)

CHUNK_BITS = CONTAINER_BITS  # the same grouping as roaring's containers
LOW_BITS_MASK = (1 << CHUNK_BITS) - 1
LOW_MASK = np.uint64(LOW_BITS_MASK)
ABSENT = -1
# Below this many keys a lookup bisects each on its own: the batch search runs a fixed
# number of whole-array steps, which for one or two keys cost more than the search.
FEW_TARGETS = 64
# Up to this many keys, the chunk is found by bisecting too, with no numpy call at all: a
# decision asks several indexes about the one or two IMEIs of a batch that are not the
# owner's, and the dozen whole-array calls that find chunks cost more than a Python loop.
FEW_KEYS = 8
# Rows of a set placed at a time by `changed`: some 50 bytes of transient each (25 MB; 2^21
# rows with the change's own arrays were 15 % of a national state, issue 21 part 4 allows 5).
CHANGED_ROWS = 1 << 19
# Keys changed looked up at a time by `changed`: some 40 bytes each (10 MB).
CHANGED_KEYS = 1 << 18
# Keys searched at a time by `rows_sorted` and `ranks`: the batch search's arrays take some
# 40 bytes a key (0.6 GB for a fold's 15 M keys at once), 40 MB a step, as fast.
LOOKUP_KEYS = 1 << 20
# A bitmap of at most this many keys is indexed from its serialization (at most some 10
# bytes a key, 80 MB, and a few nanoseconds each); a larger one (a national white list) a
# step of BITMAP_STEP_KEYS at a time through its iterator, slower, in bounded memory.
BITMAP_WHOLE_KEYS = 1 << 23
BITMAP_STEP_KEYS = 1 << 20
# `rows_in` searches the rows of the new set its keys span when they are at most this many
# a key (a copy of them, 8 bytes each); beyond, each key is looked up in the index.
SPAN_PER_KEY = 4


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique's values, sorted, by sorting: numpy 2's unique hashes, about 20 times slower
    on 1.5 M int64 keys (3.3 s against 0.17 s here, numpy 2.4)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


@dataclass(frozen=True, eq=False)
class KeyIndex:
    chunk_high: np.ndarray  # uint64, sorted: key >> CHUNK_BITS of each non-empty chunk
    chunk_start: np.ndarray  # int64, len(chunk_high) + 1: first row of each chunk
    low: np.ndarray  # uint16, key & LOW_MASK, sorted within each chunk
    search_steps: int

    @classmethod
    def from_sorted_keys(cls, keys: np.ndarray) -> KeyIndex:
        """From strictly increasing keys (a duplicate would shift every later rank),
        LOOKUP_KEYS at a time into arrays made once: scattered keys (black-listed IMEIs,
        operator SIMs) are a chunk each, and their whole-array temporaries were some 50
        bytes a key (0.15 GB for 3 M, 7 % of a national state: issue 21 part 4)."""
        keys = _increasing(keys, "given")
        # Room for a chunk a key; the pages past the chunks found are never touched.
        chunk_high = np.empty(len(keys), dtype=np.uint64)
        chunk_start = np.empty(len(keys) + 1, dtype=np.int64)
        low = np.empty(len(keys), dtype=np.uint16)
        chunks, last = 0, None
        for start in range(0, len(keys), LOOKUP_KEYS):
            part = keys[start:start + LOOKUP_KEYS]
            high = part >> np.uint64(CHUNK_BITS)
            starts = run_starts(high)
            if last is not None and high[0] == last:
                starts = starts[1:]  # the chunk goes on from the step before
            chunk_high[chunks:chunks + len(starts)] = high[starts]
            chunk_start[chunks:chunks + len(starts)] = starts + start
            chunks += len(starts)
            low[start:start + len(part)] = part & LOW_MASK
            last = high[-1]
        chunk_start[chunks] = len(keys)
        chunk_high, chunk_start = chunk_high[:chunks], chunk_start[:chunks + 1]
        if chunks < len(keys) // 2:
            # Copied to their size where most of the room is unused (a dense list: 16 bytes a
            # key of address space, 4.8 GB at 300 M, kept for the index's life); scattered
            # keys, a chunk each or nearly, keep their arrays rather than copy them again.
            chunk_high, chunk_start = chunk_high.copy(), chunk_start.copy()
        return cls(chunk_high=chunk_high, chunk_start=chunk_start, low=low,
                   search_steps=steps_for(chunk_start))

    @classmethod
    def from_chunks(cls, chunk_high: np.ndarray, counts: np.ndarray, low: np.ndarray
                    ) -> KeyIndex:
        """From the low bits of a set's keys (uint16, in key order) and the chunks they fall
        in: each chunk's high bits (in any order, a chunk may come in several pieces) and its
        number of keys (a chunk of none is dropped). Builds without the keys themselves: 8
        bytes a key that a merge of millions need not hold."""
        high, piece = np.unique(np.asarray(chunk_high, dtype=np.uint64), return_inverse=True)
        total = np.zeros(len(high), dtype=np.int64)
        np.add.at(total, piece, np.asarray(counts, dtype=np.int64))
        held = total > 0
        chunk_start = np.r_[0, np.cumsum(total[held])].astype(np.int64)
        if chunk_start[-1] != len(low):
            raise ValueError("the chunks' counts must add up to the keys")
        return cls(high[held], chunk_start, low, steps_for(chunk_start))

    @classmethod
    def from_arrays(cls, chunk_high: np.ndarray, chunk_start: np.ndarray, low: np.ndarray
                    ) -> KeyIndex:
        """From the arrays of an index (a snapshot's files, say). Raises ValueError when they
        are not one index's (a type, or chunks that do not cover the keys): files mixed by
        hand would otherwise answer wrongly, silently."""
        kinds = (chunk_high.dtype, chunk_start.dtype, low.dtype)
        if kinds != (np.dtype(np.uint64), np.dtype(np.int64), np.dtype(np.uint16)):
            raise ValueError(f"an index's arrays are uint64, int64 and uint16, not {kinds}")
        if (len(chunk_start) != len(chunk_high) + 1 or chunk_start[0] != 0
                or chunk_start[-1] != len(low)):
            raise ValueError(f"{len(chunk_high)} chunks bounded by {len(chunk_start)} starts "
                             f"do not cover {len(low)} keys")
        return cls(chunk_high, chunk_start, low, steps_for(chunk_start))

    @classmethod
    def from_bitmap(cls, bitmap: BitMap64, whole: int = BITMAP_WHOLE_KEYS,
                    step: int = BITMAP_STEP_KEYS) -> KeyIndex:
        """The bitmap's keys as an index: serialized whole and parsed when there are at most
        `whole`; else `step` at a time from its iterator into the index's columns (60-110 ns
        a key against a few), some 30 bytes a key of one step in transient, where the
        serialization would be some 2 bytes a key of the whole set (issue 21 part 4). A
        national white list is indexed from its file, with no bitmap
        (`ListFileReader.read_white`)."""
        if len(bitmap) <= whole:
            return cls.from_portable(bitmap.serialize())
        low = np.empty(len(bitmap), dtype=np.uint16)
        highs, counts = [], []
        keys = iter(bitmap)
        for start in range(0, len(low), step):
            size = min(step, len(low) - start)
            piece = np.fromiter(islice(keys, size), np.uint64, size)
            low[start:start + size] = (piece & LOW_MASK).astype(np.uint16)
            high, count = _runs(piece >> np.uint64(CHUNK_BITS))
            highs.append(high)
            counts.append(count)
        # A chunk split between two steps comes in two pieces, which from_chunks adds up.
        return cls.from_chunks(np.concatenate(highs), np.concatenate(counts), low)

    @classmethod
    def from_portable(cls, serialized: Buffer,
                      read_to: Callable[[int], None] = lambda offset: None) -> KeyIndex:
        """From a BitMap64 in its portable serialization, e.g. a snapshot file's bytes or the
        file mapped (`read_to`: roaringfmt.index_arrays)."""
        chunk_high, chunk_start, low = index_arrays(serialized, read_to)
        return cls(chunk_high, chunk_start, low, steps_for(chunk_start))

    def __len__(self) -> int:
        return len(self.low)

    def portable_parts(self) -> Iterator[bytes]:
        """The set in pyroaring's portable format (what `from_portable` reads), a 32-bit
        bucket at a time."""
        return serialize_chunks(self.chunk_high, self.chunk_start, self.low)

    @property
    def nbytes(self) -> int:
        return self.chunk_high.nbytes + self.chunk_start.nbytes + self.low.nbytes

    def keys(self) -> np.ndarray:
        counts = np.diff(self.chunk_start)
        high = np.repeat(self.chunk_high, counts)
        return (high << np.uint64(CHUNK_BITS)) | self.low.astype(np.uint64)

    def keys_between(self, start: int, end: int) -> np.ndarray:
        """The keys of rows start..end-1, ascending: `keys()[start:end]` without the rest."""
        end = min(end, len(self.low))
        if start >= end:
            return np.zeros(0, dtype=np.uint64)
        first = int(np.searchsorted(self.chunk_start, start, side="right")) - 1
        last = int(np.searchsorted(self.chunk_start, end, side="left"))
        bounds = np.clip(self.chunk_start[first:last + 1], start, end)
        high = np.repeat(self.chunk_high[first:last], np.diff(bounds))
        return (high << np.uint64(CHUNK_BITS)) | self.low[start:end].astype(np.uint64)

    def ranks(self, keys: np.ndarray) -> np.ndarray:
        """How many keys of the set are below each key, in the set or not; int64. Searched
        LOOKUP_KEYS at a time."""
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) <= LOOKUP_KEYS:
            return lower_bounds(self.low, *self._slices(keys), self.search_steps)
        return in_steps(self.ranks, keys, LOOKUP_KEYS, np.int64)

    def _slices(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each key: the rows of its chunk (start, end: an empty slice at the rows above
        it when no chunk holds its high bits) and its low bits, what `lower_bounds` and
        `find_in_ranges` search."""
        high = keys >> np.uint64(CHUNK_BITS)
        chunk = np.searchsorted(self.chunk_high, high)
        start = self.chunk_start[chunk]
        in_chunk = np.zeros(len(keys), dtype=bool)
        known = chunk < len(self.chunk_high)
        in_chunk[known] = self.chunk_high[chunk[known]] == high[known]
        end = np.where(in_chunk, self.chunk_start[np.minimum(chunk + 1, len(self.chunk_high))],
                       start)
        return start, end, (keys & LOW_MASK).astype(np.uint16)

    def with_keys(self, keys: np.ndarray) -> KeyIndex:
        """This set and `keys` (ascending, none of them in it): the keys here move up a row
        for each new key below them (`ranks`). O(n) for the copy, without the keys."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(keys):
            return self
        high, count = _runs(keys >> np.uint64(CHUNK_BITS))
        low = np.insert(self.low, self.ranks(keys), (keys & LOW_MASK).astype(np.uint16))
        return KeyIndex.from_chunks(np.r_[self.chunk_high, high],
                                    np.r_[np.diff(self.chunk_start), count], low)

    def changed(self, keys: np.ndarray, removing: np.ndarray,
                low_column: Callable[[int], np.ndarray] | None = None) -> KeyIndex:
        """This set with each of `keys` (strictly increasing) taken out where `removing`
        (bool, a key each) is set, else put in (kept if there): a fold's white list, the
        overlay's IMEIs that leave or are placed. Both are sorted, so the keys' rows and the
        set's come in one order: the keys are looked up CHANGED_KEYS at a time (to count the
        new set, a bit a key kept), the fresh ones' low bits written into the new column as
        they are ranked, and the set's rows moved CHANGED_ROWS at a time, with only the keys
        a step of rows reaches held (their rows, or runs of equal ranks: a new TAC's IMEIs
        all rank alike). No bitmap of the set or all its keys (some 3 GB at 300 M keys),
        nor the fresh keys' ranks and low bits whole (a year's 16 M, 6.5 % of a national
        state: issue 21 part 4). The new column (uint16, a key each) is
        `low_column(count)`'s, or in memory: one mapped from a file is let go of as it is
        written, and this set's where it is mapped as it is read. Raises ValueError for keys
        not strictly increasing or a mask of another length."""
        keys = _increasing(keys, "keys")
        removing = np.asarray(removing, dtype=bool)
        if len(removing) != len(keys):
            raise ValueError(f"{len(removing)} flags for {len(keys)} keys")
        count = len(self.low)
        held: list[np.ndarray] = []  # each part's keys in the set, a bit each
        for part, out in _parts(keys, removing):
            present = self.rows_sorted(part) != ABSENT
            count += int(np.count_nonzero(~out & ~present)) - int(np.count_nonzero(out & present))
            held.append(np.packbits(present))
            let_go(self.low)  # looked up all over it
        low = low_column(count) if low_column else np.empty(count, dtype=np.uint16)
        runs: list[tuple[np.ndarray, np.ndarray]] = []  # each part's chunks changed, +/- keys
        reached = _Reached(self._changes(keys, removing, held, low, runs))
        for start in range(0, len(self.low), CHANGED_ROWS):
            stop = min(start + CHANGED_ROWS, len(self.low))
            gone, into_at, into_count, before = reached.below(stop)
            # A kept row moves up one for each fresh key ranked at or below it and down one
            # for each gone row below it: both counted along the slice.
            out = np.bincount(gone - start, minlength=stop - start)
            into = np.zeros(stop - start, dtype=np.int64)
            np.add.at(into, into_at - start, into_count)  # a rank's run may span two parts
            shift = np.cumsum(into) - np.cumsum(out) + before
            kept = np.flatnonzero(out == 0)
            low[start + kept + shift[kept]] = self.low[start:stop][kept]
            let_go(self.low, low)  # where mapped (a fold's process): read once, not held
        reached.drain()  # fresh keys ranked past every row
        return KeyIndex.from_chunks(
            np.concatenate([self.chunk_high, *(high for high, _ in runs)]),
            np.concatenate([np.diff(self.chunk_start), *(change for _, change in runs)]), low)

    def _changes(self, keys: np.ndarray, removing: np.ndarray, held: list[np.ndarray],
                 low: np.ndarray, runs: list[tuple[np.ndarray, np.ndarray]]
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`changed`'s keys, a part at a time, in order, with `held` (each part's keys in
        the set, packed bits: only the keys taken out are looked up again): each fresh key's
        low bits written into `low` at its new row, and the part's changed chunks (high
        bits, keys added or taken out) appended to `runs`; yields the part's gone rows
        (ascending, int64) and its fresh keys' ranks as runs of equal ones (ranks, counts;
        int64)."""
        gone_before = fresh_before = 0
        for (part, out), bits in zip(_parts(keys, removing), held):
            present = np.unpackbits(bits, count=len(part)).astype(bool)
            taken = part[out & present]
            gone = self.rows_sorted(taken)
            fresh = part[~out & ~present]
            ranks = self.ranks(fresh)
            taken >>= np.uint64(CHUNK_BITS)
            del present
            low[ranks - gone_before - np.searchsorted(gone, ranks)
                + np.arange(fresh_before, fresh_before + len(fresh))] = fresh & LOW_MASK
            let_go(self.low, low)  # looked up and written all over them
            gone_high, gone_count = _runs(taken)
            fresh_high, fresh_count = _runs(fresh >> np.uint64(CHUNK_BITS))
            runs.append((np.concatenate([gone_high, fresh_high]),
                         np.concatenate([-gone_count, fresh_count])))
            gone_before += len(gone)
            fresh_before += len(fresh)
            rank_at, rank_count = _runs(ranks)
            yield gone, rank_at.astype(np.int64), rank_count

    def compress(self, keep: np.ndarray) -> KeyIndex:
        """The keys of the rows where `keep` (bool, a row each) is true."""
        if not len(self.low):
            return self
        counts = np.add.reduceat(keep, self.chunk_start[:-1], dtype=np.int64)
        return KeyIndex.from_chunks(self.chunk_high, counts, self.low[keep])

    def keys_at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(self.low)):
            raise IndexError("a row outside the index (ABSENT has no key)")
        chunk = np.searchsorted(self.chunk_start, rows, side="right") - 1
        return (self.chunk_high[chunk] << np.uint64(CHUNK_BITS)) | self.low[rows].astype(np.uint64)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """Rank of each key in the set, or ABSENT; int64, in the order given."""
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) <= FEW_KEYS or bool((keys[1:] >= keys[:-1]).all()):
            return self.rows_sorted(keys)  # a few keys are looked up one by one, in any order
        if len(keys) > LOOKUP_KEYS:
            # Sorted a step at a time: sorted whole, a fold's 25 M rebuilt IMEIs were some 32
            # bytes each at once, 0.8 GB (issue 21 part 4).
            return in_steps(self.rows, keys, LOOKUP_KEYS, np.int64)
        # Searching in key order keeps each step's reads close together in memory.
        order = np.argsort(keys)
        ranked = self.rows_sorted(keys[order])
        out = np.empty_like(ranked)
        out[order] = ranked
        return out

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self.rows(keys) != ABSENT

    def row(self, key: int) -> int:
        """One key's rank, or ABSENT, by bisecting in plain Python."""
        high_of, low_of, start_of = self._views
        high = key >> CHUNK_BITS
        chunk = bisect_left(high_of, high)
        if chunk == len(high_of) or high_of[chunk] != high:
            return ABSENT
        low, end = key & LOW_BITS_MASK, start_of[chunk + 1]
        at = bisect_left(low_of, low, start_of[chunk], end)
        return at if at < end and low_of[at] == low else ABSENT

    @cached_property
    def _views(self) -> tuple[memoryview, memoryview, memoryview]:
        # Items of a memoryview come out as Python ints: no numpy scalar per probe.
        return memoryview(self.chunk_high), memoryview(self.low), memoryview(self.chunk_start)

    def rows_sorted(self, keys: np.ndarray) -> np.ndarray:
        """`rows` for keys already in ascending order (any order is correct, this is faster)."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(self.low) or not len(keys):
            return np.full(len(keys), ABSENT, dtype=np.int64)
        if len(keys) <= FEW_KEYS:
            return np.array([self.row(key) for key in keys.tolist()], dtype=np.int64)
        if len(keys) > LOOKUP_KEYS:
            return in_steps(self.rows_sorted, keys, LOOKUP_KEYS, np.int64)
        return find_in_ranges(self.low, *self._slices(keys), self.search_steps)


def rows_in(old: KeyIndex, new: KeyIndex, start: int, end: int) -> np.ndarray:
    """For old's rows start..end-1, each one's key's row in `new` (ABSENT where `new` lacks
    it); int64. Both are sorted, so the rows' keys lie in one range of `new`: one search of
    the chunk's keys within that range (36 ns a row), not an index lookup a key."""
    return _rows_of_ascending(new, old.keys_between(start, end))


def missing_from(old: KeyIndex, new: KeyIndex, step: int = LOOKUP_KEYS
                 ) -> Iterator[np.ndarray]:
    """The keys of `old` that `new` lacks (uint64, ascending), in pieces: `step` of old's
    rows at a time (as `rows_in`), so that counting them holds one step, and without a
    bitmap of either set (0.5 GB each at 300 M IMEIs, and as much again to make one from an
    index). Where `old` is mapped from a file (an import's process), each step's pages are
    let go of once read: read whole, they were 0.6 GB at 300 M IMEIs beside the new list."""
    for start in range(0, len(old), step):
        keys = old.keys_between(start, start + step)
        let_go(old.low)
        yield keys[_rows_of_ascending(new, keys) == ABSENT]


def _rows_of_ascending(new: KeyIndex, keys: np.ndarray) -> np.ndarray:
    """`new.rows(keys)` for ascending keys: by one search within the rows of `new` they
    span where those are few, else by the index (an old list sparse beside the new one
    would span most of it: a copy of its keys, 2.4 GB at 300 M)."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    first, last = new.ranks(keys[[0, -1]]).tolist()
    if last + 1 - first > SPAN_PER_KEY * len(keys):
        return new.rows_sorted(keys)
    there = new.keys_between(first, last + 1)
    at = np.searchsorted(there, keys)
    found = at < len(there)
    found[found] = there[at[found]] == keys[found]
    return np.where(found, first + at, ABSENT)


def find_in_ranges(values: np.ndarray, start: np.ndarray, end: np.ndarray,
                   targets: np.ndarray, steps: int) -> np.ndarray:
    """Position of each target within its sorted slice values[start:end], or ABSENT."""
    if not len(values):
        return np.full(len(targets), ABSENT, dtype=np.int64)
    if len(targets) <= FEW_TARGETS:
        return _find_each(values, start, end, targets)
    base = lower_bounds(values, start, end, targets, steps)
    inside = (end > start) & (base < end)
    found = inside & (values[np.minimum(base, len(values) - 1)] == targets)
    return np.where(found, base, ABSENT)


def lower_bounds(values: np.ndarray, start: np.ndarray, end: np.ndarray,
                 targets: np.ndarray, steps: int) -> np.ndarray:
    """The first position of each sorted slice values[start:end] whose value is not below
    its target (end when none is); int64.

    A branchless lower bound run on the whole batch at once: the answer stays within
    [base, base + span), and `steps` halvings bring every span down to one.
    """
    start = np.asarray(start, dtype=np.int64)
    if not len(values) or not len(targets):
        return start.copy()
    base = np.minimum(start, len(values) - 1)
    span = end - start
    # Most chunks are far narrower than the widest: a batch that misses the wide ones
    # needs fewer halvings.
    steps = min(steps, int(span.max()).bit_length())
    half, probe = np.empty_like(span), np.empty_like(base)
    probed, below = np.empty(len(base), dtype=values.dtype), np.empty(len(base), dtype=bool)
    for _ in range(steps):  # in place: a batch of a million allocates nothing per step
        np.right_shift(span, 1, out=half)
        np.add(base, half, out=probe)
        np.take(values, probe, out=probed)
        np.less(probed, targets, out=below)
        np.copyto(base, probe, where=below)
        span -= half
    nonempty = end > start
    return np.where(nonempty & (values[base] < targets), base + 1, np.where(nonempty, base, start))


def _find_each(values: np.ndarray, start: np.ndarray, end: np.ndarray,
               targets: np.ndarray) -> np.ndarray:
    """`find_in_ranges` one target at a time: for a few dozen (a turn of N5g-eir requests),
    bisecting each through a memoryview (Python ints, no numpy call per step) costs less
    than the batch's fixed whole-array steps."""
    view = memoryview(values)
    found = []
    for lo, hi, target in zip(start.tolist(), end.tolist(), targets.tolist()):
        at = bisect_left(view, target, lo, hi)
        found.append(at if at < hi and view[at] == target else ABSENT)
    return np.array(found, dtype=np.int64)


def steps_for(bounds: np.ndarray) -> int:
    """Halvings that bring the widest of the spans between `bounds` down to one."""
    widest = int(np.diff(bounds).max()) if len(bounds) > 1 else 0
    return max(widest - 1, 0).bit_length()


def among(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Whether each value is one of `sorted_values` (ascending): np.isin by search, where
    numpy 2's isin hashes, some ten times slower on millions of keys."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def _parts(keys: np.ndarray, removing: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(keys), CHANGED_KEYS):
        yield keys[start:start + CHANGED_KEYS], removing[start:start + CHANGED_KEYS]


class _Reached:
    """`KeyIndex._changes`' parts read as far as a step of rows needs: the gone rows and the
    fresh ranks below a row, the rest held for the next step."""

    def __init__(self, parts: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self._parts = parts
        self._gone: list[np.ndarray] = [np.zeros(0, np.int64)]
        self._at: list[np.ndarray] = [np.zeros(0, np.int64)]
        self._count: list[np.ndarray] = [np.zeros(0, np.int64)]
        self._ended = False
        self._before = 0  # fresh keys less gone rows below the rows handed out so far

    def below(self, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The gone rows below `stop` and the fresh ranks below it (runs: ranks, counts)
        not handed out before, and how many fresh keys less gone rows were before them."""
        while not self._ended and max(self._gone[-1][-1:].tolist() + self._at[-1][-1:].tolist(),
                                      default=-1) < stop:
            try:
                gone, at, count = next(self._parts)
            except StopIteration:
                self._ended = True
                break
            self._gone.append(gone)
            self._at.append(at)
            self._count.append(count)
        gone, at, count = (np.concatenate(held) for held in (self._gone, self._at, self._count))
        gone_to = int(np.searchsorted(gone, stop))
        at_to = int(np.searchsorted(at, stop))
        self._gone, self._at, self._count = [gone[gone_to:]], [at[at_to:]], [count[at_to:]]
        before = self._before
        self._before += int(count[:at_to].sum()) - gone_to
        return gone[:gone_to], at[:at_to], count[:at_to], before

    def drain(self) -> None:
        for _ in self._parts:
            pass


def _increasing(keys: np.ndarray, name: str) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint64)
    if len(keys) > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ValueError(f"the keys {name} must be strictly increasing")
    return keys


def _runs(high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run of equal sorted values and its length (int64)."""
    starts = run_starts(high)
    return high[starts], np.diff(np.append(starts, len(high))).astype(np.int64)
