"""The loop skeleton both consumers share (consumers/loop.py): the waits after failed batches
on their own, and a failed batch read again from its start on the real broker, with a fresh
PostgreSQL connection."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import psycopg
import pytest

from consumers.kafka import registry_consumer
from consumers.loop import BatchLoop, Waits
from enforcer.db.connection import LazyConnection
from consumers.receive import Polled
from enforcer.config import load_config
from enforcer.reach import Backoff
from tests.kafkatools import produce, wait_for
from tests.test_worker import CLIENTS

FAILED = "batch failed, will be consumed again"
GIVE_UP_S = 60.0
POLL_TIMEOUT_MS = 6000


def test_the_wait_doubles_with_each_failure_up_to_the_most() -> None:
    waits = Waits(Backoff(0.5, 3.0))
    assert [waits.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_handled_batch_starts_the_waits_again() -> None:
    waits = Waits(Backoff(0.5, 3.0))
    waits.failed(), waits.failed()
    waits.handled()
    assert waits.failed() == 0.5


@pytest.mark.parametrize("client", CLIENTS)
def test_a_poll_returns_what_has_come_without_waiting_out_its_timeout(env, client) -> None:
    """A registry change counts within a second: a poll that waited for a full batch, or
    for its whole timeout, would hold the first change of a quiet minute that long."""
    kafka = replace(load_config(environ=env).kafka, client=client)
    topic = kafka.registry_topic
    produce(kafka.bootstrap_servers, topic, [b"first"])
    consumer = registry_consumer(kafka)
    try:
        consumer.assign(topic, {p: None for p in consumer.partitions_for(topic)})
        first: list[bytes | None] = []
        wait_for(lambda: first.extend(consumer.poll(POLL_TIMEOUT_MS, 5000).values) or first)
        assert first == [b"first"]
        produce(kafka.bootstrap_servers, topic, [b"second", b"third"])
        started = time.monotonic()
        values = []
        while len(values) < 2 and time.monotonic() - started < POLL_TIMEOUT_MS / 1000:
            values += consumer.poll(POLL_TIMEOUT_MS, 5000).values
        assert values == [b"second", b"third"]
        assert time.monotonic() - started < POLL_TIMEOUT_MS / 1000 / 2
    finally:
        consumer.close()


def test_a_fixed_wait_stays_fixed() -> None:
    waits = Waits(Backoff(2.0, 2.0))
    assert {waits.failed() for _ in range(4)} == {2.0}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_failed_batch_is_read_again_from_its_start_on_a_fresh_connection(
        env, client: str, caplog) -> None:
    kafka = replace(load_config(environ=env).kafka, client=client)
    topic = kafka.registry_topic
    sent = [f"m{i}".encode() for i in range(3)]
    produce(kafka.bootstrap_servers, topic, sent)
    consumer = registry_consumer(kafka)
    consumer.assign(topic, {p: None for p in consumer.partitions_for(topic)})
    database = LazyConnection(lambda: psycopg.connect(env["EIR_POSTGRES__DSN"],
                                                      autocommit=True))
    loop = BatchLoop(consumer, database, Backoff(0.01, 0.02), 100, 10,
                     logging.getLogger("eir.test"), FAILED)
    stop = threading.Event()
    batches: list[list[bytes | None]] = []
    connections: list[psycopg.Connection] = []

    def handle(polled: Polled) -> None:
        connections.append(database.connection())
        batches.append(list(polled.values))
        if len(batches) == 1:
            raise RuntimeError("the database went away")
        if sum(len(b) for b in batches[1:]) >= len(sent):
            stop.set()

    caplog.set_level(logging.WARNING, logger="eir.test")
    give_up = threading.Timer(GIVE_UP_S, stop.set)  # a loop that never gets there fails
    give_up.start()
    try:
        loop.run(stop, handle)
    finally:
        give_up.cancel()
        consumer.close()
    assert [v for b in batches[1:] for v in b] == sent
    assert batches[1][:len(batches[0])] == batches[0]
    assert connections[0].closed and connections[1] is not connections[0]
    assert connections[-1].closed  # closed when the loop ends
    # The loop's own lines: a Kafka client may warn too, of its own affairs (under load, a
    # slow heartbeat), and that is no line of the loop's.
    (line,) = [r for r in caplog.records if r.name == "eir.test"]
    assert (line.getMessage(), line.error, line.retry_in_s, line.events) == (
        FAILED, "RuntimeError", 0.01, len(batches[0]))
