"""Attach-event messages in, parsed events or dead letters out. Pure: the caller gives the
time, so an absurd timestamp is judged against the injected clock.

Message value: JSON `{"imei", "imsi", "msisdn", "ts"}` plus optional `"mcc_mnc"`, `"rat"`,
`"cell"`, `"emergency"`; `ts` is an RFC 3339 date-time or epoch milliseconds; the IMEI may
be any form the core parses (a malformed IMEI is a decision, not a dead letter).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from enforcer.clock import MS_PER_DAY, MS_PER_S, TimeError, parse_time_ms
from enforcer.engine.events import AttachEvent
from enforcer.engine.imei import ImeiRules, parse_imei
from enforcer.engine.subscriber import IdentityError, parse_imsi, parse_msisdn

REQUIRED = ("imei", "imsi", "msisdn", "ts")
OPTIONAL_TEXT = ("mcc_mnc", "rat", "cell")
# A longer value is no attach event; refusing it early bounds the work one message costs.
MAX_MESSAGE_BYTES = 4096

# msgspec raises UnicodeDecodeError, not DecodeError, for bytes that are not UTF-8 inside a
# JSON string, and RecursionError for arrays or objects nested too deep (a few thousand
# levels fit in MAX_MESSAGE_BYTES): all of them mean "not JSON" here.
JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class Reason:
    """Dead-letter reason codes, as they appear in the DLQ's `reason` header."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_IMEI = "bad_imei"
    BAD_IMSI = "bad_imsi"
    BAD_MSISDN = "bad_msisdn"
    BAD_TS = "bad_ts"
    ABSURD_TS = "absurd_ts"
    BAD_FIELD = "bad_field"
    DUPLICATE_KEY = "duplicate_key"


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str


@dataclass(frozen=True)
class TimeWindow:
    """Event times outside [now - max_age, now + max_future] are absurd."""

    now_ms: int
    max_age_ms: int
    max_future_ms: int

    @classmethod
    def around(cls, now_ms: int, max_age_days: int, max_future_s: int) -> TimeWindow:
        return cls(now_ms, max_age_days * MS_PER_DAY, max_future_s * MS_PER_S)

    def admits(self, ts_ms: int) -> bool:
        return self.now_ms - self.max_age_ms <= ts_ms <= self.now_ms + self.max_future_ms


# A JSON string, escapes and all (RFC 8259 §7): what may hold a `:` that separates nothing.
STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def may_repeat_a_key(value: bytes, keys: int) -> bool:
    """Cheap: more name separators (`:` outside strings; RFC 8259 §4 lets whitespace stand
    before one) than the object has keys. Also true of nested objects; `duplicate_key` tells
    them apart."""
    # Strings are cut out only when the plain count says more: the usual message, whose
    # strings hold no ':', costs one count.
    return value.count(b":") > keys and STRINGS.sub(b"", value).count(b":") > keys


def duplicate_key(value: bytes, keys: int) -> str | None:
    """The first key the top-level object repeats, if any. Parsers differ on which value of
    a repeated key wins, so a message that repeats one means different things to different
    readers: it is refused rather than guessed at."""
    if not may_repeat_a_key(value, keys):
        return None
    try:
        pairs = json.loads(value, object_pairs_hook=lambda p: p)
    except (RecursionError, ValueError):  # too deep for the standard library: not an event
        return None
    seen: set[str] = set()
    for key, _ in pairs if isinstance(pairs, list) else ():
        if key in seen:
            return key
        seen.add(key)
    return None


def decode_attach(value: bytes | None, rules: ImeiRules,
                  window: TimeWindow) -> AttachEvent | DeadLetter:
    if value is None:
        return DeadLetter(Reason.NOT_JSON, "empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        return DeadLetter(Reason.TOO_LARGE, f"{len(value)} bytes, at most {MAX_MESSAGE_BYTES}")
    try:
        data = msgspec.json.decode(value)
    except JSON_ERRORS as exc:
        return DeadLetter(Reason.NOT_JSON, str(exc))
    if not isinstance(data, dict):
        return DeadLetter(Reason.NOT_AN_OBJECT, f"a JSON {type(data).__name__}")
    duplicate = duplicate_key(value, len(data))
    if duplicate is not None:
        return DeadLetter(Reason.DUPLICATE_KEY, duplicate)
    for name in REQUIRED:
        if data.get(name) is None:
            return DeadLetter(Reason.MISSING_FIELD, name)
    imei = data["imei"]
    if isinstance(imei, bool) or not isinstance(imei, (str, int)):
        return DeadLetter(Reason.BAD_IMEI, f"imei is a {type(imei).__name__}")
    try:
        imsi = parse_imsi(data["imsi"])
    except IdentityError as exc:
        return DeadLetter(Reason.BAD_IMSI, str(exc))
    try:
        msisdn = parse_msisdn(data["msisdn"])
    except IdentityError as exc:
        return DeadLetter(Reason.BAD_MSISDN, str(exc))
    try:
        ts = timestamp_ms(data["ts"])
    except TimeError as exc:
        return DeadLetter(Reason.BAD_TS, f"ts: {exc}")
    if not window.admits(ts):
        return DeadLetter(Reason.ABSURD_TS, f"ts {ts} is outside the accepted window")
    emergency = data.get("emergency", False)
    if not isinstance(emergency, bool):
        return DeadLetter(Reason.BAD_FIELD, "emergency must be true or false")
    for name in OPTIONAL_TEXT:
        if name in data and data[name] is not None and not isinstance(data[name], str):
            return DeadLetter(Reason.BAD_FIELD, f"{name} must be a string")
    return AttachEvent(parse_imei(imei, rules), imsi, msisdn, ts, emergency,
                       data.get("mcc_mnc"), data.get("cell"), data.get("rat"))


def timestamp_ms(value: Any) -> int:
    """A message's time in epoch milliseconds: a JSON number of milliseconds (an integer, or
    a float with nothing after the point), or a string `enforcer.clock.parse_time_ms` reads
    (RFC 3339 date-time or epoch milliseconds). Raises TimeError, saying why, for anything
    else."""
    if isinstance(value, bool):
        raise TimeError("true or false is no time")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        raise TimeError(f"a JSON {type(value).__name__} is no time")
    return parse_time_ms(value)
