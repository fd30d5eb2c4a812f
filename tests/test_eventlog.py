"""The events an overlay holds: a view of a lineage's shared list, never changed by what is
appended after it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enforcer.engine.eventlog import EventLog
from enforcer.engine.registry_events import BlacklistChanged, RegistryEvent, TopicPlace


def events(first: int, count: int) -> list[RegistryEvent]:
    return [RegistryEvent(f"e{i}", i, BlacklistChanged((i,), None), TopicPlace(0, 0, i))
            for i in range(first, first + count)]


@given(held=st.integers(0, 20), more=st.integers(0, 20), again=st.integers(0, 20),
       data=st.data())
def test_a_view_iterates_and_indexes_its_own_events_whatever_came_after(held, more, again,
                                                                         data) -> None:
    log, end = EventLog().extended(0, events(0, held))
    later, later_end = log.extended(end, events(held, more))
    view = log.upto(end)
    branch = data.draw(st.integers(0, later_end))  # a draft of an older overlay
    other, other_end = later.extended(branch, events(100, again))
    assert [e.event_id for e in view] == [f"e{i}" for i in range(held)]
    assert list(view) == [view[i] for i in range(len(view))] == view[:]
    assert [e.event_id for e in later.upto(later_end)] == [f"e{i}" for i in range(held + more)]
    assert [e.event_id for e in other.upto(other_end)] == (
        [f"e{i}" for i in range(branch)] + [f"e{i}" for i in range(100, 100 + again)])
