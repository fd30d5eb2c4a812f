"""The worker's Prometheus metrics, in a registry of its own (one per worker, so that
tests may run several in one process)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import snapshot_dir_name
from metrics.http import HttpMetrics
from metrics.jobs import JobMetrics
from metrics.notices import NoticeMetrics

BATCH_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RELOAD_SECONDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
AGE_SECONDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0, 86400.0)


class WorkerMetrics:
    def __init__(self) -> None:
        # Described at registration, the process collector too (it has no describe()), so
        # that `/metrics?name[]=process_resident_memory_bytes` finds it.
        self.collectors = CollectorRegistry(auto_describe=True)
        r = self.collectors
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU, open files
        self.events = Counter("eir_events_consumed", "Attach events decided, by verdict and "
                              "rule.", ["verdict", "rule"], registry=r)
        # A dozen device types by three verdicts at most: the TAC database's types are few
        # on purpose (enforcer.engine.tacs.DEVICE_TYPES), never a TAC or a model.
        self.events_by_device_type = Counter(
            "eir_events_by_device_type", "Attach events decided, by the device type the TAC "
            "database gives their TAC (unknown where it names none) and verdict; counted "
            "once a TAC database is imported.", ["device_type", "verdict"], registry=r)
        self.dead_letters = Counter("eir_dlq_messages", "Messages sent to a dead-letter "
                                    "topic, by reason.", ["reason"], registry=r)
        self.batch_seconds = Histogram("eir_batch_duration_seconds", "Time to handle one "
                                       "batch, decode to offset commit.", registry=r,
                                       buckets=BATCH_SECONDS)
        self.event_age = Histogram("eir_event_age_seconds", "Now minus the time of the oldest "
                                   "event of each batch, when the batch is decided.",
                                   registry=r, buckets=AGE_SECONDS)
        self.lag = Gauge("eir_consumer_lag", "Messages not yet consumed, per partition.",
                         ["topic", "partition"], registry=r)
        self.history_rows = Counter("eir_history_rows_written", "slot_usage rows upserted.",
                                    registry=r)
        self.effects = Counter("eir_effects_sent", "Effect messages produced, by stream.",
                               ["stream"], registry=r)
        self.list_size = Gauge("eir_list_size", "Entries in each list of the snapshot "
                               "generation in use (cut_imeis, cut_pairs: the cut-off lists "
                               "the snapshot carries; the notices' cutoffs since are "
                               "eir_cutoffs).", ["list"], registry=r)
        self.generation = Gauge("eir_lists_generation", "Generation of the lists in use.",
                                registry=r)
        self.snapshot_time = Gauge("eir_lists_snapshot_timestamp_seconds", "When the "
                                   "snapshot in use was written (its age: time() minus this).",
                                   registry=r)
        self.reload_seconds = Histogram("eir_lists_reload_duration_seconds", "Time to load "
                                        "a snapshot (or import a delivery) and swap it in.",
                                        registry=r, buckets=RELOAD_SECONDS)
        self.registry_events = Counter("eir_registry_events", "Registry events read, by "
                                       "outcome (applied, replayed, dead_lettered).",
                                       ["outcome"], registry=r)
        self.registry_resets = Counter("eir_registry_partition_resets", "Partitions of the "
                                       "registry topic found at start to be a new log (the "
                                       "topic recreated) and read from their start.",
                                       ["partition"], registry=r)
        self.registry_overlay = Gauge("eir_registry_overlay_entries", "Registry changes held "
                                      "over the snapshot.", registry=r)
        self.batch_failures = Counter("eir_batch_failures", "Batches that failed and will be "
                                      "consumed again, by stage.", ["stage"], registry=r)
        self.clone_flags = Counter("eir_clone_flags", "IMEIs flagged misused by clone "
                                   "detection, by reason (imsis, operators, cells, rat).",
                                   ["reason"], registry=r)
        self.clones_flagged = Gauge("eir_clones_flagged", "IMEIs flagged misused, held in "
                                    "memory.", registry=r)
        self.jobs = JobMetrics(r)
        self.http = HttpMetrics(r)
        self.notices = NoticeMetrics(r)

    def watch_state(self, holder: StateHolder, state_dir: Path) -> None:
        """The lists' figures, read from the state in use at each scrape: a swapped-in
        generation shows at once, with nothing to keep in step."""
        def lists():
            return holder.current.lists

        def saved_at() -> float:
            written = state_dir / snapshot_dir_name(holder.current.generation)
            return written.stat().st_mtime if written.exists() else 0.0

        self.generation.set_function(lambda: lists().generation)
        self.snapshot_time.set_function(saved_at)
        self.list_size.labels("white").set_function(lambda: len(lists().white_index))
        self.list_size.labels("black").set_function(lambda: len(lists().black_index))
        self.list_size.labels("cut_imeis").set_function(lambda: len(lists().cut_imeis))
        self.list_size.labels("cut_pairs").set_function(lambda: len(lists().cut_pairs))
        self.registry_overlay.set_function(lambda: len(holder.current.overlay))
        self.clones_flagged.set_function(lambda: len(holder.current.misused))
