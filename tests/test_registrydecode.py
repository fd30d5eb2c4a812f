"""Registry event messages: each type decoded to its change, each kind of bad message to its
dead-letter reason, and no input at all that makes the decoder raise."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.attachdecode import DeadLetter, TimeWindow
from enforcer.engine.registrydecode import TYPES, decode_registry_event
from enforcer.engine.imei import ImeiRules
from enforcer.engine.lists import BlackReason
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Device,
                                             DeviceDeregistered, DeviceRegistered, ImeiReplaced,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent, Via)
from enforcer.engine.devices import Source

NOW = 1_790_000_000_000
WINDOW = TimeWindow.around(NOW, 60, 300)
IMEI, IMEI2 = "35209900176148", "352099001761562"
KEY, KEY2 = 35209900176148, 35209900176156
MSISDN = 989121234567


def event(type_: str, **body: object) -> bytes:
    return msgspec.json.encode({"event_id": "e-1", "type": type_, "time": NOW, **body})


@pytest.mark.parametrize(("message", "change"), [
    (event("device_registered", device_id="D1", imeis=[IMEI, IMEI2], source="passenger",
           entry_date="2026-09-01"),
     DeviceRegistered(Device("D1", (KEY, KEY2)), Source.PASSENGER, date(2026, 9, 1))),
    (event("device_deregistered", device_id="D1"), DeviceDeregistered(Device("D1", ()))),
    (event("device_deregistered", imeis=[IMEI]), DeviceDeregistered(Device(None, (KEY,)))),
    (event("ownership_set", imeis=[f"imei-{IMEI}5"], owner_msisdn=f"+{MSISDN}",
           via="transfer_direct"),
     OwnershipSet(Device(None, (KEY,)), MSISDN, Via.TRANSFER_DIRECT)),
    (event("cartable_linked", cartable_id=7, msisdns=[str(MSISDN), MSISDN + 1]),
     CartableChanged(7, (MSISDN, MSISDN + 1), True)),
    (event("cartable_unlinked", cartable_id=7, msisdns=[str(MSISDN)]),
     CartableChanged(7, (MSISDN,), False)),
    (event("operator_sim_set", imei=IMEI, msisdn=str(MSISDN)),
     OperatorSimChanged(KEY, MSISDN, True)),
    (event("operator_sim_removed", imei=IMEI, msisdn=str(MSISDN)),
     OperatorSimChanged(KEY, MSISDN, False)),
    (event("imei_replaced", old_imei=IMEI, new_imei=IMEI2), ImeiReplaced(KEY, KEY2)),
    (event("blacklisted", imeis=[IMEI], reason="court_order"),
     BlacklistChanged((KEY,), BlackReason.COURT_ORDER)),
    (event("unblacklisted", imeis=[IMEI, IMEI2]), BlacklistChanged((KEY, KEY2), None)),
])
def test_each_type_decodes_to_its_change(rules: ImeiRules, message: bytes, change) -> None:
    assert decode_registry_event(message, rules, WINDOW) == RegistryEvent("e-1", NOW, change)


@pytest.mark.parametrize("time", ["2026-09-21T14:13:20z", "2026-09-21t17:43:20+03:30",
                                  "2026-09-21T14:13:20.000999999Z", str(NOW)])
def test_time_is_read_as_its_instant(rules: ImeiRules, time: str) -> None:
    message = msgspec.json.encode({"event_id": "e-1", "type": "unblacklisted", "time": time,
                                   "imeis": [IMEI]})
    assert decode_registry_event(message, rules, WINDOW) == RegistryEvent(
        "e-1", NOW, BlacklistChanged((KEY,), None))


@pytest.mark.parametrize(("message", "reason"), [
    (b"{", "not_json"), (b"[1]", "not_an_object"), (None, "not_json"),
    (b" " * (2 << 20), "too_large"),
    (event("device_exploded"), "unknown_type"),
    (msgspec.json.encode({"event_id": "e", "time": NOW}), "unknown_type"),
    (event("blacklisted", imeis=[IMEI], reason="bored"), "bad_shape"),
    (event("blacklisted", reason="stolen"), "bad_shape"),
    (event("unblacklisted", imeis=["12ab"]), "bad_imei"),
    (event("device_registered", device_id="D", imeis=[], source="import"), "bad_imei"),
    (event("device_registered", imeis=[IMEI], source="import"), "bad_shape"),
    (event("device_registered", device_id="D", imeis=[IMEI, f"{IMEI}5"], source="import"),
     "bad_imei"),
    (event("device_registered", device_id="D", imeis=[IMEI] * 9, source="import"),
     "bad_imei"),
    (event("device_deregistered"), "no_device"),
    (event("ownership_set", imeis=[IMEI], owner_msisdn="0912", via="activation"),
     "bad_msisdn"),
    (event("ownership_set", imeis=[IMEI], owner_msisdn="989121234567890", via="activation"),
     "bad_msisdn"),
    (event("cartable_linked", cartable_id=-1, msisdns=[]), "bad_shape"),
    (event("unblacklisted", imeis=[IMEI] * 10_001), "too_many"),
    (msgspec.json.encode({"event_id": "", "type": "unblacklisted", "time": NOW,
                          "imeis": [IMEI]}), "bad_shape"),
    (msgspec.json.encode({"event_id": "e", "type": "unblacklisted", "time": "soon",
                          "imeis": [IMEI]}), "bad_ts"),
    (msgspec.json.encode({"event_id": "e", "type": "unblacklisted", "time": 5,
                          "imeis": [IMEI]}), "absurd_ts"),
    (msgspec.json.encode({"event_id": "e", "type": "unblacklisted", "time": "2026-09-21",
                          "imeis": [IMEI]}), "bad_ts"),
    # int() refuses more than 4,300 digits: this raised out of the decoder.
    (msgspec.json.encode({"event_id": "e", "type": "unblacklisted", "time": "9" * 5000,
                          "imeis": [IMEI]}), "bad_ts"),
])
def test_bad_messages_have_their_reason(rules: ImeiRules, message, reason: str) -> None:
    decoded = decode_registry_event(message, rules, WINDOW)
    assert isinstance(decoded, DeadLetter) and decoded.reason == reason


SHORT_NUMBER = 13327001001504  # issue 18: 013327001001504 saved as a number


@pytest.mark.parametrize("body", [
    {"type": "blacklisted", "imeis": [IMEI, SHORT_NUMBER], "reason": "stolen"},
    {"type": "unblacklisted", "imeis": [SHORT_NUMBER]},
    {"type": "device_registered", "device_id": "D", "imeis": [SHORT_NUMBER],
     "source": "import"},
    {"type": "device_deregistered", "imeis": [SHORT_NUMBER]},
    {"type": "ownership_set", "imeis": [SHORT_NUMBER], "owner_msisdn": MSISDN,
     "via": "activation"},
    {"type": "operator_sim_set", "imei": SHORT_NUMBER, "msisdn": MSISDN},
    {"type": "imei_replaced", "old_imei": IMEI, "new_imei": SHORT_NUMBER}],
    ids=lambda body: body["type"])
def test_an_imei_as_a_number_of_14_digits_is_bad_imei_saying_why(rules: ImeiRules,
                                                                 body: dict) -> None:
    """It would be read as TAC 13327001; it may be TAC 01332700's IMEI that lost its zero."""
    decoded = decode_registry_event(msgspec.json.encode({"event_id": "e", "time": NOW} | body),
                                    rules, WINDOW)
    assert isinstance(decoded, DeadLetter) and decoded.reason == "bad_imei"
    assert decoded.detail.startswith(f"{SHORT_NUMBER}: number_too_short (")
    assert "a JSON number cannot carry a leading zero" in decoded.detail


def test_an_imei_as_a_number_of_15_or_16_digits_is_read(rules: ImeiRules) -> None:
    message = event("blacklisted", imeis=[int(IMEI2), int(f"{KEY}07")], reason="stolen")
    assert decode_registry_event(message, rules, WINDOW) == RegistryEvent(
        "e-1", NOW, BlacklistChanged((KEY2, KEY), BlackReason.STOLEN))


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4), max_leaves=12)
bodies = st.fixed_dictionaries(
    {"event_id": st.one_of(st.text(max_size=5), values), "type": st.sampled_from(sorted(TYPES)),
     "time": st.one_of(st.just(NOW), values)},
    optional={k: values | st.lists(st.sampled_from([IMEI, IMEI2, "x", 5]), max_size=3)
              for k in ("imeis", "imei", "old_imei", "new_imei", "msisdn", "msisdns",
                        "owner_msisdn", "device_id", "source", "reason", "via", "cartable_id",
                        "entry_date")})


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=64), bodies.map(msgspec.json.encode)))
def test_no_input_makes_the_decoder_raise(message: bytes) -> None:
    decoded = decode_registry_event(message, ImeiRules.from_config([], []), WINDOW)
    assert isinstance(decoded, (RegistryEvent, DeadLetter))


def test_an_event_repeating_a_key_spaced_before_its_colon_is_refused(rules) -> None:
    value = event("ownership_set", imeis=[IMEI], owner_msisdn=str(MSISDN), via="transfer_direct")
    value = value[:-1] + b', "owner_msisdn" : "989129999999"}'
    decoded = decode_registry_event(value, rules, WINDOW)
    assert isinstance(decoded, DeadLetter) and decoded.reason == "duplicate_key"
