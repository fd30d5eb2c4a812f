"""`eir-enforcer history IMEI`: the SIMs that used each slot of that IMEI's device."""

from __future__ import annotations

import psycopg

from enforcer.db.history import usage_of
from enforcer.engine.device import device_now
from enforcer.engine.devicemodel import model_json
from enforcer.engine.state import EnforcementState
from enforcer.engine.subscriber import mask


def device_history(state: EnforcementState, conn: psycopg.Connection, imei_key: int,
                   reveal: bool) -> dict[str, object]:
    device = device_now(state, imei_key)
    slots = [(slot if device.device is not None else None, key) for slot, key in device.slots]
    show = (lambda n: str(n)) if reveal else mask
    usage = usage_of(conn, [key for _, key in slots])
    return {
        "imei": f"{imei_key:014d}", "device": device.device,
        "slots": [{"slot": slot, "imei": f"{key:014d}",
                   "model": model_json(state.tacs, state.blocked_tacs, key), "sims": [
            {"imsi": show(u.imsi), "msisdn": show(u.msisdn),
             "first_seen": u.first_seen.isoformat(), "last_seen": u.last_seen.isoformat(),
             "days_seen": u.days_seen}
            for u in usage if u.imei_key == key]} for slot, key in slots],
    }
