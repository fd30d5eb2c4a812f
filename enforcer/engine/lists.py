"""The white, black and cut-off lists of one generation.

In memory a generation holds the white and black lists as their lookup indexes alone (the
same sets in roaring's layout, vectorized for the decision's hot path; the black list's
reasons a bit each per key), so that no process holds the national lists twice (some 0.5 GB
for 300 M white-listed IMEIs as a bitmap, 0.2 GB for 3 M scattered black-listed ones: issue
21). A delivery's file is read into a bitmap, indexed and dropped; a fold changes the white
list and a white list's import compares it through the indexes (`KeyIndex.changed`,
`missing_from`). Snapshots store the white list as its index's arrays, the black and cut-off
lists in roaring's portable format. The cut-off IMEIs, few, are held as both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
from pyroaring import BitMap64

from enforcer.engine.keyindex import ABSENT, KeyIndex, sorted_unique
from enforcer.heap import let_go
from enforcer.engine.pairset import PairSet
from enforcer.engine.rankbits import FEW_ROWS, RankBits


class BlackReason(StrEnum):
    STOLEN = "stolen"
    LOST = "lost"
    CLONED = "cloned"
    FRAUD = "fraud"
    COURT_ORDER = "court_order"


# An IMEI black-listed for several reasons reports the first of this order.
BLACK_REASONS: tuple[BlackReason, ...] = tuple(BlackReason)
NO_REASON = 255
# The first reason (its code) of each set of reasons held as bits (bit i: BLACK_REASONS[i]),
# a byte a key: at most eight reasons.
if len(BLACK_REASONS) > np.iinfo(np.uint8).bits:
    raise ImportError("more black-list reasons than the bits of black_reasons_held")
FIRST_REASON = np.array([next((i for i in range(len(BLACK_REASONS)) if mask >> i & 1),
                              NO_REASON) for mask in range(1 << len(BLACK_REASONS))],
                        dtype=np.uint8)


def keys_of(bitmap: BitMap64) -> np.ndarray:
    return np.frombuffer(bitmap.to_array(), dtype=np.uint64)


# The white list's keys' low bits (its index's `low`) among a snapshot draft's columns: a
# fold writes them into the next generation's file, as it does the registry's columns.
WHITE_LOW_COLUMN = "white-low"
# Black-listed keys looked up in the white list at a time: a mapped white list's pages they
# read are let go of after each step.
BLACK_ROWS_AT_ONCE = 1 << 16


def bitmap_bytes(bitmap: BitMap64) -> int:
    stats = bitmap.get_statistics()
    return (stats["n_bytes_array_containers"] + stats["n_bytes_bitset_containers"]
            + stats["n_bytes_run_containers"])


@dataclass(frozen=True, eq=False)
class Lists:
    generation: int
    cut_imeis: BitMap64
    cut_pairs: PairSet
    white_index: KeyIndex = field(repr=False)
    black_index: KeyIndex = field(repr=False)
    # uint8 per black_index row: bit i set when black-listed for BLACK_REASONS[i]
    black_reasons_held: np.ndarray = field(repr=False)
    cut_imei_index: KeyIndex = field(repr=False)
    # Per white_index row: black-listed too. Most IMEIs a decision meets are white-listed;
    # this bit spares them the search of the black index, whose keys are scattered one to a
    # chunk and cost a dozen cache misses each to look for.
    white_black: RankBits = field(repr=False)

    def black_keys(self) -> dict[BlackReason, np.ndarray]:
        """The black list's keys by reason (uint64, ascending; an IMEI under each of its
        reasons)."""
        keys = self.black_index.keys()
        return {reason: keys[self.black_reasons_held >> code & 1 == 1]
                for code, reason in enumerate(BLACK_REASONS)}

    @classmethod
    def build(cls, generation: int, white: BitMap64 | KeyIndex,
              black: dict[BlackReason, BitMap64] | None = None,
              cut_imeis: BitMap64 | None = None,
              cut_pairs: PairSet | None = None) -> Lists:
        """The lists with their indexes; the white list as a bitmap or as its index (a
        snapshot's, another generation's). The white and black bitmaps given are not kept
        (the cut-off IMEIs' is)."""
        return cls.from_black_keys(generation, white,
                                   {r: keys_of(b) for r, b in (black or {}).items()},
                                   cut_imeis, cut_pairs)

    @classmethod
    def from_black_keys(cls, generation: int, white: BitMap64 | KeyIndex,
                        black: dict[BlackReason, np.ndarray],
                        cut_imeis: BitMap64 | None = None,
                        cut_pairs: PairSet | None = None) -> Lists:
        """`build` with the black list as its keys by reason (uint64, ascending; a reason
        left out has none): a fold's, which bitmaps of would cost some 70 bytes a key."""
        cut_imeis = cut_imeis if cut_imeis is not None else BitMap64()
        cut_pairs = cut_pairs if cut_pairs is not None else PairSet.empty()
        # Not a union bitmap: black-listed IMEIs are scattered, one roaring container each
        # (about 70 bytes a key), so a second bitmap of them all would cost hundreds of MB.
        by_reason = [black.get(r, np.zeros(0, np.uint64)) for r in BLACK_REASONS]
        # Sorted in place and kept for the white list's lookup: a sorted copy and the
        # index's keys again were 48 MB more of a national load's transient (3 M keys).
        keys = np.concatenate(by_reason)
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        black_index = KeyIndex.from_sorted_keys(keys)
        held = np.zeros(len(black_index), dtype=np.uint8)
        for code, named in enumerate(by_reason):
            held[black_index.rows(named)] |= np.uint8(1 << code)
        white_index = white if isinstance(white, KeyIndex) else KeyIndex.from_bitmap(white)
        black_rows = _white_rows(white_index, keys)
        del keys
        return cls(generation, cut_imeis, cut_pairs, white_index, black_index, held,
                   KeyIndex.from_bitmap(cut_imeis),
                   RankBits.from_positions(len(white_index), black_rows[black_rows != ABSENT]))

    def with_white(self, generation: int, white_index: KeyIndex) -> Lists:
        """Generation `generation` with another white list, the black and cut-off lists
        this one's (their indexes shared, not built again)."""
        black_rows = _white_rows(white_index, self.black_index.keys())
        return replace(self, generation=generation, white_index=white_index,
                       white_black=RankBits.from_positions(len(white_index),
                                                           black_rows[black_rows != ABSENT]))

    @classmethod
    def from_keys(cls, generation: int, white: np.ndarray,
                  black: dict[BlackReason, np.ndarray] | None = None) -> Lists:
        """Build from arrays of keys, e.g. a synthetic country."""
        return cls.from_black_keys(
            generation,
            KeyIndex.from_sorted_keys(sorted_unique(np.asarray(white, dtype=np.uint64))),
            {r: sorted_unique(np.asarray(k, dtype=np.uint64)) for r, k in (black or {}).items()},
        )

    def black_reasons(self, imei_keys: np.ndarray) -> np.ndarray:
        """BLACK_REASONS code per key, NO_REASON where the key is not black-listed."""
        rows = self.black_index.rows(imei_keys)
        if not len(self.black_reasons_held):
            return np.full(len(rows), NO_REASON, dtype=np.uint8)
        return np.where(rows != ABSENT,
                        FIRST_REASON[self.black_reasons_held[np.maximum(rows, 0)]], NO_REASON)

    def black_reasons_at(self, imei_keys: np.ndarray, white_rows: np.ndarray) -> np.ndarray:
        """`black_reasons` for keys whose white_index rows the caller has (ABSENT: not
        white-listed): only the keys not white-listed, or marked black-listed, are searched."""
        if len(imei_keys) <= FEW_ROWS:
            return np.array([self._black_reason_at(key, row) for key, row in
                             zip(imei_keys.tolist(), white_rows.tolist())], dtype=np.uint8)
        search = white_rows == ABSENT
        listed = np.flatnonzero(~search)
        search[listed] = self.white_black.test(white_rows[listed])
        out = np.full(len(imei_keys), NO_REASON, dtype=np.uint8)
        if search.any():
            out[search] = self.black_reasons(imei_keys[search])
        return out

    def _black_reason_at(self, imei_key: int, white_row: int) -> int:
        if white_row != ABSENT and not self.white_black.bit_and_rank(white_row)[0]:
            return NO_REASON
        row = self.black_index.row(imei_key)
        return NO_REASON if row == ABSENT else int(FIRST_REASON[self.black_reasons_held[row]])

    def stats(self) -> dict[str, object]:
        def one(bitmap: BitMap64, index: KeyIndex | None) -> dict[str, int]:
            entry = {"count": len(bitmap), "bitmap_bytes": bitmap_bytes(bitmap)}
            if index is not None:
                entry["index_bytes"] = index.nbytes
            return entry

        black = {r.value: {"count": int(np.count_nonzero(self.black_reasons_held >> code & 1))}
                 for code, r in enumerate(BLACK_REASONS)}
        return {
            "generation": self.generation,
            "white": {"count": len(self.white_index), "index_bytes": self.white_index.nbytes},
            "black": {"count": len(self.black_index), "index_bytes": self.black_index.nbytes,
                      "by_reason": black},
            "cut_imeis": one(self.cut_imeis, self.cut_imei_index),
            "cut_pairs": {"count": len(self.cut_pairs), "bytes": self.cut_pairs.nbytes},
        }


def _white_rows(white_index: KeyIndex, black_keys: np.ndarray) -> np.ndarray:
    """The white list's row of each black-listed key (ascending), ABSENT where it has none;
    int64. Where the white list is mapped from a snapshot's files, the pages each step read
    are let go of after it: the black list is scattered over all of them, and a load beside
    the generation in use would otherwise hold the new white list's keys whole beside the
    old one's (0.6 GB at 300 M IMEIs; issue 21 part 1)."""
    rows = np.empty(len(black_keys), dtype=np.int64)
    for start in range(0, len(black_keys), BLACK_ROWS_AT_ONCE):
        part = slice(start, start + BLACK_ROWS_AT_ONCE)
        rows[part] = white_index.rows(black_keys[part])
        let_go(white_index.low)
    return rows
