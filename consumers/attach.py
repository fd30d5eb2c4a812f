"""The attach-event loop: decode -> decide -> write history -> emit effects -> commit offsets.

Offsets are committed only after the batch's database transaction has committed and every
message it produced (dead letters, effects) has been acknowledged, so a crash anywhere
replays the batch, and replaying changes nothing (the history upsert and the effects'
idempotency keys make it so). A failed batch is consumed again after a backoff
(`consumers.loop`): the loop seeks back rather than stopping, so it keeps its partitions and
never dies of input.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import msgspec
import numpy as np
import psycopg

from enforcer.heap import give_back
from enforcer.engine.batchdecode import decode_poll
from enforcer.engine.attachdecode import TimeWindow
from consumers.deadletters import DeadLetters
from consumers.loop import BatchLoop
from enforcer.db.connection import LazyConnection
from consumers.publish import Publication, publish_all
from consumers.receive import Polled
from enforcer.clock import MS_PER_S, Clock
from enforcer.config import Config
from enforcer.db.history import HistoryStore
from enforcer.db.notices import see, see_cut
from enforcer.db.subscribers import record_numbers
from enforcer.engine.decide import decide
from enforcer.notices.flags import CloneTracker
from enforcer.logs import describe
from enforcer.reach import Backoff
from enforcer.engine.effects import (FLUSH_TIMEOUT_S, IDEMPOTENCY_HEADER, Stream, effects_of,
                                     verdicts_of)
from enforcer.engine.events import AttachBatch
from enforcer.engine.history import aggregate, learned_pairs
from enforcer.engine.usagecache import UsageCache
from enforcer.engine.imei import ImeiRules
from enforcer.engine.opening import cut_sightings, notice_sightings
from enforcer.engine.state import StateHolder
from enforcer.engine.tacs import DEVICE_TYPES, TacDatabase
from metrics.worker import WorkerMetrics
from rules.policy import VERDICTS

log = logging.getLogger("eir.worker")

LAG_EVERY_S = 5.0
# Batches free some 200 MB a national worker's heap keeps resident for reuse (issue 21: 3.75
# GiB after 10 M attaches, 3.56 once given back); a walk of the heap once a minute returns it.
HEAP_EVERY_S = 60.0


class RecentKeys:
    """Idempotency keys already delivered, bounded: two generations of sets."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(capacity // 2, 1)
        self._young: set[str] = set()
        self._old: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._young or key in self._old

    def add(self, key: str) -> None:
        self._young.add(key)
        if len(self._young) >= self._capacity:
            self._old, self._young = self._young, set()


class AttachWorker:
    def __init__(self, config: Config, holder: StateHolder, rules: ImeiRules, clock: Clock,
                 metrics: WorkerMetrics, consumer, producer,
                 connect: Callable[[], psycopg.Connection],
                 opened: Callable[[], None] = lambda: None,
                 flagged: Callable[[set[int]], None] = lambda imeis: None) -> None:
        self._config = config
        self._opened = opened
        self._flagged = flagged  # told which IMEIs a batch flagged misused, once durable
        self._holder = holder
        self._rules = rules
        self._clock = clock
        self._metrics = metrics
        self._consumer = consumer
        self._producer = producer
        self._loop = BatchLoop(consumer, LazyConnection(connect),
                               Backoff(config.worker.retry_first_s, config.worker.retry_max_s),
                               config.worker.batch_max_wait_ms, config.worker.batch_max_events,
                               log, "batch failed, will be consumed again")
        self._dead = DeadLetters(config.kafka.attach_dlq_topic,
                                 config.kafka.dead_letter_max_bytes, metrics.dead_letters)
        self._store = HistoryStore()
        self._clones = CloneTracker(config, metrics)
        self._usage = UsageCache(config.history.dedupe_pairs,
                                 config.history.resolution_s * MS_PER_S)
        self._sent = RecentKeys(config.history.dedupe_pairs)
        self._topics = {Stream.NOTIFICATIONS: config.kafka.notifications_topic,
                        Stream.COMMANDS: config.kafka.commands_topic,
                        Stream.VERDICTS: config.kafka.verdicts_topic}
        self._last_lag = 0.0
        self._last_give_back = time.monotonic()

    @property
    def metrics(self) -> WorkerMetrics:
        return self._metrics

    def partitions_check(self) -> str | None:
        if not self._loop.assigned:
            return f"no partition of {self._config.kafka.attach_topic} assigned yet"
        return None

    def run(self, stop: threading.Event) -> None:
        self._loop.run(stop, self.handle, self._turned)
        log.info("worker stopping")

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()
        self._loop.database.drop()

    def handle(self, polled: Polled) -> None:
        started = time.perf_counter()
        now = self._clock.now_ms()
        window = TimeWindow.around(now, self._config.worker.max_event_age_days,
                                   self._config.worker.max_event_future_s)
        decoded = decode_poll(polled.values, self._rules, window)
        dead = [(polled.record(i), letter) for i, letter in decoded.dead]
        batch = decoded.batch
        state, flags = self._clones.observe(batch, self._holder.current)
        decisions = decide(batch, state)

        rows = aggregate(batch, decisions)
        rows = rows.take(np.flatnonzero(self._usage.needed(rows)))
        fresh_pairs = set(zip(rows.imei_key.tolist(), rows.imsi.tolist()))
        sightings = notice_sightings(batch, decisions, fresh_pairs)
        refused = cut_sightings(batch, decisions, fresh_pairs)
        numbers = learned_pairs(batch, rows, decisions.policy.home_mcc)
        try:
            conn = self._loop.database.connection()
            self._store.ensure_partitions(conn, set(rows.month.tolist()))
            with conn.transaction():
                self._store.write(conn, rows)
                record_numbers(conn, numbers)  # what checks without an MSISDN look up
                opened = see(conn, sightings, decisions.policy.rules)
                see_cut(conn, refused)  # when an unused cut is released
                opened += self._clones.record(conn, flags, state)
        except Exception:
            self._metrics.batch_failures.labels("database").inc()
            raise

        outgoing = [o for o in effects_of(batch, decisions) if o.idempotency_key not in self._sent]
        if self._config.kafka.publish_verdicts:
            outgoing += verdicts_of(batch, decisions)
        publications = [self._dead.of(record, letter) for record, letter in dead]
        publications += [Publication(self._topics[m.stream], m.key, msgspec.json.encode(m.value),
                                     ((IDEMPOTENCY_HEADER, m.idempotency_key.encode()),))
                         for m in outgoing]
        try:
            publish_all(self._producer, publications, FLUSH_TIMEOUT_S)
            self._consumer.commit()
        except Exception:
            self._metrics.batch_failures.labels("kafka").inc()
            raise
        # Only now is all of it durable: remember it, so repeats cost nothing.
        self._clones.remember(self._holder, flags)
        self._usage.remember(rows)
        for message in outgoing:
            self._sent.add(message.idempotency_key)
        self._count(batch, decisions, dead, rows, outgoing, now, started, state.tacs)
        if flags.rows:  # the live notices on them are superseded now, not when next due
            self._flagged(set(flags.keys))
        if opened:
            for kind, count in opened.items():
                self._metrics.notices.opened.labels(kind).inc(count)
            self._opened()  # their warnings go out now, not at the next sweep

    def _count(self, batch: AttachBatch, decisions, dead, rows, outgoing, now: int,
               started: float, tacs: TacDatabase | None) -> None:
        m = self._metrics
        rules = decisions.policy.rules
        for rule, count in zip(*np.unique(decisions.rule, return_counts=True)):
            m.events.labels(rules[rule].verdict.value, rules[rule].name).inc(int(count))
        if tacs is not None:
            # One label set a (device type, verdict) of the batch, not one an event.
            pairs = (tacs.device_types(batch.imei_key).astype(np.int64) * len(VERDICTS)
                     + decisions.verdict)
            for pair, count in zip(*np.unique(pairs, return_counts=True)):
                device_type, verdict = divmod(int(pair), len(VERDICTS))
                m.events_by_device_type.labels(DEVICE_TYPES[device_type],
                                               VERDICTS[verdict].value).inc(int(count))
        self._dead.count(letter.reason for _, letter in dead)
        for message in outgoing:
            m.effects.labels(message.stream.value).inc()
        m.history_rows.inc(len(rows))
        if len(batch):  # once a batch, not once an event: observing costs a lock each time
            m.event_age.observe((now - int(batch.ts_ms.min())) / MS_PER_S)
        m.batch_seconds.observe(time.perf_counter() - started)

    def _turned(self) -> None:
        self._report_lag()
        if time.monotonic() - self._last_give_back >= HEAP_EVERY_S:
            give_back()
            self._last_give_back = time.monotonic()

    def _report_lag(self) -> None:
        if time.monotonic() - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = time.monotonic()
        try:
            lags = self._consumer.lag()
        except Exception as exc:  # noqa: BLE001 - the broker away: the gauge waits, we go on
            log.warning("consumer lag not measured", extra={"error": describe(exc)})
            return
        for (topic, partition), lag in lags.items():
            self._metrics.lag.labels(topic, str(partition)).set(lag)
