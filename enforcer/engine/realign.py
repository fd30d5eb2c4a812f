"""The registry realigned to the next generation's white list in bounded memory, a chunk of
rows at a time, without the per-IMEI columns of the whole registry (`Devices.device_columns`
and `build_devices`: some 17 bytes an IMEI, 5 GB at 300 M IMEIs; issue 21 parts 3 to 5).

Both white lists are sorted key sets, so the IMEIs that stay keep their order: old row ->
new row is monotone, and a device an import or a fold does not touch keeps its IMEIs, its
slots and its place among the others. Only the touched devices change: those that leave
(an IMEI no longer registered) and those rebuilt from their IMEIs (a fold's devices that an
event changed or registered: at most the overlay's entries). A device's new number is the
rank of its first IMEI among all first IMEIs (`build_devices`' rule), so an untouched device
is numbered by the untouched devices before it and the rebuilt ones before it, both counted
with arrays as small as the change:

    new(d) = k + #{rebuilt t : before(t) <= k},  k = d - #{touched devices below d},

where before(t) counts the untouched devices whose first IMEI is below t's.

The stream reads REALIGN_ROWS old rows at a time (their keys, device slots and new rows:
some 50 to 60 bytes a row of transient); every output is written in place. What is as long
as the rebuilt devices or their IMEIs and held to the end (their new rows, their IMEIs in
new order, their new numbers) is made by the caller's `spill`, a fold's scratch files where
it is mapped: a year's changes are some 1 GB of it, half a national state (issue 21 part
4). Old columns mapped from a snapshot's files (as `load_snapshot` maps them) are let go of
as each chunk is read, the old white list's keys with them (2 bytes a row, mapped from
format 3), so that the old generation's registry is never resident whole beside the new
one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from enforcer.heap import give_back, let_go
from enforcer.engine.devices import (KEYLESS_DEVICE, MAX_DEVICES, MAX_SLOTS, NO_DEVICE,
                                     OWNER_SOURCE_DTYPE, SLOT_BITS, SLOT_MASK, Cartables,
                                     ColumnMaker, Devices, DevicesBuild, in_memory,
                                     pack_owners, put_owners, spilled, take_owners,
                                     unpack_sources)
from enforcer.engine.deviceids import DeviceIds
from enforcer.engine.otherslots import OtherSlotsDraft
from enforcer.engine.keyindex import ABSENT, KeyIndex, rows_in, sorted_unique
from enforcer.engine.pairset import PairSet
from enforcer.engine.rankbits import POSITIONS_AT_ONCE, WORD_BITS, BitsDraft, RankBits
from enforcer.engine.steps import in_steps

# Old white-list rows realigned at a time, a multiple of a RankBits word's 64 rows: some
# 30 MB of transient, under 2 % of a national state's 2.2 GB (issue 21 part 4: 5 %; 2^21
# rows were 5.6 %, measured by bench/transients.py).
REALIGN_ROWS = 1 << 19
# Devices whose columns are read, renumbered or written at a time: 16 to 50 bytes each of
# transient, 50 MB at most (2^22 were 9 % of the state while a fold wrote its columns).
DEVICES_AT_ONCE = 1 << 20
# Owners set at a time (`set_owners`): each is renumbered, ordered and packed, some 80 bytes
# of transient (20 MB); 2^20 at a time were 3.7 % of a national state beside the stream's
# leavings.
OWNERS_AT_ONCE = 1 << 18
_SHIFT = np.uint32(SLOT_BITS)
_ROW_SHIFT = np.uint64(32)
_INDEX_MASK = np.uint64((1 << 32) - 1)


@dataclass(frozen=True, eq=False)
class Rebuilt:
    """Devices rebuilt from their IMEIs, each once, their IMEIs in slots 0, 1, ... each
    once: a fold's devices that its events changed or registered (few)."""

    number: np.ndarray  # int64 per device, sorted: its number before (events' after the old)
    imei_key: np.ndarray  # uint64 per IMEI
    imei_device: np.ndarray  # int64 per IMEI: index into `number`
    imei_slot: np.ndarray  # uint8 per IMEI
    owner: np.ndarray  # uint64 per device, NO_OWNER when in no cartable
    source: np.ndarray  # uint8 per device
    registered_on: np.ndarray  # uint16 per device

    @classmethod
    def none(cls) -> Rebuilt:
        no = np.zeros(0, np.int64)
        return cls(no, np.zeros(0, np.uint64), no, np.zeros(0, np.uint8),
                   np.zeros(0, np.uint64), np.zeros(0, np.uint8), np.zeros(0, np.uint16))


@dataclass(frozen=True, eq=False)
class Renumbering:
    """Old device numbers (events' devices numbered after the old generation's) to new."""

    touched: RankBits  # per old device: left out of the stream (gone or rebuilt)
    before: np.ndarray  # int64 per rebuilt device kept, in new order: untouched ones before it
    rebuilt_old: np.ndarray  # int64, sorted: the old numbers of the rebuilt devices
    rebuilt_new: np.ndarray  # int64 per rebuilt_old: its new number, KEYLESS_DEVICE if left out

    def untouched(self, old: np.ndarray) -> np.ndarray:
        """New numbers of old devices none of which is touched; int64."""
        k = old - self.touched.rank(old)
        return k + np.searchsorted(self.before, k, side="right")

    def untouched_run(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The untouched old devices of start .. stop - 1 (less start) and their new
        numbers, both int64: counted along the run, not ranked one by one."""
        at = np.flatnonzero(~self.touched.mask_between(start, stop)) if self.touched.count \
            else np.arange(stop - start)
        k = start - int(_count_below(self.touched, np.array([start]))[0]) + np.arange(len(at))
        return at, k + np.searchsorted(self.before, k, side="right")

    def kept_new(self, start: int, stop: int) -> np.ndarray:
        """The new numbers of the rebuilt devices kept, start .. stop - 1 of them in new
        order; int64."""
        return np.arange(start, min(stop, len(self.before))) + self.before[start:stop]

    def of(self, old: np.ndarray) -> np.ndarray:
        """New number of each old device, KEYLESS_DEVICE for one left out or not known;
        int64. DEVICES_AT_ONCE at a time: a year's owners are tens of millions of devices,
        and each step here makes a few arrays of their size (1.4 GB at 23 M)."""
        old = np.asarray(old, dtype=np.int64)
        out = np.empty(len(old), dtype=np.int64)
        for start in range(0, len(old), DEVICES_AT_ONCE):
            out[start:start + DEVICES_AT_ONCE] = self._of(old[start:start + DEVICES_AT_ONCE])
        return out

    def _of(self, old: np.ndarray) -> np.ndarray:
        out = np.full(len(old), KEYLESS_DEVICE, dtype=np.int64)
        if len(self.rebuilt_old):
            at = np.minimum(np.searchsorted(self.rebuilt_old, old), len(self.rebuilt_old) - 1)
            hit = np.flatnonzero(self.rebuilt_old[at] == old)
            out[hit] = self.rebuilt_new[at[hit]]
        stream = np.flatnonzero((old >= 0) & (old < self.touched.rows))
        untouched = stream[~self.touched.test(old[stream])]
        out[untouched] = self.untouched(old[untouched])
        return out

    def ids(self, ids: DeviceIds) -> DeviceIds:
        """`ids` naming the devices' new numbers (KEYLESS_DEVICE those left out)."""
        return DeviceIds(ids.names, self.of(ids.device).astype(np.uint32))


def realign(devices: Devices, old_index: KeyIndex, new_index: KeyIndex, touched: np.ndarray,
            rebuilt: Rebuilt, cartables: Cartables, operator_sims: PairSet,
            chunk_rows: int = REALIGN_ROWS, columns: ColumnMaker = in_memory,
            spill: ColumnMaker = in_memory) -> tuple[Devices, Renumbering]:
    """`devices` (aligned to `old_index`) aligned to `new_index`, every device numbered again
    in the order of its first IMEI: the old devices in `touched` (unique numbers; it must
    hold every device with an IMEI not in `new_index`) left out of the stream, the `rebuilt`
    ones laid in, a rebuilt device with no IMEI or one not in `new_index` left out. The ids
    are left empty (`Renumbering.ids` carries them); the per-device columns are made by
    `columns` and written in order; the arrays as long as the rebuilt devices or their IMEIs,
    held to the end, by `spill`, a step at a time. Raises ValueError past MAX_DEVICES
    devices, for a rebuilt IMEI in slot MAX_SLOTS or above, or for an untouched device with
    an IMEI not in `new_index`."""
    if chunk_rows <= 0 or chunk_rows % WORD_BITS:
        raise ValueError(f"chunk_rows must be a positive multiple of {WORD_BITS}")
    if len(rebuilt.imei_slot) and int(rebuilt.imei_slot.max()) >= MAX_SLOTS:
        raise ValueError(f"a device has at most {MAX_SLOTS} slots")
    # Spilled too: held to the fold's end (28 MB at 150 M devices). The stream tests devices
    # all over them, so they are let go of after it, not a chunk at a time (each chunk
    # would read every page back).
    bits = RankBits.from_positions(devices.count, touched)
    touched_bits = RankBits(spilled(spill, "realign-touched-words", bits.words),
                            spilled(spill, "realign-touched-before", bits.before), bits.rows)
    del bits
    rows, first, others = _rebuilt_rows(rebuilt, new_index, spill)
    count = devices.count - touched_bits.count + len(first)
    if count > MAX_DEVICES:
        raise ValueError(f"at most {MAX_DEVICES} devices fit, got {count}")
    before = spill("realign-before", len(first), np.dtype(np.int64))
    new_of_rebuilt = spill("realign-new-of-rebuilt", len(rebuilt.number), np.dtype(np.int64))
    new_of_rebuilt[:] = KEYLESS_DEVICE
    first_bits, other_bits = BitsDraft(len(new_index)), BitsDraft(len(new_index))
    for start in range(0, len(first), POSITIONS_AT_ONCE):  # 10 M at once were 6 % of a state
        part = slice(start, start + POSITIONS_AT_ONCE)
        imei = first[part]
        below = _count_below(devices.first_slot, old_index.ranks(rebuilt.imei_key[imei]))
        before[part] = below - _count_below(touched_bits, below)
        new_of_rebuilt[rebuilt.imei_device[imei]] = np.arange(start, start + len(imei)) \
            + before[part]
        first_bits.set(rows[imei])
    renumbering = Renumbering(touched_bits, before, rebuilt.number, new_of_rebuilt)
    other_rows = spill("realign-other-rows", len(others), np.dtype(np.int64))
    other_values = spill("realign-other-values", len(others), np.dtype(np.uint32))
    for start in range(0, len(others), POSITIONS_AT_ONCE):
        part = slice(start, start + POSITIONS_AT_ONCE)
        imei = others[part]
        other_rows[part] = rows[imei]
        other_values[part] = ((new_of_rebuilt[rebuilt.imei_device[imei]].astype(np.uint32)
                               << _SHIFT) | rebuilt.imei_slot[imei].astype(np.uint32))
        other_bits.set(other_rows[part])
    # Read all over a step at a time above: let go of once they are done with.
    let_go(before, new_of_rebuilt, rows, first, others, other_rows, other_values,
           *_columns_of(rebuilt))
    # Room for every old other slot, the touched devices' too (few): counting the untouched
    # ones first would be a scan of them all more.
    coded = OtherSlotsDraft(len(devices.others) + len(others))
    # The rebuilt devices' lookups above read pages all over; the stream lets go of each
    # chunk only once it has read it.
    let_go(*devices.columns(), old_index.low, new_index.low)
    _stream(devices, old_index, new_index, renumbering, first_bits, other_bits, coded,
            other_rows, other_values, chunk_rows)
    let_go(touched_bits.words, touched_bits.before, other_rows, other_values, before)
    # The stream's and the columns' pieces, freed below malloc's mmap threshold, stay in the
    # heap until given back (some 0.1 GB by the stream's end: an import's largest transient,
    # 4.6 % of a national state), under what comes after them.
    give_back()
    owner_source, registered_on = _device_columns(devices, renumbering, rebuilt, first, count,
                                                  columns)
    realigned = Devices(first_bits.finish(), other_bits.finish(), coded.finish(), owner_source,
                        registered_on, cartables, operator_sims)
    give_back()  # the drafts' finishing frees pieces too: some 70 MB under `set_owners`
    return realigned, renumbering


def _columns_of(rebuilt: Rebuilt) -> tuple[np.ndarray, ...]:
    return (rebuilt.number, rebuilt.imei_key, rebuilt.imei_device, rebuilt.imei_slot,
            rebuilt.owner, rebuilt.source, rebuilt.registered_on)


def _rebuilt_rows(rebuilt: Rebuilt, new_index: KeyIndex, spill: ColumnMaker
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rebuilt IMEIs' new rows (ABSENT: not registered); the IMEIs in slot 0 of the
    rebuilt devices kept, in their new order (the devices' order); their other IMEIs in
    new-row order (both indexes into `imei_*`)."""
    rows = in_steps(new_index.rows, rebuilt.imei_key, POSITIONS_AT_ONCE, np.int64,
                    spill("realign-rows", len(rebuilt.imei_key), np.dtype(np.int64)))
    let_go(rows, rebuilt.imei_key, new_index.low)
    device = rebuilt.imei_device
    # A flag a device, not a count (8 bytes): 10 M devices at a year's changes.
    dead = np.ones(len(rebuilt.number), dtype=bool)  # no IMEI, or one not registered
    for start in range(0, len(rows), POSITIONS_AT_ONCE):
        dead[device[start:start + POSITIONS_AT_ONCE]] = False
    for start in range(0, len(rows), POSITIONS_AT_ONCE):
        part = slice(start, start + POSITIONS_AT_ONCE)
        dead[device[part][rows[part] == ABSENT]] = True
    first = _in_row_order(rows, device, dead, rebuilt.imei_slot, True, spill)
    others = _in_row_order(rows, device, dead, rebuilt.imei_slot, False, spill)
    return rows, first, others


def _in_row_order(rows: np.ndarray, device: np.ndarray, dead: np.ndarray, slot: np.ndarray,
                  first: bool, spill: ColumnMaker) -> np.ndarray:
    """The rebuilt IMEIs of live devices in slot 0 (`first`) or in the others, in the order
    of their new rows (distinct: each IMEI is in one slot); int64 indexes, made by `spill`.
    Each found as its row and index in one word, sorted in place, the rows then masked off:
    an argsort of the rows with its copies was some 30 bytes a rebuilt IMEI at once (a
    year's 25 M: 6 % of a national state). Rows and indexes are below 2^32 (a white list of
    at most 4 G keys)."""
    def chosen(part: slice) -> np.ndarray:
        return np.flatnonzero(~dead[device[part]] & ((slot[part] == 0) == first)) + part.start

    parts = [slice(start, start + POSITIONS_AT_ONCE)
             for start in range(0, len(rows), POSITIONS_AT_ONCE)]
    found = spill("realign-first" if first else "realign-others",
                  sum(len(chosen(part)) for part in parts), np.dtype(np.uint64))
    at = 0
    for part in parts:
        index = chosen(part)
        found[at:at + len(index)] = ((rows[index].astype(np.uint64) << _ROW_SHIFT)
                                     | index.astype(np.uint64))
        at += len(index)
    found.sort()
    found &= _INDEX_MASK
    let_go(found, rows, device, slot)
    return found.view(np.int64)


def _count_below(bits: RankBits, rows: np.ndarray) -> np.ndarray:
    """Set bits below each row, for rows 0 .. bits.rows (all of them at bits.rows); int64.
    POSITIONS_AT_ONCE rows at a time: a fold's 10 M rows at once were 0.4 GB of transient."""
    rows = np.asarray(rows, dtype=np.int64)
    if not bits.rows:
        return np.zeros(len(rows), dtype=np.int64)
    last = bits.rows - 1
    last_set = bool(bits.test(np.array([last]))[0])
    out = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), POSITIONS_AT_ONCE):
        part = rows[start:start + POSITIONS_AT_ONCE]
        out[start:start + POSITIONS_AT_ONCE] = bits.rank(np.minimum(part, last)) + (
            (part > last) & last_set)
    return out


def _stream(devices: Devices, old_index: KeyIndex, new_index: KeyIndex,
            renumbering: Renumbering, first_bits: BitsDraft, other_bits: BitsDraft,
            coded: OtherSlotsDraft, rebuilt_rows: np.ndarray, rebuilt_values: np.ndarray,
            chunk_rows: int) -> None:
    """The untouched devices' slots set in the new bits, and every other slot coded in new
    row order, the rebuilt ones (their new rows `rebuilt_rows`, ascending, and their
    `device << SLOT_BITS | slot`) merged in. An other slot is coded against the first slots
    before its row: the rebuilt ones are set before the stream starts and the untouched
    ones come in row order, so once a chunk is read no first slot is set below its last
    row again."""
    touched = renumbering.touched
    placed = 0
    for start in range(0, devices.rows, chunk_rows):
        stop = min(start + chunk_rows, devices.rows)
        word = start // WORD_BITS
        first = np.flatnonzero(devices.first_slot.mask_between(start, stop))
        other = np.flatnonzero(devices.other_slot.mask_between(start, stop))
        at = int(devices.other_slot.before[word])
        values = devices.others.decode(np.arange(at, at + len(other)),
                                       devices.first_slot.rank(start + other))
        if touched.count:
            device = int(devices.first_slot.before[word])
            first = first[~touched.mask_between(device, device + len(first))]
            keep = ~touched.test(values >> _SHIFT)
            other, values = other[keep], values[keep]
        new_rows = rows_in(old_index, new_index, start, stop)
        first_rows, other_rows = new_rows[first], new_rows[other]
        if (first_rows == ABSENT).any() or (other_rows == ABSENT).any():
            raise ValueError("an untouched device has an IMEI the new white list lacks")
        first_bits.set(first_rows)
        other_bits.set(other_rows)
        let_go(*devices.columns(), old_index.low, new_index.low, rebuilt_rows, rebuilt_values)
        present = new_rows[new_rows != ABSENT]
        if not len(present):
            continue
        reached = int(np.searchsorted(rebuilt_rows, present[-1], side="right"))
        _code(coded, first_bits, np.concatenate([other_rows, rebuilt_rows[placed:reached]]),
              np.concatenate([(renumbering.untouched(values >> _SHIFT).astype(np.uint32)
                               << _SHIFT) | (values & SLOT_MASK),
                              rebuilt_values[placed:reached]]))
        placed = reached
    _code(coded, first_bits, rebuilt_rows[placed:], rebuilt_values[placed:])


def _code(coded: OtherSlotsDraft, first_bits: BitsDraft, rows: np.ndarray,
          values: np.ndarray) -> None:
    """Other slots at new `rows` (each below every first slot still to be set; in any
    order), their `device << SLOT_BITS | slot` in `values`, coded in row order."""
    order = np.argsort(rows, kind="stable")
    at = rows[order]
    coded.add(values[order], first_bits.rank_settled(at))


def _device_columns(devices: Devices, renumbering: Renumbering, rebuilt: Rebuilt,
                    first: np.ndarray, count: int,
                    columns: ColumnMaker) -> tuple[np.ndarray, np.ndarray]:
    """Owner and source, and registration day, per new device: the untouched devices'
    copied a slice at a time, the rebuilt ones kept (the devices of their `first` IMEIs, in
    new order) laid in, a slice at a time too, the pages of each slice let go of once
    written where `columns` maps them from files."""
    owner_source = columns("owner_source", count, OWNER_SOURCE_DTYPE)
    registered_on = columns("registered_on", count, np.dtype(np.uint16))
    for start in range(0, devices.count, DEVICES_AT_ONCE):
        stop = min(start + DEVICES_AT_ONCE, devices.count)
        keep, new = renumbering.untouched_run(start, stop)
        for field in OWNER_SOURCE_DTYPE.names:  # a field at a time, as `take_owners`
            owner_source[field][new] = devices.owner_source[field][start:stop][keep]
        registered_on[new] = devices.registered_on[start:stop][keep]
        let_go(*devices.columns(), owner_source, registered_on)
    for start in range(0, len(first), DEVICES_AT_ONCE):
        part = rebuilt.imei_device[first[start:start + DEVICES_AT_ONCE]]
        at = renumbering.kept_new(start, start + DEVICES_AT_ONCE)
        put_owners(owner_source, at, pack_owners(rebuilt.owner[part], rebuilt.source[part]))
        registered_on[at] = rebuilt.registered_on[part]
        let_go(owner_source, registered_on)
    let_go(first, renumbering.before, *_columns_of(rebuilt))
    return owner_source, registered_on


def set_owners(devices: Devices, renumbering: Renumbering, old: np.ndarray,
               msisdns: np.ndarray) -> None:
    """The owners of old devices (`old`, their MSISDNs) written into freshly realigned
    `devices`, in place, OWNERS_AT_ONCE at a time, each slice in the order of its
    new numbers (the pages it wrote let go of, where the column is mapped from a file); those
    of devices left out dropped. A year's owners are some 23 M devices: renumbered and
    ordered whole, 0.4 GB of transient."""
    for start in range(0, len(old), OWNERS_AT_ONCE):
        new = renumbering.of(old[start:start + OWNERS_AT_ONCE])
        kept = np.flatnonzero(new != KEYLESS_DEVICE)
        kept = kept[np.argsort(new[kept], kind="stable")]
        at = new[kept]
        put_owners(devices.owner_source, at, pack_owners(
            msisdns[start:start + OWNERS_AT_ONCE][kept],
            unpack_sources(take_owners(devices.owner_source, at))))
        let_go(devices.owner_source)
    # Searched all over by every step: let go of once, not a step at a time.
    let_go(renumbering.touched.words, renumbering.touched.before, renumbering.before,
           renumbering.rebuilt_old, renumbering.rebuilt_new)


def realign_white(devices: Devices, old_index: KeyIndex, new_index: KeyIndex,
                  gone: np.ndarray, chunk_rows: int = REALIGN_ROWS,
                  columns: ColumnMaker = in_memory) -> tuple[Devices, DevicesBuild]:
    """`devices` aligned to a new white list, `new_index`, which lacks the keys `gone` of
    `old_index` (and may have others): every device with an IMEI gone is left out
    (`build_devices`' rule: one IMEI not registered leaves its device out), the others keep
    their slots and owners, numbered again in order; ids follow their devices; the
    per-device columns made by `columns`. Raises ValueError as `realign` does."""
    touched = [np.zeros(0, np.int64)]
    for start in range(0, len(gone), DEVICES_AT_ONCE):
        touched.append(_devices_at(devices, old_index.rows(gone[start:start + DEVICES_AT_ONCE])))
        # Where mapped: the gone keys' rows and slots are read all over the old generation
        # (0.3 M keys touch most pages of its 0.6 GB of keys), and the stream reads them
        # again a chunk at a time.
        let_go(*devices.columns(), old_index.low)
    touched = sorted_unique(np.concatenate(touched))
    new, renumbering = realign(devices, old_index, new_index, touched, Rebuilt.none(),
                               devices.cartables, devices.operator_sims, chunk_rows, columns)
    new = replace(new, ids=renumbering.ids(devices.ids))
    return new, DevicesBuild(new.count, len(touched), 0)


def _devices_at(devices: Devices, rows: np.ndarray) -> np.ndarray:
    """The device of each row that has one; int64."""
    slots = devices.device_slots(rows)
    return (slots[slots != NO_DEVICE] >> _SHIFT).astype(np.int64)
