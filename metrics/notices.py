"""Metrics of notices, their steps and the outbox."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class NoticeMetrics:
    def __init__(self, collectors: CollectorRegistry) -> None:
        self.opened = Counter("eir_notices_opened", "Notices opened, by kind.", ["kind"],
                              registry=collectors)
        self.steps = Counter("eir_notice_steps", "Notice steps taken, by kind and step "
                             "(warning, reminder, cutoff, resolved).", ["kind", "step"],
                             registry=collectors)
        self.closed = Counter("eir_notices_closed", "Notices closed without a cutoff, by kind "
                              "and how (cancelled, superseded, lapsed).", ["kind", "state"],
                              registry=collectors)
        self.live = Gauge("eir_notices", "Live notices, by kind and state (as last counted).",
                          ["kind", "state"], registry=collectors)
        self.outbox_backlog = Gauge("eir_outbox_backlog", "Outbox messages not yet "
                                    "published.", registry=collectors)
        self.outbox_oldest = Gauge("eir_outbox_oldest_age_seconds", "Age of the oldest "
                                   "message not yet published (0 when none).",
                                   registry=collectors)
        self.published = Counter("eir_outbox_published", "Outbox messages published, by "
                                 "stream.", ["stream"], registry=collectors)
        self.found_on_topic = Counter(
            "eir_outbox_found_on_topic", "Outbox messages found already on their topic after "
            "a relay round that did not commit, marked sent instead of published again, by "
            "stream.", ["stream"], registry=collectors)
        self.rounds = Counter("eir_notice_rounds", "Rounds of the notices' sweep completed.",
                              registry=collectors)
        self.cutoffs = Gauge("eir_cutoffs", "Subjects cut off in this worker's memory, by "
                             "scope.", ["scope"], registry=collectors)
