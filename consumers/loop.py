"""The skeleton both input loops share (the attach events', the registry events'): poll,
handle, and, when a batch fails, read it again from its start after a backoff.

Nothing is lost and no partition stalls: a batch that fails anywhere (the database, the
broker) is sought back to its first offset per partition, its PostgreSQL connection dropped
(a broken one is never used again), and handled again after a wait that doubles up to
`Backoff.most_s`; the loop never dies of input. Whatever commits what (offsets, rows, the
state in memory) is the handler's: the skeleton only decides what happens around it.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from consumers.receive import Consumer, Partition, Polled
from enforcer.db.connection import LazyConnection
from enforcer.logs import describe
from enforcer.reach import Backoff


def rewind(consumer: Consumer, first: dict[Partition, int]) -> None:
    """Seek each partition still assigned back to its first offset in `first`."""
    assigned = consumer.assignment()
    for partition, offset in first.items():
        if partition in assigned:
            consumer.seek(partition, offset)


class Waits:
    """The waits before a failed batch is handled again, in seconds: backoff.first_s after a
    failure, doubling with each failure after it up to backoff.most_s; from backoff.first_s
    again once a batch is handled."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._next = backoff.first_s

    def failed(self) -> float:
        """The wait after this failure."""
        wait, self._next = self._next, self._backoff.after(self._next)
        return wait

    def handled(self) -> None:
        self._next = self._backoff.first_s


class BatchLoop:
    """Polls `consumer` (at most `poll_records` records, waiting up to `poll_ms` ms for
    them) until `stop` is set, and hands each non-empty poll to `handle`. A failed batch is
    told once at WARNING on `log` as `failed` (its error, the wait in seconds, its records),
    rewound and handled again after the wait."""

    def __init__(self, consumer: Consumer, database: LazyConnection, backoff: Backoff,
                 poll_ms: int, poll_records: int, log: logging.Logger, failed: str) -> None:
        self._consumer = consumer
        self.database = database
        self._backoff = backoff
        self._poll_ms = poll_ms
        self._poll_records = poll_records
        self._log = log
        self._failed = failed
        self.assigned = 0  # partitions held after the last poll

    def run(self, stop: threading.Event, handle: Callable[[Polled], None],
            turned: Callable[[], None] = lambda: None) -> None:
        """Until `stop` is set; `turned` is called after each poll is done with (handled,
        or failed and waited for). The connection is closed at the end."""
        waits = Waits(self._backoff)
        try:
            while not stop.is_set():
                polled = self._consumer.poll(self._poll_ms, self._poll_records)
                self.assigned = len(self._consumer.assignment())
                if len(polled):
                    try:
                        handle(polled)
                        waits.handled()
                    except Exception as exc:  # noqa: BLE001 - whatever failed, read it again
                        rewind(self._consumer, polled.first_offsets())
                        self.database.drop()
                        wait = waits.failed()
                        self._log.warning(self._failed, extra={
                            "error": describe(exc), "retry_in_s": wait, "events": len(polled)})
                        stop.wait(wait)
                turned()
        finally:
            self.database.drop()
