"""S13 ME-Identity-Check (3GPP TS 29.272 §5.2.5), pure: a request's Terminal-Information and
User-Name read into the N5g-eir front end's `Check`, and its answer from the very same
decision (`enforcer.frontends.eic.answer_checks`) as Equipment-Status or a result code.

The MME sends no MSISDN: the decision takes the IMSI's number from the subscribers' numbers
the state holds (learned from the attach stream), as for an N5g-eir check without a GPSI, so
the owner is WHITELISTED; an IMSI not known there answers a registered device as for another
SIM."""

from __future__ import annotations

import re
from enum import IntEnum
from typing import NamedTuple

from enforcer.engine.imei import ImeiRules, key_problems
from enforcer.engine.subscriber import IMSI_MAX_DIGITS, IMSI_MIN_DIGITS, MCC_DIGITS
from enforcer.frontends.eic import NO_IMSI, NO_MSISDN, Answer, Cause, Check, EirResponseData

# TS 29.272 §7.1.8 and §7.2.19-20; TS 29.230 §7.2 (the vendor), §8 (the application).
S13_APPLICATION_ID = 16777252
ME_IDENTITY_CHECK = 324
VENDOR_3GPP = 10415
# RFC 6733 §7.1.
DIAMETER_SUCCESS = 2001
DIAMETER_INVALID_AVP_VALUE = 5004
DIAMETER_MISSING_AVP = 5005
DIAMETER_UNABLE_TO_COMPLY = 5012
# TS 29.272 §7.4.3.1.
DIAMETER_ERROR_EQUIPMENT_UNKNOWN = 5422

# TS 29.272 §7.3.4: the IMEI AVP is the TAC and SNR (14 digits), with the spare or check
# digit as a 15th or not; the key is the first 14. Software-Version is its own AVP.
IMEI_AVP = re.compile(r"([0-9]{14})[0-9]?\Z")
# TS 23.003 §2.2: the User-Name of S13 is the IMSI, digits only.
IMSI_USER_NAME = re.compile(rf"[0-9]{{{IMSI_MIN_DIGITS},{IMSI_MAX_DIGITS}}}\Z")

class EquipmentStatus(IntEnum):
    """TS 29.272 §7.3.51 Equipment-Status (AVP 1445)."""

    WHITELISTED = 0
    BLACKLISTED = 1
    GREYLISTED = 2


class InvalidAvp(NamedTuple):
    """A request the check cannot read: the result code and the AVP at fault (its code)."""

    result_code: int
    avp_code: int
    detail: str


class S13Answer(NamedTuple):
    """What a ME-Identity-Check-Answer says: an Equipment-Status with DIAMETER_SUCCESS, or no
    status and an Experimental-Result (3GPP's vendor) such as 5422."""

    equipment_status: EquipmentStatus | None
    result_code: int
    experimental: bool  # the code goes in Experimental-Result (Vendor-Id 10415)


# TS 29.272 §7.3.3 Terminal-Information, §7.3.4 IMEI; RFC 6733 §8.14 User-Name.
AVP_TERMINAL_INFORMATION = 1401
AVP_IMEI = 1402
AVP_USER_NAME = 1

UNKNOWN_ANSWER = S13Answer(None, DIAMETER_ERROR_EQUIPMENT_UNKNOWN, experimental=True)
FAILED_ANSWER = S13Answer(None, DIAMETER_UNABLE_TO_COMPLY, experimental=False)


def read_identity_check(imei: str | None, imsi: str | None, rules: ImeiRules
                        ) -> Check | InvalidAvp:
    """A request's IMEI (Terminal-Information's, Software-Version aside) and User-Name as the
    check N5g-eir decides, without an MSISDN (`answer_checks` finds the IMSI's); or the
    request's fault: no IMEI
    (5005, DIAMETER_MISSING_AVP), or an IMEI or User-Name that is no IMEI or IMSI (5004,
    DIAMETER_INVALID_AVP_VALUE; RFC 6733 §7.1.5)."""
    if imei is None:
        return InvalidAvp(DIAMETER_MISSING_AVP, AVP_IMEI,
                          "Terminal-Information carries no IMEI")
    found = IMEI_AVP.match(imei)
    if found is None:
        return InvalidAvp(DIAMETER_INVALID_AVP_VALUE, AVP_IMEI,
                          "IMEI must be 14 or 15 digits")
    key = found[1]
    if imsi is None:
        return Check(int(key), bool(key_problems(key, rules)), NO_IMSI, None, NO_MSISDN)
    if not IMSI_USER_NAME.match(imsi):
        return InvalidAvp(DIAMETER_INVALID_AVP_VALUE, AVP_USER_NAME,
                          f"User-Name must be an IMSI ({IMSI_MIN_DIGITS}-{IMSI_MAX_DIGITS} "
                          "digits)")
    return Check(int(key), bool(key_problems(key, rules)), int(imsi), int(imsi[:MCC_DIGITS]),
                 NO_MSISDN)


def s13_answer(answer: Answer) -> S13Answer:
    """The N5g-eir decision's answer in S13's terms: its status as Equipment-Status, unknown
    equipment (the policy's `unknown_equipment`) as 5422 DIAMETER_ERROR_EQUIPMENT_UNKNOWN,
    a failed decision as 5012 DIAMETER_UNABLE_TO_COMPLY."""
    if isinstance(answer, EirResponseData):
        return S13Answer(EquipmentStatus[answer.status], DIAMETER_SUCCESS, experimental=False)
    if answer.cause is Cause.ERROR_EQUIPMENT_UNKNOWN:
        return UNKNOWN_ANSWER
    return FAILED_ANSWER
