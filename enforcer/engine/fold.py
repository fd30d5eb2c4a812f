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
  device is numbered again, in the order of its first IMEI (`build_devices`), and the
  registry's ids of those devices go with the snapshot (`DeviceIds`).

The snapshot's devices keep slots numbered 0, 1, ... in order: a device an event took an
IMEI from keeps its other IMEIs, numbered again from 0 in their order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from enforcer.engine.deviceids import DeviceIds
from enforcer.engine.devices import (KEYLESS_DEVICE, NO_CARTABLE, NO_DEVICE, NO_OWNER,
                                     SLOT_BITS, SLOT_MASK, SOURCES, Cartables, DeviceColumns,
                                     Devices, build_devices, day_number)
from enforcer.engine.lists import BLACK_REASONS, Lists
from enforcer.engine.overlay import Overlay, empty_overlay
from enforcer.engine.pairset import PairSet
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import EnforcementState


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


def fold(state: EnforcementState, generation: int) -> tuple[EnforcementState, FoldReport]:
    """The next generation, `generation`, with `state.overlay` laid into its columns, its
    watermark the overlay's `read_to` (every registry event stored before those positions is
    in it). Raises ValueError when `generation` is not newer than the state's."""
    if generation <= state.generation:
        raise ValueError(f"generation {generation} is not newer than {state.generation}")
    overlay = state.overlay
    keys, slots = _columns(overlay, "imeis", np.uint32)
    lists = _fold_lists(state.lists, overlay, keys, slots, generation)
    columns = _device_columns(state, keys, slots)
    devices, built = build_devices(lists.white_index, columns,
                                   _fold_cartables(state.devices.cartables,
                                                   *_columns(overlay, "cartables", np.uint32)),
                                   _fold_operator_sims(state.devices.operator_sims,
                                                       overlay.operator_sims))
    devices = replace(devices, ids=_fold_ids(state, overlay, columns, lists, devices))
    folded = EnforcementState(lists, devices, state.policy,
                              overlay=replace(empty_overlay(devices),
                                              read_to=dict(overlay.read_to)),
                              cutoffs=state.cutoffs, misused=state.misused,
                              watermark=dict(overlay.read_to), tacs=state.tacs,
                              blocked_tacs=state.blocked_tacs)
    report = FoldReport(generation, len(overlay.events), len(overlay), devices.count,
                        len(overlay.devices), len(columns.owner) - devices.count)
    return folded, report


def _columns(overlay: Overlay, name: str, value_dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """One of the overlay's maps as (keys, values) sorted by key."""
    keys, values = overlay.columns(name)
    return keys.astype(np.uint64, copy=False), values.astype(value_dtype, copy=False)


def _fold_lists(lists: Lists, overlay: Overlay, keys: np.ndarray, slots: np.ndarray,
                generation: int) -> Lists:
    white = ((lists.white - bitmap_from_sorted_keys(keys[slots == NO_DEVICE]))
             | bitmap_from_sorted_keys(keys[slots != NO_DEVICE]))
    black_keys, codes = _columns(overlay, "black", np.uint8)
    named = bitmap_from_sorted_keys(black_keys)
    black = {reason: (lists.black[reason] - named)
             | bitmap_from_sorted_keys(black_keys[codes == code])
             for code, reason in enumerate(BLACK_REASONS)}
    return Lists.build(generation, white, black, lists.cut_imeis, lists.cut_pairs)


def _device_columns(state: EnforcementState, keys: np.ndarray,
                    slots: np.ndarray) -> DeviceColumns:
    """Every device, the snapshot's and the events', in the snapshot's numbering, with the
    overlay's IMEIs in their slots and its owners."""
    overlay, devices = state.overlay, state.devices
    old = devices.device_columns(state.lists.white_index)
    kept = ~np.isin(old.imei_key, keys)
    placed = slots != NO_DEVICE
    imei_key = np.concatenate([old.imei_key[kept], keys[placed]])
    imei_device = np.concatenate([old.imei_device[kept],
                                  (slots[placed] >> np.uint32(SLOT_BITS)).astype(np.int64)])
    imei_slot = np.concatenate([old.imei_slot[kept],
                                (slots[placed] & SLOT_MASK).astype(np.uint8)])
    added = [overlay.devices[d] for d in range(overlay.base_devices, overlay.next_device)]
    owner = np.concatenate([old.owner, np.full(len(added), NO_OWNER, np.uint64)])
    owned, msisdns = _columns(overlay, "owners", np.uint64)
    numbered = owned < len(owner)  # not KEYLESS_DEVICE's: it has no column
    owner[owned[numbered].astype(np.int64)] = msisdns[numbered]
    source = np.concatenate([old.source, np.array([SOURCES.index(d.source) for d in added],
                                                  np.uint8)])
    registered_on = np.concatenate([old.registered_on, np.array(
        [day_number(d.registered_on) for d in added], np.uint16)])
    return DeviceColumns(imei_key, imei_device, _numbered_in_order(imei_device, imei_slot),
                         owner, source, registered_on)


def _numbered_in_order(device: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Each device's slots numbered 0, 1, ... in their order (unchanged where they were)."""
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
    kept = ~np.isin(cartables.msisdn, msisdns)
    linked = ids != NO_CARTABLE
    return Cartables.from_links(np.concatenate([cartables.msisdn[kept], msisdns[linked]]),
                                np.concatenate([cartables.cartable[kept], ids[linked]]))


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


def _fold_ids(state: EnforcementState, overlay: Overlay, columns: DeviceColumns,
              lists: Lists, devices: Devices) -> DeviceIds:
    named = {**dict(state.devices.ids.items()), **overlay.device_ids}
    return carry_ids({name: d for name, d in named.items() if d != NO_DEVICE}, columns,
                     lists, devices)


def carry_ids(named: Mapping[str, int], columns: DeviceColumns, lists: Lists,
              devices: Devices) -> DeviceIds:
    """The registry's ids of devices numbered as in `columns`, numbered as in `devices`
    (built aligned to `lists`): each id goes with one of its device's IMEIs; an id whose
    device has none left, or whose IMEI is in no device now, names KEYLESS_DEVICE."""
    if not named:
        return DeviceIds.empty()
    any_key = np.zeros(len(columns.owner), dtype=np.uint64)
    has_key = np.zeros(len(columns.owner), dtype=bool)
    any_key[columns.imei_device] = columns.imei_key
    has_key[columns.imei_device] = True
    old = np.fromiter(named.values(), np.int64, len(named))
    live = (old < len(has_key)) & has_key[np.minimum(old, len(has_key) - 1)]
    slots = np.full(len(old), NO_DEVICE, dtype=np.uint32)
    slots[live] = devices.device_slots(lists.white_index.rows(any_key[old[live]]))
    now = np.where(slots != NO_DEVICE, slots >> np.uint32(SLOT_BITS), KEYLESS_DEVICE)
    return DeviceIds.from_mapping(dict(zip(named, now.tolist())))
