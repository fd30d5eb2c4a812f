"""Whether a partition of the registry topic still holds the event stored last from it, pure:
each thing a partition can give when read from that offset. On the real broker:
tests/test_registry_events.py, a recreated topic."""

from __future__ import annotations

import msgspec
import pytest

from consumers.continuity import Found, renewal
from consumers.receive import Record
from enforcer.db.registry_events import Resume

EVENT = msgspec.json.encode({"event_id": "r-33", "type": "blacklisted"})
OTHER = msgspec.json.encode({"event_id": "r-1", "type": "blacklisted"})
HUGE = b"x" * 10_000


def at(offset: int, value: bytes | None) -> Record:
    return Record("registry-events", 0, offset, None, value, [])


def stored(body: bytes, applied: bool = True) -> Resume:
    return Resume(incarnation=0, next_offset=34, last_body=body, last_applied=applied)


@pytest.mark.parametrize("resume, found", [
    (stored(EVENT), Found(at(33, EVENT), 40)),
    (stored(b"not json", applied=False), Found(at(33, b"not json"), 34)),
    # A dead letter's row holds the message cut to the dead letters' bound.
    (stored(HUGE[:4000], applied=False), Found(at(33, HUGE), 34)),
    (stored(b"", applied=False), Found(at(33, None), 34)),
    # Offset 33 is gone from the partition's start (retention): nothing left to compare.
    (stored(EVENT), Found(at(50, OTHER), 90)),
], ids=["same_event", "same_dead_letter", "dead_letter_cut", "empty", "past_retention"])
def test_the_same_log_is_read_on(resume: Resume, found: Found) -> None:
    assert renewal(resume, found) is None


@pytest.mark.parametrize("resume, found, why", [
    (stored(EVENT), Found(at(33, OTHER), 35), "offset 33 holds event 'r-1', not event 'r-33'"),
    (stored(EVENT), Found(at(33, b"garbage"), 35),
     "offset 33 holds a message of 7 bytes, not event 'r-33'"),
    # The client found offset 33 out of range and started again from the beginning.
    (stored(EVENT), Found(at(0, OTHER), 2),
     "the partition holds no offset 33: its last is 1"),
    (stored(EVENT), Found(None, 33), "the partition holds no offset 33: its last is 32"),
    (stored(EVENT), Found(None, 0), "the partition holds no offset 33: it is empty"),
    # An applied event's row is the whole message: a longer one is another.
    (stored(EVENT[:10]), Found(at(33, EVENT), 35),
     "offset 33 holds event 'r-33', not a message of 10 bytes"),
    (stored(b"", applied=False), Found(at(33, EVENT), 35),
     "offset 33 holds event 'r-33', not a message of 0 bytes"),
], ids=["another_event", "another_message", "reset_to_start", "ends_there", "empty",
        "longer_than_stored", "after_an_empty_one"])
def test_another_log_says_what_it_holds(resume: Resume, found: Found, why: str) -> None:
    assert renewal(resume, found) == why
