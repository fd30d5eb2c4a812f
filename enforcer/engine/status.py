"""The IMEI status query a buyer of a used phone relies on. Pure: the device as it stands,
who used its slots, and the requester in; the answer out.

The registry's rule: a buyer who bought a used phone without a transfer uses every slot of
it with their own SIM (so the network records their number against each IMEI), then asks
for the IMEI's status; a device in nobody's cartable, not misused, is answered with the
number of the previous SIM seen with it, so the buyer can ask that person for the transfer.

The answer reveals another person's number, so it is given only to a SIM that has used
every slot of the device itself: until then it says which slots are left, and nothing else.
Then the strongest fact about the device comes first: black-listed (with the reason: a buyer
holding a stolen phone must learn that it is stolen, not be sent to its owner, even when it
is in a cartable), misused (an IMEI of it flagged by clone detection: no number is told, for
the last other SIM may be a cloner's), owned, and only then the previous SIM's number (the
registry's guide: shown only when the device is in nobody's cartable and not misused).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from enforcer.engine.device import DeviceNow
from enforcer.engine.history import Usage
from enforcer.engine.lists import BlackReason


class ImeiStatus(StrEnum):
    USE_EVERY_SLOT = "use_every_slot"
    OWNED = "owned"
    BLACKLISTED = "blacklisted"
    MISUSED = "misused"
    PREVIOUS_USER = "previous_user"
    NO_PREVIOUS_USER = "no_previous_user"


MESSAGES = {
    ImeiStatus.USE_EVERY_SLOT: "use every SIM slot of the device with this SIM first, then ask"
                               " again",
    ImeiStatus.OWNED: "owned; ask the owner to transfer it to you",
    ImeiStatus.BLACKLISTED: "black-listed",
    ImeiStatus.MISUSED: "flagged misused (its IMEI seen with more SIMs, or in more places, than"
                        " one device can be); only its owner's SIMs keep service",
    ImeiStatus.PREVIOUS_USER: "in nobody's cartable; ask the previous user for the transfer",
    ImeiStatus.NO_PREVIOUS_USER: "in nobody's cartable, and no other SIM has been seen with it",
}


@dataclass(frozen=True)
class StatusAnswer:
    status: ImeiStatus
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


def imei_status(device: DeviceNow, usage: list[Usage], requester: int,
                misused: bool) -> StatusAnswer:
    """The answer to `requester` (an MSISDN) about `device`, by the rule in this module's
    docstring. `usage`: the slot-usage history of the device's IMEIs; `misused`: one of them is
    flagged by clone detection (clone_flags)."""
    used = {u.imei_key for u in usage if u.msisdn == requester}
    left = tuple((slot, key) for slot, key in device.slots if key not in used)
    if left:
        return StatusAnswer(ImeiStatus.USE_EVERY_SLOT, slots_left=left)
    if device.black_reason is not None:
        return StatusAnswer(ImeiStatus.BLACKLISTED, black_reason=device.black_reason)
    if misused:
        return StatusAnswer(ImeiStatus.MISUSED)
    if device.owner is not None:
        return StatusAnswer(ImeiStatus.OWNED)
    others = [u for u in usage if u.msisdn != requester]
    if not others:
        return StatusAnswer(ImeiStatus.NO_PREVIOUS_USER)
    last = max(others, key=lambda u: u.last_seen)
    return StatusAnswer(ImeiStatus.PREVIOUS_USER, previous_msisdn=last.msisdn,
                        previous_seen=last.last_seen)
