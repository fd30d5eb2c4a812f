"""Metrics of `eir-enforcer serve`, the N5g-eir Equipment Identity Check."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from enforcer.engine.state import StateHolder

BATCH_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
BATCH_CHECKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class EicMetrics:
    def __init__(self) -> None:
        self.collectors = CollectorRegistry()
        r = self.collectors
        self.answers = Counter("eir_eic_answers", "Equipment checks answered, by answer: the "
                               "status, unknown (404), bad_request (400) or other (a wrong "
                               "path or method).", ["answer"], registry=r)
        self.batch_seconds = Histogram("eir_eic_batch_duration_seconds", "Time to decide one "
                                       "batch of the checks that arrived together.",
                                       registry=r, buckets=BATCH_SECONDS)
        self.batch_checks = Histogram("eir_eic_batch_checks", "Checks decided together.",
                                      registry=r, buckets=BATCH_CHECKS)
        self.follow_failures = Counter("eir_eic_follow_failures", "Rounds that could not take "
                                       "in the workers' changes from PostgreSQL (the answers "
                                       "go on from the state held).", registry=r)
        self.followed_at = Gauge("eir_eic_followed_timestamp_seconds", "When the workers' "
                                 "changes were last taken in.", registry=r)
        self.generation = Gauge("eir_eic_state_generation", "The snapshot generation "
                                "answered from.", registry=r)
        self.numbers = Gauge("eir_eic_subscriber_numbers", "Subscribers whose MSISDN is known "
                             "by IMSI, for checks that carry none (S13, N5g-eir without a "
                             "GPSI).", registry=r)

    def watch(self, holder: StateHolder) -> None:
        self.generation.set_function(lambda: holder.current.generation)
        self.numbers.set_function(lambda: len(holder.current.numbers))
