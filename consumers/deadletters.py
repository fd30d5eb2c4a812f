"""What both input loops do with a message they cannot take: dead-letter it with the reason
and where it came from, cut to what the producer can send, and count it by reason."""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from prometheus_client import Counter

from enforcer.engine.attachdecode import DeadLetter
from consumers.publish import Publication
from consumers.receive import Record

# Each header costs its name, its value and two varints (their lengths) of at most 5 bytes.
HEADER_FRAMING_BYTES = 10
# A detail may quote the message (a repeated key): a longer one is cut to this, so that the
# dlq-* headers always fit in the dead letter's bound.
MAX_DETAIL_BYTES = 1024
TRUNCATED_HEADER = "dlq-truncated"
ORIGINAL_SIZE_HEADER = "dlq-original-size"
ORIGINAL_SHA256_HEADER = "dlq-original-sha256"
# What a cut dead letter lost, in the order it is given up: the value, then the original
# headers, then the key.
VALUE, HEADERS, KEY = "value", "headers", "key"

Headers = Sequence[tuple[str, bytes | None]]


def _dlq_headers(record: Record, letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The reason, its detail (cut to MAX_DETAIL_BYTES) and the source topic, partition and
    offset."""
    return [("dlq-reason", letter.reason.encode()),
            ("dlq-detail", _cut_text(letter.detail, MAX_DETAIL_BYTES)),
            ("dlq-source-topic", record.topic.encode()),
            ("dlq-source-partition", str(record.partition).encode()),
            ("dlq-source-offset", str(record.offset).encode())]


def _cut_text(text: str, max_bytes: int) -> bytes:
    """At most `max_bytes` of UTF-8, cut between characters."""
    return text.encode()[:max_bytes].decode(errors="ignore").encode()


def measure(key: bytes | None, value: bytes, headers: Headers) -> int:
    """One record's key, value and headers with their framing, in bytes: what either
    client counts against its request limit, less the record's and its batch's fixed
    framing (`enforcer.config.RECORD_FRAMING_BYTES`)."""
    return (len(key or b"") + len(value)
            + sum(len(name.encode()) + len(v or b"") + HEADER_FRAMING_BYTES
                  for name, v in headers))


def dead_letter(topic: str, record: Record, letter: DeadLetter, max_bytes: int) -> Publication:
    """The dead letter of `record` for `topic`: the value, key and original headers unchanged
    with the dlq-* headers added, when that measures at most `max_bytes`. A larger one (a
    message near the broker's limit is larger than the producer may send) is cut to fit: the
    value to what is left, and where the key and original headers alone leave no room, those
    too; `dlq-truncated` names what was cut, `dlq-original-size` and `dlq-original-sha256`
    give the original value's length in bytes and its SHA-256 in hex. `max_bytes` must leave
    room for the dlq-* headers (`enforcer.config.MIN_DEAD_LETTER_BYTES`)."""
    value = record.value or b""
    ours = _dlq_headers(record, letter)
    whole = [*record.headers, *ours]
    if measure(record.key, value, whole) <= max_bytes:
        return Publication(topic, record.key, value, tuple(whole))

    digest = hashlib.sha256(value).hexdigest().encode()

    def marks(cut: list[str]) -> list[tuple[str, bytes]]:
        return [(TRUNCATED_HEADER, ",".join(cut).encode()),
                (ORIGINAL_SIZE_HEADER, str(len(value)).encode()),
                (ORIGINAL_SHA256_HEADER, digest)]

    # Room for key, original headers and value, whatever ends up cut.
    room = max_bytes - measure(None, b"", ours + marks([VALUE, HEADERS, KEY]))
    key, kept, cut = record.key, list(record.headers), []
    if kept and measure(key, b"", kept) > room:
        kept, cut = [], [HEADERS]
    if key is not None and len(key) > room:
        key, cut = key[:room], cut + [KEY]
    value_room = room - measure(key, b"", kept)
    if len(value) > value_room:
        cut.insert(0, VALUE)
    return Publication(topic, key, value[:value_room], tuple(kept + ours + marks(cut)))


class DeadLetters:
    """One loop's dead letters: to `topic`, each cut to `max_bytes` (`dead_letter`), and
    counted by reason on `counter` (eir_dlq_messages_total) once the caller has sent them."""

    def __init__(self, topic: str, max_bytes: int, counter: Counter) -> None:
        self._topic = topic
        self._max_bytes = max_bytes
        self._counter = counter

    def of(self, record: Record, letter: DeadLetter) -> Publication:
        return dead_letter(self._topic, record, letter, self._max_bytes)

    def count(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self._counter.labels(reason).inc()
