"""The notices' rounds, in a thread of their own: each follows the cut-off list, closes
what the registry resolved, sweeps the due notices and has the outbox relayed; now and then
it rechecks every cut notice and counts the live ones.

Every worker runs them. A step's state change and its messages commit in one transaction
(the outbox); the relay publishes them and marks them sent after the broker has them, so a
crash anywhere sends a step again at worst, under the same idempotency key.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Protocol

import psycopg

from enforcer.clock import Clock
from enforcer.config import Config
from enforcer.db.connection import LazyConnection
from enforcer.db.notices import live_counts
from enforcer.engine.state import StateHolder
from enforcer.follow.cutofflist import CutoffList
from enforcer.logs import describe
from enforcer.notices.due import DueSweep
from enforcer.notices.resolve import Resolver
from metrics.notices import NoticeMetrics

log = logging.getLogger("eir.notices")


class Relay(Protocol):
    """Publishes the outbox (consumers/outbox.py's OutboxRelay, which the wiring hands in:
    it is Kafka)."""

    def relay(self, conn: psycopg.Connection) -> int:
        """Publish what is unsent; how many were published."""

    def count_backlog(self, conn: psycopg.Connection) -> None:
        """The unsent messages into the metrics."""

    def close(self) -> None:
        ...


class NoticeRounds:
    """The parts of a round (the cut-off list, the resolver, the due sweep, the relay) in
    their order, on one connection kept from round to round (a round runs after every poll
    that changed something, several a second under load: a connection a round was a
    PostgreSQL backend forked each time); closed together."""

    def __init__(self, config: Config, holder: StateHolder, clock: Clock,
                 metrics: NoticeMetrics, connect: Callable[[], psycopg.Connection],
                 relay: Relay) -> None:
        self._count_every_s = config.notices.count_every_s
        self._metrics = metrics
        self._database = LazyConnection(connect)
        self._cutoffs = CutoffList(holder, metrics)
        self._resolver = Resolver(config.notices, clock, metrics, self._cutoffs)
        self._due = DueSweep(config.notices, connect, self._resolver)
        self._relay = relay
        self._counted_at = -math.inf
        self._counted: set[tuple[str, str]] = set()

    def touch(self, imei_keys: set[int], msisdns: set[int]) -> None:
        """The registry changed these IMEIs and SIMs: their notices may be resolved."""
        self._resolver.touch(imei_keys, msisdns)

    def start(self) -> None:
        """At the worker's start: the cut-off list into memory, cut notices the registry
        resolved while nobody looked, and the outbox's backlog counted, so that its gauges
        say what waits from the start rather than 0 until the first round. The first due
        sweep (and relay) waits for the schedule, by which time the registry topic has been
        read."""
        with self._database.held() as conn:
            self._cutoffs.follow(conn)
            self._resolver.recheck_cut(conn)
            self._relay.count_backlog(conn)

    def run_once(self) -> dict[str, int]:
        """One round: follow other workers' cutoffs, cancel what the registry resolved,
        take the due steps, publish the outbox. Returns how many of each."""
        with self._database.held() as conn:
            followed = self._cutoffs.follow(conn)
            cancelled = self._resolver.cancel_resolved(conn)
            swept = self._due.sweep_together(conn)
            published = self._relay.relay(conn)
            self._relay.count_backlog(conn)
            if time.monotonic() - self._counted_at >= self._count_every_s:
                cancelled += self._resolver.recheck_cut(conn)
                self._count_live(conn)
        self._metrics.rounds.inc()
        return {"followed": followed, "cancelled": cancelled, "swept": swept,
                "published": published}

    def close(self) -> None:
        try:
            self._relay.close()
        finally:
            self._database.drop()

    def _count_live(self, conn: psycopg.Connection) -> None:
        counts = {(kind, state): n for kind, state, n in live_counts(conn)}
        for kind, state in self._counted - counts.keys():  # none left: say 0, not the past
            self._metrics.live.labels(kind, state).set(0)
        for (kind, state), n in counts.items():
            self._metrics.live.labels(kind, state).set(n)
        self._counted |= counts.keys()
        self._counted_at = time.monotonic()


class SweepLoop:
    """The rounds' own thread: a round every notices.sweep_every_s (start to start), and
    one when woken, `woken_gap_s` (at most `every_s`) after the last one started at the
    earliest: the wake-ups of a busy second make one round, not one each. One round at a
    time. A round that outlasts the interval (a big backlog, a slow database) is followed by
    the next at once: expected, so not a warning."""

    def __init__(self, rounds: NoticeRounds, every_s: float, woken_gap_s: float) -> None:
        self._rounds = rounds
        self._every_s = every_s
        self._woken_gap_s = min(woken_gap_s, every_s)
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="eir-sweep")
        self._thread.start()

    def wake(self) -> None:
        """A round soon (the woken gap after the last one started) rather than at the next
        interval; woken during a round, one more after it. Before the start, nothing: the
        first round waits an interval, by which time the registry topic has been read."""
        if self._thread is not None:
            self._woken.set()

    def stop(self) -> None:
        """Ends the loop after the round running, if any, and waits for it."""
        self._stopping.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            woken = self._woken.wait(max(self._every_s - (time.monotonic() - started), 0))
            if self._stopping.is_set():
                return
            early = self._woken_gap_s - (time.monotonic() - started)
            if woken and early > 0 and self._stopping.wait(early):
                return
            self._woken.clear()
            started = time.monotonic()
            try:
                self._rounds.run_once()
            except Exception as exc:  # noqa: BLE001 - nothing is half-done: the next round retries
                log.warning("notice sweep failed", extra={"error": describe(exc)})
