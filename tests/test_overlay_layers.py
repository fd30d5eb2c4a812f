"""The layered overlay answers what plain dicts answer: any registry changes, applied poll by
poll, with the small layers merged at any point (at once, or from an older overlay and
adopted later, as the registry consumer's background merge does), give the same maps, the
same `patch_*` answers for every IMEI and SIM, the same devices' keys and the same events as
a reference that keeps every map in one dict (what the overlay was before issue 20)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.devices import (MAX_SLOTS, NO_CARTABLE, NO_DEVICE, NO_OWNER, SLOT_BITS,
                                     Devices, Source)
from enforcer.engine.layers import GONE, IdLayer, LayeredMap, MapDraft, SortedLayer
from enforcer.engine.lists import BLACK_REASONS, NO_REASON, BlackReason, Lists
from enforcer.engine.overlay import (Inapplicable, NewDevice, Overlay, OverlayDraft,
                                     mentioned_keys)
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Device,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent, Via)
from rules.policy import load_policy
from tests.test_decide import (BUYER, DUAL, HELPER, OWNER, SINGLE, SPOUSE, STOLEN, STRANGER,
                               UNOWNED, UNREGISTERED, make_state)

STATE = make_state(load_policy())
KEYS = (*DUAL, SINGLE, UNOWNED, STOLEN, UNREGISTERED, UNREGISTERED + 10, UNREGISTERED + 20)
MSISDNS = (OWNER, SPOUSE, BUYER, HELPER, STRANGER)
IDS = ("D1", "D2", "D30")  # of two widths: a longer id is in no narrower column


@dataclass
class Reference:
    """The overlay as it was: every map one dict, a device's keys found by a scan."""

    base_devices: int
    imeis: dict[int, int] = field(default_factory=dict)
    owners: dict[int, int] = field(default_factory=dict)
    device_ids: dict[str, int] = field(default_factory=dict)
    devices: dict[int, NewDevice] = field(default_factory=dict)
    cartables: dict[int, int] = field(default_factory=dict)
    operator_sims: dict[tuple[int, int], bool] = field(default_factory=dict)
    black: dict[int, int] = field(default_factory=dict)
    events: list[RegistryEvent] = field(default_factory=list)

    def slot(self, key: int, lists: Lists, devices: Devices) -> int:
        if key in self.imeis:
            return self.imeis[key]
        return int(devices.device_slots(lists.white_index.rows(np.array([key], np.uint64)))[0])

    def device_of(self, device: Device, lists: Lists, devices: Devices) -> int:
        if self.device_ids.get(device.device_id or "", NO_DEVICE) != NO_DEVICE:
            return self.device_ids[device.device_id]
        if device.imei_keys and (s := self.slot(device.imei_keys[0], lists, devices)) \
                != NO_DEVICE:
            return s >> SLOT_BITS
        raise Inapplicable("no device")

    def device_keys(self, device: int, lists: Lists, devices: Devices) -> list[int]:
        keys = set()
        if device < self.base_devices:
            keys = {s.imei_key for s in devices.device(device, lists.white_index).slots}
        keys |= {k for k, s in self.imeis.items() if s != NO_DEVICE and s >> SLOT_BITS == device}
        return sorted(k for k in keys if (s := self.slot(k, lists, devices)) != NO_DEVICE
                      and s >> SLOT_BITS == device)

    def apply(self, event: RegistryEvent, lists: Lists, devices: Devices) -> None:
        change = event.change
        match change:
            case DeviceRegistered():
                known = self.device_ids.get(change.device.device_id or "")
                known = None if known == NO_DEVICE else known
                device = known if known is not None else self.base_devices + len(self.devices)
                if known is not None:
                    for key in self.device_keys(device, lists, devices):
                        self.imeis[key] = int(NO_DEVICE)
                for slot, key in enumerate(change.device.imei_keys[:MAX_SLOTS]):
                    self.imeis[key] = (device << SLOT_BITS) | slot
                if change.device.device_id is not None:
                    self.device_ids[change.device.device_id] = device
                self.owners[device] = int(NO_OWNER)
                self.devices[device] = NewDevice(change.source, change.entry_date or datetime
                                                 .fromtimestamp(event.time_ms / 1000,
                                                                timezone.utc).date())
            case DeviceDeregistered():
                device = self.device_of(change.device, lists, devices)
                for key in self.device_keys(device, lists, devices):
                    self.imeis[key] = int(NO_DEVICE)
                for device_id in [i for i, d in self.device_ids.items() if d == device]:
                    self.device_ids[device_id] = int(NO_DEVICE)  # shadows a folded id
                self.owners[device] = int(NO_OWNER)
            case OwnershipSet():
                self.owners[self.device_of(change.device, lists, devices)] = change.owner_msisdn
            case CartableChanged():
                for msisdn in change.msisdns:
                    now = self.cartables.get(msisdn, int(devices.cartables.of(
                        np.array([msisdn], np.uint64))[0]))
                    if change.linked:
                        self.cartables[msisdn] = change.cartable_id
                    elif now == change.cartable_id:
                        self.cartables[msisdn] = int(NO_CARTABLE)
            case OperatorSimChanged():
                self.operator_sims[(change.imei_key, change.msisdn)] = change.set
            case ImeiReplaced():
                slot = self.slot(change.old_key, lists, devices)
                if slot == NO_DEVICE:
                    raise Inapplicable("in no device")
                self.imeis[change.old_key] = int(NO_DEVICE)
                self.imeis[change.new_key] = slot
            case BlacklistChanged():
                code = BLACK_REASONS.index(change.reason) if change.reason else NO_REASON
                self.black.update(dict.fromkeys(change.imei_keys, code))
        self.events.append(event)


keys = st.sampled_from(KEYS)
msisdns = st.sampled_from(MSISDNS)
devices_named = st.builds(Device, st.none() | st.sampled_from(IDS),
                          st.lists(keys, max_size=2, unique=True).map(tuple))
changes = st.one_of(
    st.builds(DeviceRegistered,
              st.builds(Device, st.none() | st.sampled_from(IDS),
                        st.lists(keys, min_size=1, max_size=2, unique=True).map(tuple)),
              st.sampled_from(list(Source)), st.none() | st.just(date(2026, 9, 1))),
    st.builds(DeviceDeregistered, devices_named),
    st.builds(OwnershipSet, devices_named, msisdns, st.just(Via.ACTIVATION)),
    st.builds(CartableChanged, st.integers(1, 3), st.lists(msisdns, min_size=1, max_size=2)
              .map(tuple), st.booleans()),
    st.builds(OperatorSimChanged, keys, msisdns, st.booleans()),
    st.builds(ImeiReplaced, keys, keys),
    st.builds(BlacklistChanged, st.lists(keys, min_size=1, max_size=2).map(tuple),
              st.none() | st.sampled_from(list(BlackReason))),
)
# After a poll: nothing, merge at once, start a merge from this overlay, or adopt the merge
# started earlier (a later overlay over a merge made from an older one).
steps = st.sampled_from(["none", "merge", "start", "adopt"])
polls = st.lists(st.tuples(st.lists(changes, max_size=6), steps), max_size=12)


def assert_same(overlay: Overlay, ref: Reference) -> None:
    lists, devices = STATE.lists, STATE.devices
    for name in ("imeis", "owners", "device_ids", "devices", "cartables", "operator_sims",
                 "black"):
        mapping = getattr(overlay, name)
        assert dict(mapping) == getattr(ref, name), name
        assert dict(mapping.items()) == getattr(ref, name), name
        assert list(mapping.values()) == [mapping[k] for k in mapping], name
        assert len(mapping) == len(getattr(ref, name)), name
    assert list(overlay.events) == ref.events
    assert overlay.events[1:] == ref.events[1:]
    every = np.array(KEYS, np.uint64)
    slots = np.arange(len(every), dtype=np.uint32)
    registered, slot, black = overlay.patch_imeis(every, np.zeros(len(every), bool), slots,
                                                  np.full(len(every), 7, np.uint8))
    assert slot.tolist() == [ref.imeis.get(k, i) for i, k in enumerate(KEYS)]
    assert black.tolist() == [ref.black.get(k, 7) for k in KEYS]
    assert registered.tolist() == [k in ref.imeis and ref.imeis[k] != NO_DEVICE
                                   for k in KEYS]
    device_slots = np.array([(d << SLOT_BITS) for d in range(overlay.next_device + 1)]
                            + [int(NO_DEVICE)], np.uint32)
    assert overlay.patch_owners(device_slots, np.full(len(device_slots), 9, np.uint64)
                                ).tolist() == [ref.owners.get(d, 9) for d in
                                               range(overlay.next_device + 1)] + [9]
    numbers = np.array(MSISDNS, np.uint64)
    assert overlay.patch_cartables(numbers, np.full(len(numbers), 5, np.uint32)).tolist() \
        == [ref.cartables.get(m, 5) for m in MSISDNS]
    pairs = [(k, m) for k in KEYS for m in MSISDNS]
    got = overlay.patch_operator_sims(np.array([k for k, _ in pairs], np.uint64),
                                      np.array([m for _, m in pairs], np.uint64),
                                      np.zeros(len(pairs), bool))
    assert got.tolist() == [ref.operator_sims.get(p, False) for p in pairs]
    for key in KEYS:
        assert overlay.device_slot(key, lists, devices) == ref.slot(key, lists, devices)
    for device in range(overlay.next_device):
        assert (overlay.device_keys(device, lists, devices)
                == ref.device_keys(device, lists, devices))


@settings(max_examples=300, deadline=None)
@given(polls, st.integers(1, 4))
def test_any_changes_poll_by_poll_give_what_plain_dicts_give(polls, merge_at: int) -> None:
    lists, devices = STATE.lists, STATE.devices
    overlay = Overlay(base_devices=devices.count, merge_at=merge_at)
    ref = Reference(devices.count)
    started: tuple[Overlay, Overlay] | None = None
    time_ms = 1_790_000_000_000
    for changes_of_poll, step in polls:
        draft = OverlayDraft(overlay, lists, devices)
        draft.prefetch(changes_of_poll)
        for change in changes_of_poll:
            time_ms += 1
            event = RegistryEvent(f"e{time_ms}", time_ms, change)
            try:
                ref.apply(event, lists, devices)
            except Inapplicable:
                refused = True
            else:
                refused = False
            try:
                draft.apply(event)
                assert not refused, change
            except Inapplicable:
                assert refused, change
        overlay = draft.finish()
        if step == "merge":
            overlay = overlay.merged()
        elif step == "start" and started is None:
            started = (overlay, overlay.merged())
        elif step == "adopt" and started is not None:
            made_from, merge = started
            overlay = overlay.adopted(merge, made_from) or overlay
            started = None
        assert_same(overlay, ref)


def test_a_merge_is_of_no_use_to_another_lineage() -> None:
    lists, devices = STATE.lists, STATE.devices
    one = Overlay(base_devices=devices.count).apply(
        BlacklistChanged((SINGLE,), BlackReason.LOST), 0, lists, devices)
    other = Overlay(base_devices=devices.count).apply(
        BlacklistChanged((DUAL[0],), BlackReason.LOST), 0, lists, devices)
    assert other.adopted(one.merged(), one) is None
    assert dict(one.adopted(one.merged(), one).black) == {SINGLE: BLACK_REASONS.index(
        BlackReason.LOST)}


def test_a_draft_of_an_older_overlay_does_not_change_the_newer_ones_events() -> None:
    lists, devices = STATE.lists, STATE.devices
    base = Overlay(base_devices=devices.count)
    first = base.apply(BlacklistChanged((SINGLE,), None), 1, lists, devices)
    second = first.apply(BlacklistChanged((DUAL[0],), None), 2, lists, devices)
    again = first.apply(BlacklistChanged((STOLEN,), None), 3, lists, devices)
    assert [e.time_ms for e in second.events] == [1, 2]
    assert [e.time_ms for e in again.events] == [1, 3]
    assert len(base.events) == 0
    assert second.log is first.log  # appended, not copied


@given(st.dictionaries(st.integers(0, 2**47), st.integers(0, 2**32 - 1), max_size=40),
       st.dictionaries(st.integers(0, 2**47), st.integers(0, 2**32 - 1), max_size=40),
       st.lists(st.integers(0, 2**47), max_size=40))
def test_a_sorted_layer_merged_finds_what_a_dict_finds(older: dict[int, int],
                                                       newer: dict[int, int],
                                                       query: list[int]) -> None:
    """The fast merge (new keys inserted into sorted columns) against a dict's update."""
    layer = SortedLayer.of(older, np.uint32).merged(newer)
    expected = {**older, **newer}
    assert dict(layer.items()) == expected
    assert layer.keys.tolist() == sorted(expected)
    has, value = layer.find(np.array(query, np.uint64))
    assert has.tolist() == [q in expected for q in query]
    assert [int(v) for v, h in zip(value, has) if h] == [expected[q] for q in query
                                                         if q in expected]


ids = st.text(alphabet="DX0123456789", min_size=1, max_size=6)


@given(st.dictionaries(ids, st.integers(0, 50), max_size=30),
       st.dictionaries(ids, st.integers(0, 50) | st.just(GONE), max_size=30),
       st.lists(ids, max_size=20))
def test_an_id_layer_merged_finds_what_a_dict_finds(older: dict[str, int],
                                                    newer: dict[str, object],
                                                    query: list[str]) -> None:
    """The fast merge (ids taken out, new ones inserted, of any width) against a dict."""
    layer = IdLayer.of(older).merged(newer)
    expected = {k: v for k, v in {**older, **newer}.items() if v is not GONE}
    assert dict(layer.items()) == expected
    assert layer.keys.tolist() == sorted(expected)
    assert [layer.get(q) for q in query] == [expected.get(q) for q in query]
    for device in set(expected.values()):
        assert {i for i in layer.ids_of(device) if expected.get(i) == device} == \
            {i for i, d in expected.items() if d == device}


def test_taking_a_key_out_hides_the_frozen_layers_entry() -> None:
    draft = MapDraft(LayeredMap(IdLayer.of({"D1": 1, "D2": 2})))
    del draft["D1"]
    draft["D3"] = 3
    done = draft.finish()
    assert dict(done) == {"D2": 2, "D3": 3} == dict(done.merged())
    assert len(done) == 2 and "D1" not in done


def test_mentioned_keys_are_the_ones_a_draft_looks_up() -> None:
    """prefetch caches the snapshot's answer for what a change names, nothing else."""
    overlay = Overlay(base_devices=STATE.devices.count)
    change = OwnershipSet(Device(None, (SINGLE,)), BUYER, Via.ACTIVATION)
    draft = OverlayDraft(overlay, STATE.lists, STATE.devices)
    draft.prefetch([change])
    assert set(overlay.snapshot_slots) == set(mentioned_keys(change)) == {SINGLE}


def test_every_map_is_given_as_sorted_columns() -> None:
    """What a fold writes into a snapshot: each map's content as arrays."""
    lists, devices = STATE.lists, STATE.devices
    overlay = Overlay(base_devices=devices.count)
    for change in [DeviceRegistered(Device("D2", (UNREGISTERED + 10, UNREGISTERED)),
                                    Source.PASSENGER, date(2026, 9, 1)),
                   DeviceRegistered(Device("D1", (UNREGISTERED + 20,)), Source.IMPORT,
                                    date(2026, 9, 2)),
                   OperatorSimChanged(SINGLE, BUYER, True), CartableChanged(3, (BUYER,), True)]:
        overlay = overlay.apply(change, 0, lists, devices)
    new = devices.count
    keys, slots = overlay.columns("imeis")
    assert (keys.tolist(), slots.tolist()) == (
        [UNREGISTERED, UNREGISTERED + 10, UNREGISTERED + 20],
        [(new << SLOT_BITS) | 1, new << SLOT_BITS, (new + 1) << SLOT_BITS])
    ids, numbers = overlay.columns("device_ids")
    assert (ids.tolist(), numbers.tolist()) == (["D1", "D2"], [new + 1, new])
    numbers, sources, days = overlay.columns("devices")
    assert [NewDevice(list(Source)[s], date.fromordinal(d)) for s, d in zip(sources, days)] \
        == [overlay.devices[n] for n in numbers.tolist()] == [
        NewDevice(Source.PASSENGER, date(2026, 9, 1)), NewDevice(Source.IMPORT, date(2026, 9, 2))]
    assert [a.tolist() for a in overlay.columns("operator_sims")] == [[SINGLE], [BUYER], [True]]
    assert [a.tolist() for a in overlay.columns("cartables")] == [[BUYER], [3]]
