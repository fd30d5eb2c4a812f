"""Time, injected: the system clock in production, a clock the tests and the demo move."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

MS_PER_S = 1000
MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
NS_PER_MS = 1_000_000
MS_DIGITS = 3
# A signed 64-bit count of milliseconds has at most 19 digits; more is no time.
EPOCH_MS_MAX_DIGITS = 19
# A leap second's digits, and those read in its place (datetime has no second 60).
LEAP_SECOND, LAST_SECOND = "60", "59"
# RFC 3339 time-numoffset: ±hh:mm, hours 00-23, minutes 00-59.
OFFSET_HOUR_MAX, OFFSET_MINUTE_MAX = 23, 59
# RFC 3339 §5.6 date-time, with "T" and "Z" in either case (its NOTE), a space for the "T"
# (the same NOTE's readability form), and the offset optional (read as UTC). [0-9], not
# \d: other scripts' digits are no part of the grammar. The groups: the fraction's digits,
# the offset's sign, hours and minutes.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))?\Z")
# Where the date and the time end, and the seconds' digits, in a text RFC3339 matches.
WALL_END, SECOND_AT = 19, slice(17, 19)
EXAMPLE = "2026-11-23T10:00:00Z"
# A date-time's wall time, naive, less this one: its milliseconds since the epoch, as if
# the wall time were UTC.
UNIX_EPOCH = datetime(1970, 1, 1)
ONE_MS = timedelta(milliseconds=1)


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
    with a space for the `T` (§5.6 NOTE) or with no offset (read as UTC), in years 0001-9999
    (Python's calendar; the grammar's year 0000 is refused); or epoch milliseconds as ASCII
    digits. A leap second (`23:59:60` in UTC, §5.7) is read as the last millisecond of its
    day: epoch milliseconds have no leap seconds, and the event stays on the day it happened.
    Raises TimeError, naming what is wrong, for anything else (a date alone, ISO 8601's basic
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
    fraction, sign, offset_hour, offset_minute = found.groups()
    wall_text = text[:WALL_END]
    leap = text[SECOND_AT] == LEAP_SECOND
    if leap:
        wall_text = wall_text[:SECOND_AT.start] + LAST_SECOND
    # The pattern has checked the form; datetime checks the calendar, on the one form of
    # ISO 8601 every Python reads alike (any character between date and time).
    try:
        wall = datetime.fromisoformat(wall_text)
    except ValueError as exc:  # it names the field: "day is out of range for month"
        raise TimeError(f"{text[:40]!r}: {exc}") from None
    # The wall time less the offset, in milliseconds: an offset may take 0001-01-01 or
    # 9999-12-31 past what a datetime holds, never past what an int does.
    instant = (wall - UNIX_EPOCH) // ONE_MS
    if sign is not None:
        instant -= _offset_ms(sign, offset_hour, offset_minute)
    if leap:
        if (instant + MS_PER_S) % MS_PER_DAY:
            raise TimeError("second 60 (a leap second) only ends a UTC day, at 23:59 UTC")
        return instant + MS_PER_S - 1
    return instant if fraction is None else \
        instant + int(fraction[:MS_DIGITS].ljust(MS_DIGITS, "0"))


def _offset_ms(sign: str, hours_text: str, minutes_text: str) -> int:
    """An RFC 3339 time-numoffset's time east of UTC, in milliseconds. Raises TimeError for
    hours over 23 or minutes over 59."""
    hours, minutes = int(hours_text), int(minutes_text)
    if hours > OFFSET_HOUR_MAX:
        raise TimeError(f"offset hour {hours_text} is not within 00-{OFFSET_HOUR_MAX}")
    if minutes > OFFSET_MINUTE_MAX:
        raise TimeError(f"offset minute {minutes_text} is not within 00-{OFFSET_MINUTE_MAX}")
    east = hours * MS_PER_HOUR + minutes * MS_PER_MINUTE
    return -east if sign == "-" else east


def utc_datetime(ms: int) -> datetime:
    """A clock's reading (ms since the epoch) as an aware datetime in UTC, for PostgreSQL's
    timestamptz."""
    return datetime.fromtimestamp(ms / MS_PER_S, tz=timezone.utc)


def iso(ms: int) -> str:
    return utc_datetime(ms).isoformat(timespec="seconds")


class ManualClock:
    """Time that moves only when told to: the tests run 30 days in seconds (the demo's runs
    on its own, faster: AcceleratedClock)."""

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
