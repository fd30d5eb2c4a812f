"""N5g-eir Equipment Identity Check (3GPP TS 29.511 §5.2.2.2), pure: a request's query
parameters read into a `Check` or a `Problem`, and a batch of checks answered by the same
decision as the stream, over the same state and policy.

SUPI and PEI are asked together: a pair cut off for this SUPI is BLACKLISTED, and only for
it; without a SUPI only what holds for the IMEI itself counts. Without a GPSI the SUPI's
MSISDN is taken from the subscribers' numbers the state holds (learned from the attach
stream, `enforcer.engine.numbers`), so the owner is WHITELISTED; an IMSI not known there is
told apart from nobody, and a registered device answers as for another SIM (GREYLISTED under
the default policy: allowed, and tracked). The check has no effects: the stream records
sightings and opens notices, the check only answers (serve may hand `check_batch`'s batch to
the stream as attach events: `enforcer.engine.checkfeed`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from enforcer.engine.decide import decide
from enforcer.engine.events import NO_IMSI, NO_KEY, NO_MSISDN, AttachBatch
from enforcer.engine.identity import Mode, OtherForm, read_imei, read_imsi, read_msisdn
from enforcer.engine.imei import ImeiRules, key_problems
from enforcer.engine.state import EnforcementState
from enforcer.engine.subscriber import (IMSI_MAX_DIGITS, IMSI_MIN_DIGITS, MCC_DIGITS,
                                        MSISDN_MAX_DIGITS, MSISDN_MIN_DIGITS, IdentityError)

NO_KEY_INT = int(NO_KEY)

SUPPORTED_FEATURES = re.compile(r"[A-Fa-f0-9]*\Z")
# The fast path: a PEI, SUPI or GPSI as a 5G core sends it, read in one match each; any
# other value goes to the strict reader (enforcer.engine.identity), which reads these the same (a
# property test holds them to it) at several times the cost. The IMEI key is the first 14
# digits; the check digit or SVN after them changes no answer.
IMEI_PEI = re.compile(r"(?:imei-([0-9]{14})[0-9]|imeisv-([0-9]{14})[0-9]{2})\Z")
IMSI_SUPI = re.compile(rf"imsi-([0-9]{{{IMSI_MIN_DIGITS},{IMSI_MAX_DIGITS}}})\Z")
MSISDN_GPSI = re.compile(
    rf"msisdn-([1-9][0-9]{{{MSISDN_MIN_DIGITS - 1},{MSISDN_MAX_DIGITS - 1}}})\Z")


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


class Check(NamedTuple):
    """One equipment check, read: the IMEI key (None: a PEI that is no IMEI), whether it is
    malformed (a placeholder, a test TAC), and the SIM's identities where given. A NamedTuple:
    one is built per request, at a third of a frozen dataclass's cost."""

    imei_key: int | None
    malformed: bool
    imsi: int
    mcc: int | None
    msisdn: int


class EirResponseData(NamedTuple):
    """A check's answer (TS 29.511 §6.1.6.2.2 EirResponseData) with the rule that gave it."""

    status: str  # EquipmentStatus: WHITELISTED, GREYLISTED or BLACKLISTED
    rule: str

    def as_json(self) -> dict[str, object]:
        return {"status": self.status}


Answer = EirResponseData | Problem


def _invalid(param: str, detail: str, mandatory: bool = False) -> Problem:
    cause = Cause.MANDATORY_IE_INCORRECT if mandatory else Cause.OPTIONAL_IE_INCORRECT
    return Problem(HTTPStatus.BAD_REQUEST, cause, detail, param)


def given_twice(param: str) -> Problem:
    """The 400 for a query that gives a parameter more than once. Readers differ on which
    value counts (the first, the last, all), so the answer would depend on the order; it is
    refused, as a duplicate JSON key is on the stream."""
    return _invalid(param, f"{param} is given more than once; give each parameter once",
                    mandatory=param == "pei")


@dataclass(frozen=True)
class _IdentityForm:
    """How one optional identity parameter (SUPI, GPSI) is read."""

    param: str
    canonical: re.Pattern[str]  # the fast path: group 1 is the digits
    from_digits: Callable[[str], object]
    read: Callable[[str], object]  # the strict reader, for every other value


def _imsi_and_mcc(digits: str) -> tuple[int, int]:
    return int(digits), int(digits[:MCC_DIGITS])


SUPI = _IdentityForm("supi", IMSI_SUPI, _imsi_and_mcc,
                     lambda value: _imsi_and_mcc(read_imsi(value, Mode.STRICT).digits))
GPSI = _IdentityForm("gpsi", MSISDN_GPSI, int, lambda value: read_msisdn(value, Mode.STRICT))


def _identity(query: Mapping[str, str], form: _IdentityForm) -> Any:
    """An optional SUPI or GPSI, read ((IMSI, MCC), MSISDN); None when absent or in a form
    that names no SIM (it can be in no list), else the 400 it deserves."""
    value = query.get(form.param)
    if value is None:
        return None
    found = form.canonical.match(value)
    if found is not None:
        return form.from_digits(found[1])
    try:
        return form.read(value)
    except OtherForm:
        return None
    except IdentityError as exc:
        return _invalid(form.param, str(exc))


def read_check(query: Mapping[str, str], rules: ImeiRules) -> Check | Problem:
    """The query parameters (one value each: see `enforcer.querystring.query_values`) as a
    check, or the 400 they deserve. PEI, SUPI and GPSI are read in the strict mode of
    `enforcer.engine.identity` (TS 29.571 §5.3.2)."""
    pei = query.get("pei")
    if not pei:
        return Problem(HTTPStatus.BAD_REQUEST, Cause.MANDATORY_IE_MISSING, "pei is required",
                       "pei")
    features = query.get("supported-features")
    if features and not SUPPORTED_FEATURES.match(features):
        return _invalid("supported-features", "supported-features must be hexadecimal")
    supi = _identity(query, SUPI)
    if isinstance(supi, Problem):
        return supi
    gpsi = _identity(query, GPSI)
    if isinstance(gpsi, Problem):
        return gpsi
    imsi, mcc = (NO_IMSI, None) if supi is None else supi
    msisdn = NO_MSISDN if gpsi is None else gpsi
    imei = IMEI_PEI.match(pei)
    if imei is not None:
        key = imei[1] or imei[2]
        return Check(int(key), bool(key_problems(key, rules)), imsi, mcc, msisdn)
    try:
        parsed = read_imei(pei, Mode.STRICT, rules)
    except OtherForm:
        return Check(None, False, imsi, mcc, msisdn)
    except IdentityError as exc:
        return _invalid("pei", str(exc), mandatory=True)
    return Check(parsed.imei_key, parsed.malformed, imsi, mcc, msisdn)


UNKNOWN = Problem(HTTPStatus.NOT_FOUND, Cause.ERROR_EQUIPMENT_UNKNOWN,
                  "the equipment is not known to this EIR")


def answer_checks(checks: list[Check], state: EnforcementState, now_ms: int) -> list[Answer]:
    """Each check's answer, from one decision over all of them; a check without an MSISDN
    takes its IMSI's from `state.numbers` where that knows it."""
    if not checks:
        return []
    return answers_of(checks, check_batch(checks, state, now_ms), state)


def check_batch(checks: list[Check], state: EnforcementState, now_ms: int) -> AttachBatch:
    """The checks (at least one) as the batch of attach events the decision reads, at
    `now_ms`; a check without an MSISDN takes its IMSI's from `state.numbers` where that
    knows it (the MSISDN column stays NO_MSISDN where not)."""
    home = state.policy.home_mcc[0]
    keys, malformed, imsis, mccs, msisdns = zip(*checks)
    n = len(checks)
    imsi = np.array(imsis, dtype=np.uint64)
    msisdn = np.array(msisdns, dtype=np.uint64)
    # No MSISDN given (S13 never gives one, N5g-eir without a GPSI): the IMSI's, where known.
    asks = np.flatnonzero((msisdn == NO_MSISDN) & (imsi != NO_IMSI))
    if len(asks) and len(state.numbers):
        known, number = state.numbers.find(imsi[asks])
        msisdn[asks[known]] = number[known]
    # A PEI that is no IMEI is in no list: it is decided as the IMEI nobody has.
    return AttachBatch(
        imei_key=np.array([NO_KEY_INT if k is None else k for k in keys], dtype=np.uint64),
        malformed=np.array(malformed, dtype=bool),
        imsi=imsi,
        # Without a SUPI the check cannot tell an inbound roamer: it answers as for home.
        mcc=np.array([home if m is None else m for m in mccs], dtype=np.uint16),
        msisdn=msisdn,
        ts_ms=np.full(n, now_ms, dtype=np.int64),
        emergency=np.zeros(n, dtype=bool))


def answers_of(checks: list[Check], batch: AttachBatch, state: EnforcementState
               ) -> list[Answer]:
    """Each check's answer, `batch` being `check_batch`'s of the same checks and state."""
    by_rule = [UNKNOWN if rule.unknown_equipment else EirResponseData(rule.verdict.value, rule.name)
               for rule in state.policy.rules]
    return [UNKNOWN if check.imei_key is None else by_rule[index]
            for check, index in zip(checks, decide(batch, state).rule.tolist())]
