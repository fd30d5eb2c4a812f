"""Registry events as the engine sees them: typed changes to the registry state, with IMEIs
as keys and numbers as integers. `enforcer/engine/registrydecode.py` makes them from messages;
`enforcer/engine/overlay.py` applies them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Mapping, NamedTuple, Union

from enforcer.engine.lists import BlackReason
from enforcer.engine.devices import Source


class Via(StrEnum):
    """How a device entered an owner's cartable."""

    ACTIVATION = "activation"
    TRANSFER_DIRECT = "transfer_direct"
    TRANSFER_INDIRECT = "transfer_indirect"
    ADD_DEVICE = "add_device"


@dataclass(frozen=True)
class Device:
    """A device as an event names it: the registry's id, its IMEI keys, or both."""

    device_id: str | None
    imei_keys: tuple[int, ...]


@dataclass(frozen=True)
class DeviceRegistered:
    device: Device  # imei_keys in slot order
    source: Source
    entry_date: date | None


@dataclass(frozen=True)
class DeviceDeregistered:
    device: Device


@dataclass(frozen=True)
class OwnershipSet:
    device: Device
    owner_msisdn: int
    via: Via


@dataclass(frozen=True)
class CartableChanged:
    cartable_id: int
    msisdns: tuple[int, ...]
    linked: bool


@dataclass(frozen=True)
class OperatorSimChanged:
    imei_key: int
    msisdn: int
    set: bool


@dataclass(frozen=True)
class ImeiReplaced:
    old_key: int
    new_key: int


@dataclass(frozen=True)
class BlacklistChanged:
    imei_keys: tuple[int, ...]
    reason: BlackReason | None  # None: unblacklisted


Change = Union[DeviceRegistered, DeviceDeregistered, OwnershipSet, CartableChanged,
               OperatorSimChanged, ImeiReplaced, BlacklistChanged]


class TopicPlace(NamedTuple):
    """Where on the registry topic an event was read: a snapshot's watermark says which
    events it holds by these (enforcer/engine/fold.py)."""

    partition: int
    incarnation: int
    offset: int

    def before(self, watermark: Mapping[int, tuple[int, int]]) -> bool:
        """Read before `watermark` (partition -> (incarnation, next offset)), so held by a
        snapshot folded there."""
        mark = watermark.get(self.partition)
        return mark is not None and (self.incarnation, self.offset) < mark


@dataclass(frozen=True)
class RegistryEvent:
    event_id: str
    time_ms: int
    change: Change
    read_at: TopicPlace | None = None  # None: not read from the topic (a test, a command)
