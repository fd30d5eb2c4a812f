"""Registry changes laid over the snapshot: after each kind of change, the next attach is
decided as the registry now says."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, datetime, timezone

import msgspec
import pytest

from enforcer.follow.layover import REFUSED_NAMED, lay_over
from enforcer.config import load_config
from enforcer.db.registry_events import Position, StoredEvent

from enforcer.engine.lists import BlackReason, Lists
from enforcer.engine.overlay import Inapplicable
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Change, Device,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent, Via)
from enforcer.engine.devices import DeviceColumns, DeviceRecord, Source, build_devices
from enforcer.engine.state import EnforcementState, StateHolder
from rules.policy import Verdict
from tests.test_decide import (BUYER, DUAL, HELPER, OWNER, SINGLE, SPOUSE, STOLEN, STRANGER, T0,
                               UNOWNED, UNREGISTERED, attach, make_state)

NEW_IMEIS = (35777777000000, 35777777000010)


@pytest.fixture()
def state(policy) -> EnforcementState:
    return make_state(policy)


def applied(state: EnforcementState, *changes: Change) -> EnforcementState:
    holder = StateHolder(state)
    for change in changes:
        holder.update(lambda s, c=change: replace(
            s, overlay=s.overlay.apply(c, T0, s.lists, s.devices)))
    return holder.current


def rule(state: EnforcementState, rules, imei: int, msisdn: int) -> str:
    return attach(state, rules, imei, msisdn).rule


def test_a_registered_device_is_known_at_its_next_attach(state, rules) -> None:
    assert rule(state, rules, NEW_IMEIS[1], BUYER) == "unregistered"
    after = applied(state, DeviceRegistered(Device("D9", NEW_IMEIS), Source.PASSENGER,
                                            date(2026, 9, 1)))
    d = attach(after, rules, NEW_IMEIS[1], BUYER)
    assert d.rule == "no_cartable" and d.slot == 1 and d.device == state.devices.count


def test_activation_makes_the_sim_the_owner(state, rules) -> None:
    after = applied(state, DeviceRegistered(Device("D9", NEW_IMEIS), Source.IMPORT, None),
                    OwnershipSet(Device("D9", ()), BUYER, Via.ACTIVATION))
    assert rule(after, rules, NEW_IMEIS[0], BUYER) == "owner"
    assert rule(after, rules, NEW_IMEIS[0], STRANGER) == "other_cartable"


def test_a_transfer_moves_a_snapshot_device_to_the_buyer(state, rules) -> None:
    assert rule(state, rules, SINGLE, BUYER) == "other_cartable"
    after = applied(state, OwnershipSet(Device(None, (SINGLE,)), BUYER, Via.TRANSFER_DIRECT))
    assert rule(after, rules, SINGLE, BUYER) == "owner"
    assert rule(after, rules, SINGLE, OWNER) == "other_cartable"


def test_a_deregistered_device_is_unregistered_again(state, rules) -> None:
    after = applied(state, DeviceDeregistered(Device(None, (DUAL[1],))))
    assert rule(after, rules, DUAL[0], OWNER) == "unregistered"
    assert rule(after, rules, DUAL[1], OWNER) == "unregistered"


def test_cartable_links_make_every_sim_of_the_person_an_owner(state, rules) -> None:
    after = applied(state, CartableChanged(1, (BUYER,), linked=True))
    assert rule(after, rules, SINGLE, BUYER) == "owner"
    unlinked = applied(after, CartableChanged(1, (SPOUSE,), linked=False))
    assert rule(unlinked, rules, SINGLE, SPOUSE) == "other_cartable"
    assert rule(unlinked, rules, SINGLE, BUYER) == "owner"


def test_unlinking_from_another_cartable_changes_nothing(state, rules) -> None:
    after = applied(state, CartableChanged(2, (SPOUSE,), linked=False))
    assert rule(after, rules, SINGLE, SPOUSE) == "owner"


def test_operator_sims_are_set_and_removed(state, rules) -> None:
    after = applied(state, OperatorSimChanged(DUAL[0], STRANGER, True))
    assert rule(after, rules, DUAL[0], STRANGER) == "owner"
    removed = applied(after, OperatorSimChanged(DUAL[1], HELPER, False))
    assert rule(removed, rules, DUAL[1], HELPER) == "other_cartable"
    assert rule(removed, rules, UNOWNED, HELPER) == "owner"  # another IMEI's stays


def test_a_repair_moves_the_slot_to_the_new_imei(state, rules) -> None:
    after = applied(state, ImeiReplaced(SINGLE, NEW_IMEIS[0]))
    d = attach(after, rules, NEW_IMEIS[0], OWNER)
    assert d.rule == "owner" and d.slot == 0
    assert rule(after, rules, SINGLE, OWNER) == "unregistered"


def test_a_repair_of_an_imei_in_no_device_is_inapplicable(state) -> None:
    with pytest.raises(Inapplicable):
        applied(state, ImeiReplaced(UNREGISTERED, NEW_IMEIS[0]))


@pytest.mark.parametrize("device, message", [
    (Device(None, (UNREGISTERED,)), f"no device with IMEI {UNREGISTERED:014d}"),
    (Device("D7", ()), "no device D7"),
    (Device("D7", (UNREGISTERED, NEW_IMEIS[0])),
     f"no device D7 with IMEI {UNREGISTERED:014d}, {NEW_IMEIS[0]:014d}"),
])
def test_an_unknown_device_is_named_as_the_change_names_it(state, device: Device,
                                                           message: str) -> None:
    """The trial's "no device  with IMEI 01083870929451": no gap where no id was given."""
    with pytest.raises(Inapplicable) as raised:
        applied(state, OwnershipSet(device, BUYER, Via.ACTIVATION))
    assert str(raised.value) == message


def test_black_listing_and_lifting_it(state, rules) -> None:
    after = applied(state, BlacklistChanged((SINGLE,), BlackReason.COURT_ORDER))
    d = attach(after, rules, SINGLE, OWNER)
    assert d.verdict is Verdict.BLACKLISTED and d.black_reason is BlackReason.COURT_ORDER
    lifted = applied(after, BlacklistChanged((SINGLE, STOLEN), None))
    assert rule(lifted, rules, SINGLE, OWNER) == "owner"
    assert rule(lifted, rules, STOLEN, OWNER) == "owner"


def test_ownership_of_an_unknown_device_is_inapplicable(state) -> None:
    with pytest.raises(Inapplicable):
        applied(state, OwnershipSet(Device("nope", ()), BUYER, Via.ACTIVATION))


def test_applying_a_change_twice_is_applying_it_once(state, rules) -> None:
    change = OwnershipSet(Device(None, (SINGLE,)), BUYER, Via.TRANSFER_INDIRECT)
    once, twice = applied(state, change), applied(state, change, change)
    assert once.overlay.owners == twice.overlay.owners
    assert rule(twice, rules, SINGLE, BUYER) == "owner"


def next_generation_without_single(state: EnforcementState) -> EnforcementState:
    """Generation 2: SINGLE's device is gone from the registry's snapshot."""
    lists = Lists.build(2, state.lists.white_index, {})
    columns = DeviceColumns.from_records([
        DeviceRecord(DUAL, OWNER, Source.IMPORT, date(2024, 3, 1))])
    devices, _ = build_devices(lists.white_index, columns, state.devices.cartables,
                               state.devices.operator_sims)
    return EnforcementState(lists, devices, state.policy)


def test_a_new_generation_keeps_the_changes_that_still_apply(state, rules) -> None:
    holder = StateHolder(applied(
        state, DeviceRegistered(Device("D9", NEW_IMEIS), Source.IMPORT, None),
        OwnershipSet(Device("D9", ()), BUYER, Via.ACTIVATION),
        OwnershipSet(Device(None, (SINGLE,)), BUYER, Via.TRANSFER_DIRECT),
        OwnershipSet(Device(None, (DUAL[0],)), STRANGER, Via.TRANSFER_DIRECT)))
    stale = holder.swap(next_generation_without_single(state))
    after = holder.current
    assert stale == 1  # the transfer of SINGLE's device, which the new snapshot lacks
    assert rule(after, rules, NEW_IMEIS[1], BUYER) == "owner"
    assert rule(after, rules, DUAL[1], STRANGER) == "owner"
    assert rule(after, rules, SINGLE, BUYER) != "owner"  # gone with the device
    assert len(after.overlay.events) == 3


def test_many_changes_at_once_equal_one_at_a_time(state, rules) -> None:
    changes = [OwnershipSet(Device(None, (SINGLE,)), BUYER, Via.TRANSFER_DIRECT),
               ImeiReplaced(UNREGISTERED, NEW_IMEIS[0]),  # inapplicable: in no device
               BlacklistChanged((DUAL[0],), BlackReason.LOST),
               CartableChanged(1, (STRANGER,), linked=True)]
    events = [RegistryEvent(f"e{i}", T0, c) for i, c in enumerate(changes)]
    together, refused = state.overlay.apply_all(events, state.lists, state.devices)
    assert [e.event_id for e, _ in refused] == ["e1"]
    one_by_one = applied(state, changes[0], *changes[2:])
    for imei, msisdn in [(SINGLE, BUYER), (DUAL[0], OWNER), (SINGLE, STRANGER)]:
        assert (rule(replace(state, overlay=together), rules, imei, msisdn)
                == rule(one_by_one, rules, imei, msisdn))
    assert state.overlay.owners == {}  # the original is untouched


def stored_event(seq: int, body: dict[str, object]) -> StoredEvent:
    now = datetime.now(timezone.utc)
    return StoredEvent(seq, msgspec.json.encode({**body, "time": int(now.timestamp() * 1000)}),
                       now, Position("registry-events", 0, seq))


@pytest.mark.parametrize("level", [logging.WARNING, logging.INFO], ids=["WARNING", "INFO"])
def test_stored_events_that_no_longer_apply_are_told_in_one_line(state, rules, caplog,
                                                                 level: int) -> None:
    """After a new snapshot (the trial's `state synth`) a worker's start, and each status
    query, printed one line per stored event: 103 of them."""
    stored = [stored_event(i, {"event_id": f"g{i}", "type": "ownership_set",
                               "imeis": [f"{UNREGISTERED + 10 * i:014d}"],
                               "owner_msisdn": str(BUYER), "via": "activation"})
              for i in range(100)]
    stored.append(stored_event(100, {"event_id": "fits", "type": "ownership_set",
                                     "imeis": [f"{SINGLE:014d}"], "owner_msisdn": str(BUYER),
                                     "via": "transfer_direct"}))
    holder = StateHolder(state)
    caplog.set_level(logging.DEBUG, logger="eir.registry")
    assert lay_over(holder, stored, rules, load_config(environ={}), level=level) == 100
    assert rule(holder.current, rules, SINGLE, BUYER) == "owner"
    (record,) = caplog.records
    assert (record.levelno, record.getMessage(), record.events) == (
        level, "stored registry events no longer apply", 100)
    assert record.first == [{"event_id": f"g{i}",
                             "error": f"no device with IMEI {UNREGISTERED + 10 * i:014d}"}
                            for i in range(REFUSED_NAMED)]
