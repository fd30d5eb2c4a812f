"""The check feed (issue 22 part 3): the checks `serve` answered, handed over by its front ends
(`enforcer.engine.checkfeed.Feed`) and published to the attach topic by a thread of their own,
so that Kafka never delays an answer.

A front end's hand-over only queues; the queue holds `check_feed.queue_size` checks at most,
and a batch of checks that does not fit is dropped and counted (`queue_full`). The publishing
thread takes what has queued, makes it attach events (`enforcer.engine.checkfeed`) and
publishes them with the client `kafka.client` names; what the broker does not acknowledge in
`check_feed.ack_timeout_s`, or cannot take because no broker answers, is dropped and counted
(`unacknowledged`), never retried: while Kafka is away the checks go on being answered, and
the queue stays bounded. A check the worker would dead-letter for want of a SIM (no IMSI, or
an MSISDN nobody knows) is not published, and counted as skipped."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable

from consumers.publish import Producer, Publication
from enforcer.engine.checkfeed import CheckedBatch, attach_messages
from enforcer.logs import describe
from metrics.checkfeed import QUEUE_FULL, UNACKNOWLEDGED, CheckFeedMetrics

log = logging.getLogger("eir.feed")

# Checks published in one round at most: a round's acknowledgements are waited for together,
# and a larger round risks more of them at once when the broker goes away.
MAX_ROUND_CHECKS = 10_000
# How long the thread waits for checks before it looks whether it is asked to stop.
STOP_POLL_S = 0.5
# After a round that no broker took, the next try waits this long: no broker answering is
# no reason to spin (the checks meanwhile go on queuing, and past the queue are counted).
RETRY_AFTER_S = 1.0


class CheckFeed:
    """The bounded queue between the front ends and the publishing thread."""

    def __init__(self, capacity: int, metrics: CheckFeedMetrics) -> None:
        self._capacity = capacity
        self._metrics = metrics
        self._waiting: deque[CheckedBatch] = deque()
        self._queued = 0  # checks in `_waiting`
        self._arrived = threading.Condition()
        metrics.watch_queue(lambda: self._queued)

    def offer(self, checked: CheckedBatch) -> None:
        """Queue the checks, or drop and count them all when they do not fit; never waits
        for the publishing thread."""
        n = len(checked.received)
        with self._arrived:
            fits = self._queued + n <= self._capacity
            if fits:
                self._waiting.append(checked)
                self._queued += n
                self._arrived.notify()
        if not fits:
            self._metrics.dropped.labels(QUEUE_FULL).inc(n)

    def take(self, wait_s: float) -> list[CheckedBatch]:
        """What has queued, oldest first, up to MAX_ROUND_CHECKS checks (at least one batch),
        after waiting up to `wait_s` for something when nothing has."""
        taken: list[CheckedBatch] = []
        with self._arrived:
            if not self._waiting:
                self._arrived.wait(wait_s)
            checks = 0
            while self._waiting and (not taken or checks + len(self._waiting[0].received)
                                     <= MAX_ROUND_CHECKS):
                batch = self._waiting.popleft()
                checks += len(batch.received)
                taken.append(batch)
            self._queued -= checks
        return taken


class CheckPublisher:
    """The publishing thread's work: `run` until stopped. The producer is made by `connect`
    when first needed, and made again after a round no broker took."""

    def __init__(self, feed: CheckFeed, connect: Callable[[], Producer], topic: str,
                 ack_timeout_s: float, metrics: CheckFeedMetrics) -> None:
        self._feed = feed
        self._connect = connect
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s
        self._metrics = metrics
        self._producer: Producer | None = None
        self._dropping = False  # said once when drops start, once when they end

    def run(self, stop: threading.Event) -> None:
        """Publish what the front ends queue until `stop`; then what is still queued is
        published, or, once a round finds no broker, counted dropped; the producer closed."""
        while not stop.is_set():
            taken = self._feed.take(STOP_POLL_S)
            if taken and not self._publish(taken):
                stop.wait(RETRY_AFTER_S)
        published = True
        while taken := self._feed.take(0):
            if published:
                published = self._publish(taken)
            else:
                self._dropped(sum(len(c.received) for c in taken), "stopped with Kafka away")
        if self._producer is not None:
            self._producer.close()

    def _publish(self, taken: list[CheckedBatch]) -> bool:
        """One round; whether a broker took it (acknowledged or not, each message counted)."""
        messages: list[Publication] = []
        for checked in taken:
            fed, unfed = attach_messages(checked)
            messages += [Publication(self._topic, m.key, m.value) for m in fed]
            for reason, n in unfed.items():
                self._metrics.skipped.labels(reason).inc(n)
        if not messages:
            return True
        try:
            if self._producer is None:
                self._producer = self._connect()
            acked = self._producer.publish(messages, self._ack_timeout_s)
        except Exception as exc:  # noqa: BLE001 - no broker answered: dropped, counted; next round
            self._producer = None
            self._dropped(len(messages), describe(exc))
            return False
        missing = acked.count(None)
        self._metrics.published.inc(len(messages) - missing)
        if missing:
            self._dropped(missing, f"{missing} of {len(messages)} not acknowledged")
        elif self._dropping:
            self._dropping = False
            log.info("checks published again", extra={"topic": self._topic})
        return True

    def _dropped(self, n: int, why: str) -> None:
        self._metrics.dropped.labels(UNACKNOWLEDGED).inc(n)
        if not self._dropping:
            self._dropping = True
            log.warning("checks not published: dropped and counted until Kafka takes them",
                        extra={"topic": self._topic, "error": why})
