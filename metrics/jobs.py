"""Scheduled jobs' metrics. Failures are `eir_job_runs_total{outcome="failed"}`.
The label is `job_name`, not `job`: Prometheus gives `job` to the scrape target."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

JOB_SECONDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class JobMetrics:
    def __init__(self, collectors: CollectorRegistry) -> None:
        self.runs = Counter("eir_job_runs", "Scheduled job runs, by job and outcome (ok, "
                            "failed, skipped: another worker held the job).",
                            ["job_name", "outcome"], registry=collectors)
        self.last_success = Gauge("eir_job_last_success_timestamp_seconds", "When each job "
                                  "last ended well, Unix time.", ["job_name"], registry=collectors)
        self.duration = Histogram("eir_job_duration_seconds", "How long each job's runs "
                                  "take (lock held).", ["job_name"], registry=collectors,
                                  buckets=JOB_SECONDS)
        self.done = Counter("eir_job_items", "What jobs did, by job and item (e.g. "
                            "reconcile/imported, consistency/drifted_shards).",
                            ["job_name", "item"], registry=collectors)
