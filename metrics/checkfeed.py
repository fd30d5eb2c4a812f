"""Metrics of `eir-enforcer serve`'s check feed (`check_feed.publish_checks`): the checks it
answered, published to the attach topic as attach events, in serve's own collectors."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from enforcer.engine.checkfeed import Unfed

# Why answered checks were dropped (eir_eic_feed_dropped_total's reasons).
QUEUE_FULL = "queue_full"
UNACKNOWLEDGED = "unacknowledged"


class CheckFeedMetrics:
    def __init__(self, collectors: CollectorRegistry) -> None:
        r = collectors
        self.published = Counter("eir_eic_feed_published", "Answered checks published to the "
                                 "attach topic as attach events, acknowledged by the broker.",
                                 registry=r)
        self.dropped = Counter("eir_eic_feed_dropped", "Answered checks not published, by "
                               "reason: queue_full (the queue of check_feed.queue_size was "
                               "full: Kafka slow or away), unacknowledged (the broker did not "
                               "acknowledge them within check_feed.ack_timeout_s, or could not "
                               "be reached).", ["reason"], registry=r)
        self.skipped = Counter("eir_eic_feed_skipped", "Answered checks that are no attach "
                               "event, by reason: no_imsi (an N5g-eir check without a SUPI), "
                               "no_msisdn (no GPSI, and the IMSI's number not known).",
                               ["reason"], registry=r)
        # Every reason from the start: a rate or an alert over a series that appears only
        # with its first drop misses that drop.
        for reason in (QUEUE_FULL, UNACKNOWLEDGED):
            self.dropped.labels(reason)
        for reason in (Unfed.NO_IMSI, Unfed.NO_MSISDN):
            self.skipped.labels(reason)
        self.queued = Gauge("eir_eic_feed_queued", "Answered checks waiting to be published.",
                            registry=r)

    def watch_queue(self, queued: Callable[[], int]) -> None:
        self.queued.set_function(queued)
