"""The registry's ids of devices registered by events, once folded into a snapshot: an event
may name a device by its id alone (`Device("D9", ())`), after the event that registered it
is no longer held in memory. Sorted columns, looked up by binary search: a year of
registrations (8 M ids at national scale) costs some 130 MB, not the GB a dict of strings
would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

ENCODING = "utf-8"


@dataclass(frozen=True, eq=False)
class DeviceIds:
    names: np.ndarray  # bytes (numpy "S"), sorted, UTF-8; ids never end in NUL
    device: np.ndarray  # uint32 per name: the device it names

    @classmethod
    def empty(cls) -> DeviceIds:
        return cls(np.zeros(0, "S1"), np.zeros(0, np.uint32))

    @classmethod
    def from_mapping(cls, ids: Mapping[str, int]) -> DeviceIds:
        if not ids:
            return cls.empty()
        names = np.array([name.encode(ENCODING) for name in ids], dtype=np.bytes_)
        devices = np.fromiter(ids.values(), np.uint32, len(ids))
        order = np.argsort(names, kind="stable")
        return cls(names[order], devices[order])

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nbytes(self) -> int:
        return self.names.nbytes + self.device.nbytes

    def get(self, name: str) -> int | None:
        """The device `name` names, or None."""
        if not len(self.names):
            return None
        key = np.bytes_(name.encode(ENCODING))
        at = int(np.searchsorted(self.names, key))
        if at < len(self.names) and self.names[at] == key:
            return int(self.device[at])
        return None

    def with_changes(self, names: np.ndarray, devices: np.ndarray,
                     gone: int) -> DeviceIds:
        """These ids with `names` (text, any order, unique) naming `devices` over them, a
        name naming `gone` taken out: a fold's, in numpy, O(n + k log k), where a dict of
        every id held a Python object each (a year of registrations: 8 M ids at national
        scale)."""
        encoded = np.char.encode(names, ENCODING)
        order = np.argsort(encoded, kind="stable")
        named, devices = encoded[order], devices[order]
        at = np.searchsorted(named, self.names)
        held = at < len(named)
        held[held] = named[at[held]] == self.names[held]
        live = devices != gone
        # Both sorted: the new names inserted, in one width (a narrower one would cut them).
        width = np.result_type(self.names.dtype, named.dtype)
        kept, added = self.names[~held].astype(width), named[live].astype(width)
        into = np.searchsorted(kept, added)
        return DeviceIds(np.insert(kept, into, added),
                         np.insert(self.device[~held], into, devices[live].astype(np.uint32)))

    def names_of(self, device: int) -> list[str]:
        """The ids that name `device`."""
        return [name.decode(ENCODING) for name in
                self.names[np.flatnonzero(self.device == device)].tolist()]

    def items(self) -> Iterator[tuple[str, int]]:
        for name, device in zip(self.names.tolist(), self.device.tolist()):
            yield name.decode(ENCODING), device


NO_IDS = DeviceIds.empty()
