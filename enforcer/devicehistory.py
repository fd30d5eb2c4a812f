"""`eir-enforcer history IMEI`: the SIMs that used each slot of that IMEI's device."""

from __future__ import annotations

import numpy as np
import psycopg

from enforcer.db.history import usage_of
from enforcer.keyindex import ABSENT
from enforcer.registry import NO_DEVICE, SLOT_BITS
from enforcer.state import EnforcementState
from enforcer.subscriber import mask


def device_history(state: EnforcementState, dsn: str, imei_key: int,
                   reveal: bool) -> dict[str, object]:
    row = int(state.lists.white_index.rows(np.array([imei_key], dtype=np.uint64))[0])
    device_slot = state.registry.device_slots(np.array([row]))[0] if row != ABSENT else NO_DEVICE
    if device_slot == NO_DEVICE:
        device, slots = None, [(None, imei_key)]
    else:
        device = int(device_slot >> np.uint32(SLOT_BITS))
        view = state.registry.device(device, state.lists.white_index)
        slots = [(s.slot, s.imei_key) for s in view.slots]
    show = (lambda n: str(n)) if reveal else mask
    with psycopg.connect(dsn) as conn:
        usage = usage_of(conn, [key for _, key in slots])
    return {
        "imei": f"{imei_key:014d}", "device": device,
        "slots": [{"slot": slot, "imei": f"{key:014d}", "sims": [
            {"imsi": show(u.imsi), "msisdn": show(u.msisdn),
             "first_seen": u.first_seen.isoformat(), "last_seen": u.last_seen.isoformat(),
             "days_seen": u.days_seen}
            for u in usage if u.imei_key == key]} for slot, key in slots],
    }
