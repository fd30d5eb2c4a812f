"""The IMEI status query a buyer of a used phone relies on (DOMAIN.md). Pure: the device as
it stands, who used its slots, and the requester in; the answer out.

The answer reveals another person's number, so it is given only to a SIM that has used
every slot of the device itself: until then it says which slots are left, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from enforcer.db.history import Usage
from enforcer.device import DeviceNow
from enforcer.lists import BlackReason


class Status(StrEnum):
    USE_EVERY_SLOT = "use_every_slot"
    OWNED = "owned"
    BLACKLISTED = "blacklisted"
    PREVIOUS_USER = "previous_user"
    NO_PREVIOUS_USER = "no_previous_user"


MESSAGES = {
    Status.USE_EVERY_SLOT: "use every SIM slot of the device with this SIM first, then ask again",
    Status.OWNED: "owned; ask the owner to transfer it to you",
    Status.BLACKLISTED: "black-listed",
    Status.PREVIOUS_USER: "in nobody's cartable; ask the previous user for the transfer",
    Status.NO_PREVIOUS_USER: "in nobody's cartable, and no other SIM has been seen with it",
}


@dataclass(frozen=True)
class StatusAnswer:
    status: Status
    slots_left: tuple[tuple[int, int], ...] = ()  # (slot, IMEI key) not yet used
    black_reason: BlackReason | None = None
    previous_msisdn: int | None = None
    previous_seen: datetime | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"status": self.status.value,
                                  "message": MESSAGES[self.status]}
        if self.slots_left:
            out["slots_left"] = [{"slot": s, "imei": f"{k:014d}"} for s, k in self.slots_left]
        if self.black_reason:
            out["reason"] = self.black_reason.value
        if self.previous_msisdn is not None and self.previous_seen is not None:
            out["previous_msisdn"] = str(self.previous_msisdn)
            out["previous_seen"] = self.previous_seen.isoformat()
        return out


def imei_status(device: DeviceNow, usage: list[Usage], requester: int) -> StatusAnswer:
    used = {u.imei_key for u in usage if u.msisdn == requester}
    left = tuple((slot, key) for slot, key in device.slots if key not in used)
    if left:
        return StatusAnswer(Status.USE_EVERY_SLOT, slots_left=left)
    if device.owner is not None:
        return StatusAnswer(Status.OWNED)
    if device.black_reason is not None:
        return StatusAnswer(Status.BLACKLISTED, black_reason=device.black_reason)
    others = [u for u in usage if u.msisdn != requester]
    if not others:
        return StatusAnswer(Status.NO_PREVIOUS_USER)
    last = max(others, key=lambda u: u.last_seen)
    return StatusAnswer(Status.PREVIOUS_USER, previous_msisdn=last.msisdn,
                        previous_seen=last.last_seen)
