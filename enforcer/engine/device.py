"""One device as it stands now: the snapshot with the registry's changes laid over it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enforcer.engine.lists import BLACK_REASONS, NO_REASON, BlackReason
from enforcer.engine.devices import NO_DEVICE, NO_OWNER, SLOT_BITS, SLOT_MASK
from enforcer.engine.state import EnforcementState


@dataclass(frozen=True)
class DeviceNow:
    device: int | None  # None: the IMEI is in no device
    slots: tuple[tuple[int, int], ...]  # (slot, IMEI key) in slot order; the IMEI alone if none
    owner: int | None  # MSISDN of the owning SIM, None when in no cartable
    black_reason: BlackReason | None  # of the first black-listed slot


def device_now(state: EnforcementState, imei_key: int) -> DeviceNow:
    lists, devices, overlay = state.lists, state.devices, state.overlay
    device_slot = overlay.device_slot(imei_key, lists, devices)
    if device_slot == NO_DEVICE:
        device, slots = None, ((0, imei_key),)
    else:
        device = device_slot >> SLOT_BITS
        slots = tuple(sorted((overlay.device_slot(k, lists, devices) & int(SLOT_MASK), k)
                             for k in overlay.device_keys(device, lists, devices)))
    one = np.array([device_slot], dtype=np.uint32)
    owner = int(overlay.patch_owners(one, devices.owners(one))[0])
    keys = np.array([k for _, k in slots], dtype=np.uint64)
    _, _, codes = overlay.patch_imeis(keys, np.ones(len(keys), bool),
                                      np.zeros(len(keys), np.uint32), lists.black_reasons(keys))
    black = [int(c) for c in codes if c != NO_REASON]
    return DeviceNow(device, slots, owner if owner != NO_OWNER else None,
                     BLACK_REASONS[black[0]] if black else None)
