"""Reading back what is already on a topic: the idempotency keys written after given
offsets. The outbox relay uses it so that a round which published and then died before
recording it is not published a second time."""

from __future__ import annotations

import time

from consumers.receive import Consumer

Offsets = dict[int, int]  # partition -> offset
READ_BATCH = 5000
POLL_MS = 200


class ReadBackTimeout(RuntimeError):
    """The topic could not be read up to its end in time; nothing may be published yet."""


def keys_after(consumer: Consumer, topic: str, starts: Offsets, header: str,
               timeout_s: float) -> set[str]:
    """The `header` values of the messages of `topic` from `starts` (a partition missing
    there: from its beginning) to the end of each partition."""
    partitions = consumer.partitions_for(topic)
    if not partitions:
        return set()
    consumer.assign(topic, {p: starts.get(p) for p in partitions})
    read_to = {p: starts.get(p, 0) for p in partitions}
    found: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        polled = consumer.poll(POLL_MS, READ_BATCH)
        for i in range(len(polled)):
            record = polled.record(i)
            if record.topic != topic:  # fetched for an earlier assignment
                continue
            found.update(v.decode() for k, v in record.headers if k == header)
            read_to[record.partition] = max(read_to[record.partition], record.offset + 1)
        behind = [p for p in partitions
                  if (end := consumer.highwater((topic, p))) is None or read_to[p] < end]
        if not behind:
            return found
        if time.monotonic() > deadline:
            raise ReadBackTimeout(f"{topic}: partitions {sorted(behind)} not read to their end"
                                  f" in {timeout_s:.0f} s")
