"""Metrics of the worker's HTTP endpoints."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg_pool import ConnectionPool

REQUEST_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class HttpMetrics:
    def __init__(self, collectors: CollectorRegistry) -> None:
        self.status_queries = Counter("eir_status_queries", "IMEI status queries, by channel "
                                      "and outcome (the answer's status, or why refused).",
                                      ["channel", "outcome"], registry=collectors)
        self.request_seconds = Histogram("eir_http_request_duration_seconds", "Time to answer "
                                         "an HTTP request, by route.", ["route"],
                                         registry=collectors, buckets=REQUEST_SECONDS)
        self.pool = Gauge("eir_db_pool_connections", "Connections of the HTTP endpoints' "
                          "database pool, by state (open, idle).", ["state"],
                          registry=collectors)
        self.pool_waiting = Gauge("eir_db_pool_waiting_requests", "Requests waiting for a "
                                  "connection of the pool.", registry=collectors)

    def watch_pool(self, pool: ConnectionPool) -> None:
        stats = pool.get_stats
        self.pool.labels("open").set_function(lambda: stats().get("pool_size", 0))
        self.pool.labels("idle").set_function(lambda: stats().get("pool_available", 0))
        self.pool_waiting.set_function(lambda: stats().get("requests_waiting", 0))
