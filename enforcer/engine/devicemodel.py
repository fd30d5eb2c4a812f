"""What people read of a device's model, from its IMEI's TAC: the make and model the GSMA's
TAC database names and whether the regulator blocks it, in the CLI's JSON (`check`,
`history`, `status`, `notices show`) and in SMS texts (`{model}`). Pure."""

from __future__ import annotations

from enforcer.engine.imei import SNR_SPACE, TAC_DIGITS
from enforcer.engine.tacblocks import BlockedTacs
from enforcer.engine.tacs import TacDatabase

# An SMS names the model in at most this many characters, so that a long marketing name
# does not add a part to the message (docs/messages.md: 67 characters a Persian part).
MODEL_CHARS = 32
ELLIPSIS = "..."  # in the GSM 7-bit alphabet: an English text stays in it


def model_json(tacs: TacDatabase | None, blocked: BlockedTacs | None,
               imei_key: int) -> dict[str, object] | None:
    """The model of the IMEI key (14 digits): `tac` (8 digits), `manufacturer`, `model`,
    `device_type`, `rats` (None each where the database has no such TAC or none is
    imported), `allocated` (the database holds the TAC; None without a database) and
    `blocked` (the regulator's reason, or None). None when neither a TAC database nor a
    blocked list was imported: nothing to tell."""
    if tacs is None and blocked is None:
        return None
    info = tacs.info_of_key(imei_key) if tacs is not None else None
    reason = blocked.reason_of_key(imei_key) if blocked is not None else None
    shown: dict[str, object] = {
        "tac": f"{imei_key // SNR_SPACE:0{TAC_DIGITS}d}", "manufacturer": None, "model": None,
        "device_type": None, "rats": None}
    if info is not None:
        shown.update(info.as_json())
    shown["allocated"] = None if tacs is None else info is not None
    shown["blocked"] = reason.value if reason is not None else None
    return shown


def model_name(tacs: TacDatabase | None, imei_key: int) -> str | None:
    """Make and model as a subscriber calls the phone ("Samsung Galaxy S21"; the model
    alone when it begins with the make's first word), cut to MODEL_CHARS; None when the
    TAC is not in the database or none is imported."""
    info = tacs.info_of_key(imei_key) if tacs is not None else None
    if info is None:
        return None
    make, model = info.manufacturer.strip(), info.model.strip()
    first_word = make.split()[0].lower() if make else ""
    name = model if not first_word or model.lower().startswith(first_word) else (
        f"{make} {model}".strip())
    if not name:
        return None
    if len(name) <= MODEL_CHARS:
        return name
    return name[:MODEL_CHARS - len(ELLIPSIS)].rstrip() + ELLIPSIS
