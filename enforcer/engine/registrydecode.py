"""Registry event messages (topic `registry-events`) in, typed changes
(`enforcer.engine.registry_events`) or dead letters out.

JSON objects with `event_id`, `type` and `time` (RFC 3339 date-time or epoch milliseconds), and per
type (docs/messages.md):

- `device_registered` {device_id, imeis in slot order, source, entry_date for passengers}
- `device_deregistered` {device_id or imeis}
- `ownership_set` {device_id or imeis, owner_msisdn, via}
- `cartable_linked` / `cartable_unlinked` {cartable_id, msisdns}
- `operator_sim_set` / `operator_sim_removed` {imei, msisdn}
- `imei_replaced` {old_imei, new_imei}
- `blacklisted` {imeis, reason} / `unblacklisted` {imeis}

msgspec checks the shape (a tagged union on `type`); identities then go through the same
parsers as attach events. Pure: the caller gives the accepted time window.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Union

import msgspec

from enforcer.engine.attachdecode import (JSON_ERRORS, DeadLetter, Reason, TimeWindow,
                                          duplicate_key, timestamp_ms)
from enforcer.clock import TimeError
from enforcer.engine.imei import WHY, ImeiRules, parse_imei
from enforcer.engine.lists import BlackReason
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Change, Device,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent, Via)
from enforcer.engine.devices import MAX_SLOTS, NO_CARTABLE, OWNER_DIGITS, OWNER_LIMIT, Source
from enforcer.engine.subscriber import IdentityError, parse_msisdn

MAX_LISTED = 10_000  # IMEIs or MSISDNs in one event; a sweep of more comes as several events
MAX_REGISTRY_MESSAGE_BYTES = 1 << 20  # Kafka's default largest message
MAX_EVENT_ID = 200


class RegistryReason:
    """Dead-letter reasons beyond the attach decoder's."""

    UNKNOWN_TYPE = "unknown_type"
    BAD_SHAPE = "bad_shape"
    NO_DEVICE = "no_device"
    TOO_MANY = "too_many"


Number = Union[str, int]


class _Wire(msgspec.Struct, tag_field="type"):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)]
    time: Number


class _DeviceRegistered(_Wire, tag="device_registered"):
    device_id: str  # required: a replayed registration must name the same device
    imeis: list[Number]
    source: Source
    entry_date: date | None = None


class _DeviceDeregistered(_Wire, tag="device_deregistered"):
    device_id: str | None = None
    imeis: list[Number] | None = None


class _OwnershipSet(_Wire, tag="ownership_set"):
    owner_msisdn: Number
    via: Via
    device_id: str | None = None
    imeis: list[Number] | None = None


class _CartableLinked(_Wire, tag="cartable_linked"):
    cartable_id: int
    msisdns: list[Number]


class _CartableUnlinked(_Wire, tag="cartable_unlinked"):
    cartable_id: int
    msisdns: list[Number]


class _OperatorSimSet(_Wire, tag="operator_sim_set"):
    imei: Number
    msisdn: Number


class _OperatorSimRemoved(_Wire, tag="operator_sim_removed"):
    imei: Number
    msisdn: Number


class _ImeiReplaced(_Wire, tag="imei_replaced"):
    old_imei: Number
    new_imei: Number


class _Blacklisted(_Wire, tag="blacklisted"):
    imeis: list[Number]
    reason: BlackReason


class _Unblacklisted(_Wire, tag="unblacklisted"):
    imeis: list[Number]


_WIRE = (_DeviceRegistered, _DeviceDeregistered, _OwnershipSet, _CartableLinked,
         _CartableUnlinked, _OperatorSimSet, _OperatorSimRemoved, _ImeiReplaced, _Blacklisted,
         _Unblacklisted)
TYPES = frozenset(w.__struct_config__.tag for w in _WIRE)
_decoder = msgspec.json.Decoder(Union[_WIRE])  # type: ignore[valid-type]


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.letter = DeadLetter(reason, detail)


def decode_registry_event(value: bytes | None, rules: ImeiRules,
                          window: TimeWindow) -> RegistryEvent | DeadLetter:
    if value is None:
        return DeadLetter(Reason.NOT_JSON, "empty message")
    if len(value) > MAX_REGISTRY_MESSAGE_BYTES:
        return DeadLetter(Reason.TOO_LARGE,
                          f"{len(value)} bytes, at most {MAX_REGISTRY_MESSAGE_BYTES}")
    try:
        wire = _decoder.decode(value)
    except msgspec.ValidationError as exc:
        return _shape_letter(value, str(exc))
    except JSON_ERRORS as exc:
        return DeadLetter(Reason.NOT_JSON, str(exc))
    repeated = duplicate_key(value, len(msgspec.json.decode(value)))
    if repeated is not None:
        return DeadLetter(Reason.DUPLICATE_KEY, repeated)
    try:
        time_ms = timestamp_ms(wire.time)
    except TimeError as exc:
        return DeadLetter(Reason.BAD_TS, f"time: {exc}")
    if not window.admits(time_ms):
        return DeadLetter(Reason.ABSURD_TS, f"time {time_ms} is outside the accepted window")
    try:
        return RegistryEvent(wire.event_id, time_ms, _change(wire, rules))
    except _Refused as refused:
        return refused.letter


def _shape_letter(value: bytes, detail: str) -> DeadLetter:
    """Tell an unknown type apart from a known one in the wrong shape."""
    try:
        data = msgspec.json.decode(value)
    except JSON_ERRORS:
        return DeadLetter(Reason.NOT_JSON, detail)
    if not isinstance(data, dict):
        return DeadLetter(Reason.NOT_AN_OBJECT, f"a JSON {type(data).__name__}")
    if data.get("type") not in TYPES:
        return DeadLetter(RegistryReason.UNKNOWN_TYPE, f"type {data.get('type')!r}")
    return DeadLetter(RegistryReason.BAD_SHAPE, detail)


def _change(wire: _Wire, rules: ImeiRules) -> Change:
    match wire:
        case _DeviceRegistered():
            device = _device(wire.device_id, wire.imeis, rules)
            if not device.imei_keys:
                raise _Refused(Reason.BAD_IMEI, "a device needs at least one IMEI")
            if len(device.imei_keys) > MAX_SLOTS:
                raise _Refused(Reason.BAD_IMEI, f"more than {MAX_SLOTS} IMEIs")
            if len(set(device.imei_keys)) < len(device.imei_keys):
                raise _Refused(Reason.BAD_IMEI, "one IMEI in two slots")
            return DeviceRegistered(device, wire.source, wire.entry_date)
        case _DeviceDeregistered():
            return DeviceDeregistered(_device(wire.device_id, wire.imeis, rules))
        case _OwnershipSet():
            owner = _msisdn(wire.owner_msisdn)
            if owner >= OWNER_LIMIT:
                raise _Refused(Reason.BAD_MSISDN,
                               f"an owner MSISDN has at most {OWNER_DIGITS} digits")
            return OwnershipSet(_device(wire.device_id, wire.imeis, rules), owner, wire.via)
        case _CartableLinked() | _CartableUnlinked():
            if not 0 <= wire.cartable_id < int(NO_CARTABLE):
                raise _Refused(RegistryReason.BAD_SHAPE, "cartable_id out of range")
            return CartableChanged(wire.cartable_id, tuple(_msisdn(m) for m in
                                                           _bounded(wire.msisdns)),
                                   isinstance(wire, _CartableLinked))
        case _OperatorSimSet() | _OperatorSimRemoved():
            return OperatorSimChanged(_imei(wire.imei, rules), _msisdn(wire.msisdn),
                                      isinstance(wire, _OperatorSimSet))
        case _ImeiReplaced():
            return ImeiReplaced(_imei(wire.old_imei, rules), _imei(wire.new_imei, rules))
        case _Blacklisted():
            return BlacklistChanged(_imeis(wire.imeis, rules), wire.reason)
        case _Unblacklisted():
            return BlacklistChanged(_imeis(wire.imeis, rules), None)
    raise AssertionError(f"no change for {type(wire).__name__}")  # the union is closed


def _bounded(values: list[Number]) -> list[Number]:
    if len(values) > MAX_LISTED:
        raise _Refused(RegistryReason.TOO_MANY, f"{len(values)} entries, at most {MAX_LISTED}")
    return values


def _device(device_id: str | None, imeis: list[Number] | None, rules: ImeiRules) -> Device:
    keys = _imeis(imeis or [], rules)
    if device_id is None and not keys:
        raise _Refused(RegistryReason.NO_DEVICE, "neither device_id nor imeis")
    return Device(device_id, keys)


def _imeis(values: list[Number], rules: ImeiRules) -> tuple[int, ...]:
    return tuple(_imei(v, rules) for v in _bounded(values))


def _imei(value: Number, rules: ImeiRules) -> int:
    # A malformed but 14-digit IMEI still has a key: the registry may black-list a clone.
    # A number of 14 digits has none: it may be an IMEI that lost its leading zero.
    parsed = parse_imei(value, rules)
    if parsed.key is None:
        problem = parsed.problems[0]
        why = f" ({WHY[problem]})" if problem in WHY else ""
        raise _Refused(Reason.BAD_IMEI, f"{value!r}: {problem.value}{why}")
    return int(parsed.key)


def _msisdn(value: Number) -> int:
    try:
        return parse_msisdn(value)
    except IdentityError as exc:
        raise _Refused(Reason.BAD_MSISDN, str(exc)) from exc
