"""The operator's subscribers' numbers: IMSI -> MSISDN, for the equipment checks that carry
no MSISDN (S13 never does, TS 29.272 §7.2.19; an AMF often sends a SUPI without a GPSI), so
that the owner of a registered device is told apart again (DOMAIN.md, "3GPP interfaces").

Compact for a country: 80 M subscribers in 12 bytes each. The frozen layer is two sorted
columns, the IMSI as a uint64 key and the MSISDN as a uint32 offset from a base the map
chooses once (a country's numbers share their leading digits: Iran's 98 9xx xxx xxxx span
10^9, under 2^32); a number outside the base's span is kept whole in a second, small layer.
What was learned since the last merge is a small sorted layer over them (as
`enforcer.engine.layers` lays the registry's changes over the snapshot): a change costs what
the small layer holds, and the small layer is merged into the frozen one, O(n), once it holds
`recent_max` IMSIs. Immutable: a change gives a new map, which readers take whole."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

OFFSET_DTYPE = np.uint32
OFFSET_SPAN = int(np.iinfo(OFFSET_DTYPE).max) + 1  # numbers base .. base + 2^32 - 1 are narrow
# IMSIs learned since the last merge before the next one: a follow round copies at most this
# many (16 bytes each), a merge copies the whole map (12 bytes a subscriber).
RECENT_MAX = 1 << 17


class _Sorted(NamedTuple):
    """Sorted unique uint64 keys and their values."""

    keys: np.ndarray
    values: np.ndarray

    @classmethod
    def empty(cls, dtype: type) -> _Sorted:
        return cls(np.zeros(0, np.uint64), np.zeros(0, dtype))

    def find(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which queries have an entry, its value where they do, anything where not)."""
        if not len(self.keys):
            return np.zeros(len(query), bool), np.zeros(len(query), self.values.dtype)
        at = np.minimum(self.keys.searchsorted(query), len(self.keys) - 1)
        return self.keys[at] == query, self.values[at]

    def laid_over(self, new: _Sorted) -> _Sorted:
        """`new` (sorted, unique) over these: values of held keys replaced, fresh keys
        inserted in place, O(n + k)."""
        if not len(new.keys):
            return self
        at = self.keys.searchsorted(new.keys)
        held = at < len(self.keys)
        held[held] = self.keys[at[held]] == new.keys[held]
        values = self.values.copy()
        values[at[held]] = new.values[held]
        fresh = ~held
        return _Sorted(np.insert(self.keys, at[fresh], new.keys[fresh]),
                       np.insert(values, at[fresh], new.values[fresh].astype(values.dtype)))

    def without(self, keys: np.ndarray) -> _Sorted:
        """These keys taken out (those held; a copy only when one is)."""
        has, _ = self.find(keys)
        if not has.any():
            return self
        keep = np.ones(len(self.keys), bool)
        keep[self.keys.searchsorted(keys[has])] = False
        return _Sorted(self.keys[keep], self.values[keep])


def _unique_last(imsis: np.ndarray, msisdns: np.ndarray) -> _Sorted:
    """Sorted by IMSI, the last pair given for each. Pairs already sorted and unique (as
    `serve` reads them, in the table's key order) are taken as they are: no copy."""
    imsis, msisdns = np.asarray(imsis, np.uint64), np.asarray(msisdns, np.uint64)
    if (imsis[1:] > imsis[:-1]).all():
        return _Sorted(imsis, msisdns)
    order = np.argsort(imsis, kind="stable")
    imsis, msisdns = imsis[order], msisdns[order]
    last = np.ones(len(imsis), bool)
    last[:-1] = imsis[1:] != imsis[:-1]
    return _Sorted(imsis[last], msisdns[last])


def _base_for(msisdns: np.ndarray) -> int:
    """The base whose span is centred on the median number: the country's numbers, whichever
    side of the median they lie, are within 2^31 of it."""
    if not len(msisdns):
        return 0
    return max(int(np.median(msisdns)) - OFFSET_SPAN // 2, 0)


class MsisdnsByImsi:
    """IMSI -> MSISDN (both integers of their digits). Never changed once made."""

    def __init__(self, base: int, narrow: _Sorted, wide: _Sorted, recent: _Sorted,
                 size: int, recent_max: int = RECENT_MAX) -> None:
        self.base = base
        self._narrow = narrow  # offsets from `base`, uint32
        self._wide = wide  # numbers beyond the base's span, uint64; no key also in `narrow`
        self._recent = recent  # learned since the last merge, over both, uint64
        self._size = size
        self.recent_max = recent_max

    @classmethod
    def empty(cls, recent_max: int = RECENT_MAX) -> MsisdnsByImsi:
        return cls(0, _Sorted.empty(OFFSET_DTYPE), _Sorted.empty(np.uint64),
                   _Sorted.empty(np.uint64), 0, recent_max)

    @classmethod
    def of(cls, imsis: np.ndarray, msisdns: np.ndarray,
           recent_max: int = RECENT_MAX) -> MsisdnsByImsi:
        """A map of these pairs, all in the frozen layer; where an IMSI is given twice, the
        later pair counts. Arrays already sorted and unique become the map's own columns:
        the caller does not change them afterwards."""
        pairs = _unique_last(imsis, msisdns)
        base = _base_for(pairs.values)
        narrow, wide = cls._split(base, pairs)
        return cls(base, narrow, wide, _Sorted.empty(np.uint64), len(pairs.keys), recent_max)

    @staticmethod
    def _split(base: int, pairs: _Sorted) -> tuple[_Sorted, _Sorted]:
        offset = pairs.values - np.uint64(base)  # wraps below the base: then not narrow
        fits = (pairs.values >= np.uint64(base)) & (offset < np.uint64(OFFSET_SPAN))
        if fits.all():  # a country's numbers: the keys kept as they are, no copy
            return (_Sorted(pairs.keys, offset.astype(OFFSET_DTYPE)),
                    _Sorted.empty(np.uint64))
        return (_Sorted(pairs.keys[fits], offset[fits].astype(OFFSET_DTYPE)),
                _Sorted(pairs.keys[~fits], pairs.values[~fits]))

    def __len__(self) -> int:
        return self._size

    @property
    def recent_size(self) -> int:
        return len(self._recent.keys)

    @property
    def nbytes(self) -> int:
        """The bytes its columns hold."""
        return sum(layer.keys.nbytes + layer.values.nbytes
                   for layer in (self._narrow, self._wide, self._recent))

    def find(self, imsis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each IMSI (uint64): whether its MSISDN is known, and the MSISDN (uint64, 0
        where not): one `searchsorted` a layer, O(batch log n)."""
        query = np.asarray(imsis, np.uint64)
        has, offset = self._narrow.find(query)
        msisdn = np.where(has, offset.astype(np.uint64) + np.uint64(self.base), np.uint64(0))
        for layer in (self._wide, self._recent):  # no key in both frozen ones; recent wins
            if len(layer.keys):
                newer, number = layer.find(query)
                has |= newer
                msisdn = np.where(newer, number, msisdn)
        return has, msisdn

    def get(self, imsi: int) -> int | None:
        has, msisdn = self.find(np.array([imsi], np.uint64))
        return int(msisdn[0]) if has[0] else None

    def with_pairs(self, imsis: np.ndarray, msisdns: np.ndarray) -> MsisdnsByImsi:
        """This map with these pairs laid over it (the later pair where an IMSI is given
        twice): O(r + k log k) in the small layer's size, or a merge, O(n), when the small
        layer reaches `recent_max`. Pairs it holds already change nothing (a follower reads
        some again) and take no room."""
        new = _unique_last(imsis, msisdns)
        held, number = self.find(new.keys)
        changed = ~held | (number != new.values)
        if not changed.any():
            return self
        held, new = held[changed], _Sorted(new.keys[changed], new.values[changed])
        recent = self._recent.laid_over(new)
        grown = MsisdnsByImsi(self.base, self._narrow, self._wide, recent,
                              self._size + int((~held).sum()), self.recent_max)
        return grown.merged() if grown.recent_size >= self.recent_max else grown

    def merged(self) -> MsisdnsByImsi:
        """The same pairs, the small layer laid into the frozen ones: O(n). The base is the
        one chosen by the first pairs merged."""
        if not self.recent_size:
            return self
        base = self.base if len(self._narrow.keys) or len(self._wide.keys) \
            else _base_for(self._recent.values)
        narrow_new, wide_new = self._split(base, self._recent)
        # A number that moved across the span's edge leaves the layer it was in.
        narrow = self._narrow.without(wide_new.keys).laid_over(narrow_new)
        wide = self._wide.without(narrow_new.keys).laid_over(wide_new)
        return MsisdnsByImsi(base, narrow, wide, _Sorted.empty(np.uint64), self._size,
                             self.recent_max)


NO_NUMBERS = MsisdnsByImsi.empty()


class LearnedPairs(NamedTuple):
    """IMSI -> MSISDN pairs to store, one per IMSI, sorted by IMSI."""

    imsi: np.ndarray  # uint64
    msisdn: np.ndarray  # uint64
    seen_ms: np.ndarray  # int64, when the pair was seen (an attach's time, a file's import)

    def __len__(self) -> int:
        return len(self.imsi)


def latest_pairs(imsi: np.ndarray, msisdn: np.ndarray, seen_ms: np.ndarray) -> LearnedPairs:
    """One pair per IMSI, sorted by IMSI: the one seen last, the last given among those seen
    at the same time."""
    order = np.lexsort((seen_ms, imsi))  # stable: ties keep the order given
    imsi, msisdn, seen_ms = imsi[order], msisdn[order], seen_ms[order]
    last = np.ones(len(imsi), bool)
    last[:-1] = imsi[1:] != imsi[:-1]
    return LearnedPairs(imsi[last], msisdn[last], seen_ms[last])
