"""Whether a partition of the registry topic is still the log its stored events were read
from. A topic deleted and recreated under the same name (a cluster rebuilt, the embedded
broker restarted: it keeps topics in memory) starts its offsets again at 0, and resuming after
the offset stored last would skip every event of the new log below it, silently. So before a
partition is read, what it holds at the offset stored last is read back and compared with the
event stored from there."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import msgspec

from consumers.receive import Consumer, Record
from enforcer.db.registry_events import Resume

POLL_MS = 200
# Only each partition's first record counts; a poll this size ends the wait for all of them.
POLL_RECORDS = 100


@dataclass(frozen=True)
class Found:
    """What a partition gave when read from an offset: its first record, and its end (the
    next offset to be written) as the fetch reported it. A record before the offset means the
    partition ended before it: the client, told the offset is out of range, started again
    from the partition's beginning."""

    record: Record | None
    end: int | None


class _Named(msgspec.Struct):
    event_id: str | None = None


def renewal(stored: Resume, found: Found) -> str | None:
    """What the partition holds instead of the event stored last from it (at
    `stored.next_offset - 1`), in words for the log; None when it holds that event, or when
    the offset is gone from its start (retention or compaction: nothing is left to compare,
    and a new log would have had to grow past it first)."""
    last = stored.next_offset - 1
    record = found.record
    if record is None or record.offset < last:
        return _missing(last, found.end)
    if record.offset > last:
        return None
    if _same(stored, record.value or b""):
        return None
    return f"offset {last} holds {_named(record.value or b'')}, not {_named(stored.last_body)}"


def _missing(offset: int, end: int | None) -> str:
    if end is None:
        return f"the partition holds no offset {offset}"
    if end == 0:
        return f"the partition holds no offset {offset}: it is empty"
    return f"the partition holds no offset {offset}: its last is {end - 1}"


def _same(stored: Resume, value: bytes) -> bool:
    """An applied event's row holds the message as it came; a dead letter's, the message cut
    to the dead letters' bound (a prefix of it)."""
    body = stored.last_body or b""
    return value == body or (not stored.last_applied and bool(body) and value.startswith(body))


def _named(value: bytes | None) -> str:
    try:
        event_id = msgspec.json.decode(value or b"", type=_Named).event_id
    except msgspec.DecodeError:  # not a registry event: told by its size
        event_id = None
    return f"event {event_id!r}" if event_id else f"a message of {len(value or b'')} bytes"


def read_at(consumer: Consumer, topic: str, offsets: dict[int, int],
            stop: threading.Event) -> dict[int, Found]:
    """What each partition of `topic` gives when read from its offset in `offsets`, once all
    have answered (or `stop` is set: then those that have). Leaves the consumer assigned to
    them; the caller assigns again from where it will read."""
    consumer.assign(topic, dict(offsets))
    found: dict[int, Found] = {}
    while len(found) < len(offsets) and not stop.is_set():
        polled = consumer.poll(POLL_MS, POLL_RECORDS)
        for i in range(len(polled)):
            record = polled.record(i)
            if record.topic == topic and record.partition in offsets:
                found.setdefault(record.partition,
                                 Found(record, consumer.highwater((topic, record.partition))))
        for partition, offset in offsets.items():
            end = consumer.highwater((topic, partition))
            # The partition ends at or before the offset: no record of it will come.
            if partition not in found and end is not None and end <= offset:
                found[partition] = Found(None, end)
    return found
