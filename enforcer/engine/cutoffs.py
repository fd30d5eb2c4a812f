"""The pairs and IMEIs this operator has cut off (notices in state `cut`), in memory for the
decision: the next attach of each is BLACKLISTED. PostgreSQL is the record; every worker
follows it (`enforcer/follow/cutofflist.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enforcer.engine.keyindex import KeyIndex
from enforcer.engine.pairset import PairSet


@dataclass(frozen=True, eq=False)
class CutOffs:
    imeis: frozenset[int]
    pairs: frozenset[tuple[int, int]]  # (IMEI key, IMSI)
    imei_index: KeyIndex
    pair_set: PairSet

    @classmethod
    def of(cls, imeis: set[int] | frozenset[int],
           pairs: set[tuple[int, int]] | frozenset[tuple[int, int]]) -> CutOffs:
        keys = np.array(sorted(imeis), dtype=np.uint64)
        pair_imeis = np.array([k for k, _ in pairs], dtype=np.uint64)
        pair_imsis = np.array([i for _, i in pairs], dtype=np.uint64)
        return cls(frozenset(imeis), frozenset(pairs), KeyIndex.from_sorted_keys(keys),
                   PairSet.from_pairs(pair_imeis, pair_imsis))

    def __len__(self) -> int:
        return len(self.imeis) + len(self.pairs)

    def changed(self, cut: list[tuple[int, int | None]],
                restored: list[tuple[int, int | None]]) -> CutOffs:
        """(IMEI key, IMSI or None for the whole IMEI) cut and restored."""
        if not cut and not restored:
            return self
        imeis, pairs = set(self.imeis), set(self.pairs)
        for key, imsi in restored:
            imeis.discard(key) if imsi is None else pairs.discard((key, imsi))
        for key, imsi in cut:
            imeis.add(key) if imsi is None else pairs.add((key, imsi))
        return CutOffs.of(imeis, pairs)

    def contains(self, keys: np.ndarray, imsis: np.ndarray) -> np.ndarray:
        if not len(self):
            return np.zeros(len(keys), dtype=bool)
        return self.imei_index.contains(keys) | self.pair_set.contains(keys, imsis)


NO_CUTOFFS = CutOffs.of(frozenset(), frozenset())
