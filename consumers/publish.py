"""Publishing behind one small interface, with two clients under it: kafka-python (the
default) and confluent-kafka (librdkafka, several times faster), chosen by `kafka.client`.

Neither client raises when the broker refuses a message: a send is over only when each
message's own acknowledgement says so, which is what `publish` reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from confluent_kafka import Producer as RdKafkaProducer
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

log = logging.getLogger("eir.kafka")
# librdkafka's local queue full: wait this long for deliveries to make room.
POLL_WHEN_FULL_S = 0.05
# What is still queued at close gets this long to go out.
CLOSE_FLUSH_S = 10.0


@dataclass(frozen=True)
class Publication:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker put an acknowledged message."""

    partition: int
    offset: int


class NotAcknowledged(Exception):
    """Some messages were not acknowledged by the broker in time; send them again."""


class Producer(Protocol):
    def publish(self, messages: Sequence[Publication],
                timeout_s: float) -> list[Delivered | None]:
        """Send them all and wait: for each, where the broker put it, or None when it did
        not acknowledge it."""

    def close(self) -> None: ...


def publish_all(producer: Producer, messages: Sequence[Publication], timeout_s: float) -> None:
    acked = producer.publish(messages, timeout_s)
    missing = acked.count(None)
    if missing:
        raise NotAcknowledged(f"{missing} of {len(messages)} messages not acknowledged")


class KafkaPythonProducer:
    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._producer = KafkaProducer(**options)

    def publish(self, messages: Sequence[Publication],
                timeout_s: float) -> list[Delivered | None]:
        futures = [self._producer.send(m.topic, key=m.key, value=m.value,
                                       headers=list(m.headers)) for m in messages]
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            pass  # what did not make it reads as not acknowledged below
        acked = [Delivered(f.value.partition, f.value.offset)
                 if f.is_done and f.succeeded() else None for f in futures]
        if None in acked:
            self._renew()
        return acked

    def _renew(self) -> None:
        """A fresh producer for the next try. The idempotent producer's id lives in the
        broker: one the broker no longer knows (it restarted, the id expired) leaves this
        producer failing every send for good."""
        log.warning("producer renewed after messages were not acknowledged")
        self._producer.close(timeout=0)
        self._producer = KafkaProducer(**self._options)

    def close(self) -> None:
        self._producer.close()


class ConfluentProducer:
    def __init__(self, options: dict[str, Any]) -> None:
        # librdkafka's own log lines go through ours: structured, one event per line.
        self._producer = RdKafkaProducer(options, logger=log)

    def publish(self, messages: Sequence[Publication],
                timeout_s: float) -> list[Delivered | None]:
        acked: list[Delivered | None] = [None] * len(messages)

        def on_delivery(index: int) -> Callable[[Any, Any], None]:
            def delivered(error: Any, message: Any) -> None:
                if error is None:
                    acked[index] = Delivered(message.partition(), message.offset())
            return delivered

        produce, poll = self._producer.produce, self._producer.poll
        for i, m in enumerate(messages):
            while True:
                try:
                    produce(m.topic, m.value, m.key, headers=list(m.headers),
                            on_delivery=on_delivery(i))
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    poll(POLL_WHEN_FULL_S)
        self._producer.flush(timeout_s)
        return acked

    def close(self) -> None:
        self._producer.flush(CLOSE_FLUSH_S)
