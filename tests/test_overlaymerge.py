"""The registry consumer's background merge: the overlay's small layers merged on a thread of
their own and adopted between two polls, changing no answer."""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import replace

from enforcer.follow.overlaymerge import BackgroundMerge
from enforcer.engine.lists import BLACK_REASONS, BlackReason
from enforcer.engine.overlay import Overlay, OverlayDraft
from enforcer.engine.registry_events import BlacklistChanged, RegistryEvent
from enforcer.engine.state import StateHolder
from tests.test_decide import make_state

STOLEN_CODE = BLACK_REASONS.index(BlackReason.STOLEN)
WAIT_S = 10.0


def poll(holder: StateHolder, keys: range) -> None:
    """What RegistryEventConsumer does with a poll: a draft of the current overlay, swapped in."""
    state = holder.current
    draft = OverlayDraft(state.overlay, state.lists, state.devices)
    for key in keys:
        draft.apply(RegistryEvent(f"e{key}", key, BlacklistChanged((key,), BlackReason.STOLEN)))
    holder.update(lambda s: replace(s, overlay=draft.finish()))


def step_until_adopted(merge: BackgroundMerge, holder: StateHolder) -> None:
    before = holder.current.overlay
    deadline = time.monotonic() + WAIT_S
    while holder.current.overlay is before and time.monotonic() < deadline:
        merge.step()
        time.sleep(0.01)


def holding(policy, merge_at: int) -> StateHolder:
    state = make_state(policy)
    return StateHolder(replace(state, overlay=Overlay(base_devices=state.devices.count,
                                                      merge_at=merge_at)))


def test_a_merge_is_adopted_at_a_later_poll_with_what_came_after(policy) -> None:
    holder = holding(policy, merge_at=3)
    merge = BackgroundMerge(holder)
    try:
        poll(holder, range(1, 4))
        merge.step()  # three entries: a merge starts, from this overlay
        poll(holder, range(4, 6))  # meanwhile, the next poll
        step_until_adopted(merge, holder)
        overlay = holder.current.overlay
        assert dict(overlay.black) == dict.fromkeys(range(1, 6), STOLEN_CODE)
        assert dict(overlay.black.recent) == dict.fromkeys(range(4, 6), STOLEN_CODE)
        assert dict(overlay.black.frozen.items()) == dict.fromkeys(range(1, 4), STOLEN_CODE)
        assert [e.event_id for e in overlay.events] == [f"e{k}" for k in range(1, 6)]
    finally:
        merge.close()


def test_a_merge_of_an_overlay_replaced_by_another_lineage_is_dropped(policy) -> None:
    """The overlay rebuilt from the database by a consistency repair, or laid over a new
    generation, holds other small layers: the old merge is not laid under them."""
    holder = holding(policy, merge_at=3)
    merge = BackgroundMerge(holder)
    try:
        poll(holder, range(1, 4))
        merge.step()
        holder.update(lambda s: replace(s, overlay=Overlay(base_devices=s.devices.count,
                                                           merge_at=3)))
        poll(holder, range(9, 10))
        deadline = time.monotonic() + WAIT_S
        while merge._pending is not None and time.monotonic() < deadline:
            merge.step()
            time.sleep(0.01)
        assert dict(holder.current.overlay.black) == {9: STOLEN_CODE}
    finally:
        merge.close()


def test_the_layers_a_merge_replaced_are_freed_on_the_merge_thread(policy) -> None:
    """Freeing them is some 10 ms at 5 M entries: not a poll's."""
    holder = holding(policy, merge_at=3)
    merge = BackgroundMerge(holder)
    freed_by: list[str] = []
    try:
        poll(holder, range(1, 4))
        weakref.finalize(holder.current.overlay.black.frozen,
                         lambda: freed_by.append(threading.current_thread().name))
        merge.step()
        step_until_adopted(merge, holder)
        merge.step()  # hands what the swap replaced to the merge thread
        deadline = time.monotonic() + WAIT_S
        while not freed_by and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [name.split("_")[0] for name in freed_by] == ["overlay-merge"]
    finally:
        merge.close()
