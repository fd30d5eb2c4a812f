"""Test helpers that talk to the real broker."""

from __future__ import annotations

import time
import uuid

import msgspec
from kafka import KafkaConsumer, KafkaProducer

from enforcer.faults import committed_offsets

READ_TIMEOUT_MS = 4000


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
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=READ_TIMEOUT_MS)
    records = list(consumer)
    consumer.close()
    return records


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset on partition 0 of topic (0 when none)."""
    return committed_offsets(bootstrap, group, topic).get(0, 0)


def wait_for(condition, timeout_s: float = 60.0, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every_s)
