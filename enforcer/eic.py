"""N5g-eir Equipment Identity Check (3GPP TS 29.511 §5.2.2.2), pure: a request's query
parameters read into a `Check` or a `Problem`, and a batch of checks answered by the same
decision as the stream, over the same state and policy.

SUPI and PEI are asked together: a pair cut off for this SUPI is BLACKLISTED, and only for
it; without a SUPI only what holds for the IMEI itself counts. Without a GPSI nobody can be
told apart from the owner, so a registered device answers as for another SIM (GREYLISTED
under the default policy: allowed, and tracked). The check has no effects: the stream
records sightings and opens notices, the check only answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Callable, Mapping, TypeVar

import numpy as np

from enforcer.decide import decide
from enforcer.events import NO_KEY, AttachBatch
from enforcer.imei import ImeiRules, parse_imei
from enforcer.state import EnforcementState
from enforcer.subscriber import IdentityError, parse_imsi, parse_msisdn

NO_IMSI = 0  # in no cut pair: the check is for the PEI alone
NO_MSISDN = 0  # nobody's number: never the owner

IMEI_PEI = re.compile(r"(?:imei-[0-9]{15}|imeisv-[0-9]{16})\Z")
# Wireline PEIs (TS 29.571 Pei): valid, and never in an IMEI registry.
OTHER_PEI = re.compile(r"(?:mac(?:-[0-9a-fA-F]{2}){6}(?:-untrusted)?|eui(?:-[0-9a-fA-F]{2}){8})\Z")
OTHER_SUPI = ("nai-", "gci-", "gli-")
OTHER_GPSI = "extid-"
SUPPORTED_FEATURES = re.compile(r"[A-Fa-f0-9]*\Z")
T = TypeVar("T")


class Cause(StrEnum):
    """ProblemDetails.cause values of TS 29.500 and TS 29.511."""

    MANDATORY_IE_MISSING = "MANDATORY_IE_MISSING"
    MANDATORY_IE_INCORRECT = "MANDATORY_IE_INCORRECT"
    OPTIONAL_IE_INCORRECT = "OPTIONAL_IE_INCORRECT"
    ERROR_EQUIPMENT_UNKNOWN = "ERROR_EQUIPMENT_UNKNOWN"
    RESOURCE_URI_STRUCTURE_NOT_FOUND = "RESOURCE_URI_STRUCTURE_NOT_FOUND"
    SYSTEM_FAILURE = "SYSTEM_FAILURE"


@dataclass(frozen=True)
class Problem:
    """An answer that is not a status: ProblemDetails (RFC 7807, TS 29.571)."""

    status: HTTPStatus
    cause: Cause
    detail: str
    param: str | None = None  # the query parameter at fault

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"title": self.status.phrase, "status": int(self.status),
                                   "detail": self.detail, "cause": self.cause.value}
        if self.param is not None:
            body["invalidParams"] = [{"param": self.param, "reason": self.detail}]
        return body


@dataclass(frozen=True)
class Check:
    """One equipment check, read: the IMEI key (None: a PEI that is no IMEI), whether it is
    malformed (a placeholder, a test TAC), and the SIM's identities where given."""

    imei_key: int | None
    malformed: bool
    imsi: int
    mcc: int | None
    msisdn: int


@dataclass(frozen=True)
class Status:
    status: str  # EquipmentStatus: WHITELISTED, GREYLISTED or BLACKLISTED
    rule: str

    def as_json(self) -> dict[str, object]:
        return {"status": self.status}


Answer = Status | Problem


def _invalid(param: str, detail: str, mandatory: bool = False) -> Problem:
    cause = Cause.MANDATORY_IE_INCORRECT if mandatory else Cause.OPTIONAL_IE_INCORRECT
    return Problem(HTTPStatus.BAD_REQUEST, cause, detail, param)


def _identity(query: Mapping[str, str], param: str, form: str, others: tuple[str, ...],
              parse: Callable[[str], T], wrong_form: str) -> T | Problem | None:
    """An optional SUPI or GPSI: parsed when in `form`, None when absent or in a form that
    names no SIM (it can be in no list), else the 400 it deserves."""
    value = query.get(param)
    if value is None or value.startswith(others):
        return None
    if not value.startswith(form):
        return _invalid(param, wrong_form)
    try:
        return parse(value)
    except IdentityError as exc:
        return _invalid(param, str(exc))


def read_check(query: Mapping[str, str], rules: ImeiRules) -> Check | Problem:
    """The query parameters (first value of each) as a check, or the 400 they deserve."""
    pei = query.get("pei")
    if not pei:
        return Problem(HTTPStatus.BAD_REQUEST, Cause.MANDATORY_IE_MISSING, "pei is required",
                       "pei")
    features = query.get("supported-features", "")
    if not SUPPORTED_FEATURES.match(features):
        return _invalid("supported-features", "supported-features must be hexadecimal")
    supi = _identity(query, "supi", "imsi-", OTHER_SUPI, parse_imsi,
                     "supi must be imsi-<digits>, nai-, gci- or gli-")
    if isinstance(supi, Problem):
        return supi
    gpsi = _identity(query, "gpsi", "msisdn-", (OTHER_GPSI,), parse_msisdn,
                     "gpsi must be msisdn-<digits> or extid-<id>")
    if isinstance(gpsi, Problem):
        return gpsi
    imsi, mcc = (NO_IMSI, None) if supi is None else (supi.value, supi.mcc)
    msisdn = NO_MSISDN if gpsi is None else gpsi
    if OTHER_PEI.match(pei):
        return Check(None, False, imsi, mcc, msisdn)
    if not IMEI_PEI.match(pei):
        return _invalid("pei", "pei must be imei-<15 digits>, imeisv-<16 digits>, mac-… or "
                        "eui-…", mandatory=True)
    imei = parse_imei(pei.partition("-")[2], rules)  # the digits: the pattern holds their form
    # The pattern leaves no room for an IMEI without a key: 15 or 16 digits always have one.
    return Check(int(imei.key or 0), imei.malformed, imsi, mcc, msisdn)


UNKNOWN = Problem(HTTPStatus.NOT_FOUND, Cause.ERROR_EQUIPMENT_UNKNOWN,
                  "the equipment is not known to this EIR")


def answer_checks(checks: list[Check], state: EnforcementState, now_ms: int) -> list[Answer]:
    """Each check's answer, from one decision over all of them."""
    rules = state.policy.rules
    home = state.policy.home_mcc[0]
    # A PEI that is no IMEI is in no list: it is decided as the IMEI nobody has.
    batch = AttachBatch(
        imei_key=np.array([NO_KEY if c.imei_key is None else c.imei_key for c in checks],
                          dtype=np.uint64),
        malformed=np.array([c.malformed for c in checks], dtype=bool),
        imsi=np.array([c.imsi for c in checks], dtype=np.uint64),
        # Without a SUPI the check cannot tell an inbound roamer: it answers as for home.
        mcc=np.array([home if c.mcc is None else c.mcc for c in checks], dtype=np.uint16),
        msisdn=np.array([c.msisdn for c in checks], dtype=np.uint64),
        ts_ms=np.full(len(checks), now_ms, dtype=np.int64),
        emergency=np.zeros(len(checks), dtype=bool))
    by_rule = [UNKNOWN if rule.unknown_equipment else Status(rule.verdict.value, rule.name)
               for rule in rules]
    return [UNKNOWN if check.imei_key is None else by_rule[index]
            for check, index in zip(checks, decide(batch, state).rule.tolist())]
