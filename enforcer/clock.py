"""Time, injected: the system clock in production, a clock the tests and the demo move."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol

MS_PER_S = 1000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
NS_PER_MS = 1_000_000


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // NS_PER_MS


def parse_time_ms(text: str) -> int:
    """ISO-8601 (naive means UTC) or epoch milliseconds."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * MS_PER_S)


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
