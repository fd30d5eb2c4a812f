"""Folding the registry's changes into the next generation: whatever the changes, every attach
is decided after the fold as before it, and the changes that come after apply alike."""

from __future__ import annotations

import io
from unittest.mock import patch
from pathlib import Path
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.decide import decide, decision_at
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.fold import _index_in, fold, numbered_in_order
from enforcer.files.snapshots import SnapshotDraft, load_snapshot, save_snapshot
from enforcer.engine.overlay import Overlay
from enforcer.files.changes import read_changes, write_changes
from enforcer.engine.imei import ImeiRules, parse_imei
from enforcer.engine.lists import BlackReason
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Device,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent,
                                             TopicPlace, Via)
from enforcer.engine.devices import Source
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.engine.subscriber import parse_imsi
from rules.policy import load_policy
from tests.harness import wholearray
from tests.test_decide import (BUYER, CLONED, CUT_FOR_BUYER, DUAL, HELPER, OWNER, SINGLE,
                               SPOUSE, STOLEN, STRANGER, T0, UNOWNED, UNREGISTERED, WHITE_ONLY,
                               home_imsi, make_state)

NEW = (35777777000000, 35777777000010, 35777777000020)
KEYS = (*DUAL, SINGLE, UNOWNED, WHITE_ONLY, STOLEN, CLONED, CUT_FOR_BUYER, UNREGISTERED, *NEW)
MSISDNS = (OWNER, SPOUSE, BUYER, HELPER, STRANGER)
IDS = ("D1", "D2", "D3")

keys = st.sampled_from(KEYS)
msisdns = st.sampled_from(MSISDNS)
devices = st.builds(Device, st.none() | st.sampled_from(IDS),
                    st.lists(keys, max_size=2, unique=True).map(tuple))
changes = st.one_of(
    st.builds(DeviceRegistered, st.builds(Device, st.none() | st.sampled_from(IDS),
                                          st.lists(keys, min_size=1, max_size=3,
                                                   unique=True).map(tuple)),
              st.sampled_from(list(Source)), st.just(date(2026, 9, 1))),
    st.builds(DeviceDeregistered, devices),
    st.builds(OwnershipSet, devices, msisdns, st.sampled_from(list(Via))),
    st.builds(CartableChanged, st.integers(1, 3), st.lists(msisdns, min_size=1, max_size=2,
                                                           unique=True).map(tuple),
              st.booleans()),
    st.builds(OperatorSimChanged, keys, msisdns, st.booleans()),
    st.builds(ImeiReplaced, keys, keys),
    st.builds(BlacklistChanged, st.lists(keys, min_size=1, max_size=2, unique=True).map(tuple),
              st.none() | st.sampled_from(list(BlackReason))),
)


@pytest.fixture(scope="module")
def base() -> EnforcementState:
    return make_state(load_policy())


def events_of(found: list, first: int = 0) -> list[RegistryEvent]:
    return [RegistryEvent(f"e{first + i}", T0 + first + i, change,
                          TopicPlace(0, 0, first + i)) for i, change in enumerate(found)]


def decisions(state: EnforcementState, rules: ImeiRules) -> list[tuple]:
    """What every attach of the universe is decided: its verdict, rule, notice and cutoff
    (device numbers are the generation's own, and change with it)."""
    attaches = [AttachEvent(parse_imei(str(k), rules), parse_imsi(home_imsi(m)), m, T0, False)
                for k in KEYS for m in MSISDNS]
    batch = AttachBatch.from_events(attaches)
    decided = decide(batch, state)
    out = []
    for i in range(len(attaches)):
        d = decision_at(decided, batch, i)
        out.append((d.verdict, d.rule, d.notice, d.cutoff_now, d.record_history))
    return out


def laid(state: EnforcementState, events: list[RegistryEvent]) -> tuple[EnforcementState, list]:
    overlay, refused = state.overlay.apply_all(events, state.lists, state.devices)
    return replace(state, overlay=overlay), [e.event_id for e, _ in refused]


@settings(max_examples=300, deadline=None)
@given(before=st.lists(changes, max_size=12), after=st.lists(changes, max_size=6))
def test_decisions_are_the_same_before_and_after_a_fold(base, rules, before, after) -> None:
    held, _ = laid(base, events_of(before))
    held = replace(held, overlay=held.overlay.at({0: (0, len(before))}))
    folded, report = fold(held, held.generation + 1)
    assert folded.generation == held.generation + 1 and len(folded.overlay) == 0
    assert folded.watermark == {0: (0, len(before))}
    assert decisions(folded, rules) == decisions(held, rules)

    later = events_of(after, first=len(before))
    unfolded, refused = laid(held, later)
    refolded, refused_after_fold = laid(folded, later)
    assert refused_after_fold == refused
    assert decisions(refolded, rules) == decisions(unfolded, rules)
    twice, _ = fold(refolded, folded.generation + 1)
    assert decisions(twice, rules) == decisions(unfolded, rules)


@settings(max_examples=100, deadline=None)
@given(before=st.lists(changes, max_size=10), after=st.lists(changes, max_size=6))
def test_a_worker_adopting_a_fold_keeps_only_the_changes_after_its_watermark(
        base, rules, before, after) -> None:
    early, late = events_of(before), events_of(after, first=len(before))
    folding, _ = laid(base, early)
    folded, _ = fold(replace(folding, overlay=folding.overlay.at({0: (0, len(before))})),
                     base.generation + 1)
    holder = StateHolder(base)
    everything, _ = laid(base, early + late)
    holder.update(lambda s: replace(s, overlay=everything.overlay))
    holder.swap(folded)
    assert [e.event_id for e in holder.current.overlay.events] == [
        e.event_id for e in everything.overlay.events if e.read_at.offset >= len(before)]
    assert decisions(holder.current, rules) == decisions(everything, rules)


@settings(max_examples=100, deadline=None)
@given(before=st.lists(changes, max_size=10), during=st.lists(changes, min_size=1, max_size=6),
       after=st.lists(changes, max_size=4))
def test_changes_applied_while_a_fold_is_rebased_are_kept(base, rules, before, during,
                                                          after) -> None:
    """An adoption lays the changes over the new generation outside the lock (`rebased`)
    while the registry goes on applying its own; those applied meanwhile are laid over too
    as it is put in place: the worker ends where a swap holding the lock throughout would
    have left it, and goes on from there."""
    early = events_of(before)
    late = events_of(during, first=len(before))
    later = events_of(after, first=len(before) + len(during))
    folding, _ = laid(base, early)
    folded, _ = fold(replace(folding, overlay=folding.overlay.at({0: (0, len(before))})),
                     base.generation + 1)
    holder = StateHolder(folding)
    rebased = holder.rebased(folded)
    holder.update(lambda s: laid(s, late)[0])
    holder.put(rebased)
    holder.update(lambda s: laid(s, later)[0])
    everything, _ = laid(base, early + late + later)
    assert holder.current.generation == folded.generation
    assert [e.event_id for e in holder.current.overlay.events] == [
        e.event_id for e in everything.overlay.events if e.read_at.offset >= len(before)]
    assert decisions(holder.current, rules) == decisions(everything, rules)


@settings(max_examples=100, deadline=None)
@given(before=st.lists(changes, max_size=8), during=st.lists(changes, max_size=6),
       held_too=st.integers(0, 6), merged=st.booleans())
def test_catching_up_gives_what_the_whole_rebase_gives(base, rules, before, during, held_too,
                                                       merged) -> None:
    """Over a generation folded past some of the changes that arrived meanwhile (another
    worker's fold, this worker reading behind it), the changes arrived are laid over the
    rebase made before them as the whole rebase lays them all: the same events, positions
    and count of those that no longer apply. A merge of the overlay's layers meanwhile keeps
    the catching up; a repair (a lineage of its own) does not allow it."""
    early, late = events_of(before), events_of(during, first=len(before))
    held = len(before) + min(held_too, len(during))
    # An overlay of its own: `base`'s log is shared by every example, and a draft of an
    # overlay that is not its lineage's newest starts a log of its own, as a repair does.
    start = replace(base, overlay=Overlay(base_devices=base.devices.count))
    since, _ = laid(start, early)
    since = replace(since, overlay=since.overlay.at({0: (0, len(before))}))
    current, _ = laid(since, late)
    current = replace(current, overlay=current.overlay.at({0: (0, len(before) + len(late))}))
    if merged:
        current = replace(current, overlay=current.overlay.merged())
    folding, _ = laid(base, early + late[:held - len(before)])
    new, _ = fold(replace(folding, overlay=folding.overlay.at({0: (0, held)})),
                  base.generation + 1)
    rebased, stale = since.overlay.rebase(new.lists, new.devices, new.watermark)
    caught = current.overlay.caught_up(rebased, since.overlay, new.lists, new.devices,
                                       new.watermark)
    whole, whole_stale = current.overlay.rebase(new.lists, new.devices, new.watermark)
    assert caught is not None
    overlay, late_stale = caught
    assert [e.event_id for e in overlay.events] == [e.event_id for e in whole.events]
    assert overlay.read_to == whole.read_to == {0: (0, max(held, len(before) + len(late)))}
    assert stale + late_stale == whole_stale
    assert (decisions(replace(new, overlay=overlay), rules)
            == decisions(replace(new, overlay=whole), rules))
    repaired, _ = laid(replace(base, overlay=Overlay(base_devices=base.devices.count)),
                       early + late)  # the database's picture, as a repair lays it
    assert repaired.overlay.caught_up(rebased, since.overlay, new.lists, new.devices,
                                      new.watermark) is None


def test_an_overlay_is_read_as_far_as_the_furthest_position_it_was_told() -> None:
    """A poll laid over a generation folded past it does not take its overlay back to
    before the fold's watermark; a partition's next log is further than any of the last."""
    overlay = Overlay(base_devices=0).at({0: (0, 5), 1: (0, 2)})
    assert overlay.at({0: (0, 3), 1: (0, 4)}).read_to == {0: (0, 5), 1: (0, 4)}
    assert overlay.at({0: (1, 0)}).read_to == {0: (1, 0), 1: (0, 2)}


def test_a_generation_put_after_another_came_in_is_refused(base) -> None:
    holder = StateHolder(base)
    rebased = holder.rebased(replace(base, lists=replace(base.lists,
                                                         generation=base.generation + 1)))
    holder.swap(replace(base, lists=replace(base.lists, generation=base.generation + 2)))
    with pytest.raises(ValueError, match="not newer"):
        holder.put(rebased)


def test_an_id_folded_into_the_snapshot_still_names_its_device(base, rules) -> None:
    registered = [DeviceRegistered(Device("D9", NEW[:2]), Source.PASSENGER, None)]
    held, _ = laid(base, events_of(registered))
    folded, report = fold(held, held.generation + 1)
    assert report.devices_added == 1 and folded.devices.ids.get("D9") is not None
    owned, refused = laid(folded, events_of([OwnershipSet(Device("D9", ()), BUYER,
                                                          Via.ACTIVATION)], first=1))
    assert not refused
    assert decisions(owned, rules)[KEYS.index(NEW[1]) * len(MSISDNS)
                                   + MSISDNS.index(BUYER)][1] == "owner"
    gone, _ = laid(folded, events_of([DeviceDeregistered(Device("D9", ()))], first=1))
    _, refused = laid(gone, events_of([OwnershipSet(Device("D9", ()), BUYER, Via.ACTIVATION)],
                                      first=2))
    assert refused == ["e2"]


def test_a_fold_s_process_writes_the_white_list_into_the_next_snapshot_s_file(
        base, rules, tmp_path: Path) -> None:
    """As the fold job's process runs it: the snapshot mapped, the new white list's keys
    and the registry's columns written into the draft's files, which the save moves into
    place rather than copying. It loads to decide as the fold held in memory."""
    save_snapshot(base, tmp_path)
    mapped = load_snapshot(tmp_path, base.policy)
    held, refused = laid(mapped, events_of([
        DeviceRegistered(Device("D1", (NEW[0], NEW[1])), Source.PASSENGER, date(2026, 9, 1)),
        DeviceDeregistered(Device(None, (SINGLE,))),
        BlacklistChanged((NEW[2], UNOWNED), BlackReason.STOLEN)]))
    assert refused == []
    want, _ = fold(held, held.generation + 1)
    with SnapshotDraft(tmp_path, held.generation + 1) as draft:
        folded, _ = fold(held, held.generation + 1, columns=draft.column, spill=draft.spill)
        drafted = (draft.scratch / "registry" / "white-low.npy").stat().st_ino
        target = save_snapshot(folded, tmp_path, draft)
    assert (target / "lists" / "white-low.npy").stat().st_ino == drafted  # moved, not copied
    assert not (target / "registry" / "white-low.npy").exists()
    assert not list(target.rglob("*.spill"))  # the fold's scratch arrays are not saved
    again = load_snapshot(tmp_path, base.policy)
    assert again.lists.white_index.keys().tolist() == want.lists.white_index.keys().tolist()
    assert decisions(again, rules) == decisions(want, rules) != decisions(base, rules)


def test_a_fold_is_a_newer_generation(base) -> None:
    with pytest.raises(ValueError, match="not newer"):
        fold(base, base.generation)


@settings(max_examples=150, deadline=None)
@given(before=st.lists(changes, max_size=12), after=st.lists(changes, max_size=6))
def test_the_changes_handed_to_the_fold_s_process_decide_and_fold_as_held(base, rules,
                                                                          before,
                                                                          after) -> None:
    """A worker hands its fold's process its changes as columns in a file: read back, they
    decide every attach as the overlay they came from, and fold to the same generation.
    Changes laid over them afterwards find each device's IMEIs and ids as over the
    overlay they came from (whose indexes of them the read-back builds only then)."""
    held, _ = laid(base, events_of(before))
    held = replace(held, overlay=held.overlay.at({0: (0, len(before))}))
    file = io.BytesIO()
    write_changes(held.overlay, held.generation, file)
    handed = read_changes(file)
    assert (handed.generation, handed.events, handed.overlay.read_to) == (
        held.generation, len(held.overlay.events), {0: (0, len(before))})
    taken = replace(held, overlay=handed.overlay)
    assert len(taken.overlay) == len(held.overlay)
    assert decisions(taken, rules) == decisions(held, rules)
    folded, _ = fold(taken, held.generation + 1)
    want, _ = fold(held, held.generation + 1)
    assert decisions(folded, rules) == decisions(want, rules)
    assert dict(folded.devices.ids.items()) == dict(want.devices.ids.items())
    later = events_of(after, first=len(before))
    more, refused = laid(taken, later)
    same, refused_too = laid(held, later)
    assert (decisions(more, rules), refused) == (decisions(same, rules), refused_too)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 5_000), max_size=300), st.data())
def test_a_device_s_index_by_rank_is_the_search_s(numbers: set[int], data) -> None:
    """The fold's fast path for where each device lies among the rebuilt ones (a rank in a
    bitmap) against its reference, a binary search."""
    number = np.array(sorted(numbers), dtype=np.int64)
    device = np.array(data.draw(st.lists(st.sampled_from(sorted(numbers)), max_size=500))
                      if numbers else [], dtype=np.int64)
    assert _index_in(number, device).tolist() == np.searchsorted(number, device).tolist()


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 4)), max_size=80))
def test_slots_numbered_a_range_of_devices_at_a_time_are_numbered_as_all_at_once(
        entries: list[tuple[int, int]]) -> None:
    """Ranges of a few devices (buckets of 4) and steps of 5 IMEIs, against each device's
    IMEIs sorted by slot in plain Python."""
    device = np.array([d for d, _ in entries], dtype=np.int64)
    slot = np.array([s for _, s in entries], dtype=np.uint8)
    with patch("enforcer.engine.fold.NUMBERED_AT_ONCE", 5), \
            patch("enforcer.engine.fold.DEVICE_BUCKET_BITS", 2):
        got = numbered_in_order(device, slot)
    assert got.tolist() == wholearray.numbered_in_order(device, slot).tolist()
