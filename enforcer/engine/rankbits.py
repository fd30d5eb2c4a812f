"""A bit vector that counts: which rows have a property, and how many before a given row
have it (rank), for a whole batch of rows at once. One bit a row plus 4 bytes per 64 rows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from enforcer.engine.steps import in_steps

WORD_BITS = 64
WORD_BITS_LOG2 = 6
WORD_SHIFT = np.uint64(WORD_BITS_LOG2)  # row >> 6 is the row's word
BIT_MASK = np.uint64(WORD_BITS - 1)
BYTES_PER_WORD = 8
ONE = np.uint64(1)
MAX_ROWS = 1 << 32  # counts are uint32
# Positions set, tested or ranked per step: some 32 to 60 bytes of transient each (the
# position, its word and its bit as uint64, and numpy's temporaries), 60 MB at most: a fold's
# 10 M ranks at once were 0.4 GB (issue 21 part 4: 5 % of a 2.2 GB national state).
POSITIONS_AT_ONCE = 1 << 20
# Words counted at a time as bits are finished (`_counted`): 5 bytes each of transient.
COUNT_WORDS = 1 << 20
# ks selected per step of `select_many`: a k's word is unpacked to 64 bytes and counted along
# (as many again, and a byte each compared), some 200 bytes a k: 25 MB a step.
SELECTS_AT_ONCE = 1 << 17
# Up to this many rows, lookups read row by row in plain Python (`bit_and_rank`): each
# vectorized lookup is a dozen numpy calls of about a microsecond whatever their length, a
# row read by hand about one microsecond. A turn of N5g-eir checks is that small.
FEW_ROWS = 20


@dataclass(frozen=True, eq=False)
class RankBits:
    words: np.ndarray  # uint64, bit i of word w is row w * 64 + i
    before: np.ndarray  # uint32, set bits in all earlier words
    rows: int

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> RankBits:
        if len(mask) >= MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows")
        packed = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
        padded = np.zeros(-(-len(packed) // BYTES_PER_WORD) * BYTES_PER_WORD, dtype=np.uint8)
        padded[:len(packed)] = packed
        return cls._counted(padded.view("<u8").astype(np.uint64, copy=False), len(mask))

    @classmethod
    def from_positions(cls, rows: int, positions: np.ndarray) -> RankBits:
        """The rows at `positions` (any order, repeats allowed) set (`BitsDraft.set`).
        Raises ValueError for a position outside 0 .. rows - 1."""
        draft = BitsDraft(rows)
        draft.set(positions)
        return draft.finish()

    @classmethod
    def _counted(cls, words: np.ndarray, rows: int) -> RankBits:
        # Summed a step of words at a time: the counts of every word widened at once were 5
        # bytes a word more (24 MB at 300 M rows, as a fold's registry is finished).
        before = np.zeros(len(words), dtype=np.uint32)
        total = np.uint32(0)
        for start in range(0, len(words) - 1, COUNT_WORDS):
            stop = min(start + COUNT_WORDS, len(words) - 1)
            np.cumsum(np.bitwise_count(words[start:stop]), dtype=np.uint32,
                      out=before[start + 1:stop + 1])
            before[start + 1:stop + 1] += total
            total = before[stop]
        return cls(words, before, rows)

    @property
    def count(self) -> int:
        return int(self.before[-1] + np.bitwise_count(self.words[-1])) if len(self.words) else 0

    @property
    def nbytes(self) -> int:
        return self.words.nbytes + self.before.nbytes

    def test(self, rows: np.ndarray) -> np.ndarray:
        """Each row's bit; bool. POSITIONS_AT_ONCE rows at a time."""
        rows = np.asarray(rows)
        if rows.ndim and len(rows) > POSITIONS_AT_ONCE:
            return in_steps(self.test, rows, POSITIONS_AT_ONCE, bool)
        rows = rows.astype(np.uint64, copy=False)
        word = self.words[rows >> WORD_SHIFT]
        return ((word >> (rows & BIT_MASK)) & ONE).astype(bool)

    def rank(self, rows: np.ndarray) -> np.ndarray:
        """Set bits strictly before each row; int64. POSITIONS_AT_ONCE rows at a time."""
        rows = np.asarray(rows)
        if rows.ndim and len(rows) > POSITIONS_AT_ONCE:
            return in_steps(self.rank, rows, POSITIONS_AT_ONCE, np.int64)
        rows = rows.astype(np.uint64, copy=False)
        at = rows >> WORD_SHIFT
        below = (ONE << (rows & BIT_MASK)) - ONE
        return self.before[at].astype(np.int64) + np.bitwise_count(self.words[at] & below)

    def test_and_rank(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`test` and `rank` of the same rows, each row's word read once."""
        rows = np.asarray(rows, dtype=np.uint64)
        at = rows >> WORD_SHIFT
        word = self.words[at]
        bit = rows & BIT_MASK
        is_set = ((word >> bit) & ONE).astype(bool)
        return is_set, self.before[at].astype(np.int64) + np.bitwise_count(
            word & ((ONE << bit) - ONE))

    def bit_and_rank(self, row: int) -> tuple[bool, int]:
        """`test_and_rank` of one row in plain Python: for a few rows, less than the dozen
        numpy calls of the vectorized form."""
        words, before = self._views
        word, bit = words[row >> WORD_BITS_LOG2], row & (WORD_BITS - 1)
        return bool(word >> bit & 1), before[row >> WORD_BITS_LOG2] + (
            word & ((1 << bit) - 1)).bit_count()

    @cached_property
    def _views(self) -> tuple[memoryview, memoryview]:
        return memoryview(self.words), memoryview(self.before)

    def mask_between(self, start: int, stop: int) -> np.ndarray:
        """`test` of rows start .. stop - 1, a bool a row: the words unpacked, no lookup."""
        first = start // WORD_BITS
        words = self.words[first:-(-stop // WORD_BITS)]
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")
        return bits[start - first * WORD_BITS:stop - first * WORD_BITS].view(bool)

    def select_many(self, ks: np.ndarray) -> np.ndarray:
        """The row of each k-th set bit (0-based, each below `count`); int64. Each k's word
        is unpacked to its 64 bits and counted along them: SELECTS_AT_ONCE ks at a time."""
        ks = np.asarray(ks, dtype=np.int64)
        out = np.empty(len(ks), dtype=np.int64)
        for start in range(0, len(ks), SELECTS_AT_ONCE):
            k = ks[start:start + SELECTS_AT_ONCE]
            # In the counts' own dtype (every k is below `count`): int64 ks would have numpy
            # copy every count to search them, at each step.
            word = np.searchsorted(self.before, k.astype(self.before.dtype), side="right") - 1
            bits = np.unpackbits(self.words[word].view(np.uint8).reshape(-1, BYTES_PER_WORD),
                                 axis=1, bitorder="little")
            # A byte a count (at most 64): numpy's own would be 8, 0.5 GB a million ks.
            seen = np.cumsum(bits, axis=1, dtype=np.uint8)
            left = (k - self.before[word].astype(np.int64)).astype(np.uint8)  # below 64
            out[start:start + len(k)] = word * WORD_BITS + np.argmax(seen > left[:, None], axis=1)
        return out

    def select(self, k: int) -> int:
        """The row of the k-th set bit (0-based)."""
        word = int(np.searchsorted(self.before, k, side="right")) - 1
        bits, left = int(self.words[word]), k - int(self.before[word])
        for bit in range(WORD_BITS):
            if bits >> bit & 1:
                if left == 0:
                    return word * WORD_BITS + bit
                left -= 1
        raise IndexError(k)


class BitsDraft:
    """Rows set a few at a time, then counted into a `RankBits`: a bit vector built from a
    stream of positions without holding them all."""

    def __init__(self, rows: int) -> None:
        if rows >= MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows")
        self.rows = rows
        self._words = np.zeros(-(-rows // WORD_BITS), dtype=np.uint64)
        self._counted_words = self._counted = 0  # `rank_settled`'s running count

    def set(self, positions: np.ndarray) -> None:
        """The rows at `positions` (any order, repeats allowed) set in place,
        POSITIONS_AT_ONCE at a time: a byte-a-row mask would be a transient of 300 MB at
        300 M rows, larger than the bits it builds (issue 21 part 4). Raises ValueError for
        a position outside 0 .. rows - 1."""
        positions = np.asarray(positions)
        if len(positions) and not 0 <= int(positions.min()) <= int(positions.max()) < self.rows:
            raise ValueError(f"positions must be rows 0 to {self.rows - 1}")
        for start in range(0, len(positions), POSITIONS_AT_ONCE):
            at = positions[start:start + POSITIONS_AT_ONCE].astype(np.uint64)
            np.bitwise_or.at(self._words, at >> WORD_SHIFT, ONE << (at & BIT_MASK))

    def rank_settled(self, rows: np.ndarray) -> np.ndarray:
        """Set bits strictly before each row (int64), for rows below which every bit is set
        already, ascending, each call's at or after the last call's words: counted on from
        the last call, so that no count is held per word. Raises ValueError for rows before
        the last call's words."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        low, high = int(rows[0]) >> WORD_BITS_LOG2, (int(rows[-1]) >> WORD_BITS_LOG2) + 1
        if low < self._counted_words:
            raise ValueError("rows must come in ascending order")
        self._counted += int(np.bitwise_count(self._words[self._counted_words:low]).sum())
        self._counted_words = low
        counts = np.bitwise_count(self._words[low:high]).astype(np.int64)
        before = np.cumsum(counts) - counts
        at = rows >> WORD_BITS_LOG2
        below = (ONE << (rows.astype(np.uint64) & BIT_MASK)) - ONE
        return self._counted + before[at - low] + np.bitwise_count(self._words[at] & below)

    def finish(self, rows: int | None = None) -> RankBits:
        """The bits counted; of their first `rows` rows only (none set past them), or all."""
        rows = self.rows if rows is None else rows
        if not 0 <= rows <= self.rows:
            raise ValueError(f"rows must be 0 to {self.rows}")
        return RankBits._counted(self._words[:-(-rows // WORD_BITS)], rows)
