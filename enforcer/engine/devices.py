"""The devices the national registry knows (`Devices`): their IMEIs in slot order, owners,
national-ID cartables, operator SIMs, registration source and date, held as columns sized
for a whole country.

Rows are the white list's rows (registered IMEIs in key order, as ranked by
`Lists.white_index`), so the decision finds an IMEI's device with the same lookup that told
it the IMEI is registered. Devices are numbered in the order of their first IMEI, so a bit
per row and its rank give a first slot its device; only the other slots (a dual-SIM
phone's second IMEI) store their device, as the distance back to it (`OtherSlots`). Per
device: owner MSISDN, source and date. 150 M devices with 300 M IMEIs take about 1.6 GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from datetime import date
from enum import StrEnum
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from enforcer.engine.keyindex import ABSENT, KeyIndex, sorted_unique
from enforcer.engine.pairset import PairSet
from enforcer.engine.deviceids import NO_IDS, DeviceIds
from enforcer.engine.otherslots import (FAR_CODE, NEAR_AFTER, NEAR_BEFORE, SLOT_BITS, SLOT_MASK,
                                        OtherSlots, scan_other_slots)
from enforcer.engine.rankbits import FEW_ROWS, RankBits
from enforcer.engine.steps import in_steps

MAX_SLOTS = 1 << SLOT_BITS
NO_DEVICE = np.uint32(np.iinfo(np.uint32).max)
MAX_DEVICES = int(NO_DEVICE) >> SLOT_BITS
NO_OWNER = np.uint64(0)
# A device's owner MSISDN and its source share 6 bytes (where they took 9: 430 MB less for
# 150 M devices): the MSISDN's low 32 bits, then 16 bits of which the top SOURCE_BITS are the
# source and the rest the MSISDN's bits from 32 up. E.164 allows 15 digits; 46 bits hold
# every number of up to 13 (Iran's, Pakistan's, Turkey's and Azerbaijan's have 12), and a
# longer owner number is a bad row of the devices file. Packed, not aligned: itemsize 6.
OWNER_SOURCE_DTYPE = np.dtype([("low", "<u4"), ("high", "<u2")])
LOW_BITS = 32
LOW_MASK = np.uint64((1 << LOW_BITS) - 1)
SOURCE_BITS = 2
HIGH_BITS = 16 - SOURCE_BITS  # the MSISDN's bits in "high"
HIGH_MASK = (1 << HIGH_BITS) - 1
OWNER_DIGITS = 13
OWNER_LIMIT = 10 ** OWNER_DIGITS  # below 2 ** (LOW_BITS + HIGH_BITS)
OWNER_WORDS = OWNER_SOURCE_DTYPE.itemsize // 2
NO_DEVICE_INT, NO_OWNER_INT = int(NO_DEVICE), int(NO_OWNER)
# The device of a registry id whose device has no IMEI left (later registrations took them):
# it still exists for the registry, so an event naming the id applies to it and to nothing
# else, but it has no row to be numbered by. Never shifted into a device slot.
KEYLESS_DEVICE = NO_DEVICE_INT - 1
FIRST_DAY, LAST_DAY = 0, int(np.iinfo(np.uint16).max)  # registered_on's range
NO_CARTABLE = np.uint32(np.iinfo(np.uint32).max)
EPOCH = date(1970, 1, 1)
COLUMN_CHUNK_ROWS = 1 << 24  # rows turned back into device columns at a time
# Rows `device_slots` looks up at a time: some 60 bytes each of transient (a fold's 25 M
# overlay IMEIs at once were 6 % of a national state; issue 21 part 4).
SLOTS_AT_ONCE = 1 << 20

# Makes one per-device column of a generation being built: (its name in Devices, its
# length, its dtype) -> a writable array. In memory (`in_memory`), or mapped from the file
# the generation will be saved as (enforcer.files.snapshots.SnapshotDraft), so that a
# process building a national generation need not hold it whole (issue 21 parts 3 and 5).
ColumnMaker = Callable[[str, int, np.dtype], np.ndarray]


def in_memory(name: str, count: int, dtype: np.dtype) -> np.ndarray:
    """The ColumnMaker of a generation held in memory."""
    return np.empty(count, dtype=dtype)


def spilled(make: ColumnMaker, name: str, array: np.ndarray) -> np.ndarray:
    """`array` copied into one `make` makes (a fold's scratch file, where it is mapped);
    `array` itself when `make` is `in_memory`."""
    if make is in_memory:
        return array
    out = make(name, len(array), array.dtype)
    out[:] = array
    return out


class Source(StrEnum):
    IMPORT = "import"
    PASSENGER = "passenger"
    PRE_SCHEME = "pre_scheme"
    REPAIR = "repair"


SOURCES: tuple[Source, ...] = tuple(Source)
if len(SOURCES) > 1 << SOURCE_BITS:
    raise ImportError(f"{len(SOURCES)} sources do not fit SOURCE_BITS ({SOURCE_BITS})")


def day_number(day: date) -> int:
    return (day - EPOCH).days


def pack_owners(msisdns: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """OWNER_SOURCE_DTYPE per device from its owner MSISDN (uint64, NO_OWNER for none) and
    its source (an index into SOURCES). Raises ValueError for an MSISDN of more than
    OWNER_DIGITS digits."""
    msisdns = np.asarray(msisdns, dtype=np.uint64)
    if len(msisdns) and int(msisdns.max()) >= OWNER_LIMIT:
        raise ValueError(f"an owner MSISDN has more than {OWNER_DIGITS} digits")
    packed = np.empty(len(msisdns), dtype=OWNER_SOURCE_DTYPE)
    packed["low"] = msisdns & LOW_MASK
    packed["high"] = ((msisdns >> np.uint64(LOW_BITS)).astype(np.uint16)
                      | (np.asarray(sources, dtype=np.uint16) << np.uint16(HIGH_BITS)))
    return packed


def take_owners(packed: np.ndarray, at: np.ndarray) -> np.ndarray:
    """`packed[at]` a field at a time: numpy moves a packed record as bytes, a field as a
    typed array, three to five times faster (some 5 s less per import or fold of 150 M
    devices)."""
    out = np.empty(len(at), dtype=OWNER_SOURCE_DTYPE)
    for field in OWNER_SOURCE_DTYPE.names:
        out[field] = packed[field][at]
    return out


def put_owners(packed: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """`packed[at] = values` a field at a time (`take_owners`)."""
    for field in OWNER_SOURCE_DTYPE.names:
        packed[field][at] = values[field]


def unpack_msisdns(packed: np.ndarray) -> np.ndarray:
    high = (packed["high"] & np.uint16(HIGH_MASK)).astype(np.uint64)
    return packed["low"].astype(np.uint64) | (high << np.uint64(LOW_BITS))


def unpack_sources(packed: np.ndarray) -> np.ndarray:
    """uint8 index into SOURCES per device."""
    return (packed["high"] >> np.uint16(HIGH_BITS)).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class Cartables:
    """National-ID cartables: the SIMs of one person, any of which counts as the owner."""

    msisdn: np.ndarray  # uint64, sorted
    cartable: np.ndarray  # uint32, aligned with msisdn

    @classmethod
    def from_links(cls, msisdns: np.ndarray, cartables: np.ndarray) -> Cartables:
        msisdns = np.asarray(msisdns, dtype=np.uint64)
        order = np.argsort(msisdns, kind="stable")
        return cls(msisdns[order], np.asarray(cartables, dtype=np.uint32)[order])

    @classmethod
    def empty(cls) -> Cartables:
        return cls.from_links(np.zeros(0, np.uint64), np.zeros(0, np.uint32))

    def of(self, msisdns: np.ndarray) -> np.ndarray:
        if not len(self.msisdn):
            return np.full(len(msisdns), NO_CARTABLE, dtype=np.uint32)
        at = np.minimum(np.searchsorted(self.msisdn, msisdns), len(self.msisdn) - 1)
        return np.where(self.msisdn[at] == msisdns, self.cartable[at], NO_CARTABLE)


@dataclass(frozen=True)
class DeviceSlot:
    imei_key: int
    slot: int


@dataclass(frozen=True)
class DeviceView:
    device: int
    owner: int | None
    source: Source
    registered_on: date
    slots: tuple[DeviceSlot, ...]


@dataclass(frozen=True, eq=False)
class Devices:
    first_slot: RankBits  # per white-list row: the first IMEI of a device; rank = device
    other_slot: RankBits  # per white-list row: another slot of a device
    others: OtherSlots  # per other_slot row, in row order: its device and slot
    # OWNER_SOURCE_DTYPE per device: its owner's MSISDN (NO_OWNER when in no cartable) and
    # its source, `pack_owners`
    owner_source: np.ndarray
    registered_on: np.ndarray  # uint16 per device, days since 1970-01-01
    cartables: Cartables
    operator_sims: PairSet  # (IMEI key, MSISDN)
    ids: DeviceIds = NO_IDS  # the registry's ids of devices events registered, once folded

    @classmethod
    def empty(cls, rows: int) -> Devices:
        none = RankBits.from_mask(np.zeros(rows, dtype=bool))
        return cls(none, none, OtherSlots.empty(), np.zeros(0, OWNER_SOURCE_DTYPE),
                   np.zeros(0, np.uint16), Cartables.empty(), PairSet.empty())

    @property
    def rows(self) -> int:
        return self.first_slot.rows

    @property
    def count(self) -> int:
        return len(self.owner_source)

    @property
    def nbytes(self) -> int:
        columns = (self.owner_source, self.registered_on, self.cartables.msisdn,
                   self.cartables.cartable)
        return (sum(c.nbytes for c in columns) + self.others.nbytes + self.first_slot.nbytes
                + self.other_slot.nbytes + self.operator_sims.nbytes + self.ids.nbytes)

    def columns(self) -> tuple[np.ndarray, ...]:
        """The arrays held per white-list row, per other slot and per device."""
        return (self.first_slot.words, self.first_slot.before, self.other_slot.words,
                self.other_slot.before, self.others.code, self.others.far.words,
                self.others.far.before, self.others.far_device, self.owner_source,
                self.registered_on)

    def device_slots(self, rows: np.ndarray) -> np.ndarray:
        """device << SLOT_BITS | slot per white-list row, NO_DEVICE for ABSENT rows."""
        if len(rows) <= FEW_ROWS:
            return np.array([self.device_slot(row) for row in rows.tolist()], dtype=np.uint32)
        if len(rows) > SLOTS_AT_ONCE:
            return in_steps(self.device_slots, rows, SLOTS_AT_ONCE, np.uint32)
        out = np.full(len(rows), NO_DEVICE, dtype=np.uint32)
        if not self.rows:
            return out
        valid = np.flatnonzero(rows != ABSENT)
        first, device = self.first_slot.test_and_rank(rows[valid])
        out[valid[first]] = device[first].astype(np.uint32) << np.uint32(SLOT_BITS)
        if not first.all():
            rest = valid[~first]
            other, at = self.other_slot.test_and_rank(rows[rest])
            # A row's rank among first slots is the one its other slot's code counts from.
            out[rest[other]] = self.others.decode(at[other], device[~first][other])
        return out

    def device_slot(self, row: int) -> int:
        """`device_slots` of one row, in plain Python."""
        if row == ABSENT or not self.rows:
            return NO_DEVICE_INT
        first, device = self.first_slot.bit_and_rank(row)
        if first:
            return device << SLOT_BITS
        other, at = self.other_slot.bit_and_rank(row)
        return self.others.decode_one(at, device) if other else NO_DEVICE_INT

    def owners(self, device_slots: np.ndarray) -> np.ndarray:
        """NO_OWNER too for devices numbered past this registry's (registered since)."""
        if len(device_slots) <= FEW_ROWS:
            return np.array([self.owner_of(d) for d in device_slots.tolist()], dtype=np.uint64)
        # NO_DEVICE's device part is past any registry's last device (SLOT_BITS leave room
        # for fewer): one comparison rules out both.
        devices = device_slots >> np.uint32(SLOT_BITS)
        has = devices < self.count
        if not self.count:
            return np.full(len(device_slots), NO_OWNER, dtype=np.uint64)
        return np.where(has, unpack_msisdns(take_owners(self.owner_source,
                                                        np.where(has, devices, 0))), NO_OWNER)

    def owner_of(self, device_slot: int) -> int:
        """`owners` of one device slot, in plain Python."""
        device = device_slot >> SLOT_BITS
        if device >= self.count:
            return NO_OWNER_INT
        # OWNER_SOURCE_DTYPE's 6 bytes as three 16-bit words, low first (a little-endian
        # host).
        words = self._owner_words
        at = device * OWNER_WORDS
        return words[at] | words[at + 1] << 16 | (words[at + 2] & HIGH_MASK) << LOW_BITS

    @cached_property
    def _owner_words(self) -> memoryview:
        return memoryview(self.owner_source.view(np.uint16))

    def device_columns(self, white_index: KeyIndex) -> DeviceColumns:
        """Every device as `build_devices` takes it: to rebuild against another white list."""
        keys, devices, slots = [], [], []
        for start in range(0, self.rows, COLUMN_CHUNK_ROWS):
            rows = np.arange(start, min(start + COLUMN_CHUNK_ROWS, self.rows), dtype=np.int64)
            device_slot = self.device_slots(rows)
            has = device_slot != NO_DEVICE
            keys.append(white_index.keys_at(rows[has]))
            devices.append((device_slot[has] >> np.uint32(SLOT_BITS)).astype(np.int64))
            slots.append((device_slot[has] & SLOT_MASK).astype(np.uint8))
        return DeviceColumns(
            np.concatenate(keys or [np.zeros(0, np.uint64)]),
            np.concatenate(devices or [np.zeros(0, np.int64)]),
            np.concatenate(slots or [np.zeros(0, np.uint8)]),
            unpack_msisdns(self.owner_source), unpack_sources(self.owner_source),
            self.registered_on.copy())

    def other_device_slots(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every other slot in row order, a step of rows at a time: (their rows (int64),
        their `device << SLOT_BITS | slot` (uint32))."""
        for at, rows, first_ranks in scan_other_slots(self.first_slot, self.other_slot):
            yield rows, self.others.decode(np.arange(at, at + len(rows)), first_ranks)

    def other_slots_of(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """One device's other slots: their rows (int64) and `device << SLOT_BITS | slot`
        (uint32). Those coded near lie between the first slots NEAR_BEFORE devices before
        it and NEAR_AFTER + 1 after it (engine/otherslots.py); the far ones are among the
        few held in full: a few rows read, not the registry."""
        start = (self.first_slot.select(device - NEAR_BEFORE) + 1 if device >= NEAR_BEFORE
                 else 0)
        last = device + NEAR_AFTER + 1
        stop = self.first_slot.select(last) if last < self.count else self.rows
        rows = start + np.flatnonzero(self.other_slot.mask_between(start, stop))
        at = self.other_slot.rank(rows)
        near = self.others.code[at] != FAR_CODE
        rows, at = rows[near], at[near]
        values = self.others.decode(at, self.first_slot.rank(rows))
        mine = (values >> np.uint32(SLOT_BITS)) == device
        far = np.flatnonzero((self.others.far_device >> np.uint32(SLOT_BITS)) == device)
        far_rows = self.other_slot.select_many(self.others.far.select_many(far))
        return (np.concatenate([rows[mine], far_rows]),
                np.concatenate([values[mine], self.others.far_device[far]]))

    def device(self, device: int, white_index: KeyIndex) -> DeviceView:
        other_rows, values = self.other_slots_of(device)
        rows = [self.first_slot.select(device)] + other_rows.tolist()
        slot_numbers = [0] + (values & SLOT_MASK).tolist()
        keys = white_index.keys_at(np.array(rows, dtype=np.int64))
        slots = sorted((DeviceSlot(int(k), s) for k, s in zip(keys, slot_numbers)),
                       key=lambda s: s.slot)
        packed = self.owner_source[device:device + 1]
        owner = int(unpack_msisdns(packed)[0])
        return DeviceView(
            device, owner if owner != NO_OWNER else None, SOURCES[unpack_sources(packed)[0]],
            date.fromordinal(EPOCH.toordinal() + int(self.registered_on[device])),
            tuple(slots))


@dataclass(frozen=True)
class DeviceRecord:
    """One device as the registry states it."""

    imeis: tuple[int, ...]  # IMEI keys in slot order
    owner: int | None  # the owning SIM's MSISDN; None when in no cartable
    source: Source
    registered_on: date


@dataclass(frozen=True, eq=False)
class DeviceColumns:
    """Devices as columns, the input of `build_devices`: one entry per IMEI, one per device."""

    imei_key: np.ndarray  # uint64 per IMEI
    imei_device: np.ndarray  # int64 per IMEI: the device it belongs to
    imei_slot: np.ndarray  # uint8 per IMEI: its slot, 0 first
    owner: np.ndarray  # uint64 per device, NO_OWNER when in no cartable
    source: np.ndarray  # uint8 per device
    registered_on: np.ndarray  # uint16 per device

    @classmethod
    def empty(cls) -> DeviceColumns:
        return cls.from_records([])

    @classmethod
    def from_records(cls, records: Iterable[DeviceRecord]) -> DeviceColumns:
        keys: list[int] = []
        devices: list[int] = []
        slots: list[int] = []
        owners: list[int] = []
        sources: list[int] = []
        days: list[int] = []
        for device, record in enumerate(records):
            keys.extend(record.imeis)
            devices.extend([device] * len(record.imeis))
            slots.extend(range(len(record.imeis)))
            owners.append(int(NO_OWNER) if record.owner is None else record.owner)
            sources.append(SOURCES.index(record.source))
            days.append(day_number(record.registered_on))
        return cls(np.array(keys, np.uint64), np.array(devices, np.int64),
                   np.array(slots, np.uint8), np.array(owners, np.uint64),
                   np.array(sources, np.uint8), np.array(days, np.uint16))


@dataclass(frozen=True)
class DevicesBuild:
    """What building the devices kept and left out, for the operator's report."""

    devices: int
    left_out_unregistered: int  # an IMEI of the device is not on the white list
    left_out_conflicting: int  # an IMEI already claimed by an earlier device, or bad slots

    def as_json(self) -> dict[str, int]:
        return {"devices": self.devices, "left_out_unregistered": self.left_out_unregistered,
                "left_out_conflicting": self.left_out_conflicting}


def build_devices(white_index: KeyIndex, columns: DeviceColumns,
                  cartables: Cartables, operator_sims: PairSet) -> tuple[Devices, DevicesBuild]:
    """The devices aligned to `white_index`, devices renumbered in the order of their first
    IMEI. A device is left out when one of its IMEIs is not registered, when an earlier
    device (in input order) already has one of its IMEIs, or when its slots are not 0, 1, …
    each once: one IMEI belongs to one slot of one device."""
    if len(columns.imei_slot) and int(columns.imei_slot.max()) >= MAX_SLOTS:
        raise ValueError(f"a device has at most {MAX_SLOTS} slots")
    n_dev = len(columns.owner)
    device, slot = columns.imei_device, columns.imei_slot.astype(np.int64)
    rows = white_index.rows(columns.imei_key)
    unregistered = np.zeros(n_dev, dtype=bool)
    unregistered[device[rows == ABSENT]] = True
    slots_per_device = np.bincount(device, minlength=n_dev)
    slot_sum = np.bincount(device, weights=slot, minlength=n_dev)
    distinct = sorted_unique(device * MAX_SLOTS + slot)
    distinct_per_device = np.bincount(distinct // MAX_SLOTS, minlength=n_dev)
    conflicting = (distinct_per_device != slots_per_device) | (slots_per_device == 0) \
        | (slot_sum != slots_per_device * (slots_per_device - 1) // 2)
    live = np.flatnonzero(~unregistered[device] & ~conflicting[device])
    by_row = live[np.lexsort((device[live], rows[live]))]
    taken = np.flatnonzero(rows[by_row][1:] == rows[by_row][:-1]) + 1
    conflicting[device[by_row[taken]]] = True

    keep = ~unregistered[device] & ~conflicting[device]
    rows, old, slot = rows[keep], device[keep], slot[keep]
    first = slot == 0
    # A device's new number is the rank of its first IMEI's row among all first IMEIs.
    old_of_new = old[first][np.argsort(rows[first], kind="stable")]
    if len(old_of_new) > MAX_DEVICES:
        raise ValueError(f"at most {MAX_DEVICES} devices fit, got {len(old_of_new)}")
    new_of_old = np.zeros(n_dev, dtype=np.uint32)
    new_of_old[old_of_new] = np.arange(len(old_of_new), dtype=np.uint32)
    other_rows = rows[~first]
    order = np.argsort(other_rows, kind="stable")
    other_device = ((new_of_old[old[~first]] << np.uint32(SLOT_BITS))
                    | slot[~first].astype(np.uint32))[order]
    first_slot = RankBits.from_positions(len(white_index), rows[first])
    other_slot = RankBits.from_positions(len(white_index), other_rows)
    devices = Devices(
        first_slot, other_slot, OtherSlots.of_rows(other_device, first_slot, other_slot),
        pack_owners(np.asarray(columns.owner, np.uint64)[old_of_new],
                    np.asarray(columns.source, np.uint8)[old_of_new]),
        np.asarray(columns.registered_on, np.uint16)[old_of_new], cartables, operator_sims)
    return devices, DevicesBuild(len(old_of_new), int(unregistered.sum()),
                                 int((conflicting & ~unregistered).sum()))


def carry_ids(named: Mapping[str, int], columns: DeviceColumns, white_index: KeyIndex,
              devices: Devices) -> DeviceIds:
    """The registry's ids of devices numbered as in `columns`, numbered as in `devices`
    (built aligned to `white_index`): each id goes with one of its device's IMEIs; an id
    whose device has none left, or whose IMEI is in no device now, names KEYLESS_DEVICE."""
    if not named:
        return DeviceIds.empty()
    any_key = np.zeros(len(columns.owner), dtype=np.uint64)
    has_key = np.zeros(len(columns.owner), dtype=bool)
    any_key[columns.imei_device] = columns.imei_key
    has_key[columns.imei_device] = True
    old = np.fromiter(named.values(), np.int64, len(named))
    live = old < len(has_key)
    live[live] = has_key[old[live]]
    slots = np.full(len(old), NO_DEVICE, dtype=np.uint32)
    slots[live] = devices.device_slots(white_index.rows(any_key[old[live]]))
    now = np.where(slots != NO_DEVICE, slots >> np.uint32(SLOT_BITS), KEYLESS_DEVICE)
    return DeviceIds.from_mapping(dict(zip(named, now.tolist())))
