"""The registry rebuilt from whole columns, as every new generation did before issue 21
parts 3 and 5: `Devices.device_columns` (a key, device and slot per registered IMEI) built
again with `build_devices`. The chunked realign (`enforcer.engine.realign`) is held to it on
random registries and random changes: same devices, same report, same ids."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from enforcer.engine.devices import (NO_DEVICE, NO_OWNER, SLOT_BITS, SLOT_MASK, SOURCES,
                                     DeviceColumns, Devices, DevicesBuild, build_devices,
                                     carry_ids, day_number)
from enforcer.engine.fold import _columns, _fold_cartables, _fold_operator_sims
from enforcer.engine.keyindex import KeyIndex
from enforcer.engine.state import EnforcementState


def realigned_white(devices: Devices, old_index: KeyIndex,
                    new_index: KeyIndex) -> tuple[Devices, DevicesBuild]:
    """A white import's devices: every device built again against the new white list."""
    columns = devices.device_columns(old_index)
    new, built = build_devices(new_index, columns, devices.cartables, devices.operator_sims)
    if len(devices.ids):
        new = replace(new, ids=carry_ids(dict(devices.ids.items()), columns, new_index, new))
    return new, built


def folded_devices(state: EnforcementState, new_index: KeyIndex) -> tuple[Devices, int]:
    """A fold's devices aligned to its new white list, and how many it left with no IMEI."""
    overlay = state.overlay
    keys, slots = _columns(overlay, "imeis", np.uint32)
    columns = _device_columns(state, keys, slots)
    devices, _ = build_devices(
        new_index, columns,
        _fold_cartables(state.devices.cartables, *_columns(overlay, "cartables", np.uint32)),
        _fold_operator_sims(state.devices.operator_sims, overlay.operator_sims))
    named = {**dict(state.devices.ids.items()), **overlay.device_ids}
    ids = carry_ids({name: d for name, d in named.items() if d != NO_DEVICE}, columns,
                    new_index, devices)
    return replace(devices, ids=ids), len(columns.owner) - devices.count


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
    return DeviceColumns(imei_key, imei_device, numbered_in_order(imei_device, imei_slot),
                         owner, source, registered_on)


def numbered_in_order(device: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Each device's slots numbered 0, 1, ... in their order (ties in the order given), a
    device at a time in plain Python: the reference for the fold's ranges of devices."""
    by_device: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (one, its_slot) in enumerate(zip(device.tolist(), slot.tolist())):
        by_device[one].append((its_slot, i))
    out = np.empty(len(device), dtype=np.uint8)
    for entries in by_device.values():
        for number, (_, i) in enumerate(sorted(entries)):
            out[i] = number
    return out
