"""What both input loops do with a message they cannot take: dead-letter it with the reason
and where it came from, or seek back to read it again."""

from __future__ import annotations

from consumers.decode import DeadLetter
from consumers.receive import Consumer, Partition, Record


def dead_letter_headers(record: Record, letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers, then the reason and the source topic, partition and offset."""
    return list(record.headers) + [
        ("dlq-reason", letter.reason.encode()), ("dlq-detail", letter.detail.encode()),
        ("dlq-source-topic", record.topic.encode()),
        ("dlq-source-partition", str(record.partition).encode()),
        ("dlq-source-offset", str(record.offset).encode())]


def rewind(consumer: Consumer, first: dict[Partition, int]) -> None:
    """Seek each partition still assigned back to its first offset in `first`."""
    assigned = consumer.assignment()
    for partition, offset in first.items():
        if partition in assigned:
            consumer.seek(partition, offset)
