"""Consuming behind one small interface, with the same two clients as publishing under it:
kafka-python (the default) and confluent-kafka (librdkafka), chosen by `kafka.client`.

A poll gives a `Polled` batch: the values for the decoder in one list, each record's topic,
partition, offset, key and headers only when asked for (a dead letter, a stored registry
event), and the first offset per partition to seek back to when the batch must be read
again. Commit stores the position after everything polled so far.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException
from confluent_kafka import Consumer as RdKafkaConsumer
from confluent_kafka import TopicPartition as RdPartition
from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger("eir.kafka")

# How long a metadata or watermark request may take before it counts as failed.
METADATA_TIMEOUT_S = 5.0

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class Polled(Protocol):
    values: list[bytes | None]

    def __len__(self) -> int: ...

    def record(self, index: int) -> Record: ...

    def first_offsets(self) -> dict[Partition, int]: ...


class Consumer(Protocol):
    def poll(self, timeout_ms: int, max_records: int) -> Polled: ...

    def commit(self) -> None: ...

    def assignment(self) -> set[Partition]: ...

    def assign(self, topic: str, starts: dict[int, int | None]) -> None:
        """Read these partitions of `topic` (no group) from these offsets; None: the
        beginning."""

    def seek(self, partition: Partition, offset: int) -> None: ...

    def partitions_for(self, topic: str) -> set[int]:
        """Empty while the topic does not exist."""

    def highwater(self, partition: Partition) -> int | None:
        """The partition's end (the next offset to be written) as the last fetch saw it;
        None before any. (Asked of the broker directly, tansu miscounts it.)"""

    def lag(self) -> dict[Partition, int]:
        """Per assigned partition, the records after where it is read next (after a seek,
        the offset sought: a batch being read again counts), where that is known. The end is
        the larger of two readings: ListOffsets (fresh on Kafka, but the embedded broker
        answers the first offset of the last batch written, plus one) and the last fetch's
        high watermark (right on both, as fresh as that fetch)."""

    def close(self) -> None: ...


def first_offsets(records: list[tuple[str, int, int]]) -> dict[Partition, int]:
    """The first offset per partition among (topic, partition, offset) triples."""
    first: dict[Partition, int] = {}
    for topic, partition, offset in records:
        key = (topic, partition)
        if key not in first or offset < first[key]:
            first[key] = offset
    return first


def _behind(listed_end: int, fetched_end: int | None, position: int) -> int:
    """Records after `position`, by the larger of the listed and the fetched end."""
    return max(max(listed_end, fetched_end or 0) - position, 0)


class _KafkaPythonPolled:
    def __init__(self, records: list[Any]) -> None:
        self._records = records
        self.values = [r.value for r in records]

    def __len__(self) -> int:
        return len(self._records)

    def record(self, index: int) -> Record:
        r = self._records[index]
        return Record(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []))

    def first_offsets(self) -> dict[Partition, int]:
        return first_offsets([(r.topic, r.partition, r.offset) for r in self._records])


class KafkaPythonConsumer:
    def __init__(self, options: dict[str, Any], topics: tuple[str, ...] = ()) -> None:
        self._consumer = KafkaConsumer(*topics, **options)

    def poll(self, timeout_ms: int, max_records: int) -> Polled:
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return _KafkaPythonPolled([r for part in polled.values() for r in part])

    def commit(self) -> None:
        self._consumer.commit()

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def assign(self, topic: str, starts: dict[int, int | None]) -> None:
        partitions = [TopicPartition(topic, p) for p in sorted(starts)]
        self._consumer.assign(partitions)
        for tp in partitions:
            offset = starts[tp.partition]
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(TopicPartition(*partition), offset)

    def partitions_for(self, topic: str) -> set[int]:
        return set(self._consumer.partitions_for_topic(topic) or ())

    def highwater(self, partition: Partition) -> int | None:
        return self._consumer.highwater(TopicPartition(*partition))

    def lag(self) -> dict[Partition, int]:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        listed = self._consumer.end_offsets(assigned)
        return {(tp.topic, tp.partition): _behind(listed.get(tp, 0), self._consumer.highwater(tp),
                                                  self._consumer.position(tp))
                for tp in assigned}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class _ConfluentPolled:
    def __init__(self, messages: list[Any]) -> None:
        self._messages = messages
        self.values = [m.value() for m in messages]

    def __len__(self) -> int:
        return len(self._messages)

    def record(self, index: int) -> Record:
        m = self._messages[index]
        return Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                      list(m.headers() or []))

    def first_offsets(self) -> dict[Partition, int]:
        return first_offsets([(m.topic(), m.partition(), m.offset()) for m in self._messages])


class ConfluentConsumer:
    def __init__(self, options: dict[str, Any], topics: tuple[str, ...] = ()) -> None:
        self._consumer = RdKafkaConsumer(options, logger=log)
        if topics:
            self._consumer.subscribe(list(topics))

    def poll(self, timeout_ms: int, max_records: int) -> Polled:
        # consume() waits out its whole timeout unless max_records come: what has arrived is
        # taken at once, else the first message is waited for alone and what came with it
        # taken after; a poll returns as soon as there is something, as kafka-python's does.
        messages = self._consumer.consume(max_records, 0)
        if not messages:
            messages = self._consumer.consume(1, timeout_ms / 1000)
            if messages and max_records > 1:
                messages += self._consumer.consume(max_records - 1, 0)
        good = []
        for m in messages:
            if m.error() is None:
                good.append(m)
            else:  # the client retries on its own; say so and go on
                log.warning("kafka consume error", extra={"error": str(m.error())})
        return _ConfluentPolled(good)

    def commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing new to commit
                raise

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def assign(self, topic: str, starts: dict[int, int | None]) -> None:
        self._consumer.assign([RdPartition(topic, p, OFFSET_BEGINNING if o is None else o)
                               for p, o in sorted(starts.items())])

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(RdPartition(partition[0], partition[1], offset))

    def partitions_for(self, topic: str) -> set[int]:
        found = self._consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if found is None or found.error is not None:
            return set()
        return set(found.partitions)

    def highwater(self, partition: Partition) -> int | None:
        _, high = self._consumer.get_watermark_offsets(RdPartition(*partition), cached=True)
        return high if high >= 0 else None

    def lag(self) -> dict[Partition, int]:
        lag = {}
        for partition, offset in self._next_offsets().items():
            tp = RdPartition(*partition)
            _, listed = self._consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)
            lag[partition] = _behind(listed, self.highwater(partition), offset)
        return lag

    def _next_offsets(self) -> dict[Partition, int]:
        """Where each assigned partition is read next, where that is known. librdkafka forgets
        a partition's position at a seek (a batch to read again) and before an assignment's
        first message: it is then read from its committed offset, or, with none, from its
        start (auto.offset.reset = earliest), which is unknown before the first fetch."""
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        positions = self._consumer.position(assigned)
        unknown = [tp for tp in positions if tp.offset < 0]
        committed = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(
            unknown, timeout=METADATA_TIMEOUT_S)} if unknown else {}
        found = {}
        for tp in positions:
            partition = (tp.topic, tp.partition)
            start, _ = self._consumer.get_watermark_offsets(tp, cached=True)
            offset = next((o for o in (tp.offset, committed.get(partition, -1), start)
                           if o >= 0), None)
            if offset is not None:
                found[partition] = offset
        return found

    def close(self) -> None:
        self._consumer.close()
