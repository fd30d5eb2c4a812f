"""What both input loops do with a message they cannot take: dead-letter it with the reason
and where it came from, or seek back to read it again."""

from __future__ import annotations

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.decode import DeadLetter


def dead_letter_headers(record: ConsumerRecord,
                        letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers, then the reason and the source topic, partition and offset."""
    return list(record.headers or []) + [
        ("dlq-reason", letter.reason.encode()), ("dlq-detail", letter.detail.encode()),
        ("dlq-source-topic", record.topic.encode()),
        ("dlq-source-partition", str(record.partition).encode()),
        ("dlq-source-offset", str(record.offset).encode())]


def rewind(consumer, records: list[ConsumerRecord]) -> None:
    """Seek each partition still assigned back to its first record among `records`."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    assigned = consumer.assignment()
    for tp, offset in first.items():
        if tp in assigned:
            consumer.seek(tp, offset)
