"""Registry changes since the snapshot, laid over it.

The snapshot's columns are sized for a country and built aside; a registration, a transfer or
a black-listing must count within a second. So changes go to an overlay: small maps from
IMEI key, device, MSISDN or (IMEI, MSISDN) pair to what is true now, and the decision
consults them after the snapshot, for the whole batch at once (`patch_*`). Applying a change
is pure and returns a new overlay; the worker swaps it in as it swaps generations. The
overlay is rebuilt at each start from the events stored in PostgreSQL, over whatever
snapshot is current then: a national snapshot that already holds a change makes applying it
again change nothing.

A poll of k changes costs O(k log n) over an overlay of n entries: each map is a frozen layer
of sorted columns under a small layer of recent changes (enforcer/engine/layers.py), a draft
copies only the small layers, and the events are appended to a list the overlays of one
lineage share (enforcer/engine/eventlog.py). The small layers are merged into new frozen
layers when they have grown (`merged`, O(n)): off the poll path, on a thread of the
registry consumer, which adopts the result at its next poll (`adopted`).

Devices registered by events are numbered after the snapshot's devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from enforcer.engine.lists import BLACK_REASONS, NO_REASON, Lists
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Change,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent)
from enforcer.engine.devices import (KEYLESS_DEVICE, MAX_SLOTS, NO_CARTABLE, NO_DEVICE,
                                     NO_DEVICE_INT, NO_OWNER_INT, SLOT_BITS, Devices, Source)
from enforcer.engine.eventlog import EventLog, Events
from enforcer.engine.layers import (GONE, CodedLayer, IdLayer, LayeredMap, MapDraft,
                                    PairLayer, SlotLayer, SortedLayer)

# How far a partition of the registry topic has been read: (incarnation, next offset), which
# orders as the events came: a recreated topic is the partition's next incarnation, its
# offsets starting again at 0 (enforcer/db/registry_events.py).
LogPosition = tuple[int, int]


class Inapplicable(ValueError):
    """The change names something the state does not have (e.g. an unknown device)."""


# The small layers' entries (every map together) past which an overlay asks to be merged
# into its frozen layers. Each poll copies the small layers and sorts them once for the
# decisions' lookups: at 8,192 entries that is about a millisecond; a merge at 5 M entries
# takes 0.15 s of a background thread (bench/overlay.py), here once every ~5,000 changes (a
# national registry's 100,000-200,000 a day: a few dozen merges a day).
MERGE_AT = 8192
# A draft's small layers past this many times `merge_at` are merged as it finishes, on the
# caller's thread: a restart laying every stored event, or background merges that could not
# keep up. Memory stays bounded whatever the caller does.
MERGE_NOW_FACTOR = 8


@dataclass(frozen=True)
class NewDevice:
    """A device registered by an event: what the snapshot's columns hold for the others."""

    source: Source
    registered_on: date


def _slots() -> LayeredMap:
    return LayeredMap(SlotLayer.empty_slots(SLOT_BITS, NO_DEVICE_INT))


def _sorted(values_dtype: type) -> Callable[[], LayeredMap]:
    return lambda: LayeredMap(SortedLayer.empty(values_dtype))


def _ids() -> LayeredMap:
    return LayeredMap(IdLayer.of({}))


_SOURCES = tuple(Source)
_DAY_BITS = 32


def _packed(device: NewDevice) -> int:
    return _SOURCES.index(device.source) << _DAY_BITS | device.registered_on.toordinal()


def _unpacked(packed: int) -> NewDevice:
    return NewDevice(_SOURCES[packed >> _DAY_BITS],
                     date.fromordinal(packed & ((1 << _DAY_BITS) - 1)))


def _new_devices() -> LayeredMap:
    return LayeredMap(CodedLayer(SortedLayer.empty(np.uint64), _packed, _unpacked))


def _pairs() -> LayeredMap:
    return LayeredMap(PairLayer.of({}))


# Every map of an overlay, each a LayeredMap (a MapDraft in a draft).
_MAPS = ("imeis", "owners", "device_ids", "devices", "cartables", "operator_sims", "black")


class _Lookups:
    """What an overlay and a draft of one both answer, from their maps."""

    base_devices: int
    imeis: Any  # LayeredMap or MapDraft of IMEI key -> device_slot | NO_DEVICE
    device_ids: Any
    cartables: Any
    # device -> the keys the small layer of `imeis` puts on it, and the ids the small layer
    # of `device_ids` gives it (the frozen layers have their own indexes): a device's keys
    # and ids found without a scan.
    recent_keys: Mapping[int, tuple[int, ...]]
    recent_ids: Mapping[int, tuple[str, ...]]
    snapshot_slots: dict[int, int]

    def prefetch(self, keys: list[int], lists: Lists, devices: Devices) -> None:
        missing = np.unique(np.array([k for k in keys if k not in self.snapshot_slots],
                                     dtype=np.uint64))
        if len(missing):
            slots = devices.device_slots(lists.white_index.rows(missing))
            self.snapshot_slots.update(zip(missing.tolist(), slots.tolist()))

    def device_slot(self, key: int, lists: Lists, devices: Devices) -> int:
        slot = self.imeis.get(key)
        if slot is not None:
            return slot
        if key in self.snapshot_slots:
            return self.snapshot_slots[key]
        # Not cached: what outside callers ask (a status query) must not grow the cache.
        rows = lists.white_index.rows(np.array([key], dtype=np.uint64))
        return int(devices.device_slots(rows)[0])

    def device_of_id(self, device_id: str | None, devices: Devices) -> int | None:
        """The device the registry's id names now: the overlay's, else the snapshot's (a
        folded id); None for an id neither knows, or one deregistered since."""
        if device_id is None:
            return None
        device = self.device_ids.get(device_id)
        if device is None:
            device = devices.ids.get(device_id)
        return None if device is None or device == NO_DEVICE_INT else device

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

    def device_keys(self, device: int, lists: Lists, devices: Devices) -> list[int]:
        """The IMEI keys that are the device's slots now: the snapshot's rows near the
        device (`Devices.other_slots_of`) and the overlay's lookups, whatever either holds."""
        keys = set()
        if device < self.base_devices:
            keys = {s.imei_key for s in devices.device(device, lists.white_index).slots}
        keys.update(self.imeis.frozen.keys_of(device))
        keys.update(self.recent_keys.get(device, ()))
        slots = {k: self.device_slot(k, lists, devices) for k in keys}
        return sorted(k for k, s in slots.items() if s != NO_DEVICE and s >> SLOT_BITS == device)

    def _cartable(self, msisdn: int, devices: Devices) -> int:
        cartable = self.cartables.get(msisdn)
        if cartable is not None:
            return cartable
        return int(devices.cartables.of(np.array([msisdn], dtype=np.uint64))[0])


@dataclass(frozen=True, eq=False)
class Overlay(_Lookups):
    """Never changed once made (a decision may be reading it): `OverlayDraft` changes a
    private copy of its small layers and makes the next one from it. Only `snapshot_slots`,
    a cache of the snapshot's answers for the IMEIs registry events named, grows.

    Each map is a read-only Mapping (enforcer/engine/layers.py): a frozen layer of sorted
    columns under a small layer of what changed since."""

    base_devices: int  # devices in the snapshot; event-registered ones are numbered after
    imeis: LayeredMap = field(default_factory=_slots)  # key -> device_slot | NO_DEVICE
    owners: LayeredMap = field(default_factory=_sorted(np.uint64))  # device -> MSISDN | NO_...
    device_ids: LayeredMap = field(default_factory=_ids)  # registry's id -> device
    devices: LayeredMap = field(default_factory=_new_devices)  # device -> NewDevice
    cartables: LayeredMap = field(default_factory=_sorted(np.uint32))  # MSISDN -> cartable
    operator_sims: LayeredMap = field(default_factory=_pairs)  # (key, MSISDN) -> bool
    black: LayeredMap = field(default_factory=_sorted(np.uint8))  # key -> BLACK_REASONS index
    recent_keys: Mapping[int, tuple[int, ...]] = field(default_factory=dict, repr=False)
    recent_ids: Mapping[int, tuple[str, ...]] = field(default_factory=dict, repr=False)
    # The events these maps hold, in the order applied (`events`): laid again over a new
    # snapshot. Shared with the overlays of this lineage; the first `log_end` are this one's.
    log: EventLog = field(default_factory=EventLog, repr=False)
    log_end: int = 0
    # The registry topic's partitions read this far: every event stored before these
    # positions is in the maps (what the consistency check relies on).
    read_to: dict[int, LogPosition] = field(default_factory=dict)
    # The snapshot's answer for IMEIs changes have named (key -> device_slot): a cache,
    # shared by the overlays made from this one, which all lie over the same snapshot. A
    # lookup of one key costs about as much as one of thousands, so a batch of events is
    # looked up at once (`prefetch`).
    snapshot_slots: dict[int, int] = field(default_factory=dict, repr=False)
    merge_at: int = MERGE_AT  # small layers' entries past which `wants_merge`

    def __len__(self) -> int:
        return (len(self.imeis) + len(self.owners) + len(self.cartables)
                + len(self.operator_sims) + len(self.black))

    @property
    def next_device(self) -> int:
        return self.base_devices + len(self.devices)

    @property
    def events(self) -> Events:
        return self.log.upto(self.log_end)

    # The decision's side: patch what the snapshot answered, for a whole batch, in
    # O(batch log n).

    def patch_imeis(self, keys: np.ndarray, registered: np.ndarray, device_slot: np.ndarray,
                    black: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        has, slot = self.imeis.find(keys)
        device_slot = np.where(has, slot, device_slot)
        registered = np.where(has, slot != NO_DEVICE, registered)
        has, code = self.black.find(keys)
        return registered, device_slot, np.where(has, code, black)

    def patch_owners(self, device_slot: np.ndarray, owner: np.ndarray) -> np.ndarray:
        if not self.owners:  # most of the time, and a dozen array passes saved per batch
            return owner
        device = np.where(device_slot != NO_DEVICE, device_slot >> np.uint32(SLOT_BITS), 0)
        has, value = self.owners.find(device.astype(np.uint64))
        return np.where(has & (device_slot != NO_DEVICE), value, owner)

    def patch_cartables(self, msisdns: np.ndarray, cartable: np.ndarray) -> np.ndarray:
        if not self.cartables:
            return cartable
        has, value = self.cartables.find(msisdns)
        return np.where(has, value, cartable)

    def patch_operator_sims(self, keys: np.ndarray, msisdns: np.ndarray,
                            is_operator: np.ndarray) -> np.ndarray:
        if not self.operator_sims:
            return is_operator
        has, value = self.operator_sims.find_pairs(keys, msisdns)
        return np.where(has, value, is_operator)

    # The maps as columns (what a fold writes into a snapshot).

    def columns(self, name: str) -> tuple[np.ndarray, ...]:
        """One map's entries as arrays sorted by key, O(n): (keys, values) for imeis,
        owners, cartables, black and device_ids (text keys); (IMEI keys, MSISDNs, values)
        for operator_sims; (devices, index into `Source`, registered_on as a proleptic
        ordinal day) for devices."""
        layer = getattr(self, name).merged().frozen
        if isinstance(layer, PairLayer):
            return layer.imeis, layer.msisdns, layer.values
        if isinstance(layer, CodedLayer):
            packed = layer.packed.values
            return (layer.packed.keys, (packed >> np.uint64(_DAY_BITS)).astype(np.uint8),
                    (packed & np.uint64((1 << _DAY_BITS) - 1)).astype(np.int64))
        return layer.keys, layer.values

    def frozen_arrays(self) -> dict[str, tuple[np.ndarray, ...]]:
        """Every map as the columns of its layers merged, by map name: what
        `from_frozen_arrays` makes the same maps of again (a fold's process takes a worker's
        changes so, O(n), rather than applying its stored events again one by one)."""
        arrays: dict[str, tuple[np.ndarray, ...]] = {}
        for name in _MAPS:
            layer = getattr(self, name).merged().frozen
            if isinstance(layer, PairLayer):
                arrays[name] = (layer.imeis, layer.msisdns, layer.values)
            elif isinstance(layer, CodedLayer):
                arrays[name] = (layer.packed.keys, layer.packed.values)
            else:
                arrays[name] = (layer.keys, layer.values)
        return arrays

    @classmethod
    def from_frozen_arrays(cls, base_devices: int, arrays: Mapping[str, tuple[np.ndarray, ...]],
                           read_to: Mapping[int, LogPosition]) -> Overlay:
        """The overlay whose maps `frozen_arrays` gave, read to `read_to`, over a snapshot of
        `base_devices` devices. It holds no events (its log is empty): it answers, and folds,
        as the overlay it came from; it cannot be laid over another snapshot (`rebase`)."""
        return cls(
            base_devices=base_devices,
            imeis=LayeredMap(SlotLayer.of_arrays(*arrays["imeis"], SLOT_BITS, NO_DEVICE_INT)),
            owners=LayeredMap(SortedLayer(*arrays["owners"])),
            device_ids=LayeredMap(IdLayer.of_arrays(*arrays["device_ids"])),
            devices=LayeredMap(CodedLayer(SortedLayer(*arrays["devices"]), _packed, _unpacked)),
            cartables=LayeredMap(SortedLayer(*arrays["cartables"])),
            operator_sims=LayeredMap(PairLayer(*arrays["operator_sims"])),
            black=LayeredMap(SortedLayer(*arrays["black"])),
            read_to=dict(read_to))

    # The registry's side: changes applied, pure.

    def apply(self, change: Change, time_ms: int, lists: Lists, devices: Devices) -> Overlay:
        draft = OverlayDraft(self, lists, devices)
        draft.apply(RegistryEvent("", time_ms, change))
        return draft.finish()

    def apply_all(self, events: Iterable[RegistryEvent], lists: Lists,
                  devices: Devices) -> tuple[Overlay, list[tuple[RegistryEvent, Inapplicable]]]:
        """The events that apply, applied in order; and those that do not, with why. Many
        events (a restart's) are applied a draft's worth at a time, so that the small
        layers are merged as they grow."""
        events = list(events)
        self.prefetch([k for e in events for k in mentioned_keys(e.change)], lists, devices)
        chunk = self.merge_at * MERGE_NOW_FACTOR
        overlay, refused = self, []
        for start in range(0, max(len(events), 1), chunk):
            draft = OverlayDraft(overlay, lists, devices)
            for event in events[start:start + chunk]:
                try:
                    draft.apply(event)
                except Inapplicable as exc:
                    refused.append((event, exc))
            overlay = draft.finish()
        return overlay, refused

    def rebase(self, lists: Lists, devices: Devices,
               watermark: Mapping[int, LogPosition]) -> tuple[Overlay, int]:
        """The same events over another snapshot, but those it holds (read before its
        `watermark`: a fold's); and how many no longer apply there (a device the new
        snapshot does not have)."""
        fresh = Overlay(base_devices=devices.count, read_to=_later(self.read_to, watermark),
                        merge_at=self.merge_at)
        rebased, refused = fresh.apply_all(not_held(self.events, watermark), lists, devices)
        return rebased, len(refused)

    def caught_up(self, rebased: Overlay, since: Overlay, lists: Lists, devices: Devices,
                  watermark: Mapping[int, LogPosition]) -> tuple[Overlay, int] | None:
        """`rebased` (`since.rebase(lists, devices, watermark)`) with the events this overlay
        applied after `since` laid over it too, read as far as this one: what this overlay
        rebases to, at the cost of those events alone; and how many of them no longer apply.
        None when this overlay does not descend from `since` by events added (its log was
        replaced: a repair, a poll applied again over a state that moved on); then only a
        whole rebase will do."""
        if self.log is not since.log or self.log_end < since.log_end:
            return None
        arrived = not_held(self.log.upto(self.log_end)[since.log_end:], watermark)
        caught, refused = rebased.apply_all(arrived, lists, devices)
        return replace(caught, read_to=_later(self.read_to, watermark)), len(refused)

    def at(self, positions: Mapping[int, LogPosition]) -> Overlay:
        """Read as far as `positions` too: per partition, the further (a snapshot folded past
        a poll holds its events already, and its watermark is how far this overlay is)."""
        return replace(self, read_to=_later(self.read_to, positions))

    # Merging the small layers into the frozen ones.

    @property
    def wants_merge(self) -> bool:
        return self._recent_entries() >= self.merge_at

    def _recent_entries(self) -> int:
        return sum(len(getattr(self, name).recent) for name in _MAPS)

    def merged(self) -> Overlay:
        """The same overlay with every small layer merged into its frozen layer: O(n), and
        pure, so it may run on another thread while polls go on (`adopted`)."""
        return replace(self, recent_keys={}, recent_ids={},
                       **{name: getattr(self, name).merged() for name in _MAPS})

    def adopted(self, merge: Overlay, made_from: Overlay) -> Overlay | None:
        """This overlay over the frozen layers of `merge` (made from `made_from`, an older
        overlay of this lineage), its small layers keeping only what changed after; None
        when this overlay does not descend from `made_from` (a new generation came in)."""
        maps = {}
        for name in _MAPS:
            adopted = getattr(self, name).adopted(getattr(merge, name),
                                                  getattr(made_from, name))
            if adopted is None:
                return None
            maps[name] = adopted
        return replace(self, recent_keys=_by_device(maps["imeis"].recent, SLOT_BITS),
                       recent_ids=_by_device(maps["device_ids"].recent, 0), **maps)


def _by_device(recent: Mapping[Any, Any], shift: int) -> dict[int, tuple[Any, ...]]:
    """device -> the small layer's keys whose value (>> shift) is the device."""
    out: dict[int, tuple[Any, ...]] = {}
    for key, value in recent.items():
        if value is not GONE and value != NO_DEVICE_INT:
            out[value >> shift] = out.get(value >> shift, ()) + (key,)
    return out


def not_held(events: Iterable[RegistryEvent],
             watermark: Mapping[int, LogPosition]) -> list[RegistryEvent]:
    """The events a snapshot folded to `watermark` does not hold: those read at or after it,
    and those not read from the topic."""
    return [e for e in events if e.read_at is None or not e.read_at.before(watermark)]


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


class OverlayDraft(_Lookups):
    """Events applied in place to a private copy of an overlay's small layers: a poll of k
    events costs O(k log n) and the copy of the small layers, whatever the overlay holds."""

    def __init__(self, origin: Overlay, lists: Lists, devices: Devices) -> None:
        self.origin = origin
        self.applied: list[RegistryEvent] = []
        self._lists = lists
        self._devices = devices
        self.base_devices = origin.base_devices
        self.snapshot_slots = origin.snapshot_slots
        self.imeis = MapDraft(origin.imeis)
        self.owners = MapDraft(origin.owners)
        self.device_ids = MapDraft(origin.device_ids)
        self.devices = MapDraft(origin.devices)
        self.cartables = MapDraft(origin.cartables)
        self.operator_sims = MapDraft(origin.operator_sims)
        self.black = MapDraft(origin.black)
        self.recent_keys = dict(origin.recent_keys)
        self.recent_ids = dict(origin.recent_ids)

    def prefetch(self, changes: list[Change]) -> None:  # type: ignore[override]
        super().prefetch([k for c in changes for k in mentioned_keys(c)], self._lists,
                         self._devices)

    def _check(self, change: Change) -> None:
        """Raises Inapplicable when the change names something the state does not have."""
        lists, devices = self._lists, self._devices
        match change:
            case DeviceDeregistered() | OwnershipSet():
                self._device_of(change.device.device_id, change.device.imei_keys, lists,
                                devices)
            case ImeiReplaced():
                if self.device_slot(change.old_key, lists, devices) == NO_DEVICE:
                    raise Inapplicable(f"IMEI {change.old_key:014d} is in no device")

    def apply(self, event: RegistryEvent) -> None:
        """Raises Inapplicable, and changes nothing, when the change does not apply."""
        self._check(event.change)
        self._mutate(event.change, event.time_ms)
        self.applied.append(event)

    def finish(self, positions: Mapping[int, LogPosition] | None = None) -> Overlay:
        log, end = self.origin.log.extended(self.origin.log_end, self.applied)
        done = replace(self.origin, log=log, log_end=end, recent_keys=self.recent_keys,
                       recent_ids=self.recent_ids,
                       **{name: getattr(self, name).finish() for name in _MAPS})
        if done._recent_entries() >= done.merge_at * MERGE_NOW_FACTOR:
            done = done.merged()
        return done.at(positions) if positions else done

    def _mutate(self, change: Change, time_ms: int) -> None:
        """`_check` has passed."""
        lists, devices = self._lists, self._devices
        match change:
            case DeviceRegistered():
                self._registered(change, time_ms)
            case DeviceDeregistered():
                device = self._device_of(change.device.device_id, change.device.imei_keys,
                                         lists, devices)
                for key in self.device_keys(device, lists, devices):
                    self._set_slot(key, NO_DEVICE_INT)
                # Gone, not forgotten: an id a folded snapshot holds stops naming it too. A
                # keyless device's ids name no device in particular: only this one goes.
                ids = ({*self.device_ids.frozen.ids_of(device), *self.recent_ids.get(device, ()),
                        *devices.ids.names_of(device)} if device != KEYLESS_DEVICE
                       else {change.device.device_id})
                for device_id in ids:
                    if self.device_of_id(device_id, devices) == device:
                        self._set_id(device_id, NO_DEVICE_INT)
                self.owners[device] = NO_OWNER_INT
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
                self.operator_sims[(change.imei_key, change.msisdn)] = change.set
            case ImeiReplaced():
                slot = self.device_slot(change.old_key, lists, devices)
                self._set_slot(change.old_key, NO_DEVICE_INT)
                self._set_slot(change.new_key, slot)
            case BlacklistChanged():
                code = BLACK_REASONS.index(change.reason) if change.reason else NO_REASON
                for key in change.imei_keys:
                    self.black[key] = code
            case _:
                raise AssertionError(f"no rule for {type(change).__name__}")  # Change is closed

    def _registered(self, change: DeviceRegistered, time_ms: int) -> None:
        lists, devices = self._lists, self._devices
        device_id = change.device.device_id
        known = self.device_of_id(device_id, devices)
        if known == KEYLESS_DEVICE:  # it had no IMEI left: numbered as a new one
            known = None
        device = known if known is not None else self.base_devices + len(self.devices)
        if known is not None:  # registered again: its slots are what this event says
            for key in self.device_keys(device, lists, devices):
                self._set_slot(key, NO_DEVICE_INT)
        for slot, key in enumerate(change.device.imei_keys[:MAX_SLOTS]):
            self._set_slot(key, (device << SLOT_BITS) | slot)
        day = change.entry_date or datetime.fromtimestamp(time_ms / 1000, timezone.utc).date()
        if device_id is not None:
            self._set_id(device_id, device)
        self.owners[device] = NO_OWNER_INT
        if known is None:  # numbered after every device the map holds
            self.devices.add(device, NewDevice(change.source, day))
        elif device >= self.base_devices:  # a folded device keeps its source and date: no
            self.devices[device] = NewDevice(change.source, day)  # decision reads them

    def _set_slot(self, key: int, slot: int) -> None:
        """imeis[key] = slot, with the small layer's index of each device's keys."""
        _unindex(self.recent_keys, key, self.imeis.recent.get(key), SLOT_BITS)
        self.imeis[key] = slot
        if slot != NO_DEVICE_INT:
            device = slot >> SLOT_BITS
            self.recent_keys[device] = self.recent_keys.get(device, ()) + (key,)

    def _set_id(self, device_id: str, device: int) -> None:
        """device_ids[device_id] = device (NO_DEVICE_INT: deregistered, which shadows a
        folded snapshot's id), with the small layer's index of each device's ids."""
        _unindex(self.recent_ids, device_id, self.device_ids.recent.get(device_id), 0)
        self.device_ids[device_id] = device
        if device != NO_DEVICE_INT:
            self.recent_ids[device] = self.recent_ids.get(device, ()) + (device_id,)


def _unindex(index: dict[int, tuple[Any, ...]], key: Any, old: Any, shift: int) -> None:
    """The key off the index entry of the device its old value (>> shift) named."""
    if old is not None and old is not GONE and old != NO_DEVICE_INT:
        index[old >> shift] = tuple(k for k in index[old >> shift] if k != key)


def empty_overlay(devices: Devices) -> Overlay:
    return Overlay(base_devices=devices.count)
