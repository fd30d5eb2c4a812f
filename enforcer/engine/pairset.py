"""A set of (IMEI key, number) pairs, vectorized: cut-off (IMEI, IMSI) pairs and operator
SIMs (IMEI, MSISDN). Grouped by IMEI key, the numbers sorted within each group."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from enforcer.engine.keyindex import ABSENT, FEW_KEYS, KeyIndex, find_in_ranges, steps_for
from enforcer.engine.roaringfmt import run_starts


@dataclass(frozen=True, eq=False)
class PairSet:
    index: KeyIndex  # the distinct IMEI keys that have at least one pair
    start: np.ndarray  # int64, len(index) + 1: each IMEI key's slice of `number`
    number: np.ndarray  # uint64
    steps: int

    @classmethod
    def from_pairs(cls, imei_keys: np.ndarray, numbers: np.ndarray) -> PairSet:
        """The set of the pairs (uint64 each, any order, repeats allowed). Pairs already
        sorted and distinct keep `numbers` as given (a snapshot's, mapped): not to be
        written to after."""
        imei_keys = np.asarray(imei_keys, dtype=np.uint64)
        numbers = np.asarray(numbers, dtype=np.uint64)
        # A snapshot's pairs come sorted and distinct: sorting them again took copies of
        # them all (0.1 GB at a national operator's SIMs, in every load).
        if not _strictly_ascending(imei_keys, numbers):
            order = np.lexsort((numbers, imei_keys))
            imei_keys, numbers = imei_keys[order], numbers[order]
            keep = np.r_[True, (imei_keys[1:] != imei_keys[:-1]) | (numbers[1:] != numbers[:-1])]
            imei_keys, numbers = imei_keys[keep], numbers[keep]
        firsts = run_starts(imei_keys)
        start = np.append(firsts, len(imei_keys)).astype(np.int64)
        return cls(KeyIndex.from_sorted_keys(imei_keys[firsts]), start, numbers, steps_for(start))

    @classmethod
    def empty(cls) -> PairSet:
        return cls.from_pairs(np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    def __len__(self) -> int:
        return len(self.number)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes + self.start.nbytes + self.number.nbytes

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(self.index.keys(), np.diff(self.start)), self.number

    def contains(self, imei_keys: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        if not len(self.number):
            return np.zeros(len(imei_keys), dtype=bool)
        if len(imei_keys) <= FEW_KEYS:
            return np.array([self.has(key, number) for key, number in
                             zip(np.asarray(imei_keys, dtype=np.uint64).tolist(),
                                 np.asarray(numbers, dtype=np.uint64).tolist())], dtype=bool)
        group = self.index.rows(imei_keys)
        has = group != ABSENT
        out = np.zeros(len(group), dtype=bool)
        if has.any():
            g = group[has]
            hit = find_in_ranges(self.number, self.start[g], self.start[g + 1],
                                 np.asarray(numbers, dtype=np.uint64)[has], self.steps)
            out[has] = hit != ABSENT
        return out

    def has(self, imei_key: int, number: int) -> bool:
        """One pair, by bisecting in plain Python (see keyindex.FEW_KEYS)."""
        group = self.index.row(imei_key)
        if group == ABSENT:
            return False
        numbers, start = self._views
        end = start[group + 1]
        at = bisect_left(numbers, number, start[group], end)
        return at < end and numbers[at] == number

    @cached_property
    def _views(self) -> tuple[memoryview, memoryview]:
        return memoryview(self.number), memoryview(self.start)


def _strictly_ascending(imei_keys: np.ndarray, numbers: np.ndarray) -> bool:
    """Whether the pairs are sorted by key then number, with no pair twice."""
    if len(imei_keys) < 2:
        return True
    rising = imei_keys[1:] > imei_keys[:-1]
    return bool(np.all(rising | ((imei_keys[1:] == imei_keys[:-1])
                                 & (numbers[1:] > numbers[:-1]))))
