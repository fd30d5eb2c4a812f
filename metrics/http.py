"""Metrics of the worker's HTTP endpoints."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REQUEST_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.status_queries = Counter("eir_status_queries", "IMEI status queries, by channel "
                                      "and outcome (the answer's status, or why refused).",
                                      ["channel", "outcome"], registry=registry)
        self.request_seconds = Histogram("eir_http_request_duration_seconds", "Time to answer "
                                         "an HTTP request, by route.", ["route"],
                                         registry=registry, buckets=REQUEST_SECONDS)
