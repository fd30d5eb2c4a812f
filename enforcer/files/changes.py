"""The registry's changes a worker holds, as a file its fold's process reads
(enforcer/jobs/fold.py): the overlay's maps as columns (`Overlay.frozen_arrays`), the
generation they lie over, how far the registry topic was read and how many events they
came from. One uncompressed numpy archive (`numpy.savez`), no pickled objects: written and
read at the speed of the disk.
"""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

import numpy as np

from enforcer.engine.overlay import LogPosition, Overlay

_META = ("generation", "base_devices", "events")
_READ_TO = "read_to"  # int64 (partitions, 3): partition, incarnation, next offset


class HeldChanges(NamedTuple):
    generation: int  # the snapshot's the changes lie over
    events: int  # the registry events they came from
    overlay: Overlay  # no events of its own: Overlay.from_frozen_arrays


def write_changes(overlay: Overlay, generation: int, file: BinaryIO) -> None:
    """The overlay's changes, over `generation`, into `file` (left at its end)."""
    read_to = np.array([(partition, *mark) for partition, mark in overlay.read_to.items()],
                       np.int64).reshape(-1, 3)
    columns = {f"{name}.{i}": column for name, arrays in overlay.frozen_arrays().items()
               for i, column in enumerate(arrays)}
    meta = dict(zip(_META, (generation, overlay.base_devices, len(overlay.events))))
    np.savez(file, **columns, **{key: np.int64(value) for key, value in meta.items()},
             **{_READ_TO: read_to})


def read_changes(file: BinaryIO) -> HeldChanges:
    """What `write_changes` wrote, from the start of `file`. Raises ValueError (or
    KeyError, zipfile.BadZipFile) for a file it did not write."""
    file.seek(0)
    with np.load(file, allow_pickle=False) as archive:
        arrays: dict[str, dict[int, np.ndarray]] = {}
        for key in archive.files:
            if "." in key:
                name, i = key.split(".")
                arrays.setdefault(name, {})[int(i)] = archive[key]
        meta = {key: int(archive[key]) for key in _META}
        read_to: dict[int, LogPosition] = {
            int(p): (int(incarnation), int(offset))
            for p, incarnation, offset in archive[_READ_TO].tolist()}
    columns = {name: tuple(by_place[i] for i in sorted(by_place))
               for name, by_place in arrays.items()}
    overlay = Overlay.from_frozen_arrays(meta["base_devices"], columns, read_to)
    return HeldChanges(meta["generation"], meta["events"], overlay)
