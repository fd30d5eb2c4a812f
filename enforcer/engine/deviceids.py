"""The registry's ids of devices registered by events, once folded into a snapshot: an event
may name a device by its id alone (`Device("D9", ())`), after the event that registered it
is no longer held in memory. Sorted columns, looked up by binary search: a year of
registrations (about a million ids) costs tens of MB, not the hundreds a dict of strings
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

    def names_of(self, device: int) -> list[str]:
        """The ids that name `device`."""
        return [name.decode(ENCODING) for name in
                self.names[np.flatnonzero(self.device == device)].tolist()]

    def items(self) -> Iterator[tuple[str, int]]:
        for name, device in zip(self.names.tolist(), self.device.tolist()):
            yield name.decode(ENCODING), device


NO_IDS = DeviceIds.empty()
