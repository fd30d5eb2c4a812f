"""Messages of every size the broker takes, on both Kafka clients: each is read, dead-lettered
with its reason (cut to what a producer may send, with its original size and digest, when it
is larger) and the partition goes on, on the attach topic and on the registry feed alike.

The embedded broker takes messages of any size (100 MB and more); a stock Kafka broker takes
up to message.max.bytes, 1,048,588 bytes a batch. The sizes sit just under and over each
limit on the way: the dead letters' bound, the producers' requests (librdkafka's
message.max.bytes, kafka-python's max_request_size), the consumers' fetches
(max.partition.fetch.bytes, fetch.max.bytes) and responses (receive.message.max.bytes)."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import msgspec
import psycopg
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from consumers.deadletters import (ORIGINAL_SHA256_HEADER, ORIGINAL_SIZE_HEADER, TRUNCATED_HEADER,
                                   measure)
from enforcer.config import load_config
from tests.conftest import Running
from tests.kafkatools import committed, read_all, wait_for
from tests.test_decide import OWNER, SINGLE
from tests.test_registry_events import applied, registry_event
from tests.test_worker import CLIENTS, attach, now_ms

BOUND = load_config(environ={}).kafka.dead_letter_max_bytes
MIB = 1 << 20
FETCH_MAX = 52_428_800  # both clients' fetch.max.bytes
RESPONSE_MAX = 100_000_000  # both clients' receive.message.max.bytes
ATTACH_SIZES = [
    BOUND - 1000, BOUND + 1,  # the dead letters' bound: unchanged, then cut
    999_999, 1_000_001,  # librdkafka's message.max.bytes (a producer request)
    1_048_400,  # the issue's: under a stock broker's limit, over what a producer sends
    MIB - 1, MIB + 1,  # kafka-python's max_request_size, both max.partition.fetch.bytes
    1_048_500, 1_048_589,  # a stock broker's message.max.bytes (1,048,588 a batch)
    FETCH_MAX + 1,
    RESPONSE_MAX + 1,
]
REGISTRY_SIZES = [
    1_000_001,  # not JSON, within the registry's 1 MiB, over a producer's request
    MIB, MIB + 1,  # the registry's own limit: not_json, then too_large
    1_500_000,  # the issue's
    RESPONSE_MAX + 1,
]
# The test's own producer sends them all (the product's is held to 1,000,000 bytes).
TEST_PRODUCER_MAX_BYTES = 2 * RESPONSE_MAX


def filler(size: int) -> bytes:
    """`size` bytes that are not JSON, each size its own content (so digests differ)."""
    unit = str(size).encode() + b"#"
    return (unit * (size // len(unit) + 1))[:size]


def produce_large(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """In order, on one partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap,
                             max_request_size=TEST_PRODUCER_MAX_BYTES)
    for value in values:
        producer.send(topic, key=b"k", value=value)
        producer.flush()
    producer.close()


@contextmanager
def worker_on_filled(env: dict[str, str], topic: str) -> Iterator[Running]:
    """A worker; `topic`, which the test fills, deleted once the worker is closed: the
    embedded broker holds it in memory. (Deleted under a live librdkafka consumer, the topic
    is created again with a new id, which crashes librdkafka's metadata cache.)"""
    running = Running(load_config(environ=env))
    try:
        yield running
    finally:
        running.close()
        admin = KafkaAdminClient(bootstrap_servers=env["EIR_KAFKA__BOOTSTRAP_SERVERS"])
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()


def check_letter(message, original: bytes, reason: str, offset: int) -> None:
    headers = dict(message.headers)
    assert headers["dlq-reason"].decode() == reason
    assert headers["dlq-source-offset"] == str(offset).encode()
    assert measure(message.key, message.value, message.headers) <= BOUND
    if len(original) < BOUND - 500:
        assert message.value == original and TRUNCATED_HEADER not in headers
        return
    assert headers[TRUNCATED_HEADER] == b"value"
    assert headers[ORIGINAL_SIZE_HEADER] == str(len(original)).encode()
    assert headers[ORIGINAL_SHA256_HEADER] == hashlib.sha256(original).hexdigest().encode()
    assert original.startswith(message.value) and len(message.value) > BOUND - 1000


@pytest.mark.parametrize("client", CLIENTS)
def test_attaches_of_every_size_are_dead_lettered_and_the_partition_goes_on(
        env, dsn, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    t = now_ms()
    # Each oversized message is followed by an attach that must be decided.
    values = []
    for i, size in enumerate(ATTACH_SIZES):
        values += [filler(size), msgspec.json.encode(attach(SINGLE, OWNER, t + i))]
    produce_large(bootstrap, topic, values)
    with worker_on_filled(env, topic) as running:
        wait_for(lambda: committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic) == len(values))
        decided = running.worker.metrics.collectors.get_sample_value(
            "eir_events_consumed_total", {"verdict": "WHITELISTED", "rule": "owner"})
    assert decided == len(ATTACH_SIZES)
    letters = read_all(bootstrap, env["EIR_KAFKA__ATTACH_DLQ_TOPIC"])
    assert len(letters) == len(ATTACH_SIZES)
    for i, (message, size) in enumerate(zip(letters, ATTACH_SIZES)):
        check_letter(message, filler(size), "too_large", 2 * i)


@pytest.mark.parametrize("client", CLIENTS)
def test_registry_events_of_every_size_are_dead_lettered_and_the_feed_goes_on(
        env, dsn, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"]
    values = [filler(size) for size in REGISTRY_SIZES] + [msgspec.json.encode(
        registry_event("after", "blacklisted", imeis=[str(SINGLE)], reason="stolen"))]
    with worker_on_filled(env, topic) as running:
        produce_large(bootstrap, topic, values)
        wait_for(lambda: applied(running) == 1)
    letters = read_all(bootstrap, env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"])
    reasons = ["not_json" if size <= MIB else "too_large" for size in REGISTRY_SIZES]
    assert len(letters) == len(REGISTRY_SIZES)
    for offset, (message, size, reason) in enumerate(zip(letters, REGISTRY_SIZES, reasons)):
        check_letter(message, filler(size), reason, offset)
    with psycopg.connect(dsn) as conn:  # a bad event's row holds what its dead letter holds
        rows = conn.execute("SELECT reason, length(body) FROM registry_events WHERE NOT applied"
                            " ORDER BY source_offset").fetchall()
    assert rows == [(reason, len(m.value)) for reason, m in zip(reasons, letters)]
