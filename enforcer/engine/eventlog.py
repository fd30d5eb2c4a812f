"""The registry events an overlay holds, in the order applied, without a copy per poll.

Overlays made one from the next (a lineage) share one append-only list; each knows how many
of its events are its own (`end`). A poll's events are appended to the list when its draft
extends the lineage's newest overlay: O(k). A draft made from an older overlay (a poll
applied again over a state that moved on) starts a list of its own: a copy, rare.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Iterable, overload

from enforcer.engine.registry_events import RegistryEvent


class EventLog:
    """Events of one lineage of overlays; never shortened, only appended to."""

    def __init__(self, events: list[RegistryEvent] | None = None) -> None:
        self._events = events if events is not None else []
        # Two drafts of the same overlay may finish at once (the registry consumer's and a
        # consistency repair's): only one may extend the list.
        self._lock = threading.Lock()

    def extended(self, end: int, more: Iterable[RegistryEvent]) -> tuple[EventLog, int]:
        """The log holding the first `end` events and then `more`, and its end: this one,
        appended to, when `end` is where it ends; else a new one."""
        more = list(more)
        with self._lock:
            if end == len(self._events) or not more:
                self._events.extend(more)
                return self, end + len(more)
        log = EventLog(self._events[:end] + more)
        return log, len(log._events)

    def upto(self, end: int) -> Events:
        return Events(self._events, end)


class Events(Sequence[RegistryEvent]):
    """The first `end` events of a log: a view, not a copy."""

    def __init__(self, events: list[RegistryEvent], end: int) -> None:
        self._events, self._end = events, end

    def __len__(self) -> int:
        return self._end

    def __iter__(self) -> Iterator[RegistryEvent]:
        # Sequence's own calls __getitem__ once an event: a rebase walks a day's events.
        return islice(self._events, self._end)

    @overload
    def __getitem__(self, at: int) -> RegistryEvent: ...
    @overload
    def __getitem__(self, at: slice) -> list[RegistryEvent]: ...

    def __getitem__(self, at: int | slice) -> RegistryEvent | list[RegistryEvent]:
        if isinstance(at, slice):
            return [self._events[i] for i in range(*at.indices(self._end))]
        if not -self._end <= at < self._end:
            raise IndexError(at)
        return self._events[at % self._end]
