"""Maps that change a little at a time over a large past: the storage of the registry overlay
(enforcer/engine/overlay.py).

A `LayeredMap` is a frozen layer (sorted numpy columns, never changed) under a small dict of
what changed since (`recent`). Readers hold one immutable object; a `MapDraft` copies only
the small dict, so the next map costs what changed, not what the map holds. A lookup reads
the small layer, then the frozen one: O(log n) for one key, one `searchsorted` for a batch.
When the small layer has grown, `merged` lays it into a new frozen layer (O(n), rare), and
`adopted` moves a merge made from an older map of the same lineage onto a newer one, so that
the merge can run off the poll path. The frozen layers hold no Python object per entry:
nothing to walk when one is copied, merged or freed.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from functools import cached_property
from typing import Any, Callable, Protocol

import numpy as np

# A key taken out of a map, in its small layer: the frozen layer may still hold the key.
GONE: Any = type("Gone", (), {"__repr__": lambda self: "GONE"})()
_MISSING: Any = object()


class Frozen(Protocol):
    """A frozen layer: never changed once made."""

    def __len__(self) -> int: ...
    def get(self, key: Any) -> Any: ...  # None when absent
    def items(self) -> Iterator[tuple[Any, Any]]: ...
    def merged(self, recent: Mapping[Any, Any]) -> Frozen: ...
    def absent(self, keys: list[Any]) -> int: ...


class SortedLayer:
    """Sorted uint64 keys and their values (`values_dtype`): one key in O(log n), a batch in
    one `searchsorted`."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys = keys
        self.values = values

    @classmethod
    def empty(cls, values_dtype: type) -> SortedLayer:
        return cls(np.zeros(0, np.uint64), np.zeros(0, values_dtype))

    @classmethod
    def of(cls, mapping: Mapping[int, int], values_dtype: type) -> SortedLayer:
        keys = np.fromiter(mapping.keys(), np.uint64, len(mapping))
        values = np.fromiter(mapping.values(), values_dtype, len(mapping))
        order = np.argsort(keys)
        return cls(keys[order], values[order])

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: int) -> int | None:
        # Typed: a Python int against uint64 keys would have numpy convert every key.
        at = int(self.keys.searchsorted(np.uint64(key)))
        if at < len(self.keys) and int(self.keys[at]) == key:
            return int(self.values[at])
        return None

    def find(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which queries have an entry, the entry's value where they do)."""
        if not len(self.keys):
            return np.zeros(len(query), dtype=bool), np.zeros(len(query), self.values.dtype)
        query = np.asarray(query, np.uint64)
        at = np.minimum(self.keys.searchsorted(query), len(self.keys) - 1)
        return self.keys[at] == query, self.values[at]

    def items(self) -> Iterator[tuple[int, int]]:
        return zip(self.keys.tolist(), self.values.tolist())

    def absent(self, keys: list[int]) -> int:
        """How many of these (distinct) keys the layer does not hold."""
        has, _ = self.find(np.array(keys, np.uint64))
        return len(keys) - int(has.sum())

    def merged(self, recent: Mapping[int, int]) -> SortedLayer:
        """A new layer with `recent` laid over this one (no GONE: these maps only set):
        O(n + k log k), the new keys inserted rather than everything sorted again."""
        new = SortedLayer.of(recent, self.values.dtype)
        at = np.searchsorted(self.keys, new.keys)
        held = at < len(self.keys)
        held[held] = self.keys[at[held]] == new.keys[held]
        values = self.values.copy()
        values[at[held]] = new.values[held]
        fresh = ~held
        return SortedLayer(np.insert(self.keys, at[fresh], new.keys[fresh]),
                           np.insert(values, at[fresh], new.values[fresh]))


class _DeviceIndex:
    """device -> the keys a frozen layer gave it, sorted by device: the keys of one device in
    O(log n). Merges add pairs without taking out those a change moved elsewhere, so a caller
    checks each key's current device (overlay.device_keys does); a fold starts it afresh."""

    def __init__(self, devices: np.ndarray, keys: np.ndarray) -> None:
        self.devices, self.keys = devices, keys

    @classmethod
    def of(cls, devices: np.ndarray, keys: np.ndarray) -> _DeviceIndex:
        order = np.argsort(devices, kind="stable")
        return cls(devices[order], keys[order])

    def keys_of(self, device: int) -> list[Any]:
        lo, hi = self.devices.searchsorted(np.array([device, device + 1], self.devices.dtype))
        return self.keys[lo:hi].tolist()

    def with_pairs(self, devices: np.ndarray, keys: np.ndarray) -> _DeviceIndex:
        """O(n + k log k): the new pairs inserted, not the whole index sorted again."""
        new = _DeviceIndex.of(devices.astype(self.devices.dtype), keys)
        at = self.devices.searchsorted(new.devices, side="right")
        wider = np.result_type(self.keys, new.keys)
        return _DeviceIndex(np.insert(self.devices, at, new.devices),
                            np.insert(self.keys.astype(wider, copy=False), at, new.keys))


class SlotLayer(SortedLayer):
    """IMEI key -> device_slot, with the keys of each device found in O(log n): the index is
    kept with the layer (merges extend it), so a device's keys never cost a scan of the map
    (but for the first ask of a layer made `of_arrays`, which builds it)."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, slot_bits: int,
                 no_device: int, index: _DeviceIndex | None) -> None:
        """`index` None: built when first asked for (`of_arrays`)."""
        super().__init__(keys, values)
        self._slot_bits, self._no_device, self._index = slot_bits, no_device, index

    @classmethod
    def of_arrays(cls, keys: np.ndarray, values: np.ndarray, slot_bits: int,
                  no_device: int) -> SlotLayer:
        """From a layer's columns (sorted uint64 keys, uint32 values); its index is built
        when a device's keys are first asked for, which a fold's process never does (12
        bytes an entry, and 20 more while it is sorted, for a national year's changes)."""
        return cls(keys, values, slot_bits, no_device, None)

    def _devices(self) -> _DeviceIndex:
        if self._index is None:  # two threads may both build it: the same index
            placed = self.values != self._no_device
            self._index = _DeviceIndex.of(self.values[placed] >> np.uint32(self._slot_bits),
                                          self.keys[placed])
        return self._index

    @classmethod
    def empty_slots(cls, slot_bits: int, no_device: int) -> SlotLayer:
        index = _DeviceIndex(np.zeros(0, np.uint32), np.zeros(0, np.uint64))
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint32), slot_bits, no_device, index)

    def keys_of(self, device: int) -> list[int]:
        """The keys this layer puts on the device, and maybe some a newer layer moved."""
        return self._devices().keys_of(device)

    def merged(self, recent: Mapping[int, int]) -> SlotLayer:
        plain = SortedLayer.merged(self, recent)
        new = SortedLayer.of(recent, np.uint32)
        on_device = new.values != self._no_device
        index = self._devices().with_pairs(new.values[on_device] >> np.uint32(self._slot_bits),
                                       new.keys[on_device])
        return SlotLayer(plain.keys, plain.values, self._slot_bits, self._no_device, index)


class IdLayer:
    """The registry's device ids (text) -> device, sorted, with each device's ids indexed:
    no dict of every id to copy when merged, or to free when replaced."""

    def __init__(self, keys: np.ndarray, values: np.ndarray,
                 index: _DeviceIndex | None) -> None:
        """`index` None: built when first asked for (`of_arrays`)."""
        self.keys, self.values, self._index = keys, values, index
        self._width = keys.dtype.itemsize // np.dtype("U1").itemsize  # characters

    @classmethod
    def of(cls, mapping: Mapping[str, int]) -> IdLayer:
        live = [(key, value) for key, value in mapping.items() if value is not GONE]
        keys = np.array([key for key, _ in live], dtype=str)
        values = np.array([value for _, value in live], np.uint64)
        order = np.argsort(keys)
        return cls(keys[order], values[order], _DeviceIndex.of(values, keys))

    @classmethod
    def of_arrays(cls, keys: np.ndarray, values: np.ndarray) -> IdLayer:
        """From a layer's columns (sorted text keys, uint64 values); its index is built when
        a device's ids are first asked for, which a fold's process never does (a copy of
        every id, 4 bytes a character)."""
        return cls(keys, values, None)

    def _devices(self) -> _DeviceIndex:
        if self._index is None:  # two threads may both build it: the same index
            self._index = _DeviceIndex.of(self.values, self.keys)
        return self._index

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: str) -> int | None:
        if len(key) > self._width:  # in none of the keys; and numpy would widen them all
            return None
        at = int(self.keys.searchsorted(key))
        if at < len(self.keys) and str(self.keys[at]) == key:
            return int(self.values[at])
        return None

    def items(self) -> Iterator[tuple[str, int]]:
        return zip(self.keys.tolist(), self.values.tolist())

    def absent(self, keys: list[str]) -> int:
        return sum(self.get(key) is None for key in keys)

    def ids_of(self, device: int) -> list[str]:
        """The ids this layer gives the device, and maybe some a newer layer took out."""
        return self._devices().keys_of(device)

    def merged(self, recent: Mapping[str, int]) -> IdLayer:
        """O(n + k log k): ids taken out dropped, new ones inserted, changed ones set."""
        named = np.array(list(recent), dtype=str)
        wider = np.result_type(self.keys, named)
        keys = self.keys.astype(wider, copy=False)
        at = keys.searchsorted(named)
        held = at < len(keys)
        held[held] = keys[at[held]] == named[held]
        gone = np.array([value is GONE for value in recent.values()], bool)
        live = np.array([0 if value is GONE else value for value in recent.values()],
                        np.uint64)
        values = self.values.copy()
        values[at[held & ~gone]] = live[held & ~gone]
        keep = np.ones(len(keys), bool)
        keep[at[held & gone]] = False
        fresh = ~held & ~gone
        order = np.argsort(named[fresh])
        # Positions in the kept columns: each kept key before a fresh one shifts it.
        shift = np.cumsum(~keep)
        into = at[fresh][order]
        into = into - np.concatenate([[0], shift])[into]
        index = self._devices().with_pairs(live[~gone], named[~gone])
        return IdLayer(np.insert(keys[keep], into, named[fresh][order]),
                       np.insert(values[keep], into, live[fresh][order]), index)


class CodedLayer:
    """A SortedLayer of values packed into integers (`encode`, `decode`): records without a
    Python object each in the frozen layer."""

    def __init__(self, packed: SortedLayer, encode: Callable[[Any], int],
                 decode: Callable[[int], Any]) -> None:
        self.packed, self._encode, self._decode = packed, encode, decode

    def __len__(self) -> int:
        return len(self.packed)

    def get(self, key: int) -> Any:
        value = self.packed.get(key)
        return None if value is None else self._decode(value)

    def items(self) -> Iterator[tuple[int, Any]]:
        return ((key, self._decode(value)) for key, value in self.packed.items())

    def absent(self, keys: list[int]) -> int:
        return self.packed.absent(keys)

    def merged(self, recent: Mapping[int, Any]) -> CodedLayer:
        packed = self.packed.merged({k: self._encode(v) for k, v in recent.items()})
        return CodedLayer(packed, self._encode, self._decode)


class PairLayer:
    """(IMEI key, MSISDN) -> bool, sorted by IMEI then MSISDN: a batch's IMEIs in one
    `searchsorted`, then the MSISDNs of those that have entries bisected together."""

    def __init__(self, imeis: np.ndarray, msisdns: np.ndarray, values: np.ndarray) -> None:
        self.imeis, self.msisdns, self.values = imeis, msisdns, values

    @classmethod
    def of(cls, mapping: Mapping[tuple[int, int], bool]) -> PairLayer:
        pairs = [(i, m, v) for (i, m), v in mapping.items() if v is not GONE]
        imeis = np.array([p[0] for p in pairs], np.uint64)
        msisdns = np.array([p[1] for p in pairs], np.uint64)
        order = np.lexsort((msisdns, imeis))
        return cls(imeis[order], msisdns[order], np.array([p[2] for p in pairs], bool)[order])

    def __len__(self) -> int:
        return len(self.imeis)

    def get(self, pair: tuple[int, int]) -> bool | None:
        has, value = self.find(np.array(pair[:1], np.uint64), np.array(pair[1:], np.uint64))
        return bool(value[0]) if has[0] else None

    def find(self, imeis: np.ndarray, msisdns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each query's IMEI range, then its MSISDN bisected within the range, all queries
        at once: O(batch log n)."""
        imeis, msisdns = np.asarray(imeis, np.uint64), np.asarray(msisdns, np.uint64)
        has, value = np.zeros(len(imeis), bool), np.zeros(len(imeis), bool)
        lo = self.imeis.searchsorted(imeis, side="left")
        hi = self.imeis.searchsorted(imeis, side="right")
        some = np.flatnonzero(hi > lo)
        lo, end, wanted = lo[some], hi[some], msisdns[some]
        hi = end.copy()
        while (lo < hi).any():  # the first of the range not below `wanted`
            active = lo < hi
            mid = (lo + hi) // 2
            right = active & (self.msisdns[np.minimum(mid, end - 1)] < wanted)
            lo = np.where(right, mid + 1, lo)
            hi = np.where(active & ~right, mid, hi)
        found = lo < end
        found[found] = self.msisdns[lo[found]] == wanted[found]
        has[some[found]] = True
        value[some[found]] = self.values[lo[found]]
        return has, value

    def items(self) -> Iterator[tuple[tuple[int, int], bool]]:
        return zip(zip(self.imeis.tolist(), self.msisdns.tolist()), self.values.tolist())

    def absent(self, pairs: list[tuple[int, int]]) -> int:
        has, _ = self.find(np.array([i for i, _ in pairs], np.uint64),
                           np.array([m for _, m in pairs], np.uint64))
        return len(pairs) - int(has.sum())

    def merged(self, recent: Mapping[tuple[int, int], bool]) -> PairLayer:
        """O(n log n), all in numpy: where a pair is in both, the newer entry wins."""
        new = PairLayer.of(recent)
        imeis = np.concatenate([self.imeis, new.imeis])
        msisdns = np.concatenate([self.msisdns, new.msisdns])
        values = np.concatenate([self.values, new.values])
        newer = np.arange(len(imeis)) >= len(self.imeis)
        order = np.lexsort((newer, msisdns, imeis))
        imeis, msisdns, values = imeis[order], msisdns[order], values[order]
        replaced = np.zeros(len(imeis), bool)
        replaced[:-1] = (imeis[1:] == imeis[:-1]) & (msisdns[1:] == msisdns[:-1])
        return PairLayer(imeis[~replaced], msisdns[~replaced], values[~replaced])


class LayeredMap(Mapping):
    """A read-only Mapping: `recent` over `frozen`. Never changed once made."""

    def __init__(self, frozen: Frozen, recent: dict[Any, Any] | None = None,
                 size: int | None = None,
                 derived_from: tuple[LayeredMap, list[Any]] | None = None) -> None:
        self.frozen = frozen
        self.recent = recent if recent is not None else {}
        self._size = size if size is not None else len(frozen)
        # (the map this one was drafted from, the keys the draft set): this map's
        # `recent_layer` is that map's, with those keys laid over it.
        self._derived_from = derived_from

    def __getitem__(self, key: Any) -> Any:
        value = self.recent.get(key, _MISSING)
        if value is _MISSING:
            value = self.frozen.get(key)
            if value is None:
                raise KeyError(key)
        elif value is GONE:
            raise KeyError(key)
        return value

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Any]:
        return (key for key, _ in self._pairs())

    def items(self) -> ItemsView:
        return _Items(self)

    def values(self) -> ValuesView:
        return _Values(self)

    def _pairs(self) -> Iterator[tuple[Any, Any]]:
        recent = self.recent
        for key, value in self.frozen.items():
            if key not in recent:
                yield key, value
        for key, value in recent.items():
            if value is not GONE:
                yield key, value

    @cached_property
    def recent_layer(self) -> Any:
        """The small layer as the frozen one's kind, for batch lookups: the previous map's
        with this draft's keys laid over it when that one was built (each poll's decisions
        build it), else built whole, O(r log r) in the small layer's size."""
        derived_from, self._derived_from = self._derived_from, None
        if derived_from is not None:
            origin, changed = derived_from
            return origin.recent_layer.merged({key: self.recent[key] for key in changed})
        if isinstance(self.frozen, PairLayer):
            return PairLayer.of(self.recent)
        return SortedLayer.of(self.recent, self.frozen.values.dtype)

    @property
    def has_recent_layer(self) -> bool:
        return "recent_layer" in self.__dict__

    def find(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which queries have an entry, its value where they do), for a SortedLayer's map."""
        has, value = self.frozen.find(query)
        if self.recent:
            newer, newer_value = self.recent_layer.find(query)
            has, value = has | newer, np.where(newer, newer_value, value)
        return has, value

    def find_pairs(self, imeis: np.ndarray, msisdns: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        has, value = self.frozen.find(imeis, msisdns)
        if self.recent:
            newer, newer_value = self.recent_layer.find(imeis, msisdns)
            has, value = has | newer, np.where(newer, newer_value, value)
        return has, value

    def merged(self) -> LayeredMap:
        """The same content in one frozen layer: O(n)."""
        if not self.recent:
            return self
        return LayeredMap(self.frozen.merged(self.recent), {}, self._size)

    def adopted(self, merge: LayeredMap, made_from: LayeredMap) -> LayeredMap | None:
        """This map over `merge`, made from an older map of this lineage (`made_from`): the
        small layer keeps what changed after it. None when this map does not descend from
        `made_from` (its frozen layer is another), so the merge is of no use to it.

        Sound because a small layer only grows until the frozen layer under it is replaced:
        every key of `made_from.recent` is in this one's, with the value `merge` holds unless
        it changed since."""
        if self.frozen is not made_from.frozen:
            return None
        # Entries are (key, value) pairs with hashable values: the difference in C.
        return LayeredMap(merge.frozen, dict(self.recent.items() - made_from.recent.items()),
                          self._size)


class _Items(ItemsView):
    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self._mapping._pairs()


class _Values(ValuesView):
    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self._mapping._pairs())


class MapDraft:
    """A private, changing copy of a LayeredMap: only its small layer is copied. Whether a
    key set for the first time is new to the frozen layer is asked for all such keys at
    once, when the size is wanted (`len`, `finish`)."""

    def __init__(self, origin: LayeredMap) -> None:
        self.frozen = origin.frozen
        self.recent = dict(origin.recent)
        self._origin = origin
        self._size = len(origin)
        self._fresh: list[Any] = []  # keys first set in the small layer by this draft
        self._changed: list[Any] = []  # every key set or taken out by this draft

    def __len__(self) -> int:
        if self._fresh:
            self._size += self.frozen.absent(self._fresh)
            self._fresh = []
        return self._size

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.recent.get(key, _MISSING)
        if value is _MISSING:
            value = self.frozen.get(key)
            return default if value is None else value
        return default if value is GONE else value

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        held = self.recent.get(key, _MISSING)
        if held is _MISSING:
            self._fresh.append(key)
        elif held is GONE:
            self._size += 1
        self.recent[key] = value
        self._changed.append(key)

    def add(self, key: Any, value: Any) -> None:
        """Set `key`, known to be in neither layer (a new device's number, the next after the
        map's): counted at once, so that a registration's `len` asks the frozen layer
        nothing (that one-key question was a twentieth of a registry poll's time)."""
        self.recent[key] = value
        self._size += 1
        self._changed.append(key)

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        # GONE even when only the small layer had it: `adopted` relies on a small layer
        # only ever growing.
        self.recent[key] = GONE
        self._size -= 1
        self._changed.append(key)

    def finish(self) -> LayeredMap:
        # Linked only to a map whose layer is built: no chain of old maps kept alive.
        origin = self._origin
        derived = (origin, self._changed) if origin.has_recent_layer else None
        return LayeredMap(self.frozen, self.recent, len(self), derived)
