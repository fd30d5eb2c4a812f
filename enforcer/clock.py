"""Time, injected: the system clock in production, a clock the tests and the demo move."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Protocol

MS_PER_S = 1000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
NS_PER_MS = 1_000_000
S_PER_MINUTE, S_PER_HOUR, S_PER_DAY = 60, 3600, 86_400
MINUTES_PER_HOUR, MINUTES_PER_DAY = 60, 1440
# The proleptic Gregorian calendar repeats every 400 years, of 146,097 days; 1970-01-01 is
# day 719,468 counted from 0000-03-01.
DAYS_PER_ERA, UNIX_EPOCH_DAY = 146_097, 719_468
MS_DIGITS = 3
# A signed 64-bit count of milliseconds has at most 19 digits; more is no time.
EPOCH_MS_MAX_DIGITS = 19
LEAP_SECOND = 60
# RFC 3339 §5.6 date-time, with "T" and "Z" in either case (its NOTE), a space for the "T"
# (the same NOTE's readability form), and the offset optional (read as UTC). [0-9], not
# \d: other scripts' digits are no part of the grammar.
RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))?\Z")
EXAMPLE = "2026-11-23T10:00:00Z"


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // NS_PER_MS


class TimeError(ValueError):
    """A time that is neither an RFC 3339 date-time nor epoch milliseconds; the message says
    what is wrong with it."""


def parse_time_ms(text: str) -> int:
    """A time given as text, in epoch milliseconds (the instant, truncated to the millisecond).

    Read: an RFC 3339 date-time (§5.6: `2026-11-23T10:00:00.25+03:30`; `T` and `Z` in either
    case, a fraction of any length, `Z` or a `±hh:mm` offset, `-00:00` as UTC per §4.3), also
    with a space for the `T` (§5.6 NOTE) or with no offset (read as UTC); or epoch
    milliseconds as ASCII digits. A leap second (`23:59:60` in UTC, §5.7) is read as the last
    millisecond of its day: epoch milliseconds have no leap seconds, and the event stays on
    the day it happened. Raises TimeError for anything else (a date alone, ISO 8601's basic
    or week forms, an offset without minutes, a day the month does not have)."""
    if text.isdigit() and text.isascii():
        if len(text) > EPOCH_MS_MAX_DIGITS:
            raise TimeError(f"{len(text)} digits: epoch milliseconds have at most "
                            f"{EPOCH_MS_MAX_DIGITS}")
        return int(text)
    found = RFC3339.match(text)
    if found is None:
        raise TimeError(f"{text[:40]!r} is neither an RFC 3339 date-time (e.g. {EXAMPLE}) "
                        "nor epoch milliseconds")
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    fraction, sign = found[7], found[8]
    offset_s = 0
    if sign is not None:
        offset_hour, offset_minute = int(found[9]), int(found[10])
        _within("offset hour", offset_hour, 23)
        _within("offset minute", offset_minute, 59)
        offset_s = (offset_hour * S_PER_HOUR + offset_minute * S_PER_MINUTE) \
            * (-1 if sign == "-" else 1)
    _within("month", month, 12, 1)
    _within("day", day, _days_in_month(year, month), 1)
    _within("hour", hour, 23)
    _within("minute", minute, 59)
    millis = 0 if fraction is None else int(fraction[:MS_DIGITS].ljust(MS_DIGITS, "0"))
    if second == LEAP_SECOND:
        utc_minute = (hour * MINUTES_PER_HOUR + minute - offset_s // S_PER_MINUTE) % MINUTES_PER_DAY
        if utc_minute != MINUTES_PER_DAY - 1:
            raise TimeError("second 60 (a leap second) only ends a UTC day, at 23:59 UTC")
        second, millis = LEAP_SECOND - 1, MS_PER_S - 1
    _within("second", second, 59)
    seconds = _days_from_civil(year, month, day) * S_PER_DAY + hour * S_PER_HOUR \
        + minute * S_PER_MINUTE + second - offset_s
    return seconds * MS_PER_S + millis


def _within(what: str, value: int, highest: int, lowest: int = 0) -> None:
    if not lowest <= value <= highest:
        raise TimeError(f"{what} {value} is not within {lowest:02d}-{highest:02d}")


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date of the proleptic Gregorian calendar (RFC 3339 §5.6
    allows year 0000, which datetime cannot hold). Years are counted from March, so that the
    leap day ends one, in 400-year eras (H. Hinnant's days_from_civil); 153 days are five
    months from March on, alternating 31 and 30."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * DAYS_PER_ERA + day_of_era - UNIX_EPOCH_DAY


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / MS_PER_S, tz=timezone.utc).isoformat(timespec="seconds")


class ManualClock:
    """Time that moves only when told to: the tests and the demo run 30 days in seconds."""

    def __init__(self, start_ms: int) -> None:
        self._ms = start_ms

    def now_ms(self) -> int:
        return self._ms

    def advance(self, ms: int) -> None:
        self._ms += ms


class FileClock:
    """The time written in a file (epoch milliseconds): a real worker process on a clock
    that a test, or a staging demo, moves from outside."""

    def __init__(self, path: str) -> None:
        self._path = path

    def now_ms(self) -> int:
        with open(self._path) as f:
            return int(f.read().strip())


def clock_from(file: str) -> Clock:
    """`clock.file` of the configuration: empty for the system clock."""
    return FileClock(file) if file else SystemClock()


class AcceleratedClock:
    """Time from `start_ms`, running `speed` times faster than the wall: the demo's month
    passes in a minute."""

    def __init__(self, start_ms: int, speed: float) -> None:
        self._start_ms = start_ms
        self._speed = speed
        self._began = time.monotonic()

    def now_ms(self) -> int:
        return self._start_ms + int((time.monotonic() - self._began) * MS_PER_S * self._speed)
