"""Equipment checks as attach events (issue 22 part 3), pure: an operator whose core only asks
the EIR has no other attach feed, so `serve` may publish each check it answered, N5g-eir and
S13 alike, to the attach topic in the form `attachdecode` reads (docs/messages.md).

A check becomes `{"imei", "imsi", "msisdn", "ts", "rat"}`: the IMEI as received (an N5g-eir
PEI without its `imei-`/`imeisv-` form, so that the worker's fast decoder takes it), the IMSI,
the MSISDN given or known by the IMSI (`enforcer.engine.numbers`), the time the check was
decided at, and the radio its front end implies. Keyed by the 14-digit IMEI key as every
attach is. No event id: a replayed attach changes nothing (slot usage keeps first and last
seen; a notice opens once per IMEI or pair)."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Protocol

import msgspec

from enforcer.engine.events import NO_IMSI, NO_KEY, NO_MSISDN, AttachBatch
from enforcer.engine.imei import KEY_DIGITS

# The radio a check implies (enforcer.engine.tacs.RAT_NAMES): an MME asks over S13 for a device
# on LTE, an AMF over N5g-eir for one on 5G.
S13_RAT = "EUTRA"
N5G_EIR_RAT = "NR"
# The N5g-eir PEI forms (TS 29.571 §5.3.2) whose digits are the IMEI as the network sent it.
PEI_IMEI_FORMS = ("imei-", "imeisv-")


class Unfed:
    """Why an answered check was not published (`eir_eic_feed_skipped_total`'s reasons)."""

    NO_IMSI = "no_imsi"  # an N5g-eir check without a SUPI: no SIM to record
    NO_MSISDN = "no_msisdn"  # no GPSI, and the IMSI is not among the subscribers' numbers


class CheckedBatch(NamedTuple):
    """Checks answered together, as their decision read them: `batch`'s IMSI and MSISDN
    columns (the MSISDN looked up where none was given) and its time, in milliseconds. The
    decision only reads its batch, so the publishing thread may read the same columns."""

    received: list[str]  # each check's IMEI as received (a PEI, or S13's IMEI AVP)
    batch: AttachBatch
    rat: str


class AttachMessage(NamedTuple):
    key: bytes | None  # the 14-digit IMEI key; None for an IMEI without one
    value: bytes


class _Attach(msgspec.Struct):
    imei: str
    imsi: str
    msisdn: str
    ts: int
    rat: str


_encode = msgspec.json.Encoder().encode


def imei_received(pei: str) -> str:
    """An N5g-eir PEI's IMEI as the network sent it: the digits of `imei-`/`imeisv-`, any
    other form whole (the worker decides it as a malformed IMEI)."""
    lowered = pei[:len(PEI_IMEI_FORMS[1])].lower()
    for form in PEI_IMEI_FORMS:
        if lowered.startswith(form):
            return pei[len(form):]
    return pei


def attach_messages(checked: CheckedBatch) -> tuple[list[AttachMessage], Counter[str]]:
    """The attach events of the checks that name a SIM, and how many did not, by reason
    (`Unfed`)."""
    batch = checked.batch
    messages: list[AttachMessage] = []
    unfed: Counter[str] = Counter()
    no_key = int(NO_KEY)
    for imei, key, imsi, msisdn, ts in zip(checked.received, batch.imei_key.tolist(),
                                           batch.imsi.tolist(), batch.msisdn.tolist(),
                                           batch.ts_ms.tolist()):
        if imsi == NO_IMSI:
            unfed[Unfed.NO_IMSI] += 1
        elif msisdn == NO_MSISDN:
            unfed[Unfed.NO_MSISDN] += 1
        else:
            messages.append(AttachMessage(
                None if key == no_key else f"{key:0{KEY_DIGITS}d}".encode(),
                _encode(_Attach(imei, str(imsi), str(msisdn), ts, checked.rat))))
    return messages, unfed


class Feed(Protocol):
    """Where a front end hands the checks it answered (`consumers.checkfeed.CheckFeed`):
    returns at once, whatever becomes of them."""

    def offer(self, checked: CheckedBatch) -> None: ...
