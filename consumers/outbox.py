"""The outbox relay: the messages the notices' steps stored with their state changes
(enforcer/db/notices.py's outbox) published to their topics, oldest first, and marked sent
once the broker has them; a crash anywhere sends a message again at worst, under the same
idempotency key, and a round that may have published without recording it is read back
from the topics instead of published again."""

from __future__ import annotations

import logging

import psycopg

from consumers.publish import Delivered, Producer, Publication
from consumers.readback import keys_after
from consumers.receive import Consumer
from enforcer.clock import Clock
from enforcer.config import Config
from enforcer.db.locks import try_lock, unlock
from enforcer.db.notices import (RELAY_LOCK, RelayRecord, mark_sent, mark_sent_keys,
                                 outbox_backlog, relay_record, save_relay_record,
                                 set_in_flight, unsent)
from enforcer.engine.effects import FLUSH_TIMEOUT_S, IDEMPOTENCY_HEADER, Stream
from metrics.notices import NoticeMetrics

log = logging.getLogger("eir.notices")

Ends = dict[str, dict[int, int]]  # topic -> partition -> offset after the relay's last message


def _after(ends: Ends, delivered: list[tuple[str, Delivered]]) -> Ends:
    """`ends` moved past these deliveries."""
    moved = {topic: dict(parts) for topic, parts in ends.items()}
    for topic, d in delivered:
        parts = moved.setdefault(topic, {})
        parts[d.partition] = max(parts.get(d.partition, 0), d.offset + 1)
    return moved


class OutboxRelay:
    """Publishes the outbox with `producer`; `reader` reads the outbox topics back after an
    interrupted round. Closing it closes the reader (the producer is the worker's)."""

    def __init__(self, config: Config, clock: Clock, metrics: NoticeMetrics, producer: Producer,
                 reader: Consumer) -> None:
        self._batch = config.notices.batch
        self._clock = clock
        self._metrics = metrics
        self._producer = producer
        self._reader = reader
        self._topics = {Stream.NOTIFICATIONS.value: config.kafka.notifications_topic,
                        Stream.COMMANDS.value: config.kafka.commands_topic}

    def relay(self, conn: psycopg.Connection) -> int:
        """Publish the outbox, oldest first, in one worker at a time (so that one device's
        cutoff and restore reach provisioning in the order they were decided). Only what
        the broker acknowledged is marked sent. A round that may have published without
        recording it (a killed worker, the database lost before the commit, a message not
        acknowledged) is read back from the topics by the next relay, which marks what it
        finds sent instead of publishing it again. Returns how many were published."""
        if not try_lock(conn, RELAY_LOCK):
            return 0  # another worker is relaying
        try:
            return self._relay(conn)
        finally:
            unlock(conn, RELAY_LOCK)

    def count_backlog(self, conn: psycopg.Connection) -> None:
        """The unsent messages and the oldest one's age, into the metrics."""
        backlog, oldest = outbox_backlog(conn, self._clock.now_ms())
        self._metrics.outbox_backlog.set(backlog)
        self._metrics.outbox_oldest.set(oldest)

    def close(self) -> None:
        self._reader.close()

    def _relay(self, conn: psycopg.Connection) -> int:
        last = relay_record(conn)
        if last.in_flight:
            self._mark_found(conn, last.ends)
        ends, total = last.ends, 0
        while True:
            rows = unsent(conn, self._batch)
            if not rows:
                return total
            set_in_flight(conn, True)  # committed before anything reaches the broker
            delivered = self._producer.publish([Publication(
                self._topics[m.stream], m.key, m.body,
                ((IDEMPOTENCY_HEADER, m.idempotency_key.encode()),)) for _, m in rows],
                FLUSH_TIMEOUT_S)
            acked = [(i, m, d) for (i, m), d in zip(rows, delivered) if d is not None]
            ends = _after(ends, [(self._topics[m.stream], d) for _, m, d in acked])
            with conn.transaction():
                mark_sent(conn, [i for i, _, _ in acked], self._clock.now_ms())
                # One not acknowledged may be on its topic all the same: read back next time.
                save_relay_record(conn, RelayRecord(len(acked) < len(rows), ends))
            for _, m, _ in acked:
                self._metrics.published.labels(m.stream).inc()
            total += len(acked)
            if len(acked) < len(rows):
                log.warning("outbox messages not acknowledged, sent again next round",
                            extra={"failed": len(rows) - len(acked)})
                return total
            if len(rows) < self._batch:
                return total

    def _mark_found(self, conn: psycopg.Connection, ends: Ends) -> None:
        for stream, topic in self._topics.items():
            found = keys_after(self._reader, topic, ends.get(topic, {}), IDEMPOTENCY_HEADER,
                               FLUSH_TIMEOUT_S)
            marked = mark_sent_keys(conn, stream, found, self._clock.now_ms())
            if marked:
                self._metrics.found_on_topic.labels(stream).inc(marked)
                log.warning("outbox messages found already published after an interrupted"
                            " round, marked sent", extra={"stream": stream, "marked": marked})
        set_in_flight(conn, False)
