"""Folding the registry's changes into a snapshot, pure: the state's overlay laid into the
columns of the next generation, which then decides every attach as the state did, with an
empty overlay over it.

What the decision reads from the overlay, and what the fold writes for it:
- an IMEI the overlay names is registered when it names a device slot for it
  (`Overlay.patch_imeis`): the white list loses the IMEIs named without one and gains the
  others, which the devices' columns put in their slots;
- a black-listing or its end overrides every reason the lists give the IMEI;
- owners, cartables and operator SIMs override the snapshot's;
- devices registered by events are numbered after the snapshot's; after the fold every
  device is numbered again, in the order of its first IMEI (`build_devices`' rule), and the
  registry's ids of those devices go with the snapshot (`DeviceIds`).

The devices are realigned to the new white list in chunks of rows (`realign`): only the
devices an event changed the IMEIs of, or registered, are rebuilt from their IMEIs; the
others keep their slots, their owners written over where an event changed them (a year of
a national registry's changes rebuilds some 10 M devices of 150 M, most of them new).

The snapshot's devices keep slots numbered 0, 1, ... in order: a device an event took an
IMEI from keeps its other IMEIs, numbered again from 0 in their order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from enforcer.heap import give_back, let_go
from enforcer.engine.devices import (EPOCH, NO_CARTABLE, NO_DEVICE, NO_DEVICE_INT, NO_OWNER,
                                     SLOT_BITS, SLOT_MASK, Cartables, ColumnMaker, Devices,
                                     in_memory, spilled, take_owners, unpack_msisdns,
                                     unpack_sources)
from enforcer.engine.keyindex import among, sorted_unique
from enforcer.engine.lists import BLACK_REASONS, WHITE_LOW_COLUMN, Lists
from enforcer.engine.overlay import Overlay, empty_overlay
from enforcer.engine.pairset import PairSet
from enforcer.engine.rankbits import RankBits
from enforcer.engine.realign import DEVICES_AT_ONCE, REALIGN_ROWS, Rebuilt, realign, set_owners
from enforcer.engine.state import EnforcementState
from enforcer.engine.steps import in_steps

# Rebuilt IMEIs numbered at a time (`numbered_in_order`), a range of devices with about this
# many: some 50 bytes each of transient, 50 MB.
NUMBERED_AT_ONCE = 1 << 20
# Devices are counted in buckets of 2^12 to cut those ranges: a bucket's IMEIs are numbered
# together, and a national registry has some 40,000 buckets.
DEVICE_BUCKET_BITS = 12


@dataclass(frozen=True)
class FoldReport:
    """What a fold laid into the snapshot, for the job's record."""

    generation: int
    events: int  # registry events folded
    entries: int  # overlay entries they made
    devices: int  # devices in the new generation
    devices_added: int  # registered by events since the last snapshot
    devices_gone: int  # the snapshot's or the events' devices left with no IMEI

    def as_json(self) -> dict[str, int]:
        return {"generation": self.generation, "events": self.events, "entries": self.entries,
                "devices": self.devices, "devices_added": self.devices_added,
                "devices_gone": self.devices_gone}


def fold(state: EnforcementState, generation: int, chunk_rows: int = REALIGN_ROWS,
         columns: ColumnMaker = in_memory,
         spill: ColumnMaker = in_memory) -> tuple[EnforcementState, FoldReport]:
    """The next generation, `generation`, with `state.overlay` laid into its columns, its
    watermark the overlay's `read_to` (every registry event stored before those positions is
    in it). The devices are realigned `chunk_rows` white-list rows at a time
    (`enforcer.engine.realign`), its per-device columns made by `columns`; what the fold
    derives from the changes and holds from step to step (the rebuilt devices, their rows,
    the renumbering: some 1 GB at a year's national changes) is made by `spill`, which a
    fold's process maps from scratch files (`SnapshotDraft.spill`). Raises ValueError when
    `generation` is not newer than the state's."""
    if generation <= state.generation:
        raise ValueError(f"generation {generation} is not newer than {state.generation}")
    overlay = state.overlay
    # The old registry and white list are read once a step: pages a step (or a caller, a
    # bench laying a year over it) left resident would sit beside all the next one builds
    # (2 GB at 300 M IMEIs; issue 21 part 5).
    state.let_go_of_pages()
    keys, slots = _columns(overlay, "imeis", np.uint32)
    lists = _fold_lists(state.lists, overlay, keys, slots, generation, columns)
    touched = spilled(spill, "fold-touched", _touched(state, keys, slots))
    rebuilt = _rebuilt(state, touched, keys, slots, spill)
    give_back()  # the steps' transients, freed in pieces, before the new registry is built
    devices, renumbering = realign(
        state.devices, state.lists.white_index, lists.white_index, touched, rebuilt,
        _fold_cartables(state.devices.cartables, *_columns(overlay, "cartables", np.uint32)),
        _fold_operator_sims(state.devices.operator_sims, overlay.operator_sims), chunk_rows,
        columns, spill)
    set_owners(devices, renumbering, *_columns(overlay, "owners", np.uint64))
    devices = replace(devices, ids=renumbering.ids(state.devices.ids.with_changes(
        *overlay.columns("device_ids"), gone=NO_DEVICE_INT)))
    folded = EnforcementState(lists, devices, state.policy,
                              overlay=replace(empty_overlay(devices),
                                              read_to=dict(overlay.read_to)),
                              cutoffs=state.cutoffs, misused=state.misused,
                              watermark=dict(overlay.read_to), tacs=state.tacs,
                              blocked_tacs=state.blocked_tacs)
    added = overlay.next_device - overlay.base_devices
    report = FoldReport(generation, len(overlay.events), len(overlay), devices.count, added,
                        state.devices.count + added - devices.count)
    return folded, report


def _columns(overlay: Overlay, name: str, value_dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """One of the overlay's maps as (keys, values) sorted by key."""
    keys, values = overlay.columns(name)
    return keys.astype(np.uint64, copy=False), values.astype(value_dtype, copy=False)


def _index_in(number: np.ndarray, device: np.ndarray, out: np.ndarray | None = None
              ) -> np.ndarray:
    """Each device's index in `number` (sorted, distinct, holding every device): as
    `np.searchsorted(number, device)`, by a rank in a bitmap of `number` (two reads a device
    where a search takes some 25, each a cache miss for the events' devices, which come in
    no order: 30 s of a year's fold at 300 M IMEIs, 162 -> 133 s), DEVICES_AT_ONCE at a time;
    int64, written into `out` when given (`device` itself may be)."""
    if not len(number):
        index = np.empty(len(device), dtype=np.int64) if out is None else out
        index[:] = 0
        return index
    bits = RankBits.from_positions(int(number[-1]) + 1, number)
    return in_steps(bits.rank, device, DEVICES_AT_ONCE, np.int64, out)


def _fold_lists(lists: Lists, overlay: Overlay, keys: np.ndarray, slots: np.ndarray,
                generation: int, columns: ColumnMaker) -> Lists:
    # The index changed where the overlay names keys: no bitmap of the national list (0.6
    # GB, and as much again to index it). Its keys' low bits are a column `columns` makes,
    # like the registry's: mapped from the next snapshot's file in a fold's process.
    white = lists.white_index.changed(
        keys, slots == NO_DEVICE,
        lambda count: columns(WHITE_LOW_COLUMN, count, np.dtype(np.uint16)))
    # Keys, not bitmaps: black-listed IMEIs are scattered, some 70 bytes a key as a bitmap.
    named, codes = _columns(overlay, "black", np.uint8)
    old = lists.black_keys()
    black = {reason: sorted_unique(np.concatenate([old[reason][~among(old[reason], named)],
                                                   named[codes == code]]))
             for code, reason in enumerate(BLACK_REASONS)}
    folded = Lists.from_black_keys(generation, white, black, lists.cut_imeis, lists.cut_pairs)
    let_go(white.low)  # the black-listed keys' rows were looked up all over it
    return folded


def _touched(state: EnforcementState, keys: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The snapshot's devices the overlay changes the IMEIs of: those its IMEIs leave and
    those it puts IMEIs into; sorted."""
    devices = state.devices
    held = devices.device_slots(state.lists.white_index.rows(keys))
    into = slots[slots != NO_DEVICE] >> np.uint32(SLOT_BITS)
    return sorted_unique(np.concatenate([held[held != NO_DEVICE] >> np.uint32(SLOT_BITS),
                                         into[into < devices.count]]).astype(np.int64))


def _rebuilt(state: EnforcementState, touched: np.ndarray, keys: np.ndarray,
             slots: np.ndarray, spill: ColumnMaker) -> Rebuilt:
    """The `touched` devices and the events' devices as they are after the overlay: the
    snapshot's IMEIs the overlay does not name, then the overlay's in their slots, each
    device's slots numbered 0, 1, ... in that order; the snapshot's owner, source and day,
    or the events'. Its columns are made by `spill` and written a step at a time: held from
    here to the fold's end, a year's 25 M IMEIs on 10 M devices were some 0.6 GB
    (issue 21 part 4)."""
    overlay, devices = state.overlay, state.devices
    other_rows, other_values = _other_slots_of(devices, touched)
    rows = np.concatenate([devices.first_slot.select_many(touched), other_rows])
    device = np.concatenate([touched, (other_values >> np.uint32(SLOT_BITS)).astype(np.int64)])
    slot = np.concatenate([np.zeros(len(touched), np.uint8),
                           (other_values & SLOT_MASK).astype(np.uint8)])
    del other_rows, other_values
    order = np.argsort(rows, kind="stable")
    old_keys = state.lists.white_index.keys_at(rows[order])
    state.let_go_of_pages()
    unnamed = ~among(old_keys, keys)
    kept = order[unnamed]
    placed = sum(int(np.count_nonzero(slots[start:start + NUMBERED_AT_ONCE] != NO_DEVICE))
                 for start in range(0, len(slots), NUMBERED_AT_ONCE))
    imeis = len(kept) + placed
    imei_key = spill("rebuilt-imei-key", imeis, np.dtype(np.uint64))
    imei_device = spill("rebuilt-imei-device", imeis, np.dtype(np.int64))
    imei_slot = spill("rebuilt-imei-slot", imeis, np.dtype(np.uint8))
    at = len(kept)
    imei_key[:at], imei_device[:at], imei_slot[:at] = old_keys[unnamed], device[kept], slot[kept]
    del old_keys, unnamed, slot, kept, order, rows, device
    for start in range(0, len(slots), NUMBERED_AT_ONCE):
        part = slots[start:start + NUMBERED_AT_ONCE]
        named = part != NO_DEVICE
        into = slice(at, at + int(np.count_nonzero(named)))
        imei_key[into] = keys[start:start + NUMBERED_AT_ONCE][named]
        imei_device[into] = part[named] >> np.uint32(SLOT_BITS)
        imei_slot[into] = part[named] & SLOT_MASK
        at = into.stop
        let_go(imei_key, imei_device, imei_slot)
    numbered_in_order(imei_device, imei_slot, out=imei_slot)
    added, sources, ordinals = overlay.columns("devices")  # numbered base_devices, ... on
    number = spill("rebuilt-number", len(touched) + len(added), np.dtype(np.int64))
    number[:len(touched)], number[len(touched):] = touched, added
    _index_in(number, imei_device, out=imei_device)  # the devices' numbers, then their index
    # The touched devices' columns then the events' devices', each written into its place:
    # joined from parts (and the days counted in int64), they were a year's 8 M registered
    # devices some 20 bytes each more at once (issue 21 part 4).
    owners = take_owners(devices.owner_source, touched)
    owner = spill("rebuilt-owner", len(number), np.dtype(np.uint64))
    owner[:len(touched)], owner[len(touched):] = unpack_msisdns(owners), NO_OWNER
    source = spill("rebuilt-source", len(number), np.dtype(np.uint8))
    source[:len(touched)], source[len(touched):] = unpack_sources(owners), sources
    del owners, sources
    registered_on = spill("rebuilt-registered-on", len(number), np.dtype(np.uint16))
    registered_on[:len(touched)] = devices.registered_on[touched]
    for start in range(0, len(ordinals), DEVICES_AT_ONCE):
        registered_on[len(touched) + start:len(touched) + start + DEVICES_AT_ONCE] = (
            ordinals[start:start + DEVICES_AT_ONCE] - EPOCH.toordinal())
    let_go(imei_key, imei_device, imei_slot, number, owner, source, registered_on)
    state.let_go_of_pages()
    return Rebuilt(number, imei_key, imei_device, imei_slot, owner, source, registered_on)


def _other_slots_of(devices: Devices, touched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The other slots of `touched` devices, read a step of rows at a time: their rows
    (int64) and `device << SLOT_BITS | slot` (uint32)."""
    bits = RankBits.from_positions(devices.count, touched)
    rows, values = [np.zeros(0, np.int64)], [np.zeros(0, np.uint32)]
    for found, slots in devices.other_device_slots():
        mine = bits.test(slots >> np.uint32(SLOT_BITS))
        rows.append(found[mine])
        values.append(slots[mine])
        let_go(*devices.columns())  # a scan of every other slot: read once, not held
    return np.concatenate(rows), np.concatenate(values)


def numbered_in_order(device: np.ndarray, slot: np.ndarray, out: np.ndarray | None = None
                      ) -> np.ndarray:
    """Each device's slots numbered 0, 1, ... in their order (unchanged where they were):
    uint8 an IMEI, for `device` (int64 each) and `slot` (uint8 each). A range of devices at
    a time, each holding about NUMBERED_AT_ONCE of the IMEIs: sorted whole, a year's 25 M
    rebuilt IMEIs were 0.45 GB of transient, 21 % of a national state (issue 21 part 4).
    Written into `out` when given (`slot` itself may be: each range reads its slots before
    it writes them)."""
    out = np.empty(len(device), dtype=np.uint8) if out is None else out
    for lo, hi in _device_ranges(device):
        at = _between(device, lo, hi)
        out[at] = _numbered(device[at], slot[at])
    return out


def _device_ranges(device: np.ndarray) -> list[tuple[int, int]]:
    """Ranges [lo, hi) of device numbers, together covering every one in `device`, each
    holding about NUMBERED_AT_ONCE of its entries (at least a bucket of devices)."""
    if not len(device):
        return []
    buckets = (int(device.max()) >> DEVICE_BUCKET_BITS) + 1
    counts = np.zeros(buckets, dtype=np.int64)
    for start in range(0, len(device), NUMBERED_AT_ONCE):
        counts += np.bincount(device[start:start + NUMBERED_AT_ONCE] >> DEVICE_BUCKET_BITS,
                              minlength=buckets)
    # The bucket where each multiple of NUMBERED_AT_ONCE entries is reached ends a range.
    ends = np.searchsorted(np.cumsum(counts),
                           np.arange(NUMBERED_AT_ONCE, len(device), NUMBERED_AT_ONCE)) + 1
    bounds = [0, *sorted(set((ends << DEVICE_BUCKET_BITS).tolist())),
              buckets << DEVICE_BUCKET_BITS]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if lo < hi]


def _between(device: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The indexes of the entries of `device` in [lo, hi), ascending; int64. Found a step of
    NUMBERED_AT_ONCE entries at a time, so that no mask of them all is made: each range
    reads every entry, some 25 passes at a year's 25 M rebuilt IMEIs (under 2 s in all)."""
    found = [np.zeros(0, np.int64)]
    for start in range(0, len(device), NUMBERED_AT_ONCE):
        part = device[start:start + NUMBERED_AT_ONCE]
        found.append(np.flatnonzero((part >= lo) & (part < hi)) + start)
    return np.concatenate(found)


def _numbered(device: np.ndarray, slot: np.ndarray) -> np.ndarray:
    order = np.lexsort((slot, device))
    sorted_device = device[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = sorted_device[1:] != sorted_device[:-1]
    position = np.arange(len(order))
    first = np.maximum.accumulate(np.where(starts, position, 0))
    out = np.empty(len(order), dtype=np.uint8)
    out[order] = (position - first).astype(np.uint8)
    return out


def _fold_cartables(cartables: Cartables, msisdns: np.ndarray, ids: np.ndarray) -> Cartables:
    """The snapshot's links less those the overlay names (`msisdns`, sorted), with the ones
    it links (`ids` not NO_CARTABLE) merged in: both sorted, the new ones inserted, where
    joining and sorting them again took an argsort and copies, 6.5 M links at 300 M IMEIs
    (5 % of the state)."""
    kept = ~among(cartables.msisdn, msisdns)
    linked = ids != NO_CARTABLE
    old_msisdn, old_cartable = cartables.msisdn[kept], cartables.cartable[kept]
    into = np.searchsorted(old_msisdn, msisdns[linked])
    return Cartables(np.insert(old_msisdn, into, msisdns[linked]),
                     np.insert(old_cartable, into, ids[linked].astype(np.uint32)))


def _fold_operator_sims(pairs: PairSet, changes: Mapping[tuple[int, int], bool]) -> PairSet:
    if not changes:
        return pairs
    imeis, numbers = pairs.pairs()
    named = np.flatnonzero(np.isin(imeis, np.array([k for k, _ in changes], np.uint64)))
    kept = np.ones(len(imeis), dtype=bool)
    kept[[i for i in named.tolist() if (int(imeis[i]), int(numbers[i])) in changes]] = False
    added = [pair for pair, is_set in changes.items() if is_set]
    return PairSet.from_pairs(
        np.concatenate([imeis[kept], np.array([k for k, _ in added], np.uint64)]),
        np.concatenate([numbers[kept], np.array([n for _, n in added], np.uint64)]))
