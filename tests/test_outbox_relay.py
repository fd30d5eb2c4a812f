"""The outbox relay on the real broker and database: a round that published and died before
its commit (a killed worker, the database lost) is not published a second time."""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from consumers.kafka import outbox_reader, producer
from consumers.outbox import OutboxRelay
from enforcer.clock import SystemClock
from enforcer.config import load_config
from enforcer.db.notices import enqueue
from enforcer.engine.noticemessages import OutboxMessage
from metrics.notices import NoticeMetrics
from tests.kafkatools import produce, read_all
from tests.test_worker import CLIENTS

MESSAGES = 120
BATCH = 50


class KilledAfterPublishing(Exception):
    pass


class DiesAfterPublishing:
    """The real producer, then the worker dies before the round commits."""

    def __init__(self, real) -> None:
        self.real = real

    def publish(self, messages, timeout_s):
        self.real.publish(messages, timeout_s)
        raise KilledAfterPublishing

    def close(self) -> None:
        self.real.close()


def relay_of(config, messages) -> tuple[OutboxRelay, CollectorRegistry]:
    collectors = CollectorRegistry()
    return OutboxRelay(config, SystemClock(), NoticeMetrics(collectors), messages,
                       outbox_reader(config.kafka)), collectors


@pytest.mark.parametrize("client", CLIENTS)
def test_a_round_that_died_after_publishing_is_not_published_again(env, dsn, client) -> None:
    config = load_config(environ={**env, "EIR_KAFKA__CLIENT": client,
                                  "EIR_NOTICES__BATCH": str(BATCH)})
    streams = ("notifications", "commands")
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            enqueue(conn, [OutboxMessage(streams[i % 2], str(i).encode(), f"notice-{i}-warning",
                                         b"{}") for i in range(MESSAGES)],
                    SystemClock().now_ms())
        dying, _ = relay_of(config, DiesAfterPublishing(producer(config.kafka)))
        with pytest.raises(KilledAfterPublishing):
            dying.relay(conn)
        dying.close()
        # Meanwhile the attach loop publishes its own command, which is no outbox message.
        produce(config.kafka.bootstrap_servers, config.kafka.commands_topic, [{"x": 1}])

        fresh, collectors = relay_of(config, producer(config.kafka))
        assert fresh.relay(conn) == MESSAGES - BATCH
        fresh.close()
        (unsent,) = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
    assert unsent == 0
    on_topics = Counter(dict(m.headers)["idempotency-key"].decode()
                        for topic in (config.kafka.notifications_topic,
                                      config.kafka.commands_topic)
                        for m in read_all(config.kafka.bootstrap_servers, topic)
                        if m.headers)
    assert sorted(on_topics) == sorted(f"notice-{i}-warning" for i in range(MESSAGES))
    assert set(on_topics.values()) == {1}
    assert collectors.get_sample_value("eir_outbox_found_on_topic_total",
                                       {"stream": "notifications"}) == BATCH / 2
