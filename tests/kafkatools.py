"""Test helpers that talk to the real broker."""

from __future__ import annotations

import time
import uuid

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.harness.faults import committed_offsets

READ_TIMEOUT_S = 30.0
POLL_MS = 200


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce(bootstrap: str, topic: str, messages: list[object], key: bytes = b"k",
            partitions: int = 0) -> None:
    """All under one key, or (partitions > 0) dealt round the first `partitions`."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, m in enumerate(messages):
        value = m if isinstance(m, bytes) else msgspec.json.encode(m)
        producer.send(topic, key=key, value=value,
                      partition=i % partitions if partitions else None)
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str) -> list:
    """Every record on the topic, up to the end offsets it had when asked: no idle wait for
    records that will not come."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        records: list = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not read to its end in time")
            for batch in consumer.poll(timeout_ms=POLL_MS).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset on partition 0 of topic (0 when none)."""
    return committed_offsets(bootstrap, group, topic).get(0, 0)


def wait_for(condition, timeout_s: float = 60.0, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every_s)
