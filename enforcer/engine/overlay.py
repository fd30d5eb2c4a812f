"""Registry changes since the snapshot, laid over it.

The snapshot's columns are sized for a country and built aside; a registration, a transfer or
a black-listing must count within a second. So changes go to an overlay: small maps from
IMEI key, device, MSISDN or (IMEI, MSISDN) pair to what is true now, and the decision
consults them after the snapshot, for the whole batch at once (`patch_*`). Applying a change
is pure and returns a new overlay; the worker swaps it in as it swaps generations. The
overlay is rebuilt at each start from the events stored in PostgreSQL, over whatever
snapshot is current then: a national snapshot that already holds a change makes applying it
again change nothing.

Devices registered by events are numbered after the snapshot's devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import date, datetime, timezone
from typing import Iterable, Mapping

import numpy as np

from enforcer.engine.lists import BLACK_REASONS, NO_REASON, Lists
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Change,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent)
from enforcer.engine.devices import (KEYLESS_DEVICE, MAX_SLOTS, NO_CARTABLE, NO_DEVICE,
                                     NO_DEVICE_INT, NO_OWNER, SLOT_BITS, Devices, Source)

# How far a partition of the registry topic has been read: (incarnation, next offset), which
# orders as the events came: a recreated topic is the partition's next incarnation, its
# offsets starting again at 0 (enforcer/db/registry_events.py).
LogPosition = tuple[int, int]


class Inapplicable(ValueError):
    """The change names something the state does not have (e.g. an unknown device)."""


@dataclass(frozen=True)
class NewDevice:
    """A device registered by an event: what the snapshot's columns hold for the others."""

    source: Source
    registered_on: date


class _Patch:
    """Sorted keys and their values, looked up for a whole column at once."""

    def __init__(self, mapping: Mapping[int, int], value_dtype: type) -> None:
        keys = np.array(sorted(mapping), dtype=np.uint64)
        self.keys = keys
        self.values = np.array([mapping[k] for k in keys.tolist()], dtype=value_dtype)

    def find(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which queries have an entry, the entry's value where they do)."""
        if not len(self.keys):
            return np.zeros(len(query), dtype=bool), np.zeros(len(query), self.values.dtype)
        at = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        return self.keys[at] == query, self.values[at]


@dataclass(frozen=True, eq=False)
class Overlay:
    """Never changed once made (a decision may be reading it): `OverlayDraft` changes a
    private copy and makes the next one from it. Only `snapshot_slots`, a cache of the
    snapshot's answers for the IMEIs registry events named, grows."""

    base_devices: int  # devices in the snapshot; event-registered ones are numbered after
    imeis: dict[int, int] = field(default_factory=dict)  # key -> device_slot | NO_DEVICE
    owners: dict[int, int] = field(default_factory=dict)  # device -> MSISDN | NO_OWNER
    device_ids: dict[str, int] = field(default_factory=dict)  # registry's id -> device
    devices: dict[int, NewDevice] = field(default_factory=dict)
    cartables: dict[int, int] = field(default_factory=dict)  # MSISDN -> cartable | NO_...
    operator_sims: dict[tuple[int, int], bool] = field(default_factory=dict)
    black: dict[int, int] = field(default_factory=dict)  # key -> BLACK_REASONS | NO_REASON
    # The events these maps hold, in the order applied: laid again over a new snapshot.
    events: tuple[RegistryEvent, ...] = ()
    # The registry topic's partitions read this far: every event stored before these
    # positions is in the maps (what the consistency check relies on).
    read_to: dict[int, LogPosition] = field(default_factory=dict)
    # The snapshot's answer for IMEIs changes have named (key -> device_slot): a cache,
    # shared by the overlays made from this one, which all lie over the same snapshot. A
    # lookup of one key costs about as much as one of thousands, so a batch of events is
    # looked up at once (`prefetch`).
    snapshot_slots: dict[int, int] = field(default_factory=dict, repr=False)
    # The lookups are built when a decision first needs them, not at each change: a burst
    # of events, or the thousands restored at start, cost one build, not one each.
    @cached_property
    def _imei_patch(self) -> _Patch:
        return _Patch(self.imeis, np.uint32)

    @cached_property
    def _owner_patch(self) -> _Patch:
        return _Patch(self.owners, np.uint64)

    @cached_property
    def _cartable_patch(self) -> _Patch:
        return _Patch(self.cartables, np.uint32)

    @cached_property
    def _black_patch(self) -> _Patch:
        return _Patch(self.black, np.uint8)

    @cached_property
    def _operator_keys(self) -> np.ndarray:
        return np.unique(np.array([k for k, _ in self.operator_sims], dtype=np.uint64))

    def __len__(self) -> int:
        return (len(self.imeis) + len(self.owners) + len(self.cartables)
                + len(self.operator_sims) + len(self.black))

    @property
    def next_device(self) -> int:
        return self.base_devices + len(self.devices)

    # The decision's side: patch what the snapshot answered, for a whole batch.

    def patch_imeis(self, keys: np.ndarray, registered: np.ndarray, device_slot: np.ndarray,
                    black: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        has, slot = self._imei_patch.find(keys)
        device_slot = np.where(has, slot, device_slot)
        registered = np.where(has, slot != NO_DEVICE, registered)
        has, code = self._black_patch.find(keys)
        return registered, device_slot, np.where(has, code, black)

    def patch_owners(self, device_slot: np.ndarray, owner: np.ndarray) -> np.ndarray:
        if not self.owners:  # most of the time, and a dozen array passes saved per batch
            return owner
        device = np.where(device_slot != NO_DEVICE, device_slot >> np.uint32(SLOT_BITS), 0)
        has, value = self._owner_patch.find(device.astype(np.uint64))
        return np.where(has & (device_slot != NO_DEVICE), value, owner)

    def patch_cartables(self, msisdns: np.ndarray, cartable: np.ndarray) -> np.ndarray:
        if not self.cartables:
            return cartable
        has, value = self._cartable_patch.find(msisdns)
        return np.where(has, value, cartable)

    def patch_operator_sims(self, keys: np.ndarray, msisdns: np.ndarray,
                            is_operator: np.ndarray) -> np.ndarray:
        if not len(self._operator_keys):
            return is_operator
        out = is_operator.copy()
        for i in np.flatnonzero(np.isin(keys, self._operator_keys)).tolist():
            value = self.operator_sims.get((int(keys[i]), int(msisdns[i])))
            if value is not None:
                out[i] = value
        return out

    # The registry's side: changes applied, pure.

    def apply(self, change: Change, time_ms: int, lists: Lists, devices: Devices) -> Overlay:
        draft = OverlayDraft(self, lists, devices)
        draft.apply(RegistryEvent("", time_ms, change))
        return draft.finish()

    def apply_all(self, events: Iterable[RegistryEvent], lists: Lists,
                  devices: Devices) -> tuple[Overlay, list[tuple[RegistryEvent, Inapplicable]]]:
        """The events that apply, applied in order; and those that do not, with why."""
        events = list(events)
        self.prefetch([k for e in events for k in mentioned_keys(e.change)], lists, devices)
        draft = OverlayDraft(self, lists, devices)
        refused = []
        for event in events:
            try:
                draft.apply(event)
            except Inapplicable as exc:
                refused.append((event, exc))
        return draft.finish(), refused

    def rebase(self, lists: Lists, devices: Devices,
               watermark: Mapping[int, LogPosition]) -> tuple[Overlay, int]:
        """The same events over another snapshot, but those it holds (read before its
        `watermark`: a fold's); and how many no longer apply there (a device the new
        snapshot does not have)."""
        fresh = Overlay(base_devices=devices.count, read_to=_later(self.read_to, watermark))
        after = [e for e in self.events if e.read_at is None or not e.read_at.before(watermark)]
        rebased, refused = fresh.apply_all(after, lists, devices)
        return rebased, len(refused)

    def at(self, positions: Mapping[int, LogPosition]) -> Overlay:
        return replace(self, read_to={**self.read_to, **positions})

    def _copy(self) -> Overlay:
        return replace(self, imeis=dict(self.imeis), owners=dict(self.owners),
                       device_ids=dict(self.device_ids), devices=dict(self.devices),
                       cartables=dict(self.cartables), operator_sims=dict(self.operator_sims),
                       black=dict(self.black))

    def _check(self, change: Change, lists: Lists, devices: Devices) -> None:
        match change:
            case DeviceDeregistered() | OwnershipSet():
                self._device_of(change.device.device_id, change.device.imei_keys, lists,
                                devices)
            case ImeiReplaced():
                if self.device_slot(change.old_key, lists, devices) == NO_DEVICE:
                    raise Inapplicable(f"IMEI {change.old_key:014d} is in no device")

    def _mutate(self, change: Change, time_ms: int, lists: Lists, devices: Devices) -> None:
        """Only ever on a private copy (`OverlayDraft`); `_check` has passed."""
        imeis = self.imeis
        match change:
            case DeviceRegistered():
                self._registered(change, time_ms, lists, devices)
            case DeviceDeregistered():
                device = self._device_of(change.device.device_id, change.device.imei_keys,
                                         lists, devices)
                for key in self.device_keys(device, lists, devices):
                    imeis[key] = int(NO_DEVICE)
                # Gone, not forgotten: an id a folded snapshot holds must stop naming it too.
                for device_id in (self._ids_of(device, devices) if device != KEYLESS_DEVICE
                                  else [change.device.device_id]):
                    self.device_ids[device_id] = NO_DEVICE_INT
                self.owners[device] = int(NO_OWNER)
            case OwnershipSet():
                device = self._device_of(change.device.device_id, change.device.imei_keys,
                                         lists, devices)
                self.owners[device] = change.owner_msisdn
            case CartableChanged():
                for msisdn in change.msisdns:
                    if change.linked:
                        self.cartables[msisdn] = change.cartable_id
                    elif self._cartable(msisdn, devices) == change.cartable_id:
                        self.cartables[msisdn] = int(NO_CARTABLE)
            case OperatorSimChanged():
                pair = (change.imei_key, change.msisdn)
                self.operator_sims[pair] = change.set
            case ImeiReplaced():
                slot = self.device_slot(change.old_key, lists, devices)
                imeis[change.old_key] = int(NO_DEVICE)
                imeis[change.new_key] = slot
            case BlacklistChanged():
                code = BLACK_REASONS.index(change.reason) if change.reason else NO_REASON
                self.black.update(dict.fromkeys(change.imei_keys, code))
            case _:
                raise AssertionError(f"no rule for {type(change).__name__}")  # Change is closed

    def _registered(self, change: DeviceRegistered, time_ms: int, lists: Lists,
                    devices: Devices) -> None:
        imeis = self.imeis
        known = self.device_of_id(change.device.device_id, devices)
        if known == KEYLESS_DEVICE:  # it had no IMEI left: numbered as a new one
            known = None
        device = known if known is not None else self.next_device
        if known is not None:  # registered again: its slots are what this event says
            for key in self.device_keys(device, lists, devices):
                imeis[key] = int(NO_DEVICE)
        for slot, key in enumerate(change.device.imei_keys[:MAX_SLOTS]):
            imeis[key] = (device << SLOT_BITS) | slot
        day = change.entry_date or datetime.fromtimestamp(time_ms / 1000, timezone.utc).date()
        if change.device.device_id is not None:
            self.device_ids[change.device.device_id] = device
        self.owners[device] = int(NO_OWNER)
        if device >= self.base_devices:  # a folded device keeps its source and date: no
            self.devices[device] = NewDevice(change.source, day)  # decision reads them

    def prefetch(self, keys: list[int], lists: Lists, devices: Devices) -> None:
        missing = np.unique(np.array([k for k in keys if k not in self.snapshot_slots],
                                     dtype=np.uint64))
        if len(missing):
            slots = devices.device_slots(lists.white_index.rows(missing))
            self.snapshot_slots.update(zip(missing.tolist(), slots.tolist()))

    def device_slot(self, key: int, lists: Lists, devices: Devices) -> int:
        if key in self.imeis:
            return self.imeis[key]
        if key in self.snapshot_slots:
            return self.snapshot_slots[key]
        # Not cached: what outside callers ask (a status query) must not grow the cache.
        rows = lists.white_index.rows(np.array([key], dtype=np.uint64))
        return int(devices.device_slots(rows)[0])

    def _device_of(self, device_id: str | None, keys: tuple[int, ...], lists: Lists,
                   devices: Devices) -> int:
        device = self.device_of_id(device_id, devices)
        if device is not None:
            return device
        if keys:
            slot = self.device_slot(keys[0], lists, devices)
            if slot != NO_DEVICE:
                return slot >> SLOT_BITS
        imeis = f"with IMEI {', '.join(f'{k:014d}' for k in keys)}" if keys else None
        raise Inapplicable(" ".join(filter(None, ("no device", device_id, imeis))))

    def device_of_id(self, device_id: str | None, devices: Devices) -> int | None:
        """The device the registry's id names now: the overlay's, else the snapshot's."""
        if device_id is None:
            return None
        device = self.device_ids.get(device_id)
        if device is None:
            device = devices.ids.get(device_id)
        return None if device is None or device == NO_DEVICE_INT else device

    def _ids_of(self, device: int, devices: Devices) -> list[str]:
        named = [name for name, d in self.device_ids.items() if d == device]
        return named + [name for name in devices.ids.names_of(device)
                        if name not in self.device_ids]

    def device_keys(self, device: int, lists: Lists, devices: Devices) -> list[int]:
        """The IMEI keys that are the device's slots now."""
        keys = set()
        if device < self.base_devices:
            keys = {s.imei_key for s in devices.device(device, lists.white_index).slots}
        keys |= {k for k, s in self.imeis.items()
                 if s != NO_DEVICE and s >> SLOT_BITS == device}
        slots = {k: self.device_slot(k, lists, devices) for k in keys}
        return sorted(k for k, s in slots.items() if s != NO_DEVICE and s >> SLOT_BITS == device)

    def _cartable(self, msisdn: int, devices: Devices) -> int:
        if msisdn in self.cartables:
            return self.cartables[msisdn]
        return int(devices.cartables.of(np.array([msisdn], dtype=np.uint64))[0])


def _later(read_to: Mapping[int, LogPosition],
           watermark: Mapping[int, LogPosition]) -> dict[int, LogPosition]:
    """Per partition, the further of the two: a snapshot folded past what this process has
    read holds those events already."""
    return {p: max(read_to.get(p, mark), mark) for p, mark in
            {**read_to, **watermark}.items()}


def mentioned_keys(change: Change) -> tuple[int, ...]:
    """The IMEIs whose device applying the change looks up."""
    match change:
        case DeviceRegistered() | DeviceDeregistered() | OwnershipSet():
            return change.device.imei_keys
        case ImeiReplaced():
            return (change.old_key,)
    return ()


def touched_by(change: Change, overlay: Overlay, lists: Lists,
               devices: Devices) -> tuple[set[int], set[int]]:
    """(IMEI keys, MSISDNs) whose notices the change may resolve, judged after it."""
    imeis, msisdns = set(mentioned_keys(change)), set()
    match change:
        case DeviceRegistered() | DeviceDeregistered() | OwnershipSet():
            device = overlay.device_of_id(change.device.device_id, devices)
            if device is not None:
                imeis |= set(overlay.device_keys(device, lists, devices))
            if isinstance(change, OwnershipSet):
                msisdns.add(change.owner_msisdn)
        case CartableChanged():
            msisdns |= set(change.msisdns)
        case OperatorSimChanged():
            imeis.add(change.imei_key)
            msisdns.add(change.msisdn)
        case ImeiReplaced():
            imeis.add(change.new_key)
        case BlacklistChanged():
            imeis |= set(change.imei_keys)
    return imeis, msisdns


class OverlayDraft:
    """Events applied in place to a private copy of an overlay: a poll of events, or the
    thousands restored at start, cost one copy of the maps rather than one each."""

    def __init__(self, origin: Overlay, lists: Lists, devices: Devices) -> None:
        self.origin = origin
        self.applied: list[RegistryEvent] = []
        self._lists = lists
        self._devices = devices
        self._work = origin._copy()

    def prefetch(self, changes: list[Change]) -> None:
        self._work.prefetch([k for c in changes for k in mentioned_keys(c)], self._lists,
                            self._devices)

    def check(self, change: Change) -> None:
        """Raises Inapplicable when the change names something the state does not have."""
        self._work._check(change, self._lists, self._devices)

    def apply(self, event: RegistryEvent) -> None:
        """Raises Inapplicable, and changes nothing, when the change does not apply."""
        self.check(event.change)
        self._work._mutate(event.change, event.time_ms, self._lists, self._devices)
        self.applied.append(event)

    def finish(self, positions: Mapping[int, LogPosition] | None = None) -> Overlay:
        done = replace(self._work, events=self.origin.events + tuple(self.applied))
        return done.at(positions) if positions else done


def empty_overlay(devices: Devices) -> Overlay:
    return Overlay(base_devices=devices.count)
