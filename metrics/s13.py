"""Metrics of `eir-enforcer serve`'s S13 ME-Identity-Check (3GPP TS 29.272), in serve's own
collectors beside the N5g-eir ones."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from metrics.eic import BATCH_SECONDS


class S13Metrics:
    def __init__(self, collectors: CollectorRegistry) -> None:
        r = collectors
        self.answers = Counter("eir_s13_answers", "ME-Identity-Check answers, by "
                               "Equipment-Status (WHITELISTED, BLACKLISTED, GREYLISTED; none "
                               "for an answer without one) and result code (2001 success, "
                               "5422 equipment unknown, 5001, 5004, 5005, 5009 or 5014 a "
                               "request at fault, 5012 a failed decision).",
                               ["equipment_status", "result_code"],
                               registry=r)
        self.batch_seconds = Histogram("eir_s13_batch_duration_seconds", "Time to decide "
                                       "one batch of the checks that arrived together.",
                                       registry=r, buckets=BATCH_SECONDS)
        self.peers = Gauge("eir_s13_peers_connected", "Diameter peers (MMEs, DRAs) whose "
                           "capabilities exchange is done and that may send checks.",
                           registry=r)
        self.watchdog_failures = Counter("eir_s13_watchdog_failures", "Peer connections "
                                         "closed by the watchdog: nothing received in two "
                                         "s13.watchdog_s after a Device-Watchdog-Request "
                                         "(RFC 3539 §3.4.1).", registry=r)
        self.refused_connections = Counter("eir_s13_refused_connections", "Connections "
                                           "closed as they opened: s13.max_connections were "
                                           "open.", registry=r)
        self.unsent = Counter("eir_s13_unsent_answers", "Answers that could not be sent: the "
                              "peer that asked went away, or its connection was closed, first.",
                              registry=r)

    def watch_peers(self, connected: Callable[[], int]) -> None:
        self.peers.set_function(connected)
